//! The Kafka preloader: fills a topic with TSBS cpu-only line protocol, N
//! lines per message, so a consumer (Sluice's) can then be timed draining it.
//!
//! Rows come from the same generator as `generate` (so the topic holds
//! exactly the rows of the generated file) and are produced as they are
//! generated, which keeps memory flat for long durations.
//!
//! Two ways to spread the messages over partitions:
//! - `host` (the default): each message holds rows of one host and is keyed
//!   by the host name, so the producer's partitioner hashes the key and a
//!   host's rows stay in order in one partition, as a real per-device
//!   producer would send them. A host's last message holds what is left over
//!   (fewer than `--lines` rows when they do not divide its rows).
//! - `round-robin`: messages are consecutive lines of the file, unkeyed,
//!   message i to partition i mod P.
//!
//! Producing is tuned for a fast preload (batching with a linger, no
//! compression); it is not the figure the benchmark is about.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use crate::generate::{Rows, Values, INTERVAL_NS};
use crate::load::self_cpu_seconds;

/// How messages are assigned to partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Partitioning {
    /// One host per message, keyed by the host name (the partitioner hashes it).
    Host,
    /// Consecutive lines per message, message i to partition i mod P.
    RoundRobin,
}

pub struct ProduceArgs {
    /// Bootstrap servers, host:port[,host:port…].
    pub brokers: String,
    pub topic: String,
    /// Create the topic with this many partitions if it does not exist.
    pub partitions: Option<i32>,
    pub partitioning: Partitioning,
    pub lines: usize,
    pub scale: u32,
    pub duration_s: u64,
    pub seed: u64,
    pub values: Values,
    pub linger_ms: u32,
    pub batch_bytes: u32,
    pub batch_messages: u32,
    /// Further librdkafka settings, applied last.
    pub properties: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Parses `key=value` for `--property`.
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// How long creating the topic may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How many global errors librdkafka may report before the rest are only counted.
const ERRORS_SHOWN: u64 = 5;

/// What the delivery reports said, per partition: (messages, rows).
#[derive(Default)]
struct Delivered {
    by_partition: BTreeMap<i32, (u64, u64)>,
    failed: u64,
    first_failure: Option<String>,
}

/// Receives delivery reports (on the thread that polls) and librdkafka's
/// global errors, which would otherwise go to the `log` crate and so nowhere.
#[derive(Default)]
struct Ctx {
    delivered: Mutex<Delivered>,
    errors: AtomicU64,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n < ERRORS_SHOWN {
            eprintln!("kafka-produce: librdkafka: {error}: {reason}");
        }
    }
}

impl ProducerContext for Ctx {
    /// The rows in the message.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, rows: usize) {
        let mut d = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(m) => {
                let e = d.by_partition.entry(m.partition()).or_default();
                e.0 += 1;
                e.1 += rows as u64;
            }
            Err((e, m)) => {
                d.failed += 1;
                if d.first_failure.is_none() {
                    d.first_failure = Some(format!("partition {}: {e}", m.partition()));
                }
            }
        }
    }
}

fn base_config(args: &ProduceArgs) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.brokers)
        .set("client.id", "sluice-bench");
    c
}

fn producer_config(args: &ProduceArgs) -> ClientConfig {
    let mut c = base_config(args);
    // Large batches after a short wait: a preload wants throughput, not latency.
    c.set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_bytes.to_string())
        .set("batch.num.messages", args.batch_messages.to_string())
        .set("compression.type", "none")
        // Fail a message only when the whole preload would have timed out.
        .set(
            "message.timeout.ms",
            args.timeout.as_millis().min(i32::MAX as u128).to_string(),
        );
    for (k, v) in &args.properties {
        c.set(k, v);
    }
    c
}

