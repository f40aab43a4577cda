//! The loopback HTTP endpoints: `--metrics ADDR` serves `GET /metrics` (Prometheus),
//! `GET /health` (200 while every pipeline runs, else 503, with each pipeline's state) and
//! `GET /ready` (200 once plugins are loaded and sources joined); `--admin ADDR` serves those
//! and the admin API:
//!
//! - `GET /`: the console, a page over this API (its script and style from `/console.js` and
//!   `/console.css`, compiled into the binary; it fetches nothing from elsewhere);
//! - `GET /overview`: every pipeline with its state, counters, rates, latency, endpoint
//!   progress, plugin slots and last failures (what the console shows);
//! - `GET /pipelines`: every plugin slot of every pipeline with its live version (sha256), load
//!   time, status (live or probation), earlier versions kept for rollback and swap counters;
//! - `PUT /pipelines/PIPELINE/plugins/SLOT` with a wasm body: load it, check it, swap it in;
//!   `SLOT` is the plugin's position in the chain or its file name (`enrich` or `enrich.wasm`);
//! - `POST /pipelines/PIPELINE/plugins/SLOT/rollback`: the previous version comes back;
//! - `GET /pipelines/PIPELINE/failures`: the last 20 records that failed (position, plugin,
//!   reason, the input's first bytes);
//! - `PUT …/SLOT?shadow=true` with a wasm body: run it as the slot's shadow (every batch the
//!   live version processes goes through it too, its outputs compared and never written);
//!   `GET …/SLOT/shadow` the comparison, `POST …/SLOT/shadow/promote` swaps it in,
//!   `DELETE …/SLOT/shadow` stops it.
//!
//! Answers are JSON; a version that fails to load is a 422 with the error, and the running
//! version stays. With `--admin-token`, every `/pipelines…` request must carry `Authorization:
//! Bearer TOKEN` (401 otherwise), and only then may `--admin` listen beyond loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::plugin::PluginSlot;

mod overview;

/// The console's files, served as they are.
const CONSOLE_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");
/// The console may load only its own files and talk only to this listener.
const CONSOLE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Largest plugin the API accepts.
const MAX_UPLOAD: usize = 64 << 20;

pub struct Admin {
    pub slots: Vec<Arc<PluginSlot>>,
    /// Uploaded versions are kept here as files (so they reload and cache like any plugin).
    pub uploads: PathBuf,
    /// Asked of every admin request when set (`--admin-token`).
    pub token: Option<String>,
}

/// What one listener serves.
pub struct Routes {
    /// The admin API, on `--admin` only.
    pub admin: Option<Admin>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

/// Binds `addr` (loopback only; `flag` names the option in errors) and serves until the
/// process ends.
pub async fn serve(addr: &str, flag: &str, routes: Routes) -> Result<SocketAddr> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("{flag} {addr}: not an address; use e.g. 127.0.0.1:9901"))?;
    let guarded = routes.admin.as_ref().is_some_and(|a| a.token.is_some());
    if !addr.ip().is_loopback() && !guarded {
        bail!(
            "{flag} {addr}: it listens on loopback only (127.0.0.1 or ::1){}",
            if routes.admin.is_some() {
                ", unless --admin-token (or SLUICE_ADMIN_TOKEN) sets the secret every request must carry"
            } else {
                ""
            }
        );
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{flag} {addr}: cannot listen"))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "{} listening", &flag[2..]);
    let admin = Arc::new(routes);
    if admin.admin.is_some() {
        // The console's records/s chart and recent latency come from these samples.
        let metrics = admin.metrics.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(
                crate::metrics::history::SAMPLE_EVERY_MS,
            ));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                metrics.sample_history();
            }
        });
    }
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&admin, req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("admin connection: {e}");
                }
            });
        }
    });
    Ok(bound)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// 200 when all is well, 503 otherwise (what load balancers and orchestrators act on).
fn status_of(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn console_file(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_POLICY),
    );
    // A new binary may bring a new console: the browser asks again each time.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message.to_string() }))
}

