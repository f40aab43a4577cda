//! The event-fed source: object-created events read from a Kafka topic with a consumer group
//! (so any number of processes share a bucket's objects), each object fetched and its rows
//! handed out as the listing source does (`KEY#ROW`, one lane per object). An event's offset
//! is stored only once every row of its objects is durable downstream, in the partition's
//! order; a process that dies mid-object leaves the event to the group's next owner, which
//! reads the object again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use opendal::{ErrorKind, Operator};

use super::events::{self, Created};
use super::rows::OpenObject;
use super::tickets::{Ticket, Tickets};
use super::ObjectUri;
use crate::connector::kafka::{KafkaSource, KafkaUri};
use crate::connector::{Ack, BoxFuture, RecordError, Source, SourceBatch, SourceOptions};
use crate::context::{Context, EndpointMetrics};

/// How many (key, eTag) pairs a process remembers to pass over repeated events.
const RECENT: usize = 100_000;
/// Objects fetched ahead of the one being handed out: fetching overlaps decoding.
const FETCH_AHEAD: usize = 4;
/// How often (at most) the source says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct EventSource {
    uri: ObjectUri,
    /// The events topic, for messages.
    events_uri: String,
    op: Operator,
    events: KafkaSource,
    /// Objects named by the events taken, not fetched yet.
    queue: VecDeque<(Created, Arc<Ticket>)>,
    /// Objects being fetched, in order.
    fetching: VecDeque<Fetch>,
    /// The events topic ended (the source is closing).
    ended: bool,
    current: Option<Reading>,
    tickets: Arc<Tickets>,
    recent: Recent,
    lanes: u32,
    metrics: Arc<EndpointMetrics>,
    objects: u64,
    rows: u64,
    last_progress: Instant,
}

struct Fetch {
    created: Created,
    ticket: Arc<Ticket>,
    data: tokio::task::JoinHandle<opendal::Result<bytes::Bytes>>,
}

struct Reading {
    object: OpenObject,
    lane: u32,
    ticket: Arc<Ticket>,
}

impl EventSource {
    pub async fn open(uri: &ObjectUri, options: &SourceOptions, ctx: &Context) -> Result<Self> {
        let Some(events_uri) = &uri.events else {
            anyhow::bail!("{}: no events= topic", uri.display);
        };
        if options.state.is_some() {
            anyhow::bail!(
                "{}: an event-fed source keeps no progress of its own (the consumer group's \
                 offsets are its progress): drop --state",
                uri.display
            );
        }
        let op = uri.open(ctx).await?;
        let kafka = KafkaUri::parse(events_uri)?;
        // One event at a time: an event stands for a whole object, so read ahead as little
        // as possible (what is read ahead and then revoked is dropped unprocessed).
        let options = SourceOptions {
            batch_size: 1,
            ..options.clone()
        };
        let events = KafkaSource::open_with(&kafka, &options, ctx, true).await?;
        tracing::info!(uri = %uri.display, events = %kafka.uri, "reading objects named by events");
        Ok(EventSource {
            uri: uri.clone(),
            events_uri: format!("kafka://{}/{}", kafka.brokers, kafka.topic),
            op,
            events,
            queue: VecDeque::new(),
            fetching: VecDeque::new(),
            ended: false,
            current: None,
            tickets: Arc::default(),
            recent: Recent::default(),
            lanes: 0,
            metrics: ctx.endpoints.clone(),
            objects: 0,
            rows: 0,
            last_progress: Instant::now(),
        })
    }

    fn count(&self, outcome: &'static str) {
        self.metrics.count_object_event(&self.uri.display, outcome);
    }

    /// Takes the next event: queues the objects it names, or hands out the malformed event as
    /// an error. `None` when the events end (the source is closing).
    async fn take_event(&mut self) -> Result<Option<Option<SourceBatch>>> {
        let Some(batch) = self.events.next_batch(1).await? else {
            return Ok(None);
        };
        let partition = batch.lane;
        let mut records = batch.records.into_iter();
        let Some(event) = records.next() else {
            return Ok(Some(None));
        };
        match events::parse(&event.value) {
            Err(message) => {
                self.count("malformed");
                let ticket = self.tickets.issue(partition, 1, batch.ack);
                let position = event.position();
                tracing::warn!(events = %self.events_uri, position, "{message}");
                let tickets = self.tickets.clone();
                Ok(Some(Some(SourceBatch {
                    records: Vec::new(),
                    error: Some(RecordError {
                        message: format!("{}: {position}: {message}", self.events_uri),
                        position,
                        input: Some(event),
                    }),
                    lane: self.next_lane(),
                    ack: Some(Box::new(move || tickets.done(&ticket))),
                    restart: false,
                    ends_lane: false,
                })))
            }
            Ok(notification) => {
                for _ in 0..notification.other {
                    self.count("ignored");
                }
                let bucket = self.uri.bucket().unwrap_or_default();
                let mut wanted = Vec::new();
                for created in notification.created {
                    if created.bucket != bucket || !self.uri.wants(&created.key) {
                        tracing::debug!(
                            bucket = created.bucket,
                            key = created.key,
                            "not an object of this source: ignored"
                        );
                        self.count("ignored");
                    } else if !self.recent.insert(&created.key, created.etag.as_deref()) {
                        tracing::debug!(key = created.key, "read before in this run: passed over");
                        self.count("repeated");
                    } else {
                        wanted.push(created);
                    }
                }
                let ticket = self.tickets.issue(partition, wanted.len(), batch.ack);
                self.queue
                    .extend(wanted.into_iter().map(|c| (c, ticket.clone())));
                Ok(Some(None))
            }
        }
    }

