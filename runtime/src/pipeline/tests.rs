//! The read loop and the worker, in process: byte cuts, acknowledgements after durability.
use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::record::Record;

#[test]
fn large_batches_are_cut_by_bytes_and_acked_once_at_the_end() {
    let acks = Arc::new(AtomicUsize::new(0));
    let counted = acks.clone();
    let sizes = [300, 300, 500, 2000, 100, 100, 100];
    let batch = SourceBatch {
        records: sizes.iter().map(|&n| Record::new(vec![b'x'; n])).collect(),
        error: Some(crate::connector::RecordError {
            position: "line 8".into(),
            message: "bad".into(),
            input: None,
        }),
        lane: 3,
        ack: Some(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })),
        restart: false,
        ends_lane: false,
    };
    let pieces = split_at_bytes(batch, 1000);
    let lens: Vec<Vec<usize>> = pieces
        .iter()
        .map(|p| p.records.iter().map(|r| r.value.len()).collect())
        .collect();
    // In order; a record larger than the cap goes alone.
    assert_eq!(
        lens,
        [vec![300, 300], vec![500], vec![2000], vec![100, 100, 100]]
    );
    assert!(pieces.iter().all(|p| p.lane == 3));
    let (last, rest) = pieces.split_last().unwrap();
    assert!(rest.iter().all(|p| p.ack.is_none() && p.error.is_none()));
    assert_eq!(
        last.error.as_ref().map(|e| e.position.as_str()),
        Some("line 8")
    );
    let mut pieces = pieces;
    (pieces.pop().unwrap().ack.unwrap())();
    assert_eq!(acks.load(Ordering::SeqCst), 1);
}

#[test]
fn small_batches_are_left_whole() {
    let batch = SourceBatch {
        records: vec![Record::new(vec![0u8; 10]); 100],
        ..Default::default()
    };
    let pieces = split_at_bytes(batch, 1000);
    assert_eq!(pieces.len(), 1);
    assert_eq!(pieces[0].records.len(), 100);
}

/// A pipeline with no plugins from `source` into `sink`, over two workers, under `fail`.
fn plain(source: Box<dyn Source>, sink: Box<dyn Sink>) -> Pipeline {
    Pipeline {
        source,
        plugins: Vec::new(),
        sink,
        outputs: Vec::new(),
        policy: ErrorPolicy::Fail,
        batch_size: 1024,
        rate: 0.0,
        count: None,
        workers: 2,
        metrics: Arc::default(),
        dead_letters: None,
        progress_every: None,
        checkpointing: None,
    }
}

/// A sink whose writes become durable only when `gate` opens.
#[derive(Clone)]
struct GatedSink {
    gate: watch::Receiver<bool>,
    written: Arc<std::sync::Mutex<Vec<Record>>>,
}

impl Sink for GatedSink {
    fn write<'a>(
        &'a mut self,
        records: &'a [Record],
        _refusals: crate::connector::Refusals,
    ) -> crate::connector::BoxFuture<'a, Result<crate::connector::Written>> {
        self.written.lock().unwrap().extend_from_slice(records);
        let mut gate = self.gate.clone();
        Box::pin(async move {
            Ok(crate::connector::Written {
                rejected: Vec::new(),
                durable: Box::pin(async move {
                    gate.wait_for(|open| *open).await?;
                    Ok(())
                }),
            })
        })
    }

    fn fork(&self) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.clone()))
    }
}

/// Hands out the batches it was given, then ends.
struct Batches(std::collections::VecDeque<SourceBatch>);

impl Source for Batches {
    fn next_batch(
        &mut self,
        _max: usize,
    ) -> crate::connector::BoxFuture<'_, Result<Option<SourceBatch>>> {
        let next = self.0.pop_front();
        Box::pin(async move { Ok(next) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acknowledged_only_once_their_outputs_are_durable() {
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let batches = (0..4u32)
        .map(|id| {
            let acked = acked.clone();
            SourceBatch {
                records: vec![Record::new(format!("{id}")); 3],
                error: None,
                lane: id % 2,
                ack: Some(Box::new(move || acked.lock().unwrap().push(id))),
                restart: false,
                ends_lane: false,
            }
        })
        .collect();
    let (open, gate) = watch::channel(false);
    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pipeline = plain(
        Box::new(Batches(batches)),
        Box::new(GatedSink {
            gate,
            written: written.clone(),
        }),
    );
    let (_never, stop) = watch::channel(false);
    let running = tokio::spawn(pipeline.run(stop));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while written.lock().unwrap().len() < 12 {
        assert!(std::time::Instant::now() < deadline, "not all written");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(acked.lock().unwrap().is_empty(), "acked before durable");
    open.send_replace(true);
    let stats = running.await.unwrap().unwrap();
    let mut acked = acked.lock().unwrap().clone();
    acked.sort();
    assert_eq!(acked, [0, 1, 2, 3]);
    assert_eq!((stats.records_in, stats.records_out), (12, 12));
}

/// Hands out its batches, then fails; counts `finish` calls.
struct FailsAfter {
    batches: std::collections::VecDeque<SourceBatch>,
    finished: Arc<AtomicUsize>,
}

impl Source for FailsAfter {
    fn next_batch(
        &mut self,
        _max: usize,
    ) -> crate::connector::BoxFuture<'_, Result<Option<SourceBatch>>> {
        let next = self.batches.pop_front();
        Box::pin(async move {
            match next {
                Some(batch) => Ok(Some(batch)),
                None => Err(anyhow!("the source broke")),
            }
        })
    }

    fn finish(&mut self) -> crate::connector::BoxFuture<'_, Result<()>> {
        self.finished.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_still_drains_what_it_read_and_finishes() {
    let acked = Arc::new(AtomicUsize::new(0));
    let counted = acked.clone();
    let finished = Arc::new(AtomicUsize::new(0));
    let batch = SourceBatch {
        records: vec![Record::new("1"); 3],
        ack: Some(Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })),
        ..Default::default()
    };
    let (_open, gate) = watch::channel(true);
    let pipeline = plain(
        Box::new(FailsAfter {
            batches: [batch].into(),
            finished: finished.clone(),
        }),
        Box::new(GatedSink {
            gate,
            written: Arc::default(),
        }),
    );
    let (_never, stop) = watch::channel(false);
    let err = pipeline.run(stop).await.unwrap_err();
    assert_eq!(err.to_string(), "the source broke");
    assert_eq!(acked.load(Ordering::SeqCst), 1, "the batch read was acked");
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the source was finished"
    );
}