/// Creates the topic with `partitions` partitions unless it exists.
fn ensure_topic(args: &ProduceArgs, partitions: i32) -> Result<(), String> {
    let mut config = base_config(args);
    for (k, v) in &args.properties {
        config.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| format!("creating the Kafka admin client: {e}"))?;
    let topic = NewTopic::new(&args.topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    // The admin client completes its futures from a thread of its own; any
    // executor will do, and a current-thread runtime is the smallest.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("starting the tokio runtime: {e}"))?;
    let results = rt
        .block_on(async {
            tokio::time::timeout(2 * ADMIN_TIMEOUT, admin.create_topics([&topic], &opts)).await
        })
        .map_err(|_| format!("creating topic {}: no answer", args.topic))?
        .map_err(|e| {
            format!(
                "creating topic {} (is a broker listening at {}?): {e}",
                args.topic, args.brokers
            )
        })?;
    for r in results {
        match r {
            Ok(_) => eprintln!(
                "kafka-produce: created topic {} with {partitions} partitions",
                args.topic
            ),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating topic {name}: {code}")),
        }
    }
    Ok(())
}

/// The topic's partition count from the brokers' metadata; waits a little,
/// since a topic just created may take a moment to show its partitions.
fn partition_count(producer: &BaseProducer<Ctx>, topic: &str) -> Result<i32, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let md = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| format!("fetching metadata for topic {topic}: {e}"))?;
        let why = match md.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                return i32::try_from(t.partitions().len())
                    .map_err(|_| format!("topic {topic}: too many partitions"))
            }
            Some(t) => match t.error() {
                Some(e) => format!("{:?}", RDKafkaErrorCode::from(e)),
                None => "no partitions".to_string(),
            },
            None => "not in the metadata".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "topic {topic}: {why}; create it first (or pass --partitions)"
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Hands one message to librdkafka, waiting while its queue is full.
fn send(
    producer: &BaseProducer<Ctx>,
    mut record: BaseRecord<'_, str, [u8], usize>,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        match producer.send(record) {
            Ok(()) => {
                // Serves delivery reports, which also frees their memory.
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if Instant::now() >= deadline {
                    return Err("the producer queue stayed full until --timeout".into());
                }
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(format!("producing a message: {e}")),
        }
    }
}

/// A message ready to send: its key (host mode) or partition (round robin).
struct Out<'a> {
    key: Option<&'a str>,
    partition: Option<i32>,
    payload: &'a [u8],
    rows: usize,
}

/// Rows in the data: one per host per interval.
fn total_rows(args: &ProduceArgs) -> Result<u64, String> {
    let epochs = args.duration_s / (INTERVAL_NS as u64 / 1_000_000_000);
    if epochs == 0 {
        return Err("--duration must be at least 10s".into());
    }
    epochs
        .checked_mul(u64::from(args.scale))
        .ok_or_else(|| "--duration x --scale is too large".to_string())
}