    fn next_lane(&mut self) -> u32 {
        let lane = self.lanes;
        self.lanes = self.lanes.wrapping_add(1);
        lane
    }

    /// Starts fetching the next queued object.
    fn fetch_next(&mut self) -> bool {
        let Some((created, ticket)) = self.queue.pop_front() else {
            return false;
        };
        let (op, key) = (self.op.clone(), created.key.clone());
        let data = tokio::spawn(async move { op.read(&key).await.map(|b| b.to_bytes()) });
        self.fetching.push_back(Fetch {
            created,
            ticket,
            data,
        });
        true
    }

    /// Opens the first object fetched; one that is gone is reported and passed over.
    async fn open_fetched(&mut self) -> Result<()> {
        let Some(Fetch {
            created,
            ticket,
            data,
        }) = self.fetching.pop_front()
        else {
            return Ok(());
        };
        let data = match data.await? {
            Ok(data) => data,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::warn!(uri = %self.uri.display, key = created.key, "an event names an object that is gone: passed over");
                self.count("missing");
                self.tickets.done(&ticket);
                return Ok(());
            }
            Err(e) => return Err(self.uri.explain(e, &format!("read {}", created.key))),
        };
        self.count("read");
        self.objects += 1;
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            tracing::info!(uri = %self.uri.display, objects_read = self.objects, rows_read = self.rows, "progress");
        }
        self.current = Some(Reading {
            object: OpenObject::new(&created.key, data, self.uri.format, 0),
            lane: self.next_lane(),
            ticket,
        });
        Ok(())
    }
}

impl Source for EventSource {
    fn next_batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<SourceBatch>>> {
        Box::pin(async move {
            loop {
                if let Some(reading) = &mut self.current {
                    let taken = reading.object.take(max, &self.uri.display);
                    self.rows += taken.records.len() as u64;
                    let (lane, ends_lane) = (reading.lane, taken.finished);
                    // Batches of one lane are acknowledged in order: the last one's ack
                    // means the whole object is durable.
                    let ack: Option<Ack> = match taken.finished {
                        false => None,
                        true => {
                            let (tickets, ticket) = (self.tickets.clone(), reading.ticket.clone());
                            self.current = None;
                            Some(Box::new(move || tickets.done(&ticket)))
                        }
                    };
                    return Ok(Some(SourceBatch {
                        records: taken.records,
                        error: taken.error,
                        lane,
                        ack,
                        restart: false,
                        ends_lane,
                    }));
                }
                // Keep objects fetching ahead: queued ones first, then those of new events
                // (waiting for an event only when nothing else is under way).
                while self.fetching.len() < FETCH_AHEAD && !self.ended {
                    if self.fetch_next() {
                        continue;
                    }
                    let taken = match self.fetching.is_empty() {
                        true => self.take_event().await?,
                        // Cancel-safe: only the wait for the next event can be cut short.
                        false => {
                            match tokio::time::timeout(Duration::ZERO, self.take_event()).await {
                                Ok(taken) => taken?,
                                Err(_) => break,
                            }
                        }
                    };
                    match taken {
                        None => self.ended = true,
                        Some(Some(malformed)) => return Ok(Some(malformed)),
                        Some(None) => {}
                    }
                }
                if self.fetching.is_empty() {
                    if self.ended {
                        return Ok(None);
                    }
                    continue;
                }
                self.open_fetched().await?;
            }
        })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            tracing::info!(uri = %self.uri.display, objects_read = self.objects, rows_read = self.rows, "event source done");
            self.events.finish().await
        })
    }
}

/// Objects (key and eTag) read or being read in this run, the oldest forgotten first.
#[derive(Default)]
struct Recent {
    etags: HashMap<String, Option<String>>,
    order: VecDeque<String>,
}

impl Recent {
    /// `false` if this version of the object was seen already.
    fn insert(&mut self, key: &str, etag: Option<&str>) -> bool {
        match self.etags.get_mut(key) {
            Some(seen) if seen.as_deref() == etag => return false,
            Some(seen) => *seen = etag.map(str::to_owned),
            None => {
                self.etags.insert(key.to_owned(), etag.map(str::to_owned));
                self.order.push_back(key.to_owned());
            }
        }
        while self.order.len() > RECENT {
            if let Some(old) = self.order.pop_front() {
                self.etags.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_event_is_passed_over_unless_the_object_changed() {
        let mut recent = Recent::default();
        assert!(recent.insert("a", Some("1")));
        assert!(!recent.insert("a", Some("1")));
        assert!(recent.insert("a", Some("2")));
        assert!(recent.insert("b", None));
        assert!(!recent.insert("b", None));
    }
}
