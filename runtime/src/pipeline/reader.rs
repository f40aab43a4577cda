//! The source, read in a task of its own at the read loop's request: the loop waits for a batch
//! together with signals and checkpoints, and a wait it gives up on cancels nothing (the batch
//! asked for is still read, and handed over at the next wait). Only stopping cancels a read.

use anyhow::{anyhow, Result};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::connector::{Source, SourceBatch};

pub(super) struct Reader {
    want: mpsc::Sender<usize>,
    got: mpsc::Receiver<Result<Option<SourceBatch>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Box<dyn Source>>,
    /// A batch was asked for and not handed over yet.
    asked: bool,
}

impl Reader {
    pub fn start(mut source: Box<dyn Source>) -> Self {
        let (want, mut wanted) = mpsc::channel::<usize>(1);
        let (give, got) = mpsc::channel(1);
        let (stop, mut stopping) = watch::channel(false);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                while let Some(max) = wanted.recv().await {
                    let batch = tokio::select! {
                        biased;
                        _ = stopping.wait_for(|s| *s) => break,
                        batch = source.next_batch(max) => batch,
                    };
                    if give.send(batch).await.is_err() {
                        break;
                    }
                }
                source
            },
            tracing::Span::current(),
        ));
        Reader {
            want,
            got,
            stop,
            task,
            asked: false,
        }
    }

    /// The next batch of at most `max` records (a wait given up on and taken up again gets the
    /// batch asked for the first time); `None` at the end of the input.
    pub async fn next(&mut self, max: usize) -> Result<Option<SourceBatch>> {
        if !self.asked {
            self.want
                .send(max)
                .await
                .map_err(|_| anyhow!("the source reader stopped"))?;
            self.asked = true;
        }
        let got = self.got.recv().await;
        self.asked = false;
        got.unwrap_or(Ok(None))
    }

    /// Stops reading (a read under way is cancelled) and hands the source back.
    pub async fn finish(self) -> Result<Box<dyn Source>> {
        self.stop.send_replace(true);
        drop(self.want);
        drop(self.got);
        self.task
            .await
            .map_err(|e| anyhow!("the source reader panicked: {e}"))
    }
}