async fn handle(routes: &Routes, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (&method, path.as_slice()) {
        (&Method::GET, ["metrics"]) => {
            let mut response = Response::new(Full::new(Bytes::from(routes.metrics.render())));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return response;
        }
        (&Method::GET, ["health"]) => {
            let (healthy, body) = routes.health.report();
            return json(status_of(healthy), body);
        }
        (&Method::GET, ["ready"]) => {
            let (ready, body) = routes.health.readiness();
            return json(status_of(ready), body);
        }
        _ => {}
    }
    let Some(admin) = &routes.admin else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown path: GET /metrics, GET /health or GET /ready",
        );
    };
    // The console's files hold no data: they load without the token, and ask for it.
    match (&method, path.as_slice()) {
        (&Method::GET, []) => return console_file("text/html; charset=utf-8", CONSOLE_HTML),
        (&Method::GET, ["console.js"]) => {
            return console_file("text/javascript; charset=utf-8", CONSOLE_JS)
        }
        (&Method::GET, ["console.css"]) => {
            return console_file("text/css; charset=utf-8", CONSOLE_CSS)
        }
        _ => {}
    }
    if let Some(token) = &admin.token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "this admin API asks for its token: send `Authorization: Bearer TOKEN` (the --admin-token it was started with)",
            );
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    match (&method, path.as_slice()) {
        (&Method::GET, ["overview"]) => json(StatusCode::OK, overview::overview(routes, admin)),
        (&Method::GET, ["pipelines"]) => {
            let views: Vec<_> = admin.slots.iter().map(|s| s.view()).collect();
            json(StatusCode::OK, serde_json::json!(views))
        }
        (&Method::GET, ["pipelines", pipeline, "failures"]) => {
            match routes.metrics.pipeline_if_any(pipeline) {
                Some(p) => json(StatusCode::OK, serde_json::json!(p.recent_failures())),
                None => error(StatusCode::NOT_FOUND, format!("no pipeline `{pipeline}` runs here")),
            }
        }
        (_, ["pipelines", pipeline, "plugins", slot, rest @ ..]) => {
            let Some(found) = admin
                .slots
                .iter()
                .find(|s| s.pipeline == *pipeline && s.is_named(slot))
            else {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no plugin `{slot}` in pipeline `{pipeline}` (GET /pipelines lists them)"),
                );
            };
            let shadow = req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "shadow=true"));
            match (&method, rest) {
                (&Method::PUT, []) => upload(admin, found, req, shadow).await,
                (&Method::GET, ["shadow"]) => match found.shadow() {
                    Some(s) => json(StatusCode::OK, serde_json::json!(s.report())),
                    None => error(StatusCode::NOT_FOUND, "no shadow run: start one with PUT …?shadow=true"),
                },
                (&Method::DELETE, ["shadow"]) => match found.stop_shadow() {
                    Some(report) => json(StatusCode::OK, serde_json::json!(report)),
                    None => error(StatusCode::NOT_FOUND, "no shadow run to stop"),
                },
                (&Method::POST, ["shadow", "promote"]) => match found.promote_shadow().await {
                    Ok(_) => json(StatusCode::OK, serde_json::json!(found.view())),
                    Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")),
                },
                (&Method::POST, ["rollback"]) => match found.rollback("asked through the admin API") {
                    Some(_) => json(StatusCode::OK, serde_json::json!(found.view())),
                    None => error(StatusCode::CONFLICT, "no previous version to roll back to"),
                },
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "use PUT (a new version; ?shadow=true to run it as a shadow), POST .../rollback, GET or DELETE .../shadow, or POST .../shadow/promote"),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "unknown path: GET / (the console), GET /overview, GET /pipelines, PUT /pipelines/P/plugins/SLOT, POST /pipelines/P/plugins/SLOT/rollback",
        ),
    }
}

async fn upload(
    admin: &Admin,
    slot: &Arc<PluginSlot>,
    req: Request<Incoming>,
    shadow: bool,
) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_UPLOAD).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "cannot read the upload (at most {} MiB): {e}",
                    MAX_UPLOAD >> 20
                ),
            )
        }
    };
    let sha = Sha256::digest(&body);
    let hex: String = sha.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let stem = slot
        .configured_path()
        .file_stem()
        .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
    let file = admin.uploads.join(format!("{stem}-{hex}.wasm"));
    let written = std::fs::create_dir_all(&admin.uploads)
        .and_then(|_| std::fs::write(file.with_extension("tmp"), &body))
        .and_then(|_| std::fs::rename(file.with_extension("tmp"), &file));
    if let Err(e) = written {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "cannot store the upload in {}: {e}",
                admin.uploads.display()
            ),
        );
    }
    if shadow {
        return match slot.start_shadow(&file).await {
            Ok(s) => json(StatusCode::OK, serde_json::json!(s.report())),
            Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")),
        };
    }
    match slot.swap(&file, "api").await {
        Ok(_) => json(StatusCode::OK, serde_json::json!(slot.view())),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")),
    }
}

/// `runtime inspect --admin ADDR`: the live version of every plugin of a running runtime, one
/// line each.
/// Compares two secrets in time independent of where they differ.
fn same_secret(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

pub fn live_versions(addr: &str, token: Option<&str>) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).with_context(|| {
        format!("--admin {addr}: no runtime answers there (was it started with --admin {addr}?)")
    })?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET /pipelines HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .with_context(|| format!("--admin {addr}: not an HTTP answer"))?;
    if response.starts_with("HTTP/1.1 401") {
        bail!("--admin {addr}: the runtime asks for its admin token: give --admin-token or SLUICE_ADMIN_TOKEN");
    }
    let views: Vec<serde_json::Value> = serde_json::from_str(body)
        .with_context(|| format!("--admin {addr}: not the Sluice admin API"))?;
    let mut out = String::new();
    for v in views {
        out += &format!(
            "{}\t{}\t{}\t{}\t{}\tswaps={} rollbacks={} failed_loads={}\n",
            v["pipeline"].as_str().unwrap_or_default(),
            v["index"],
            v["name"].as_str().unwrap_or_default(),
            v["sha256"].as_str().unwrap_or_default(),
            v["status"].as_str().unwrap_or_default(),
            v["swaps"],
            v["rollbacks"],
            v["failed_loads"],
        );
    }
    Ok(out)
}
