//! Writing in turn: batches of one ordered stream (stdin) are spread over every worker, so their
//! plugin calls run in parallel, and each worker waits for its batch's turn before writing to
//! the sinks, so outputs leave in the order the input came.

use std::sync::Arc;

use anyhow::Result;
use tokio::sync::watch;

/// Another worker stopped before this batch's turn came: a consequence of that worker's own
/// error (or closed sink), which is the one to report.
#[derive(Debug, thiserror::Error)]
#[error("another worker stopped before this batch's turn to write")]
pub(super) struct TurnsClosed;

/// The next turn to write, or closed (a worker stopped: the turns after its own never come).
pub(super) struct Turns {
    next: watch::Sender<(u64, bool)>,
}

impl Turns {
    pub(super) fn new() -> Self {
        Turns {
            next: watch::Sender::new((0, false)),
        }
    }

    /// Waits until it is `turn`'s turn; fails once the turns are closed.
    pub(super) async fn wait(&self, turn: u64) -> Result<()> {
        let mut rx = self.next.subscribe();
        let (_, closed) = *rx
            .wait_for(|(next, closed)| *next == turn || *closed)
            .await?;
        if closed {
            return Err(TurnsClosed.into());
        }
        Ok(())
    }

    /// The current turn is written: the next one may go.
    pub(super) fn done(&self) {
        self.next.send_modify(|(next, _)| *next += 1);
    }

    /// A worker stopped: nobody waits for turns that will never come.
    pub(super) fn close(&self) {
        self.next.send_modify(|(_, closed)| *closed = true);
    }
}

/// Closes the turns when a worker ends any way but well: an error, or a panic unwinding
/// through it. Without it a worker waiting for a turn that never comes would wait forever.
pub(super) struct CloseUnlessDone(Option<Arc<Turns>>);

impl CloseUnlessDone {
    pub(super) fn new(turns: Option<Arc<Turns>>) -> Self {
        CloseUnlessDone(turns)
    }

    /// The worker ended well: every turn it had was written.
    pub(super) fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseUnlessDone {
    fn drop(&mut self) {
        if let Some(turns) = &self.0 {
            turns.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_happen_in_turn_order_whatever_order_they_are_ready_in() {
        let turns = Arc::new(Turns::new());
        let written = Arc::new(Mutex::new(Vec::new()));
        // Ready in reverse order: turn 4 first, turn 0 last.
        let tasks: Vec<_> = (0..5u64)
            .map(|turn| {
                let (turns, written) = (turns.clone(), written.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50 * (5 - turn))).await;
                    turns.wait(turn).await.unwrap();
                    written.lock().unwrap().push(turn);
                    turns.done();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*written.lock().unwrap(), [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_closed_turnstile_releases_waiters_with_an_error() {
        let turns = Arc::new(Turns::new());
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.wait(3).await })
        };
        turns.close();
        let err = waiting.await.unwrap().unwrap_err();
        assert!(err.is::<TurnsClosed>(), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_that_panics_releases_the_waiters() {
        let turns = Arc::new(Turns::new());
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.wait(1).await })
        };
        let panicking = {
            let turns = turns.clone();
            tokio::spawn(async move {
                let _guard = CloseUnlessDone::new(Some(turns));
                panic!("a plugin host bug");
            })
        };
        assert!(panicking.await.is_err());
        let err = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the waiter was released")
            .unwrap()
            .unwrap_err();
        assert!(err.is::<TurnsClosed>(), "{err}");
    }

    #[tokio::test]
    async fn a_worker_that_ends_well_leaves_the_turns_open() {
        let turns = Arc::new(Turns::new());
        CloseUnlessDone::new(Some(turns.clone())).done();
        turns.wait(0).await.unwrap();
    }
}
