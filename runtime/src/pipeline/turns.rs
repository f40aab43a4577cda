//! Writing in turn: batches of one ordered stream (stdin) are spread over every worker, so their
//! plugin calls run in parallel, and each worker waits for its batch's turn before writing to
//! the sinks, so outputs leave in the order the input came.

use anyhow::{bail, Result};
use tokio::sync::watch;

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
            bail!("another worker stopped before this batch's turn to write");
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
        assert!(waiting.await.unwrap().is_err());
    }
}
