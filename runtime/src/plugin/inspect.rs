//! `runtime inspect FILE`: what a wasm file is, as text.

use std::path::Path;

use anyhow::Result;

use super::{ArtifactCache, PluginEngine, World, CONTRACT};

/// What `runtime inspect` prints: file facts, the world, exports and imports; and whether the
/// file is a plugin (the report is useful either way).
pub fn inspect(path: &Path, cache_dir: Option<&Path>) -> Result<(String, Result<World>)> {
    use std::fmt::Write;
    let engine =
        PluginEngine::new(cache_dir.map_or_else(ArtifactCache::default_dir, Path::to_owned))?;
    let compiled = engine.compile(path)?;
    let mut out = String::new();
    writeln!(out, "file:    {}", compiled.path.display())?;
    writeln!(out, "size:    {} bytes", compiled.size)?;
    writeln!(out, "sha256:  {}", compiled.sha256)?;
    let world = compiled.world(engine.engine());
    match &world {
        Ok(w) => writeln!(out, "world:   {w} ({})", CONTRACT)?,
        Err(_) => writeln!(out, "world:   none")?,
    }
    for (title, imports) in [("exports", false), ("imports", true)] {
        writeln!(out, "{title}:")?;
        for (name, kind) in compiled.items(engine.engine(), imports) {
            writeln!(out, "  {name}: {kind}")?;
        }
    }
    Ok((out, world))
}
