//! From broker hooks to shard writes. Each routed publish becomes a job on a
//! bounded queue; one committer drains whatever is queued into a
//! [`MessageBatch`] (one write per shard, one group commit) and answers every
//! job of it once it is durable. QoS 1 and 2 publishers wait for that answer
//! before the broker acknowledges; QoS 0 publishers only wait for queue
//! space, which is how a flood slows down to what the shards can take.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use sluice_engine::{Catalog, EngineError, EngineHandle};

use super::RouteTable;
use crate::deadletter::Source;
use crate::error::IngestError;
use crate::messages::{Committed, Message, MessageBatch, PreparedMessages};
use crate::route::Captures;
use crate::stats::{Frontend, STATS};

/// A topic's database and capture tags, or why it has none.
type Resolved = Result<(String, Captures), String>;

/// Most publishes one batch takes.
const MAX_BATCH_MESSAGES: usize = 8192;
/// Most payload bytes one batch takes.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// A small batch with publishers waiting on it (QoS 1 and 2) waits this long
/// for more before it is written. Connections' windows tend to fall into
/// step with the committer, one connection's window per batch, each batch
/// paying a log sync; the pause lets the next window join (QoS 1, 4
/// connections, window 100: ~89k -> ~99k msgs/s stored and 17 % less
/// server CPU in two A/Bs; 300 us gained nothing). It adds that much to a
/// lone QoS 1 publish's ~1 ms.
const LINGER: Duration = Duration::from_micros(100);
/// Batches of at least this many publishes go at once.
const LINGER_BELOW: usize = 256;
/// Payload bytes queued or being stored before publishers wait.
const QUEUE_BYTES: usize = 64 << 20;
/// Queued publishes before publishers wait.
pub const QUEUE_DEPTH: usize = 16384;

pub struct Job {
    /// Index of the route in the pipeline's [`RouteTable`]. Its captures
    /// are taken from the topic by the committer, not by the broker thread
    /// (which would allocate them there and free them here).
    pub route: usize,
    /// Shares the publish's own string (a reference count, no copy).
    pub topic: rmqtt::types::TopicName,
    pub payload: Bytes,
    pub arrival: i64,
    /// Answered once the job's rows (or its dead letter) are durable.
    pub done: Option<oneshot::Sender<Result<(), String>>>,
    /// Its share of the queue's byte budget, set by [`Pipeline::submit`]
    /// and given back when the job is answered.
    pub charged: usize,
}

#[derive(Clone)]
pub struct Pipeline {
    tx: flume::Sender<Job>,
    budget: Arc<Budget>,
}

/// Payload bytes queued or being stored. A count rather than a tokio
/// semaphore: the semaphore took its mutex for every publish and again for
/// every permit given back, from both broker threads and the committer
/// (5 % of the broker's CPU at QoS 0). Waiters are not served in order; a
/// waiter retries whenever a batch gives bytes back.
struct Budget {
    used: AtomicUsize,
    freed: tokio::sync::Notify,
}

