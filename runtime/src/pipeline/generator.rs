//! A source plugin (such as the mock session generator) as a record source. The read loop
//! paces it (`--rate`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::connector::{BoxFuture, Source, SourceBatch};
use crate::plugin::SourceInstance;
use crate::record::Origin;

/// Pulls records from a source plugin.
pub(crate) struct PluginSource {
    instance: SourceInstance,
    seq: u64,
    /// `PLUGIN@RUN`, where RUN is when this run started (ms since the epoch): positions
    /// (`PLUGIN@RUN#SEQ`) of different runs never collide, so objects named after them do not
    /// overwrite an earlier run's.
    run_name: Arc<str>,
}

/// How fast a source plugin produces unless `--rate` says otherwise.
pub(crate) const DEFAULT_RATE: f64 = 333.0;

/// How long to wait when the plugin has nothing due.
const IDLE_WAIT: Duration = Duration::from_millis(10);

impl PluginSource {
    pub(crate) fn new(instance: SourceInstance) -> Self {
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        // Start time and process: two generators started in the same millisecond by two
        // processes (writing one table, say) must not share positions.
        let run_name = format!("{}@{run}-{}", instance.plugin().name, std::process::id()).into();
        PluginSource {
            instance,
            seq: 0,
            run_name,
        }
    }

    async fn fill(&mut self, max: usize) -> Result<Option<SourceBatch>> {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        loop {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let mut records = tokio::task::block_in_place(|| self.instance.next(max, now_ms))?;
            if records.is_empty() {
                tokio::time::sleep(IDLE_WAIT).await;
                continue;
            }
            for r in &mut records {
                self.seq += 1;
                if r.origin.is_none() {
                    r.origin = Some(Origin::Once(self.run_name.clone(), '#', self.seq));
                }
            }
            return Ok(Some(SourceBatch {
                records,
                ..Default::default()
            }));
        }
    }
}

impl Source for PluginSource {
    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(self.fill(max))
    }
}
