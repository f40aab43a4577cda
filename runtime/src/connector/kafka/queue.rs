//! Every `unsafe` line of the Kafka connector: librdkafka's queues and messages used through
//! its C API where rust-rdkafka has no safe way to do what the source needs.
//!
//! The safety argument, once: queue handles come from a live client and may be used from any
//! thread (librdkafka's queues are thread-safe); the partition queues are reachable from the
//! consumer's context only while the `FetchQueue` owning them lives, and its `drop` takes them
//! out of the context (under the context's lock, which the rebalance hooks also take) before it
//! destroys them, so no hook ever touches a destroyed queue. A fetched message is owned by one
//! `FetchedMessage` and destroyed exactly once; records copy what they keep out of it.

use std::ptr::NonNull;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use bytes::{Bytes, BytesMut};
use rdkafka::bindings as rdsys;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;

use super::GroupConsumer;
use crate::record::{Origin, Record};
use crate::sync::Locked;

/// The handles of a source's partition queues (indexed by partition) and of the queue they
/// forward to while assigned.
pub(super) struct SplitQueues {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    partitions: Vec<NonNull<rdsys::rd_kafka_queue_t>>,
}

// SAFETY: librdkafka queue handles may be used from any thread.
unsafe impl Send for SplitQueues {}

/// The topic's partitions, split off the consumer queue into one queue of ours that is read in
/// bursts (`rd_kafka_consume_batch_queue`): `BaseConsumer::poll` costs an event and several
/// clock reads per record, this neither. Rebalance, commit and error events stay on the
/// consumer queue, whose rebalance hooks (un)hook each partition's queue (`KafkaContext::forward`).
pub(super) struct FetchQueue {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// The handles go before their consumer, and are taken out of its context first.
    consumer: Arc<GroupConsumer>,
}

// SAFETY: as for `SplitQueues`.
unsafe impl Send for FetchQueue {}

impl SplitQueues {
    /// Hooks the queues of `partitions` to the fetch queue (`forward`) or unhooks them.
    /// librdkafka does not carry forwarded partition queues across a rebalance: unhooked on
    /// revoke and hooked again on assign, they keep delivering (confluentinc/librdkafka#1335).
    pub(super) fn forward(&self, partitions: &rdkafka::TopicPartitionList, forward: bool) {
        for e in partitions.elements() {
            let Some(q) = usize::try_from(e.partition())
                .ok()
                .and_then(|p| self.partitions.get(p))
            else {
                continue;
            };
            let to = if forward {
                self.queue.as_ptr()
            } else {
                std::ptr::null_mut()
            };
            // SAFETY: live handles; `FetchQueue::drop` takes them out of the context (and so out
            // of reach of this call) before destroying them.
            unsafe { rdsys::rd_kafka_queue_forward(q.as_ptr(), to) };
        }
    }

    /// Makes a read waiting on the fetch queue return at once.
    pub(super) fn wake(&self) {
        // SAFETY: a live handle, as in `forward`.
        unsafe { rdsys::rd_kafka_queue_yield(self.queue.as_ptr()) };
    }
}

impl FetchQueue {
    pub(super) fn split(
        consumer: &Arc<GroupConsumer>,
        topic: &str,
        partitions: usize,
    ) -> Result<Self> {
        let rk = consumer.client().native_ptr();
        let name = std::ffi::CString::new(topic).context("a topic name with a NUL byte")?;
        // SAFETY: `rk` is a live client; each handle is destroyed in `drop`.
        let split = unsafe {
            let queue = NonNull::new(rdsys::rd_kafka_queue_new(rk))
                .context("librdkafka could not make a queue")?;
            let mut split = SplitQueues {
                queue,
                partitions: Vec::with_capacity(partitions),
            };
            for p in 0..partitions {
                let q = rdsys::rd_kafka_queue_get_partition(rk, name.as_ptr(), p as i32);
                let Some(q) = NonNull::new(q) else { break };
                // Unhooked until assigned: librdkafka then leaves its forwarding to us.
                rdsys::rd_kafka_queue_forward(q.as_ptr(), std::ptr::null_mut());
                split.partitions.push(q);
            }
            split
        };
        let queue = split.queue;
        *consumer.context().split.locked() = Some(split);
        Ok(FetchQueue {
            queue,
            consumer: consumer.clone(),
        })
    }

