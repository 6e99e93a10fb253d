//! The poll loop and the committer (see the module above for the design).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Message as _, Timestamp};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_engine::{EngineError, EngineHandle};

use super::status::KafkaStatus;
use super::{KafkaError, METRICS};
use crate::deadletter::Source;
use crate::error::IngestError;
use crate::messages::{Committed, Message, MessageBatch, PreparedMessages};
use crate::route::Route;

/// How long the poller waits for the first message of a batch.
const POLL_IDLE: Duration = Duration::from_millis(100);
/// How long a batch stays open for more messages once it has one.
const LINGER: Duration = Duration::from_millis(20);

/// librdkafka calls back on the poller thread (inside `poll`) and, for
/// commits, on whichever thread polls; both only touch the shared status.
pub(super) struct Ctx {
    status: Arc<KafkaStatus>,
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        self.status.watermarks(&stats);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", %fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", %fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", %fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", %fac, "{log_message}"),
        }
    }
}

impl ConsumerContext for Ctx {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "Kafka partitions assigned");
                self.status.assigned(tpl, true);
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "Kafka partitions revoked");
                self.status.assigned(tpl, false);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Kafka rebalance failed"),
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) type KafkaClient = BaseConsumer<Ctx>;

pub(super) fn create(
    client: &ClientConfig,
    status: Arc<KafkaStatus>,
) -> Result<KafkaClient, KafkaError> {
    Ok(client.create_with_context(Ctx { status })?)
}

/// Test hook: `SLUICE_FAILPOINT_KAFKA_CRASH_AFTER_BATCHES=N` aborts the
/// process after the N-th batch is durable and before its offsets are
/// committed, the worst moment for duplicates.
pub(super) fn failpoint() -> Option<u64> {
    std::env::var("SLUICE_FAILPOINT_KAFKA_CRASH_AFTER_BATCHES")
        .ok()?
        .parse()
        .ok()
}

pub(super) struct Run {
    pub consumer: KafkaClient,
    pub routes: HashMap<String, Arc<Route>>,
    pub engine: EngineHandle,
    pub status: Arc<KafkaStatus>,
    pub stop: Arc<AtomicBool>,
    pub max_messages: usize,
    pub max_bytes: usize,
    pub crash_after: Option<u64>,
}

/// One batch on its way to the committer: the writes, and per partition
/// the next offset to commit and what the batch took from it.
struct Ready {
    writes: PreparedMessages,
    partitions: BTreeMap<(String, i32), Progress>,
}

#[derive(Default)]
struct Progress {
    next_offset: i64,
    messages: u64,
    rows: u64,
}

