//! From broker hooks to shard writes. Each routed publish becomes a job on a
//! bounded queue; one committer drains whatever is queued into a
//! [`MessageBatch`] (one write per shard, one group commit), parsed on the
//! blocking pool, and answers every job of it once it is durable. QoS 1 and 2 publishers wait for that answer before the
//! broker acknowledges; QoS 0 publishers only wait for queue space, which is
//! how a flood slows down to what the shards can take.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use sluice_engine::{Catalog, EngineError, EngineHandle};

use crate::deadletter::Source;
use crate::error::IngestError;
use crate::messages::{Committed, Message, MessageBatch, PreparedMessages};
use crate::route::Route;

/// Most publishes one batch takes.
const MAX_BATCH_MESSAGES: usize = 8192;
/// Most payload bytes one batch takes.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Batches smaller than this are parsed on the committer's own task.
const INLINE_PARSE_BYTES: usize = 64 << 10;
/// Payload bytes queued or being stored before publishers wait.
const QUEUE_BYTES: usize = 64 << 20;
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
    /// Its share of the queue's byte budget, given back when it is done.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

#[derive(Clone)]
pub struct Pipeline {
    tx: flume::Sender<Job>,
    budget: Arc<tokio::sync::Semaphore>,
}

impl Pipeline {
    /// Starts the committer on the current tokio runtime.
    pub fn start(engine: EngineHandle) -> Pipeline {
        let (tx, rx) = flume::bounded(QUEUE_DEPTH);
        tokio::spawn(committer(engine, rx));
        Pipeline {
            tx,
            budget: Arc::new(tokio::sync::Semaphore::new(QUEUE_BYTES)),
        }
    }

    /// Queues `job`; waits for room when the queue is full, counted in
    /// publishes and in payload bytes, so memory stays bounded whatever
    /// the publishes' sizes.
    pub async fn submit(&self, mut job: Job) -> Result<(), String> {
        let bytes = job.payload.len().clamp(1, QUEUE_BYTES) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| "the ingest pipeline has stopped".to_string())?;
        job.permit = Some(permit);
        self.tx
            .send_async(job)
            .await
            .map_err(|_| "the ingest pipeline has stopped".to_string())
    }
}

/// Drains the queue into batches, parses up to one batch per core at a
/// time off the async threads, and writes them in the order they were
/// taken, so a connection's QoS 0 messages, which do not wait for each
/// other, still reach each shard in order.
async fn committer(engine: EngineHandle, rx: flume::Receiver<Job>) {
    let parsers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let mut parsing: VecDeque<Parsing> = VecDeque::new();
    loop {
        while parsing.len() < parsers {
            let first = if parsing.is_empty() {
                match rx.recv_async().await {
                    Ok(j) => j,
                    Err(_) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            let jobs = drain(first, &rx);
            let catalog = engine.catalog().clone();
            let shards = engine.shard_count();
            let bytes: usize = jobs.iter().map(|j| j.payload.len()).sum();
            if bytes < INLINE_PARSE_BYTES {
                // A few small publishes (QoS 1 devices waiting one by one):
                // the hop to the blocking pool would cost more than parsing.
                // As on the pool, a panic drops the batch's jobs (their
                // publishers are refused and resend), not the committer.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    parse(&catalog, shards, jobs)
                })) {
                    Ok(parsed) => parsing.push_back(Parsing::Done(parsed)),
                    Err(_) => tracing::error!("an MQTT batch could not be parsed"),
                }
            } else {
                parsing.push_back(Parsing::Pool(tokio::task::spawn_blocking(move || {
                    parse(&catalog, shards, jobs)
                })));
            }
        }
        let Some(oldest) = parsing.pop_front() else {
            continue;
        };
        // A parse that panicked drops its jobs: their publishers are told
        // the pipeline failed and are disconnected, so they resend.
        let parsed = match oldest {
            Parsing::Done(p) => Ok(p),
            Parsing::Pool(handle) => handle.await,
        };
        let Ok(Parsed { jobs, prepared }) = parsed else {
            tracing::error!("an MQTT batch could not be parsed");
            continue;
        };
        let result = match prepared {
            Ok(p) => write_with_retry(&engine, &p).await,
            Err(e) => Err(e),
        };
        let answer = match result {
            Ok(c) => {
                super::METRICS.record(&c);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, messages = jobs.len(), "MQTT messages could not be stored");
                Err(e.to_string())
            }
        };
        for j in jobs {
            if let Some(done) = j.done {
                let _ = done.send(answer.clone());
            }
        }
    }
}

/// `first` and whatever else is queued, up to a batch's limits.
fn drain(first: Job, rx: &flume::Receiver<Job>) -> Vec<Job> {
    let mut bytes = first.payload.len();
    let mut jobs = vec![first];
    while jobs.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(j) => {
                bytes += j.payload.len();
                jobs.push(j);
            }
            Err(_) => break,
        }
    }
    jobs
}

/// A batch parsed in place, or still parsing on the blocking pool.
enum Parsing {
    Done(Parsed),
    Pool(tokio::task::JoinHandle<Parsed>),
}

struct Parsed {
    jobs: Vec<Job>,
    prepared: Result<PreparedMessages, IngestError>,
}

fn parse(catalog: &Catalog, shards: usize, jobs: Vec<Job>) -> Parsed {
    let prepared = (|| {
        let mut batch = MessageBatch::new(catalog, shards, Source::Mqtt);
        for j in &jobs {
            let msg = Message {
                topic: &j.topic,
                partition: None,
                offset: None,
                payload: &j.payload,
                arrival: j.arrival,
            };
            batch.add(&j.route, &j.captures, &msg)?;
        }
        batch.into_writes()
    })();
    Parsed { jobs, prepared }
}

/// Backpressure is waited out (the jobs' publishers keep waiting, and the
/// queue fills up behind them); other errors are the batch's answer.
async fn write_with_retry(
    engine: &EngineHandle,
    prepared: &PreparedMessages,
) -> Result<Committed, IngestError> {
    let mut delay = Duration::from_millis(5);
    loop {
        match prepared.write(engine).await {
            Err(IngestError::Engine(EngineError::Backpressure { .. })) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}