impl Budget {
    fn new() -> Self {
        Budget {
            used: AtomicUsize::new(0),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// Takes `bytes`. A payload larger than the whole budget is let in
    /// when nothing else is queued.
    fn try_take(&self, bytes: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used != 0 && used.saturating_add(bytes) > QUEUE_BYTES {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    async fn take(&self, bytes: usize) {
        while !self.try_take(bytes) {
            // Registered before the second look, so a release between the
            // look and the wait still wakes this waiter.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(bytes) {
                return;
            }
            freed.await;
        }
    }

    fn give_back(&self, bytes: usize) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            self.freed.notify_waiters();
        }
    }
}

impl Pipeline {
    /// Starts the committer on a thread of its own. On the broker's tokio
    /// runtime, its parsing (0.4 ms for a QoS 1 batch of ~100 one-line
    /// publishes, tens of ms for a large QoS 0 batch) held up a worker that
    /// the connections' tasks were queued behind: QoS 1 with 4 connections
    /// went from 70k to 77k msgs/s (medians of 5 interleaved runs) when it
    /// moved here.
    pub fn start(engine: EngineHandle, routes: Arc<RouteTable>) -> std::io::Result<Pipeline> {
        let (tx, rx) = flume::bounded(QUEUE_DEPTH);
        let budget = Arc::new(Budget::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let b = budget.clone();
        std::thread::Builder::new()
            .name("mqtt-commit".into())
            .spawn(move || runtime.block_on(committer(engine, routes, rx, b)))?;
        Ok(Pipeline { tx, budget })
    }

    /// Queues `job`; waits for room when the queue is full, counted in
    /// publishes and in payload bytes, so memory stays bounded whatever
    /// the publishes' sizes.
    pub async fn submit(&self, mut job: Job) -> Result<(), String> {
        let bytes = job.payload.len().max(1);
        self.budget.take(bytes).await;
        job.charged = bytes;
        if self.tx.send_async(job).await.is_err() {
            self.budget.give_back(bytes);
            return Err("the ingest pipeline has stopped".to_string());
        }
        Ok(())
    }
}

/// Drains the queue into one batch at a time, parses it, writes it and
/// answers its jobs. One batch at a time keeps batches as large as the
/// queue allows: what arrives during a write joins the next batch. Parsing
/// ahead (the next batch while this one is written) made QoS 1 slower
/// (56k-58k against ~80k msgs/s: smaller batches, each with the same fixed
/// write cost), and so did keeping several batches in flight, or parsing
/// publishes into an open batch as they arrive; splitting one large batch's
/// parse across two threads ([`parse`]) was faster. benches/README.md has
/// the figures.
async fn committer(
    engine: EngineHandle,
    routes: Arc<RouteTable>,
    rx: flume::Receiver<Job>,
    budget: Arc<Budget>,
) {
    while let Ok(first) = rx.recv_async().await {
        let mut jobs = drain(first, &rx);
        if jobs.len() < LINGER_BELOW && jobs.iter().any(|j| j.done.is_some()) {
            // A blocking sleep: tokio's timer counts in milliseconds, and
            // nothing else runs on this thread between batches.
            std::thread::sleep(LINGER);
            top_up(&mut jobs, &rx);
        }
        let catalog = engine.catalog().clone();
        // A panic while parsing fails the batch: its QoS 1 and 2 publishers
        // are refused and disconnected, so they resend; the committer
        // carries on.
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            parse(&catalog, engine.shard_count(), &routes, &jobs)
        }));
        let result = match parsed {
            Ok(Ok(p)) => write_with_retry(&engine, &p).await,
            Ok(Err(e)) => Err(e),
            Err(_) => {
                tracing::error!(messages = jobs.len(), "an MQTT batch could not be parsed");
                answer_all(&budget, jobs, Err("internal error while parsing".into()));
                continue;
            }
        };
        let answer = match result {
            Ok(c) => {
                super::METRICS.record(&c);
                Ok(())
            }
            Err(e) => {
                STATS.failed(Frontend::Mqtt);
                tracing::error!(error = %e, messages = jobs.len(), "MQTT messages could not be stored");
                Err(e.to_string())
            }
        };
        answer_all(&budget, jobs, answer);
    }
}

/// Answers every job, and gives their bytes back to the queue's budget in
/// one go.
fn answer_all(budget: &Budget, jobs: Vec<Job>, result: Result<(), String>) {
    let mut bytes = 0;
    for j in jobs {
        bytes += j.charged;
        if let Some(done) = j.done {
            let _ = done.send(result.clone());
        }
    }
    budget.give_back(bytes);
}

/// `first` and whatever else is queued, up to a batch's limits.
fn drain(first: Job, rx: &flume::Receiver<Job>) -> Vec<Job> {
    let mut jobs = vec![first];
    top_up(&mut jobs, rx);
    jobs
}

/// Adds what is queued to `jobs`, up to a batch's limits.
fn top_up(jobs: &mut Vec<Job>, rx: &flume::Receiver<Job>) {
    let mut bytes: usize = jobs.iter().map(|j| j.payload.len()).sum();
    while jobs.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(j) => {
                bytes += j.payload.len();
                jobs.push(j);
            }
            Err(_) => break,
        }
    }
}

/// Batches with at least this many payload bytes are parsed in two halves
/// at once. Parsing is most of a large batch's time (6,000 one-line
/// messages: 28 ms of parsing, 5 ms of writing), and it ran on the
/// committer's one task while the broker, busy reading sockets, left the
/// other core partly idle. Smaller batches are not worth a thread.
const SPLIT_PARSE_BYTES: usize = 512 << 10;

fn parse(
    catalog: &Catalog,
    shards: usize,
    routes: &RouteTable,
    jobs: &[Job],
) -> Result<PreparedMessages, IngestError> {
    let bytes: usize = jobs.iter().map(|j| j.payload.len()).sum();
    if jobs.len() >= 2 && bytes >= SPLIT_PARSE_BYTES {
        let (first, second) = jobs.split_at(jobs.len() / 2);
        std::thread::scope(|s| {
            let later = s.spawn(|| prepare(catalog, shards, routes, second));
            let earlier = prepare(catalog, shards, routes, first);
            // A panic over there is re-raised here, for the committer's
            // guard to catch like one of its own.
            let later = later
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let mut all = earlier?;
            all.append(later?);
            Ok(all)
        })
    } else {
        prepare(catalog, shards, routes, jobs)
    }
}

