//! The librdkafka client and the poll loop; the threads it feeds are in
//! `parse` and `commit` (see the module above for the design).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use sluice_engine::EngineHandle;

use super::commit::Committer;
use super::parse::{Parser, Raw, Ready};
use super::status::KafkaStatus;
use super::KafkaError;
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

pub(super) fn describe(tpl: &TopicPartitionList) -> String {
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
        // Parsing is most of the work: one parser per core, with one batch
        // queued ahead of each.
        let parsers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
        let (raw_tx, raw_rx) = flume::bounded::<Raw>(parsers);
        // Batches between the poller and the committer, whatever order the
        // parsers finish in: the committer holds early ones back, and a slow
        // parser must not let the others fill memory meanwhile.
        let (credit_tx, credit_rx) = flume::bounded::<()>(2 * parsers);
        for _ in 0..2 * parsers {
            let _ = credit_tx.send(());
        }
        let (ready_tx, ready_rx) = flume::bounded::<Ready>(parsers);
        std::thread::scope(|scope| {
            let committer = Committer {
                consumer: &consumer,
                stop: &stop,
                engine: &engine,
                status: &status,
                crash_after,
                batches: 0,
                credits: credit_tx,
            };
            scope.spawn(move || abort_on_panic("committer", || committer.run(ready_rx)));
            for _ in 0..parsers {
                let (rx, tx) = (raw_rx.clone(), ready_tx.clone());
                let parser = Parser {
                    routes: &routes,
                    catalog: &catalog,
                    shards: engine.shard_count(),
                };
                let stop = &stop;
                scope.spawn(move || abort_on_panic("parser", || parser.run(rx, tx, stop)));
            }
            drop((raw_rx, ready_tx));
            let poller = Poller {
                consumer: &consumer,
                errors: ErrorLog::default(),
                max_messages,
                max_bytes,
            };
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let Some(messages) = poller.collect(&stop) else {
                    continue;
                };
                if credit_rx.recv().is_err() || raw_tx.send(Raw { seq, messages }).is_err() {
                    break;
                }
                seq += 1;
            }
            drop(raw_tx);
        });
        // Everything durable is committed by now; leave the group cleanly.
        consumer.unsubscribe();
        tracing::info!("Kafka consumer stopped");
    }
}

/// A consumer thread that panicked would stall the rest silently (the
/// committer waits for its batch forever); a crash and restart redelivers
/// what was not committed, which is the better failure.
fn abort_on_panic<F: FnOnce()>(what: &str, f: F) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::error!("the Kafka {what} thread panicked; aborting");
        std::process::abort();
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
    max_messages: usize,
    max_bytes: usize,
}

impl Poller<'_> {
    /// Polls until the batch is full, has lingered long enough, or there
    /// is nothing to read. Copying the payloads out frees librdkafka's
    /// buffers and lets other threads parse them.
    fn collect(&self, stop: &AtomicBool) -> Option<Vec<OwnedMessage>> {
        let mut messages = Vec::new();
        let mut bytes = 0;
        let mut deadline: Option<Instant> = None;
        while messages.len() < self.max_messages && bytes < self.max_bytes {
            let wait = match deadline {
                None => POLL_IDLE,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => break,
                },
            };
            match self.consumer.poll(wait) {
                None => {
                    if deadline.is_none() && stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Some(Err(e)) => self.errors.report(&e),
                Some(Ok(m)) => {
                    deadline.get_or_insert_with(|| Instant::now() + LINGER);
                    bytes += m.payload_len();
                    messages.push(m.detach());
                }
            }
        }
        (!messages.is_empty()).then_some(messages)
    }
}
