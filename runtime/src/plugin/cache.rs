//! Compiled plugins on disk: a component is compiled with Cranelift once and its precompiled
//! artifact is kept under the cache directory, keyed by the wasm's sha256 and the engine's
//! compatibility hash, so later starts (and swaps back to an older version) skip compilation.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wasmtime::component::Component;
use wasmtime::Engine;

pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        ArtifactCache {
            dir,
            engine_key: format!("{:016x}", h.finish()),
        }
    }

    /// The default location: `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else
    /// `~/.cache/sluice`, else a folder in the temp dir.
    pub fn default_dir() -> PathBuf {
        let env = |k| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        env("SLUICE_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("sluice")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/sluice")))
            .unwrap_or_else(|| std::env::temp_dir().join("sluice-cache"))
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for `wasm`, from the cache or freshly compiled (and then cached).
    pub fn load(&self, engine: &Engine, sha256: &str, wasm: &[u8]) -> Result<Component> {
        let path = self.path(sha256);
        if path.exists() {
            // SAFETY: the artifact was written by `store` below from a component this engine
            // compiled; the file name carries the engine's compatibility hash, and wasmtime
            // checks the header again. A file that fails to load is compiled anew.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}")
                }
            }
        }
        let started = std::time::Instant::now();
        let artifact = engine.precompile_component(wasm)?;
        tracing::debug!(elapsed = ?started.elapsed(), "compiled plugin");
        if let Err(e) = store(&self.dir, &path, &artifact) {
            tracing::warn!(dir = %self.dir.display(), "cannot cache the compiled plugin ({e:#}); set SLUICE_CACHE_DIR to a writable folder");
        }
        // SAFETY: `artifact` was produced by `precompile_component` of this very engine.
        Ok(unsafe { Component::deserialize(engine, &artifact)? })
    }
}

/// Writes the artifact under a temporary name and renames it, so a reader never sees half a file.
fn store(dir: &Path, path: &Path, artifact: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, artifact).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}