fn prepare(
    catalog: &Catalog,
    shards: usize,
    routes: &RouteTable,
    jobs: &[Job],
) -> Result<PreparedMessages, IngestError> {
    let mut batch = MessageBatch::new(catalog, shards, Source::Mqtt);
    // A device publishes to the same topic again and again: its captures,
    // and the database and tags they resolve to, are worked out once for a
    // run of its messages.
    let mut last: Option<(usize, &str, Resolved)> = None;
    for j in jobs {
        let msg = Message {
            topic: &j.topic,
            partition: None,
            offset: None,
            payload: &j.payload,
            arrival: j.arrival,
        };
        let Some((pattern, route)) = routes.get(j.route) else {
            batch.add_unrouted(&msg);
            continue;
        };
        if last
            .as_ref()
            .is_none_or(|(r, t, _)| *r != j.route || *t != msg.topic)
        {
            let captures = pattern.matches(msg.topic).unwrap_or_default();
            let resolved = route
                .resolve(&captures)
                .map(|(db, tags)| (db.to_string(), tags));
            last = Some((j.route, msg.topic, resolved));
        }
        let Some((_, _, resolved)) = &last else {
            continue;
        };
        let resolved = resolved
            .as_ref()
            .map(|(db, tags)| (db.as_str(), tags.as_slice()))
            .map_err(String::as_str);
        batch.add_resolved(route, resolved, &msg)?;
    }
    batch.into_writes()
}

/// Backpressure is waited out (the jobs' publishers keep waiting, and the
/// queue fills up behind them); other errors are the batch's answer.
async fn write_with_retry(
    engine: &EngineHandle,
    prepared: &PreparedMessages,
) -> Result<Committed, IngestError> {
    let mut delay = Duration::from_millis(5);
    loop {
        match prepared.write(engine, Frontend::Mqtt).await {
            Err(IngestError::Engine(EngineError::Backpressure { .. })) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Format, Route};

    fn job(payload: String) -> Job {
        Job {
            route: 0,
            topic: "ingest/farm".into(),
            payload: Bytes::from(payload),
            arrival: 1_700_000_000_000_000_000,
            done: None,
            charged: 0,
        }
    }

    #[tokio::test]
    async fn a_full_budget_holds_publishers_until_a_batch_gives_bytes_back() {
        let budget = Arc::new(Budget::new());
        budget.take(QUEUE_BYTES - 10).await;
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.take(100).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "100 bytes do not fit in 10");
        budget.give_back(QUEUE_BYTES - 10);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiter is woken when bytes come back")
            .unwrap();
        assert_eq!(budget.used.load(Ordering::Relaxed), 100);
        // More than the whole budget goes in alone, once the queue is empty.
        assert!(!budget.try_take(2 * QUEUE_BYTES));
        budget.give_back(100);
        assert!(budget.try_take(2 * QUEUE_BYTES));
        assert!(!budget.try_take(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_publishers_and_a_committer_leave_the_budget_empty() {
        let budget = Arc::new(Budget::new());
        let (tx, rx) = flume::unbounded::<usize>();
        let committer = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while let Ok(bytes) = rx.recv_async().await {
                    budget.give_back(bytes);
                    n += 1;
                }
                n
            })
        };
        let publishers: Vec<_> = (0..8)
            .map(|p| {
                let (budget, tx) = (budget.clone(), tx.clone());
                tokio::spawn(async move {
                    for i in 0..2_000 {
                        // Large enough that publishers often find it full.
                        let bytes = QUEUE_BYTES / 3 + p * 1000 + i;
                        budget.take(bytes).await;
                        assert!(budget.used.load(Ordering::Relaxed) <= QUEUE_BYTES);
                        tx.send(bytes).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        for p in publishers {
            tokio::time::timeout(Duration::from_secs(60), p)
                .await
                .expect("no publisher is left waiting")
                .unwrap();
        }
        assert_eq!(committer.await.unwrap(), 16_000);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_large_batch_parsed_in_halves_stores_what_one_pass_stores() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open_dir(dir.path()).unwrap();
        let routes = RouteTable::matching_all(vec![Route {
            filter: None,
            topic: None,
            database: "farm".into(),
            format: Format::LineProtocol,
            table: None,
            time: None,
            tags: vec![],
            precision: None,
        }]);
        let pad = "x".repeat(200);
        let make = || -> Vec<Job> {
            (0..3000)
                .map(|i| {
                    // One poison message in the second half.
                    let line = if i == 2500 {
                        "soil moisture=".to_string()
                    } else {
                        format!("soil,probe=p{} moisture={i},note=\"{pad}\" {i}", i % 7)
                    };
                    job(line)
                })
                .collect()
        };
        let jobs = make();
        let bytes: usize = jobs.iter().map(|j| j.payload.len()).sum();
        assert!(
            bytes >= SPLIT_PARSE_BYTES,
            "the batch must take the split path"
        );
        let split = parse(&catalog, 2, &routes, &jobs).unwrap().committed();
        let whole = prepare(&catalog, 2, &routes, &make()).unwrap().committed();
        let expected = Committed {
            messages: 3000,
            rows: 2999,
            dead_letters: 1,
        };
        assert_eq!(split, expected);
        assert_eq!(whole, expected);
    }
}
