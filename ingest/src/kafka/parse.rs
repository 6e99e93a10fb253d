//! Parse workers: raw Kafka messages in, shard writes out. Batches are
//! parsed in parallel (parsing is most of the consumer's CPU) and numbered,
//! so the committer can still write them in the order they were polled.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Message as _, OwnedMessage, Timestamp};
use sluice_engine::Catalog;

use crate::deadletter::Source;
use crate::error::IngestError;
use crate::messages::{Message, MessageBatch, PreparedMessages};
use crate::route::Route;

/// Messages as polled, numbered in poll order.
pub(super) struct Raw {
    pub seq: u64,
    pub messages: Vec<OwnedMessage>,
}

/// One batch on its way to the committer: the writes, and per partition
/// the next offset to commit and what the batch took from it.
pub(super) struct Ready {
    pub seq: u64,
    pub writes: PreparedMessages,
    pub partitions: BTreeMap<(String, i32), Progress>,
}

#[derive(Default)]
pub(super) struct Progress {
    pub next_offset: i64,
    pub messages: u64,
    pub rows: u64,
}

pub(super) struct Parser<'a> {
    pub routes: &'a HashMap<String, Arc<Route>>,
    pub catalog: &'a Catalog,
    pub shards: usize,
}

impl Parser<'_> {
    /// Parses batches until the poller is gone. A batch that fails (only
    /// the catalog itself failing can do that) is retried, never skipped:
    /// a later batch must not commit offsets past it.
    pub fn run(&self, rx: flume::Receiver<Raw>, tx: flume::Sender<Ready>, stop: &AtomicBool) {
        while let Ok(raw) = rx.recv() {
            let mut delay = Duration::from_millis(100);
            let ready = loop {
                match self.parse(&raw) {
                    Ok(r) => break Some(r),
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?delay, "Kafka batch could not be prepared");
                        if stop.load(Ordering::Relaxed) {
                            break None;
                        }
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
            let Some(r) = ready else { return };
            if tx.send(r).is_err() {
                return;
            }
        }
    }

    fn parse(&self, raw: &Raw) -> Result<Ready, IngestError> {
        let mut batch = MessageBatch::new(self.catalog, self.shards, Source::Kafka);
        let mut partitions: BTreeMap<(String, i32), Progress> = BTreeMap::new();
        for msg in &raw.messages {
            let arrival = match msg.timestamp() {
                Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => {
                    ms.saturating_mul(1_000_000)
                }
                // Only pre-0.10 message formats lack a timestamp; such rows
                // cannot get a time that survives redelivery.
                Timestamp::NotAvailable => crate::lp::now_ns(),
            };
            let m = Message {
                topic: msg.topic(),
                partition: Some(msg.partition()),
                offset: Some(msg.offset()),
                payload: msg.payload().unwrap_or_default(),
                arrival,
            };
            let rows = match self.routes.get(m.topic) {
                Some(route) => batch.add(route, &[], &m)?,
                None => {
                    batch.add_unrouted(&m);
                    0
                }
            };
            let p = partitions
                .entry((m.topic.to_string(), msg.partition()))
                .or_default();
            p.next_offset = msg.offset() + 1;
            p.messages += 1;
            p.rows += rows as u64;
        }
        Ok(Ready {
            seq: raw.seq,
            writes: batch.into_writes()?,
            partitions,
        })
    }
}
