//! What `/health` and `/ready` answer: each pipeline's state (starting, running, retrying,
//! draining, failed, done) with the reason and since when. Pipelines set their own state;
//! endpoints report trouble (a broker or store not answering, deliveries not acknowledged) by
//! their URI, and a running pipeline is `retrying` while one of its endpoints has been in
//! trouble for longer than [`RETRYING_AFTER`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::sync::Locked;
use serde_json::{json, Value};

/// How long an endpoint's trouble lasts before its pipelines count as retrying: a single retry
/// or a slow answer is not unhealthy.
pub(crate) const RETRYING_AFTER: Duration = Duration::from_secs(5);

/// A pipeline's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Loading plugins and opening endpoints.
    Starting,
    Running,
    /// Stopping: finishing what it read.
    Draining,
    Failed(String),
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Draining => "draining",
            State::Failed(_) => "failed",
            State::Done => "done",
        }
    }
}

struct Since<T> {
    value: T,
    at: Instant,
    unix_ms: u128,
}

impl<T> Since<T> {
    fn now(value: T) -> Self {
        Since {
            value,
            at: Instant::now(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
        }
    }
}

struct Pipeline {
    name: String,
    state: Since<State>,
    /// Its endpoints, as [`endpoint_name`] gives them.
    endpoints: Vec<String>,
}

/// One run's health.
#[derive(Default)]
pub struct Health {
    /// In the order they were added (the pipelines file's), as pages list them.
    pipelines: Mutex<Vec<Pipeline>>,
    /// Endpoints in trouble, by endpoint and cause: what is wrong, since when. Causes clear
    /// separately: a broker connection that is up again says nothing of deliveries it owes.
    trouble: Mutex<BTreeMap<(String, Cause), Since<String>>>,
    /// Endpoints not ready yet (a consumer group not joined).
    waiting: Mutex<BTreeMap<String, String>>,
}

/// What kind of trouble an endpoint reports, so each clears on its own evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// The server does not answer (connection errors, retried requests).
    Unreachable,
    /// Records written are not acknowledged in time.
    Unacknowledged,
}

/// An endpoint URI as health names it: without its query string (which may hold credentials).
pub(crate) fn endpoint_name(uri: &str) -> String {
    uri.split('?').next().unwrap_or(uri).to_owned()
}

impl Health {
    /// Registers a pipeline (state `starting`) with the URIs of its endpoints.
    pub fn add_pipeline(&self, name: &str, endpoints: &[&str]) {
        let pipeline = Pipeline {
            name: name.to_owned(),
            state: Since::now(State::Starting),
            endpoints: endpoints.iter().map(|u| endpoint_name(u)).collect(),
        };
        let mut pipelines = self.pipelines.locked();
        match pipelines.iter_mut().find(|p| p.name == name) {
            Some(p) => *p = pipeline,
            None => pipelines.push(pipeline),
        }
    }

    pub fn set_state(&self, pipeline: &str, state: State) {
        if let Some(p) = self
            .pipelines
            .locked()
            .iter_mut()
            .find(|p| p.name == pipeline)
        {
            if p.state.value != state {
                p.state = Since::now(state);
            }
        }
    }

    /// The endpoint at `uri` is in trouble for `cause` (kept from the first report on).
    pub fn trouble(&self, uri: &str, cause: Cause, reason: impl Into<String>) {
        let reason = reason.into();
        let mut trouble = self.trouble.locked();
        match trouble.get_mut(&(endpoint_name(uri), cause)) {
            Some(t) => t.value = reason,
            None => {
                trouble.insert((endpoint_name(uri), cause), Since::now(reason));
            }
        }
    }

    /// The endpoint at `uri` shows that `causes` are over.
    pub fn recovered(&self, uri: &str, causes: &[Cause]) {
        let mut trouble = self.trouble.locked();
        // Cheap when there is nothing to clear: endpoints call this on every success.
        if trouble.is_empty() {
            return;
        }
        let name = endpoint_name(uri);
        for &cause in causes {
            if trouble.remove(&(name.clone(), cause)).is_some() {
                tracing::info!(endpoint = %name, ?cause, "endpoint recovered");
            }
        }
    }

    /// The endpoint at `uri` is not ready (`Some(why)`) or is (`None`).
    pub fn waiting(&self, uri: &str, why: Option<&str>) {
        let mut waiting = self.waiting.locked();
        match why {
            Some(why) => waiting.insert(endpoint_name(uri), why.to_owned()),
            None => waiting.remove(&endpoint_name(uri)),
        };
    }

