//! An object source's progress (objects done, rows acknowledged of half-done ones), kept
//! durably beside the data or in a local state file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use opendal::{ErrorKind, Operator};
use serde::{Deserialize, Serialize};

use super::gist;
use crate::sync::Locked;

/// Which objects are done, and how many rows of half-done ones are acknowledged.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    pub done: BTreeSet<String>,
    pub partial: BTreeMap<String, u64>,
}

/// Where progress is kept: an object beside the data, or a local file (`--state`).
#[derive(Clone)]
pub(super) enum ProgressStore {
    Object { op: Operator, key: String },
    File(PathBuf),
}

impl ProgressStore {
    pub(super) async fn load(&self) -> Result<Progress> {
        let bytes = match self {
            ProgressStore::Object { op, key } => match op.read(key).await {
                Ok(b) => b.to_vec(),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Progress::default()),
                Err(e) => return Err(anyhow!("cannot read progress {key}: {}", gist(&e))),
            },
            ProgressStore::File(path) => match std::fs::read(path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Progress::default())
                }
                Err(e) => bail!("cannot read the state file {}: {e}", path.display()),
            },
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow!(
                "the progress in {} is not valid ({e}): fix or delete it (deleting re-reads every object)",
                self
            )
        })
    }

    async fn save(&self, progress: &Progress) -> Result<()> {
        let body = serde_json::to_vec(progress)?;
        match self {
            ProgressStore::Object { op, key } => op
                .write(key, body)
                .await
                .map(drop)
                .map_err(|e| anyhow!("cannot save progress {key}: {}", gist(&e))),
            ProgressStore::File(path) => {
                // Whole and on disk before it replaces the last one: a crash or a full disk
                // leaves the previous progress, never half a file.
                let write = || -> std::io::Result<()> {
                    use std::io::Write;
                    let dir = path
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
                    tmp.write_all(&body)?;
                    tmp.as_file().sync_all()?;
                    tmp.persist(path).map_err(|e| e.error)?;
                    Ok(())
                };
                tokio::task::block_in_place(write)
                    .with_context(|| format!("cannot save the state file {}", path.display()))
            }
        }
    }
}

impl std::fmt::Display for ProgressStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProgressStore::Object { key, .. } => write!(f, "object {key}"),
            ProgressStore::File(p) => write!(f, "{}", p.display()),
        }
    }
}

pub(super) struct Tracker {
    pub(super) progress: Mutex<Progress>,
    pub(super) dirty: std::sync::atomic::AtomicBool,
    pub(super) store: ProgressStore,
}

impl Tracker {
    pub(super) fn acked(&self, key: &str, rows_done: u64, finished: bool) {
        let mut p = self.progress.locked();
        if finished {
            p.partial.remove(key);
            p.done.insert(key.to_owned());
        } else {
            p.partial.insert(key.to_owned(), rows_done);
        }
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
    }

    pub(super) async fn save_if_dirty(&self) -> Result<()> {
        if !self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = self.progress.locked().clone();
        let saved = self.store.save(&snapshot).await;
        if saved.is_err() {
            self.dirty.store(true, std::sync::atomic::Ordering::Release);
        }
        saved
    }
}

/// Progress is saved this often (and at the end): a crash re-reads at most this much.
pub(super) const SAVE_EVERY: Duration = Duration::from_secs(1);