impl Run {
    pub(super) fn run(self) {
        let Run {
            consumer,
            routes,
            engine,
            status,
            stop,
            max_messages,
            max_bytes,
            crash_after,
        } = self;
        let catalog = engine.catalog().clone();
        let (tx, rx) = flume::bounded::<Ready>(1);
        std::thread::scope(|scope| {
            let committer = Committer {
                consumer: &consumer,
                stop: &stop,
                engine: &engine,
                status: &status,
                crash_after,
                batches: 0,
            };
            scope.spawn(move || committer.run(rx));
            let poller = Poller {
                consumer: &consumer,
                errors: ErrorLog::default(),
                routes: &routes,
                catalog: &catalog,
                shards: engine.shard_count(),
                max_messages,
                max_bytes,
            };
            while !stop.load(Ordering::Relaxed) {
                match poller.batch(&stop) {
                    Ok(Some(ready)) => {
                        if tx.send(ready).is_err() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Only the catalog itself failing gets here; the
                        // messages are not committed and come back.
                        tracing::error!(error = %e, "Kafka batch could not be prepared");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            drop(tx);
        });
        // Everything durable is committed by now; leave the group cleanly.
        consumer.unsubscribe();
        tracing::info!("Kafka consumer stopped");
    }
}

/// Logs consumer errors without flooding the log while a broker is down:
/// a new kind of error at once, a repeat at most every 30 s.
#[derive(Default)]
struct ErrorLog {
    last: std::cell::RefCell<Option<(String, Instant, u64)>>,
}

impl ErrorLog {
    fn report(&self, e: &rdkafka::error::KafkaError) {
        let text = e.to_string();
        let mut last = self.last.borrow_mut();
        match last.as_mut() {
            Some((t, at, n)) if *t == text && at.elapsed() < Duration::from_secs(30) => *n += 1,
            _ => {
                let repeats = last.as_ref().map_or(0, |(_, _, n)| *n);
                tracing::warn!(error = %text, repeats, "Kafka consumer error");
                *last = Some((text, Instant::now(), 0));
            }
        }
    }
}

struct Poller<'a> {
    consumer: &'a KafkaClient,
    errors: ErrorLog,
    routes: &'a HashMap<String, Arc<Route>>,
    catalog: &'a sluice_engine::Catalog,
    shards: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Poller<'_> {
    /// Polls until the batch is full, has lingered long enough, or there
    /// is nothing to read.
    fn batch(&self, stop: &AtomicBool) -> Result<Option<Ready>, IngestError> {
        let mut batch = MessageBatch::new(self.catalog, self.shards, Source::Kafka);
        let mut partitions: BTreeMap<(String, i32), Progress> = BTreeMap::new();
        let mut deadline: Option<Instant> = None;
        while batch.messages() < self.max_messages && batch.bytes() < self.max_bytes {
            let wait = match deadline {
                None => POLL_IDLE,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => break,
                },
            };
            let msg = match self.consumer.poll(wait) {
                None => {
                    if deadline.is_none() && stop.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
                Some(Err(e)) => {
                    self.errors.report(&e);
                    continue;
                }
                Some(Ok(m)) => m,
            };
            deadline.get_or_insert_with(|| Instant::now() + LINGER);
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
        if batch.messages() == 0 {
            return Ok(None);
        }
        Ok(Some(Ready {
            writes: batch.into_writes()?,
            partitions,
        }))
    }
}

struct Committer<'a> {
    consumer: &'a KafkaClient,
    stop: &'a AtomicBool,
    engine: &'a EngineHandle,
    status: &'a KafkaStatus,
    crash_after: Option<u64>,
    batches: u64,
}

impl Committer<'_> {
    fn run(mut self, rx: flume::Receiver<Ready>) {
        // Offsets durable but not yet confirmed by the group coordinator.
        let mut uncommitted: BTreeMap<(String, i32), i64> = BTreeMap::new();
        while let Ok(ready) = rx.recv() {
            match self.write(&ready) {
                Ok(c) => {
                    self.record(&ready, c);
                    for (key, p) in &ready.partitions {
                        uncommitted.insert(key.clone(), p.next_offset);
                    }
                    self.batches += 1;
                    if self.crash_after == Some(self.batches) {
                        tracing::error!("failpoint: aborting after a durable batch, before its offsets are committed");
                        std::process::abort();
                    }
                    // Synchronous, so the status shows what the coordinator
                    // confirmed; the poller parses the next batch meanwhile.
                    self.commit(&mut uncommitted);
                }
                Err(e) => {
                    // Only when stopping: not committed, so redelivered.
                    tracing::warn!(error = %e, "Kafka batch left uncommitted at shutdown");
                    break;
                }
            }
        }
        if !uncommitted.is_empty() {
            self.commit(&mut uncommitted);
        }
    }

    /// Commits `uncommitted`; on success it is emptied. On failure the rows
    /// are still durable: the next commit covers these offsets, and a
    /// redelivery before it rewrites the same points. Partitions this
    /// consumer no longer owns are dropped, since their commits can only fail.
    fn commit(&self, uncommitted: &mut BTreeMap<(String, i32), i64>) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in uncommitted.iter() {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!(error = %e, %topic, partition, "bad Kafka offset");
            }
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                self.status.committed(&tpl);
                uncommitted.clear();
            }
            Err(e) => {
                METRICS
                    .offset_commit_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, partitions = %describe(&tpl), "Kafka offset commit failed");
                if let Ok(owned) = self.consumer.assignment() {
                    let owned: Vec<(String, i32)> = owned
                        .elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition()))
                        .collect();
                    uncommitted.retain(|k, _| owned.contains(k));
                }
            }
        }
    }

    /// Writes the batch. Backpressure and failures are waited out with the
    /// partitions paused (so librdkafka stops fetching): a later batch must
    /// never commit offsets past one that is not durable. Gives up only when
    /// stopping, leaving the batch uncommitted.
    fn write(&self, ready: &Ready) -> Result<Committed, IngestError> {
        let mut delay = Duration::from_millis(5);
        let mut paused: Option<TopicPartitionList> = None;
        let result = loop {
            let err = match futures::executor::block_on(ready.writes.write(self.engine)) {
                Ok(c) => break Ok(c),
                Err(e) => e,
            };
            if !matches!(err, IngestError::Engine(EngineError::Backpressure { .. })) {
                tracing::error!(error = %err, retry_in = ?delay, "Kafka messages could not be stored");
            }
            if self.stop.load(Ordering::Relaxed) {
                break Err(err);
            }
            if paused.is_none() {
                if let Ok(assignment) = self.consumer.assignment() {
                    METRICS.backpressure_pauses.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.consumer.pause(&assignment) {
                        tracing::warn!(error = %e, "Kafka pause failed");
                    }
                    tracing::info!("Kafka partitions paused until the shards take writes again");
                    paused = Some(assignment);
                }
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(2));
        };
        if let Some(tpl) = paused {
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(error = %e, "Kafka resume failed");
            }
            tracing::info!("Kafka partitions resumed");
        }
        result
    }

    fn record(&self, ready: &Ready, c: Committed) {
        METRICS
            .messages
            .fetch_add(c.messages as u64, Ordering::Relaxed);
        METRICS.rows.fetch_add(c.rows as u64, Ordering::Relaxed);
        METRICS
            .dead_letters
            .fetch_add(c.dead_letters as u64, Ordering::Relaxed);
        for ((topic, partition), p) in &ready.partitions {
            self.status
                .consumed(topic, *partition, p.next_offset, p.messages, p.rows);
        }
    }
}