/// Generates the rows and cuts them into messages, calling `emit` for each
/// in the order a live producer would send them.
fn messages(
    args: &ProduceArgs,
    partitions: i32,
    mut emit: impl FnMut(Out<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut rows = Rows::new(args.scale, args.seed, args.values)?;
    let total = total_rows(args)?;
    let cap = args.lines.saturating_mul(520).min(64 << 20);
    match args.partitioning {
        Partitioning::Host => {
            let hosts = args.scale as usize;
            let keys: Vec<String> = (0..hosts).map(|h| format!("host_{h}")).collect();
            let mut bufs: Vec<(String, usize)> = (0..hosts).map(|_| (String::new(), 0)).collect();
            // Rows come by time, then host: row k belongs to host k mod scale.
            for k in 0..total {
                let h = (k % hosts as u64) as usize;
                let (buf, n) = &mut bufs[h];
                if buf.capacity() == 0 {
                    buf.reserve(cap);
                }
                rows.next_into(buf);
                *n += 1;
                if *n == args.lines {
                    emit(Out {
                        key: Some(&keys[h]),
                        partition: None,
                        payload: buf.as_bytes(),
                        rows: *n,
                    })?;
                    buf.clear();
                    *n = 0;
                }
            }
            for (h, (buf, n)) in bufs.iter().enumerate() {
                if *n > 0 {
                    emit(Out {
                        key: Some(&keys[h]),
                        partition: None,
                        payload: buf.as_bytes(),
                        rows: *n,
                    })?;
                }
            }
        }
        Partitioning::RoundRobin => {
            let mut buf = String::with_capacity(cap);
            let (mut n, mut index) = (0usize, 0u64);
            for k in 0..total {
                rows.next_into(&mut buf);
                n += 1;
                if n == args.lines || k + 1 == total {
                    emit(Out {
                        key: None,
                        partition: Some((index % partitions as u64) as i32),
                        payload: buf.as_bytes(),
                        rows: n,
                    })?;
                    buf.clear();
                    n = 0;
                    index += 1;
                }
            }
        }
    }
    Ok(())
}

pub fn run(args: &ProduceArgs) -> Result<(), String> {
    if args.lines == 0 {
        return Err("--lines must be at least 1".into());
    }
    if args.partitions.is_some_and(|p| p < 1) {
        return Err("--partitions must be at least 1".into());
    }
    // Bad input fails here, before any connection is tried.
    Rows::new(args.scale, args.seed, args.values)?;
    total_rows(args)?;
    if let Some(p) = args.partitions {
        ensure_topic(args, p)?;
    }
    let producer: BaseProducer<Ctx> = producer_config(args)
        .create_with_context(Ctx::default())
        .map_err(|e| format!("creating the Kafka producer: {e}"))?;
    let partitions = partition_count(&producer, &args.topic)?;
    if let Some(p) = args.partitions {
        if p != partitions {
            eprintln!(
                "kafka-produce: topic {} already existed with {partitions} partitions (not {p})",
                args.topic
            );
        }
    }
    eprintln!(
        "kafka-produce: {} hosts x {} s, {} lines per message ({:?}) -> {} {} ({partitions} partitions)",
        args.scale, args.duration_s, args.lines, args.partitioning, args.brokers, args.topic
    );

    let cpu0 = self_cpu_seconds();
    let started = Instant::now();
    let deadline = started + args.timeout;
    let (mut msgs, mut rows, mut bytes) = (0u64, 0u64, 0u64);
    messages(args, partitions, |m| {
        let mut record = BaseRecord::with_opaque_to(&args.topic, m.rows).payload(m.payload);
        if let Some(k) = m.key {
            record = record.key(k);
        }
        if let Some(p) = m.partition {
            record = record.partition(p);
        }
        send(&producer, record, deadline)?;
        msgs += 1;
        rows += m.rows as u64;
        bytes += m.payload.len() as u64;
        Ok(())
    })?;
    let left = deadline.saturating_duration_since(Instant::now());
    producer.flush(left).map_err(|e| {
        format!(
            "flushing: {e}; {} of {msgs} messages still unacknowledged",
            producer.in_flight_count()
        )
    })?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = self_cpu_seconds() - cpu0;

    let d = producer
        .context()
        .delivered
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let (ok_msgs, ok_rows) = d
        .by_partition
        .values()
        .fold((0, 0), |(m, r), (pm, pr)| (m + pm, r + pr));
    for (p, (pm, pr)) in &d.by_partition {
        eprintln!("  partition {p}: {pm} messages, {pr} rows");
    }
    let errors = producer.context().errors.load(Ordering::Relaxed);
    if errors > ERRORS_SHOWN {
        eprintln!("kafka-produce: librdkafka reported {errors} errors ({ERRORS_SHOWN} shown)");
    }
    if d.failed > 0 || ok_msgs != msgs || ok_rows != rows {
        return Err(format!(
            "{} of {msgs} messages failed ({}); {ok_msgs} messages ({ok_rows} rows) delivered",
            d.failed,
            d.first_failure.as_deref().unwrap_or("no delivery report")
        ));
    }
    println!(
        "produced {msgs} messages ({rows} rows, {:.1} MB) to {} in {secs:.3}s: {:.0} msgs/s, {:.0} rows/s, {:.1} MB/s; producer CPU {cpu:.2}s",
        bytes as f64 / 1e6,
        args.topic,
        msgs as f64 / secs,
        rows as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
    // One line for scripts.
    println!(
        "RESULT mode=kafka-produce topic={} partitions={partitions} lines={} msgs={msgs} rows={rows} bytes={bytes} \
secs={secs:.4} msgs_per_s={:.0} rows_per_s={:.0} loader_cpu_s={cpu:.3}",
        args.topic,
        args.lines,
        msgs as f64 / secs,
        rows as f64 / secs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(partitioning: Partitioning, lines: usize, duration_s: u64) -> ProduceArgs {
        ProduceArgs {
            brokers: "127.0.0.1:9092".into(),
            topic: "cpu".into(),
            partitions: None,
            partitioning,
            lines,
            scale: 3,
            duration_s,
            seed: 1,
            values: Values::Full,
            linger_ms: 20,
            batch_bytes: 1_000_000,
            batch_messages: 10_000,
            properties: Vec::new(),
            timeout: Duration::from_secs(1),
        }
    }

    /// (key, partition, payload) of every message.
    fn collect(a: &ProduceArgs, partitions: i32) -> Vec<(Option<String>, Option<i32>, String)> {
        let mut out = Vec::new();
        messages(a, partitions, |m| {
            let text = std::str::from_utf8(m.payload).unwrap().to_string();
            assert_eq!(text.lines().count(), m.rows);
            out.push((m.key.map(str::to_string), m.partition, text));
            Ok(())
        })
        .unwrap();
        out
    }

    /// Keyed by host: every message holds one host's rows in time order, a
    /// host's leftover rows go in a last, shorter message, and together the
    /// messages hold exactly the generated rows.
    #[test]
    fn host_messages_hold_one_host_in_order() {
        // 3 hosts x 7 epochs, 3 lines per message: per host 3 + 3 + 1.
        let m = collect(&args(Partitioning::Host, 3, 70), 4);
        assert_eq!(m.len(), 9);
        for (key, partition, text) in &m {
            let key = key.as_deref().unwrap();
            assert_eq!(*partition, None);
            let mut last = 0i64;
            for line in text.lines() {
                assert!(line.starts_with(&format!("cpu,hostname={key},")));
                let ts: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
                assert!(ts > last);
                last = ts;
            }
        }
        assert_eq!(m.iter().filter(|x| x.2.lines().count() == 1).count(), 3);
        let mut sent: Vec<String> = m
            .iter()
            .flat_map(|x| x.2.lines().map(str::to_string))
            .collect();
        let mut want = generated(3, 70);
        sent.sort();
        want.sort();
        assert_eq!(sent, want);
    }

    /// Round robin: the file's lines in order, partitions in turn.
    #[test]
    fn round_robin_messages_are_the_file_in_order() {
        let m = collect(&args(Partitioning::RoundRobin, 4, 70), 3);
        // 21 rows: 5 messages of 4 and one of 1.
        assert_eq!(m.len(), 6);
        let parts: Vec<i32> = m.iter().map(|x| x.1.unwrap()).collect();
        assert_eq!(parts, [0, 1, 2, 0, 1, 2]);
        assert!(m.iter().all(|x| x.0.is_none()));
        let sent: Vec<String> = m
            .iter()
            .flat_map(|x| x.2.lines().map(str::to_string))
            .collect();
        assert_eq!(sent, generated(3, 70));
    }

    fn generated(hosts: u32, secs: u64) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!(
            "sluice-bench-kafka-{}-{hosts}-{secs}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cpu.lp");
        crate::generate::generate(hosts, secs, 1, Values::Full, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn properties_and_bad_input() {
        assert_eq!(
            parse_property("acks=1").unwrap(),
            ("acks".to_string(), "1".to_string())
        );
        assert!(parse_property("acks").is_err());
        assert!(parse_property("=1").is_err());
        let mut a = args(Partitioning::Host, 0, 70);
        assert!(run(&a).unwrap_err().contains("--lines"));
        a.lines = 1;
        a.duration_s = 5;
        assert!(messages(&a, 1, |_| Ok(())).unwrap_err().contains("10s"));
        a.duration_s = 70;
        a.scale = 0;
        assert!(messages(&a, 1, |_| Ok(())).is_err());
    }
}
