//! From broker hooks to shard writes. Each routed publish becomes a job on a
//! bounded queue; one committer drains whatever is queued into a single
//! [`MessageBatch`] (one write per shard, one group commit) and then answers
//! every job of it. QoS 1 and 2 publishers wait for that answer before the
//! broker acknowledges; QoS 0 publishers only wait for queue space, which is
//! how a flood slows down to what the shards can take.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use sluice_engine::{EngineError, EngineHandle};

use crate::deadletter::Source;
use crate::error::IngestError;
use crate::messages::{Message, MessageBatch};
use crate::route::Route;

/// Most publishes one batch takes.
const MAX_BATCH_MESSAGES: usize = 8192;
/// Most payload bytes one batch takes.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Queued publishes before publishers wait.
pub const QUEUE_DEPTH: usize = 16384;

pub struct Job {
    pub route: Arc<Route>,
    pub captures: Vec<(String, String)>,
    pub topic: String,
    pub payload: Bytes,
    pub arrival: i64,
    /// Answered once the job's rows (or its dead letter) are durable.
    pub done: Option<oneshot::Sender<Result<(), String>>>,
}

#[derive(Clone)]
pub struct Pipeline {
    tx: flume::Sender<Job>,
}

impl Pipeline {
    /// Starts the committer on the current tokio runtime.
    pub fn start(engine: EngineHandle) -> Pipeline {
        let (tx, rx) = flume::bounded(QUEUE_DEPTH);
        tokio::spawn(committer(engine, rx));
        Pipeline { tx }
    }

    /// Queues `job`; waits for room when the queue is full.
    pub async fn submit(&self, job: Job) -> Result<(), String> {
        self.tx
            .send_async(job)
            .await
            .map_err(|_| "the ingest pipeline has stopped".to_string())
    }
}

async fn committer(engine: EngineHandle, rx: flume::Receiver<Job>) {
    while let Ok(first) = rx.recv_async().await {
        let mut jobs = vec![first];
        let mut bytes = jobs[0].payload.len();
        while jobs.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(j) => {
                    bytes += j.payload.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let result = commit_with_retry(&engine, &jobs).await;
        let answer = result.map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = &answer {
            tracing::error!(error = %e, messages = jobs.len(), "MQTT messages could not be stored");
        }
        for j in jobs {
            if let Some(done) = j.done {
                let _ = done.send(answer.clone());
            }
        }
    }
}

/// Backpressure is waited out (the jobs' publishers keep waiting, and the
/// queue fills up behind them); other errors are the batch's answer.
async fn commit_with_retry(
    engine: &EngineHandle,
    jobs: &[Job],
) -> Result<crate::messages::Committed, IngestError> {
    let mut delay = Duration::from_millis(5);
    loop {
        match commit(engine, jobs).await {
            Err(IngestError::Engine(EngineError::Backpressure { .. })) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

async fn commit(
    engine: &EngineHandle,
    jobs: &[Job],
) -> Result<crate::messages::Committed, IngestError> {
    let catalog = engine.catalog().clone();
    let batch = {
        let mut batch = MessageBatch::new(&catalog, engine.shard_count(), Source::Mqtt);
        for j in jobs {
            let msg = Message {
                topic: &j.topic,
                partition: None,
                offset: None,
                payload: &j.payload,
                arrival: j.arrival,
            };
            batch.add(&j.route, &j.captures, &msg)?;
        }
        batch
    };
    let committed = batch.commit(engine).await?;
    super::METRICS.record(&committed);
    Ok(committed)
}
