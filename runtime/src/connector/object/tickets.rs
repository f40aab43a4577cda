//! Acknowledging object events in each partition's order: an event's offset is stored only
//! once every object it names is durable, and only after every earlier event of its partition.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::connector::Ack;
use crate::sync::Locked;

/// One event's objects still to be made durable, and the event's ack.
pub(super) struct Ticket {
    partition: u32,
    left: AtomicUsize,
    ack: Mutex<Option<Ack>>,
}

/// Events of each partition in the order they were taken: an event's offset is stored only
/// once it and every event before it in its partition are done (storing a later offset
/// first would commit past an unfinished object).
#[derive(Default)]
pub(super) struct Tickets {
    partitions: Mutex<HashMap<u32, VecDeque<Arc<Ticket>>>>,
}

impl Tickets {
    /// An event of `partition` whose `jobs` objects are to be read.
    pub(super) fn issue(&self, partition: u32, jobs: usize, ack: Option<Ack>) -> Arc<Ticket> {
        let ticket = Arc::new(Ticket {
            partition,
            left: AtomicUsize::new(jobs),
            ack: Mutex::new(ack),
        });
        self.lock()
            .entry(partition)
            .or_default()
            .push_back(ticket.clone());
        if jobs == 0 {
            self.release(partition);
        }
        ticket
    }

    /// One of the ticket's objects is durable (or passed over).
    pub(super) fn done(&self, ticket: &Ticket) {
        if ticket.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.release(ticket.partition);
        }
    }

    /// Acknowledges the partition's finished events up to its first unfinished one.
    fn release(&self, partition: u32) {
        let mut acks = Vec::new();
        {
            let mut partitions = self.lock();
            let Some(queue) = partitions.get_mut(&partition) else {
                return;
            };
            while queue
                .front()
                .is_some_and(|t| t.left.load(Ordering::Acquire) == 0)
            {
                if let Some(t) = queue.pop_front() {
                    acks.extend(t.ack.locked().take());
                }
            }
        }
        for ack in acks {
            ack();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, VecDeque<Arc<Ticket>>>> {
        self.partitions.locked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_acknowledged_in_partition_order() {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let ack = |n: u32| -> Option<Ack> {
            let acked = acked.clone();
            Some(Box::new(move || acked.lock().unwrap().push(n)))
        };
        let tickets = Tickets::default();
        let first = tickets.issue(0, 2, ack(1));
        let second = tickets.issue(0, 1, ack(2));
        let other = tickets.issue(1, 1, ack(10));
        tickets.issue(0, 0, ack(3)); // nothing to read: done, but after 1 and 2
        tickets.done(&second);
        tickets.done(&other);
        assert_eq!(*acked.lock().unwrap(), [10]);
        tickets.done(&first);
        assert_eq!(*acked.lock().unwrap(), [10]);
        tickets.done(&first);
        assert_eq!(*acked.lock().unwrap(), [10, 1, 2, 3]);
    }
}
