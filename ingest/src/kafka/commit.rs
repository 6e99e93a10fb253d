//! The committer: writes parsed batches in poll order, waits for them to be
//! durable, then commits their offsets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_engine::{EngineError, EngineHandle};

use super::consumer::{describe, KafkaClient};
use super::parse::Ready;
use super::status::KafkaStatus;
use super::METRICS;
use crate::error::IngestError;
use crate::messages::Committed;
use crate::stats::{Frontend, STATS};

pub(super) struct Committer<'a> {
    pub consumer: &'a KafkaClient,
    pub stop: &'a AtomicBool,
    pub engine: &'a EngineHandle,
    pub status: &'a KafkaStatus,
    pub crash_after: Option<u64>,
    pub batches: u64,
    /// One back to the poller per batch done.
    pub credits: flume::Sender<()>,
}

impl Committer<'_> {
    pub fn run(mut self, rx: flume::Receiver<Ready>) {
        // Offsets durable but not yet confirmed by the group coordinator.
        let mut uncommitted: BTreeMap<(String, i32), i64> = BTreeMap::new();
        // Batches parsed ahead of their turn.
        let mut early: BTreeMap<u64, Ready> = BTreeMap::new();
        let mut next_seq = 0u64;
        loop {
            let ready = match early.remove(&next_seq) {
                Some(r) => r,
                None => match rx.recv() {
                    Ok(r) if r.seq == next_seq => r,
                    Ok(r) => {
                        early.insert(r.seq, r);
                        continue;
                    }
                    Err(_) => break,
                },
            };
            next_seq += 1;
            let _ = self.credits.send(());
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
            let err =
                match futures::executor::block_on(ready.writes.write(self.engine, Frontend::Kafka))
                {
                    Ok(c) => break Ok(c),
                    Err(e) => e,
                };
            if !matches!(err, IngestError::Engine(EngineError::Backpressure { .. })) {
                tracing::error!(error = %err, retry_in = ?delay, "Kafka messages could not be stored");
            }
            if self.stop.load(Ordering::Relaxed) {
                STATS.failed(Frontend::Kafka);
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
        METRICS
            .dead_letters
            .fetch_add(c.dead_letters as u64, Ordering::Relaxed);
        for ((topic, partition), p) in &ready.partitions {
            self.status
                .consumed(topic, *partition, p.next_offset, p.messages, p.rows);
        }
    }
}