    /// Appends up to `max` fetched messages to `out`, waiting up to `timeout_ms` for them all.
    pub(super) fn read(&self, timeout_ms: i32, max: usize, out: &mut Vec<FetchedMessage>) -> usize {
        if max == 0 {
            return 0;
        }
        let mut raw: Vec<*mut rdsys::rd_kafka_message_t> = Vec::with_capacity(max);
        // SAFETY: `raw` has room for `max` pointers, and librdkafka wrote the first `n`.
        let n = unsafe {
            let n = rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                raw.as_mut_ptr(),
                max,
            );
            raw.set_len(n.max(0) as usize);
            raw.len()
        };
        out.extend(raw.into_iter().filter_map(NonNull::new).map(FetchedMessage));
        n
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        let split = self.consumer.context().split.locked().take();
        // SAFETY: handles from `split`, no longer reachable from the context, destroyed once.
        if let Some(split) = split {
            unsafe {
                for q in &split.partitions {
                    rdsys::rd_kafka_queue_destroy(q.as_ptr());
                }
                rdsys::rd_kafka_queue_destroy(split.queue.as_ptr());
            }
        }
    }
}

/// A message from `rd_kafka_consume_batch_queue`, destroyed when dropped.
pub(super) struct FetchedMessage(NonNull<rdsys::rd_kafka_message_t>);

impl FetchedMessage {
    pub(super) fn get(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: live until `drop`.
        unsafe { self.0.as_ref() }
    }

    /// A consumer error delivered in place of a record (e.g. an offset out of range).
    pub(super) fn error(&self) -> Option<KafkaError> {
        let err = self.get().err;
        (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| KafkaError::MessageConsumption(err.into()))
    }
}

impl Drop for FetchedMessage {
    fn drop(&mut self) {
        // SAFETY: owned, destroyed once.
        unsafe { rdsys::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}

/// Copies a message out of librdkafka. Keys and values of one poll burst share one buffer
/// (`arena`), so a record costs no allocation of its own for them.
/// `partition` is `TOPIC/PARTITION`, shared by the records of a partition (the origin adds
/// `@OFFSET` when shown).
pub(super) fn to_record(
    m: &rdsys::rd_kafka_message_t,
    partition: &Arc<str>,
    arena: &mut BytesMut,
) -> Record {
    let mut copy = |bytes: &[u8]| {
        if arena.capacity() - arena.len() < bytes.len() {
            arena.reserve(bytes.len().max(ARENA_CHUNK));
        }
        arena.extend_from_slice(bytes);
        arena.split().freeze()
    };
    // SAFETY: librdkafka's pointers are valid for their lengths while `m` lives.
    let bytes = |ptr: *const std::ffi::c_void, len: usize| {
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
    };
    let key = bytes(m.key, m.key_len).map(&mut copy);
    let value = copy(bytes(m.payload, m.len).unwrap_or_default());
    let mut headers = Vec::new();
    let ok = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    // SAFETY: the headers belong to `m`; names are NUL-terminated, values valid for their size.
    unsafe {
        let mut hdrs = std::ptr::null_mut();
        if rdsys::rd_kafka_message_headers(m, &mut hdrs) == ok {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            let mut i = 0;
            while rdsys::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size) == ok {
                let name = std::ffi::CStr::from_ptr(name)
                    .to_string_lossy()
                    .into_owned();
                let value = bytes(value, size).map(Bytes::copy_from_slice);
                headers.push((name, value.unwrap_or_default()));
                i += 1;
            }
        }
    }
    let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    // SAFETY: reads `m`'s own fields.
    let timestamp = unsafe { rdsys::rd_kafka_message_timestamp(m, &mut kind) };
    let known = kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    Record {
        key,
        value,
        headers,
        timestamp_ms: known.then_some(timestamp),
        origin: Some(Origin::At(partition.clone(), '@', m.offset.max(0) as u64)),
        output: None,
    }
}

/// The size of the shared buffers records are copied into.
const ARENA_CHUNK: usize = 1 << 20;

/// The librdkafka message behind one polled from the consumer queue (partitions added after the
/// start arrive there), to copy out like the fetched ones.
pub(super) fn raw_message<'a>(m: &'a BorrowedMessage<'_>) -> &'a rdsys::rd_kafka_message_t {
    // SAFETY: the pointer is the live message `m` borrows, for as long as `m` is borrowed.
    unsafe { &*m.ptr() }
}
