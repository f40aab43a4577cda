//! A real S3-compatible server for tests: the one `scripts/s3.sh start` runs (address in
//! SLUICE_TEST_S3, default 127.0.0.1:9000, bucket `sluice-test`), or a private one for tests
//! that stop it. Credentials admin/password.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "sluice-test";
pub const KEY_ID: &str = "admin";
pub const SECRET: &str = "password";

pub fn server() -> String {
    std::env::var("SLUICE_TEST_S3").unwrap_or_else(|_| "127.0.0.1:9000".into())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3.sh")
}

fn script_output(arg: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(script())
        .arg(arg)
        .output()
        .expect("scripts/s3.sh runs");
    assert!(
        out.status.success(),
        "scripts/s3.sh {arg} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("path").trim())
}

/// Python with pyarrow (the venv scripts/s3.sh installs).
pub fn python() -> PathBuf {
    script_output("python")
}

/// Runs a pyarrow `script` with `args` and returns the JSON list it prints. Tried three times a
/// second apart: SeaweedFS can list an object still being written and then serve fewer bytes
/// than it listed ("Page was smaller than expected"); an object that stays unreadable fails.
pub fn pyarrow(script: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let mut attempt = 1;
    loop {
        let out = Command::new(python())
            .args(["-c", script])
            .args(args)
            .output()
            .expect("python runs");
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).expect("the script prints a JSON list");
        }
        assert!(
            attempt < 3,
            "pyarrow: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        attempt += 1;
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `s3://sluice-test/PREFIX?endpoint=...&PARAMS`
pub fn uri(server: &str, prefix: &str, params: &str) -> String {
    format!("s3://{BUCKET}/{prefix}?endpoint=http://{server}&{params}")
}

/// The runtime with credentials for the test server.
pub fn with_credentials(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
}

fn curl(server: &str, args: &[&str], path: &str) -> std::process::Output {
    Command::new("curl")
        .args([
            "-s",
            "--fail-with-body",
            "--max-time",
            "10",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
        ])
        .args(["--user", &format!("{KEY_ID}:{SECRET}")])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(args)
        .arg(format!("http://{server}/{BUCKET}/{path}"))
        .output()
        .expect("curl runs")
}

/// Uploads a local file as `key`.
pub fn put(server: &str, key: &str, file: &Path) {
    let out = curl(server, &["-T", &file.display().to_string()], key);
    assert!(
        out.status.success(),
        "PUT {key}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// An object's bytes, or None if it does not exist.
pub fn get(server: &str, key: &str) -> Option<Vec<u8>> {
    let out = curl(server, &[], key);
    out.status.success().then_some(out.stdout)
}

/// The HTTP status curl gets for `url` (`000`: no answer within 2 s).
fn http_code(args: &[&str], url: &str) -> String {
    Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
        ])
        .args(args)
        .arg(url)
        .output()
        .map_or_else(
            |_| "000".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).into_owned(),
        )
}

/// A server of the test's own (for tests that stop it), with its data in a directory that
/// survives restarts; killed on drop.
pub struct PrivateServer {
    child: Option<Child>,
    pub addr: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateServer {
    /// Its Iceberg REST catalog (warehouse `warehouse`).
    pub fn catalog(&self) -> String {
        format!("127.0.0.1:{}", self.port + 181)
    }

    pub fn start() -> Self {
        let port = {
            // Its other ports are derived from this one (scripts/s3.sh): keep them below 65536.
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            let p = l.local_addr().expect("addr").port();
            20000 + p % 20000
        };
        let mut s = PrivateServer {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            port,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        s.restart();
        s
    }

    /// Starts the server (again) on the same port and data.
    pub fn restart(&mut self) {
        self.spawn();
        // Generous: on a busy 2-core machine (tests in parallel) weed takes a while to start.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let signed = [
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                &format!("{KEY_ID}:{SECRET}"),
                "-H",
                "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                "-I",
            ];
            let ok = http_code(&signed, &format!("http://{}/{BUCKET}", self.addr)) == "200"
                && http_code(&[], &format!("http://{}/v1/config", self.catalog())) != "000";
            if ok {
                return;
            }
            let log = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "private weed did not serve {} within 90 s; its log:\n{log}",
                self.addr,
            );
            // One of its derived ports lies in the ephemeral range, and another process's
            // connection may hold it for a moment: start again once it is free.
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited && log.contains("Port allocation failed") {
                std::thread::sleep(Duration::from_secs(1));
                self.spawn();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn(&mut self) {
        let weed = script_output("weed");
        let p = self.port as u32;
        let child = Command::new(weed)
            .args([
                "mini",
                &format!("-dir={}", self.dir.path().join("data").display()),
            ])
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-s3.port={p}"),
            ])
            .args([
                format!("-bucket={BUCKET}"),
                format!("-master.port={}", p + 10333),
            ])
            .args([
                format!("-volume.port={}", p + 9080),
                format!("-filer.port={}", p + 9888),
            ])
            .args([
                "-master.telemetry=false",
                "-webdav=false",
                "-admin.ui=false",
            ])
            .args([
                format!("-s3.port.iceberg={}", p + 181),
                "-tableBucket=warehouse".to_owned(),
                "-s3.port.lance=0".to_owned(),
            ])
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("weed.log")).expect("weed log"))
            .spawn()
            .expect("weed starts");
        self.child = Some(child);
    }

    /// SIGSTOP: the server holds connections without answering, until `resume`.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} the private weed");
        }
    }

    /// kill -9: the server is gone until `restart`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