    /// `/health`: whether every pipeline runs, and each pipeline's state.
    pub fn report(&self) -> (bool, Value) {
        let pipelines = self.pipelines.locked();
        let trouble = self.trouble.locked();
        let mut healthy = !pipelines.is_empty();
        let mut listed = Vec::new();
        for p in pipelines.iter() {
            let name = &p.name;
            let mut entry = json!({
                "name": name,
                "state": p.state.value.name(),
                "since_ms": p.state.unix_ms as u64,
            });
            if let State::Failed(reason) = &p.state.value {
                entry["reason"] = json!(reason);
            }
            if p.state.value == State::Running {
                let stuck = trouble.iter().find(|((e, _), t)| {
                    p.endpoints.contains(e) && t.at.elapsed() >= RETRYING_AFTER
                });
                let stuck = stuck.map(|((e, _), t)| (e, t));
                if let Some((endpoint, t)) = stuck {
                    entry["state"] = json!("retrying");
                    entry["endpoint"] = json!(endpoint);
                    entry["reason"] = json!(t.value);
                    entry["since_ms"] = json!(t.unix_ms as u64);
                }
            }
            healthy &= entry["state"] == "running";
            listed.push(entry);
        }
        let status = if healthy { "ok" } else { "unhealthy" };
        (healthy, json!({ "status": status, "pipelines": listed }))
    }

    /// The endpoints of `pipeline` (as [`endpoint_name`] gives them).
    pub fn endpoints_of(&self, pipeline: &str) -> Vec<String> {
        self.pipelines
            .locked()
            .iter()
            .find(|p| p.name == pipeline)
            .map(|p| p.endpoints.clone())
            .unwrap_or_default()
    }

    /// `/ready`: every pipeline has loaded its plugins and opened its endpoints, and none waits
    /// on an endpoint (a consumer group it has not joined yet).
    pub fn readiness(&self) -> (bool, Value) {
        let pipelines = self.pipelines.locked();
        let waiting = self.waiting.locked();
        let mut ready = !pipelines.is_empty();
        let mut listed = Vec::new();
        for p in pipelines.iter() {
            let name = &p.name;
            let waits = p
                .endpoints
                .iter()
                .find_map(|e| waiting.get(e).map(|why| (e, why)));
            let mut entry = json!({ "name": name, "ready": p.state.value != State::Starting && waits.is_none() });
            if let Some((endpoint, why)) = waits {
                entry["endpoint"] = json!(endpoint);
                entry["reason"] = json!(why);
            }
            ready &= entry["ready"] == true;
            listed.push(entry);
        }
        (ready, json!({ "ready": ready, "pipelines": listed }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_are_listed_in_the_order_they_were_added() {
        let h = Health::default();
        for name in ["generator", "producer", "enrich", "archive"] {
            h.add_pipeline(name, &[]);
        }
        h.add_pipeline("producer", &["mem://t"]);
        let names = |body: Value| -> Vec<String> {
            body["pipelines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let order = ["generator", "producer", "enrich", "archive"];
        assert_eq!(names(h.report().1), order);
        assert_eq!(names(h.readiness().1), order);
        assert_eq!(h.endpoints_of("producer"), ["mem://t"]);
    }

    #[test]
    fn a_pipeline_is_healthy_only_while_it_runs_without_lasting_trouble() {
        let h = Health::default();
        assert!(!h.report().0, "no pipelines is not healthy");
        h.add_pipeline(
            "p",
            &["kafka://b:1/in?group=g", "s3://bucket/out?endpoint=x"],
        );
        let (ok, body) = h.report();
        assert!(!ok);
        assert_eq!(body["pipelines"][0]["state"], "starting");
        h.set_state("p", State::Running);
        assert!(h.report().0);
        // Fresh trouble is not yet unhealthy; lasting trouble is, naming the endpoint.
        h.trouble(
            "s3://bucket/out?endpoint=x&secret_access_key=s",
            Cause::Unreachable,
            "connection refused",
        );
        assert!(h.report().0);
        let key = ("s3://bucket/out".to_owned(), Cause::Unreachable);
        h.trouble.locked().get_mut(&key).unwrap().at -= RETRYING_AFTER;
        let (ok, body) = h.report();
        assert!(!ok);
        let p = &body["pipelines"][0];
        assert_eq!(
            (&p["state"], &p["endpoint"], &p["reason"]),
            (
                &json!("retrying"),
                &json!("s3://bucket/out"),
                &json!("connection refused")
            )
        );
        // Only the evidence for that cause clears it.
        h.recovered("s3://bucket/out", &[Cause::Unacknowledged]);
        assert!(!h.report().0);
        h.recovered("s3://bucket/out", &[Cause::Unreachable]);
        assert!(h.report().0);
        h.set_state("p", State::Failed("boom".into()));
        let (ok, body) = h.report();
        assert!(!ok);
        assert_eq!(body["pipelines"][0]["reason"], "boom");
    }

    #[test]
    fn ready_once_started_and_no_endpoint_waits() {
        let h = Health::default();
        h.add_pipeline("p", &["kafka://b:1/in?group=g"]);
        assert!(!h.readiness().0);
        h.set_state("p", State::Running);
        h.waiting("kafka://b:1/in", Some("joining consumer group g"));
        let (ready, body) = h.readiness();
        assert!(!ready);
        assert_eq!(body["pipelines"][0]["endpoint"], "kafka://b:1/in");
        h.waiting("kafka://b:1/in?group=g", None);
        assert!(h.readiness().0);
    }
}
