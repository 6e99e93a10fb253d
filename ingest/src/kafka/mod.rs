//! The built-in Kafka consumer: Sluice reads its routed topics itself and
//! commits a partition's offset only once the rows of every message before
//! it are durable in the shard logs.
//!
//! Redelivery (after a crash, a rebalance, or a failed offset commit) is
//! harmless because it rewrites the same points: rows are keyed by (series,
//! time), the table's dedup policy resolves the repeat, and a line or JSON
//! row that carries no time gets the Kafka message's own timestamp, which is
//! the same on every delivery.
//!
//! Threads of its own: the *poller* owns the librdkafka poll loop and cuts
//! the stream into numbered batches; *parsers* (one per core) turn batches
//! into shard writes in parallel; the *committer* makes each batch durable
//! in poll order and then commits its offsets. Bounded channels between
//! them overlap parsing with the log's fsync and bound memory; while the
//! shards push back, the committer pauses the assigned partitions so
//! librdkafka stops fetching too.

mod commit;
mod consumer;
mod parse;
mod status;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rdkafka::config::ClientConfig;
use sluice_engine::EngineHandle;

use crate::route::Route;
pub use status::{KafkaStatus, PartitionStatus};

#[derive(Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    pub group_id: String,
    /// librdkafka settings, passed as they are (after Sluice's own).
    pub properties: BTreeMap<String, String>,
    /// Each with a `topic`.
    pub routes: Vec<Route>,
    /// Most messages one batch (one write per shard) takes.
    pub max_batch_messages: usize,
    /// Most payload bytes one batch takes.
    pub max_batch_bytes: usize,
}

/// Whether a librdkafka property holds a secret (never shown or logged).
pub fn is_secret(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key == "ssl.key.pem"
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "<redacted>" } else { v }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("properties", &properties)
            .field("routes", &self.routes)
            .field("max_batch_messages", &self.max_batch_messages)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("Kafka route {index} ({topic:?}): {reason}")]
    Route {
        index: usize,
        topic: String,
        reason: String,
    },
    #[error("Kafka: no routes are configured; add [[kafka.routes]] with a `topic`")]
    NoRoutes,
    #[error("Kafka property {key} = {value:?} is not allowed: {reason}")]
    // The value shown is never a secret: only fixed properties are refused.
    Property {
        key: String,
        value: String,
        reason: &'static str,
    },
    #[error("Kafka consumer: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("Kafka consumer thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Totals for `/metrics`; per-partition figures are in [`KafkaStatus`].
pub struct KafkaMetrics {
    pub messages: AtomicU64,
    pub dead_letters: AtomicU64,
    pub offset_commit_failures: AtomicU64,
    pub backpressure_pauses: AtomicU64,
}

pub static METRICS: KafkaMetrics = KafkaMetrics {
    messages: AtomicU64::new(0),
    dead_letters: AtomicU64::new(0),
    offset_commit_failures: AtomicU64::new(0),
    backpressure_pauses: AtomicU64::new(0),
};

/// Settings Sluice's guarantees depend on; a property may not override them.
const FIXED: [(&str, &str, &str); 3] = [
    (
        "enable.auto.commit",
        "false",
        "offsets are committed by Sluice once rows are durable",
    ),
    (
        "enable.auto.offset.store",
        "false",
        "offsets are committed by Sluice once rows are durable",
    ),
    (
        "enable.partition.eof",
        "false",
        "Sluice consumes continuously",
    ),
];

/// Defaults a property may override.
const DEFAULTS: [(&str, &str); 5] = [
    // A new group starts at the beginning of the topic, so data produced
    // before Sluice first ran is not skipped.
    ("auto.offset.reset", "earliest"),
    ("statistics.interval.ms", "1000"),
    // Bounds what librdkafka prefetches per partition.
    ("queued.max.messages.kbytes", "65536"),
    ("session.timeout.ms", "10000"),
    // librdkafka's default (1 s) idles the fetcher each time its queue
    // fills, which stalls a consumer that drains the queue in bursts.
    ("fetch.queue.backoff.ms", "10"),
];

