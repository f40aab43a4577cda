//! One pipeline, resolved from the command line or a pipelines file.

use std::path::PathBuf;
use std::time::Duration;

use crate::failure::ErrorPolicy;
use crate::plugin::{Capabilities, Limits};

/// One pipeline, resolved: what `Pipeline` is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    pub name: String,
    pub plugins: Vec<PathBuf>,
    /// Per-plugin limits and settings over the pipeline's, by position (empty: none).
    pub overrides: Vec<PluginOverrides>,
    /// `None`: the first plugin is a source, or stdin.
    pub source: Option<String>,
    pub sink: String,
    /// Named outputs (NAME, URI), in the order given.
    pub outputs: Vec<(String, String)>,
    pub settings: Vec<(String, String)>,
    /// Records per second the source may produce; `None`: the source's own default.
    pub rate: Option<f64>,
    pub count: Option<u64>,
    pub batch_size: u32,
    pub on_error: ErrorPolicy,
    pub dlq: Option<String>,
    pub workers: Option<u32>,
    pub memory_limit_mib: u32,
    pub batch_deadline_ms: u64,
    pub capabilities: Option<Capabilities>,
    pub fuel: Option<u64>,
    pub state: Option<PathBuf>,
    pub stateful: StatefulOptions,
}

/// How a pipeline with stateful plugins keeps their state.
#[derive(Debug, Clone, PartialEq)]
pub struct StatefulOptions {
    /// Where checkpoints go; `None`: beside the sink's data, if it has a place for them.
    pub checkpoints: Option<String>,
    pub checkpoint_every: Duration,
    /// Bytes of state one lane may hold per plugin.
    pub state_limit: usize,
}

/// What one plugin of a pipelines file sets for itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginOverrides {
    pub settings: Vec<(String, String)>,
    pub memory_limit_mib: Option<u32>,
    pub batch_deadline_ms: Option<u64>,
    pub fuel: Option<u64>,
    pub capabilities: Option<Capabilities>,
}

impl PipelineSpec {
    /// The limits of plugin `i`: its own where it sets them, else the pipeline's.
    pub fn plugin_limits(&self, i: usize) -> Limits {
        let o = self.overrides.get(i).cloned().unwrap_or_default();
        Limits {
            memory_bytes: (o.memory_limit_mib.unwrap_or(self.memory_limit_mib) as usize) << 20,
            batch_deadline: Duration::from_millis(
                o.batch_deadline_ms.unwrap_or(self.batch_deadline_ms),
            ),
            fuel: o.fuel.or(self.fuel),
            capabilities: o.capabilities.or(self.capabilities),
        }
    }

    /// The settings plugin `i` gets in `init`: the pipeline's, then its own (which win).
    pub fn plugin_settings(&self, i: usize) -> Vec<(String, String)> {
        let own = self
            .overrides
            .get(i)
            .map(|o| o.settings.clone())
            .unwrap_or_default();
        let mut all: Vec<(String, String)> = self
            .settings
            .iter()
            .filter(|(k, _)| !own.iter().any(|(o, _)| o == k))
            .cloned()
            .collect();
        all.extend(own);
        all
    }

    /// The URIs of its endpoints (source, sink, named outputs, dead letters), for health.
    pub fn endpoints(&self) -> Vec<&str> {
        // No source: stdin or a source plugin, neither of which can be in trouble.
        self.source
            .as_deref()
            .into_iter()
            .chain([self.sink.as_str()])
            .chain(self.outputs.iter().map(|(_, uri)| uri.as_str()))
            .chain(self.dlq.as_deref())
            .collect()
    }

    /// Whether any plugin has a fuel limit (the engine then meters fuel).
    pub fn uses_fuel(&self) -> bool {
        self.fuel.is_some() || self.overrides.iter().any(|o| o.fuel.is_some())
    }

    /// The spec with plugin files and settings left out: what SIGHUP cannot change in place.
    pub fn shape(&self) -> PipelineSpec {
        PipelineSpec {
            plugins: Vec::new(),
            settings: Vec::new(),
            overrides: self
                .overrides
                .iter()
                .map(|o| PluginOverrides {
                    settings: Vec::new(),
                    ..o.clone()
                })
                .collect(),
            ..self.clone()
        }
    }
}
