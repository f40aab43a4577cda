//! Shared set-up for the criterion benches in `benches/`: plugin paths and sample records.
//! The plugins must be built first (`scripts/build-plugins.sh`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice::plugin::{Limits, PluginEngine, TransformInstance};
use sluice::record::{Origin, Record};

pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

/// A transform instance of `target/wasm32-wasip2/release/NAME.wasm` with the production limits
/// on (memory cap, epoch deadline).
pub fn transform(name: &str) -> TransformInstance {
    transform_at(&target_dir().join(format!("wasm32-wasip2/release/{name}.wasm")))
}

/// The same for a plugin file, e.g. `target/guest/enrich-py.wasm`.
pub fn transform_at(path: &Path) -> TransformInstance {
    transform_metered(path, false, true, Limits::default())
}

/// A transform instance on an engine with or without fuel metering and epoch deadlines.
pub fn transform_metered(
    path: &Path,
    fuel: bool,
    deadlines: bool,
    limits: Limits,
) -> TransformInstance {
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    let engine = Arc::new(
        PluginEngine::metered(target_dir().join("sluice-bench-cache"), fuel, deadlines)
            .expect("engine"),
    );
    let plugin = engine.load(path, vec![], limits).expect("plugin loads");
    TransformInstance::new(plugin).expect("plugin instantiates")
}

/// `n` records with `size`-byte values.
pub fn fixed_size_records(n: usize, size: usize) -> Vec<Record> {
    let source: Arc<str> = "bench".into();
    (0..n)
        .map(|i| {
            let mut value = vec![b'x'; size];
            value[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut r = Record::new(value);
            r.origin = Some(Origin::Once(source.clone(), ':', i as u64));
            r
        })
        .collect()
}

/// `n` mock sessions (the stack's records, ~400-500 bytes of JSON each).
pub fn sessions(n: usize) -> Vec<Record> {
    let mut rng = mock::Rng::seeded(1);
    (0..n)
        .map(|_| Record::new(mock::session(&mut rng, 1_700_000_000).into_bytes()))
        .collect()
}