impl KafkaConfig {
    /// The routes by topic, checked.
    fn route_table(&self) -> Result<HashMap<String, Arc<Route>>, KafkaError> {
        if self.routes.is_empty() {
            return Err(KafkaError::NoRoutes);
        }
        let mut out = HashMap::new();
        for (index, r) in self.routes.iter().enumerate() {
            let topic = r.topic.clone().unwrap_or_default();
            let err = |reason: String| KafkaError::Route {
                index,
                topic: topic.clone(),
                reason,
            };
            if topic.is_empty() {
                return Err(err("a Kafka route needs `topic`".into()));
            }
            if r.filter.is_some() {
                return Err(err("`filter` is for MQTT routes; use `topic`".into()));
            }
            if topic.starts_with('^') {
                // librdkafka would subscribe to a pattern, and the messages
                // would arrive under topic names no route claims.
                return Err(err(
                    "topic patterns are not supported; name each topic".into()
                ));
            }
            if r.database.starts_with('{') {
                return Err(err(
                    "a Kafka topic captures nothing; name the database".into()
                ));
            }
            r.validate().map_err(err)?;
            if out.insert(topic.clone(), Arc::new(r.clone())).is_some() {
                return Err(err("another route already consumes this topic".into()));
            }
        }
        Ok(out)
    }

    fn client_config(&self) -> Result<ClientConfig, KafkaError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("client.id", "sluice");
        for (k, v) in DEFAULTS {
            c.set(k, v);
        }
        for (k, v) in &self.properties {
            if let Some((_, fixed, reason)) = FIXED.iter().find(|(f, _, _)| f == k) {
                if !v.eq_ignore_ascii_case(fixed) {
                    return Err(KafkaError::Property {
                        key: k.clone(),
                        value: v.clone(),
                        reason,
                    });
                }
            }
            c.set(k, v);
        }
        for (k, v, _) in FIXED {
            c.set(k, v);
        }
        // librdkafka's bundled OpenSSL looks for CAs under its own build
        // prefix, which no system has; without a CA of the operator's
        // choosing, trust the system's store.
        let tls = c
            .get("security.protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case("ssl") || p.eq_ignore_ascii_case("sasl_ssl"));
        if tls && c.get("ssl.ca.location").is_none() && c.get("ssl.ca.pem").is_none() {
            c.set("ssl.ca.location", "probe");
        }
        Ok(c)
    }
}

/// The running consumer. [`KafkaConsumer::stop`] (or drop) finishes the
/// batch in hand, commits its offsets and leaves the group.
pub struct KafkaConsumer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub status: Arc<KafkaStatus>,
}

impl KafkaConsumer {
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the Kafka consumer thread panicked");
            }
        }
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Checks the configuration, creates the consumer and subscribes (errors
/// here fail startup), then consumes on threads of its own.
pub fn start(cfg: KafkaConfig, engine: EngineHandle) -> Result<KafkaConsumer, KafkaError> {
    let routes = cfg.route_table()?;
    let client = cfg.client_config()?;
    let status = Arc::new(KafkaStatus::default());
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = consumer::create(&client, status.clone())?;
    let topics: Vec<String> = routes.keys().cloned().collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    rdkafka::consumer::Consumer::subscribe(&consumer, &names)?;
    tracing::info!(brokers = %cfg.brokers, group = %cfg.group_id, topics = ?topics, "Kafka consumer subscribed");
    let run = consumer::Run {
        consumer,
        routes,
        engine,
        status: status.clone(),
        stop: stop.clone(),
        max_messages: cfg.max_batch_messages.max(1),
        max_bytes: cfg.max_batch_bytes.max(1),
        crash_after: consumer::failpoint(),
    };
    let thread = std::thread::Builder::new()
        .name("sluice-kafka".into())
        .spawn(move || run.run())?;
    Ok(KafkaConsumer {
        stop,
        thread: Some(thread),
        status,
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::BaseConsumer;

    use super::*;

    fn config(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            group_id: "g".into(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            routes: Vec::new(),
            max_batch_messages: 1,
            max_batch_bytes: 1,
        }
    }

    /// librdkafka refuses, when the client is made, a protocol or a SASL
    /// mechanism it was built without; these must all be in.
    #[test]
    fn tls_and_every_sasl_mechanism_are_built_in() {
        for (protocol, mechanism) in [
            ("ssl", None),
            ("sasl_plaintext", Some("PLAIN")),
            ("sasl_ssl", Some("SCRAM-SHA-256")),
            ("sasl_ssl", Some("SCRAM-SHA-512")),
        ] {
            let mut p = vec![("security.protocol", protocol)];
            if let Some(m) = mechanism {
                p.extend([
                    ("sasl.mechanisms", m),
                    ("sasl.username", "ingest"),
                    ("sasl.password", "s3cret"),
                ]);
            }
            let c = config(&p).client_config().unwrap_or_else(|e| panic!("{e}"));
            if protocol.ends_with("ssl") {
                assert_eq!(c.get("ssl.ca.location"), Some("probe"));
            }
            let made: Result<BaseConsumer, _> = c.create();
            assert!(made.is_ok(), "{protocol} {mechanism:?}: {:?}", made.err());
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = config(&[("sasl.password", "s3cret"), ("sasl.username", "ingest")]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("ingest"), "{shown}");
    }
}
