//! One model of the server's live state, read from the counters the parts
//! keep; `/api/v1/status` sends it as JSON and `/metrics` renders it as
//! Prometheus text, so the console and a scraper never disagree.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;
use sluice_engine::ShardStats;
use sluice_ingest::stats::{Frontend, STATS};

use crate::http::AppState;

mod prometheus;
pub use prometheus::render as prometheus;

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_seconds: f64,
    pub now_ms: i64,
    pub auth: bool,
    pub ingest: Ingest,
    pub mqtt: Option<Mqtt>,
    pub kafka: Option<Kafka>,
    pub storage: Storage,
    pub query: QueryCounters,
    /// Dead letters written by every front end.
    pub dead_letters: u64,
    pub http: HttpConnections,
    /// PostgreSQL protocol connections.
    pub pg: HttpConnections,
    /// MQTT connections over TLS (counted where TLS ends).
    pub mqtt_tls: HttpConnections,
    /// Every MQTT connection the broker holds, whatever its transport.
    pub mqtt_connections: HttpConnections,
    /// Raw TCP line protocol connections.
    pub lp_tcp: HttpConnections,
}

impl HttpConnections {
    fn of(c: &crate::conn_limits::Connections) -> HttpConnections {
        HttpConnections {
            open: c.open.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }
}

/// Connections of a front end that accepts them itself.
#[derive(Debug, Serialize)]
pub struct HttpConnections {
    pub open: u64,
    /// Closed at once because a connection limit was reached.
    pub refused: u64,
}

#[derive(Debug, Serialize)]
pub struct Ingest {
    pub frontends: Vec<FrontendStatus>,
    pub databases: Vec<DatabaseRows>,
}

#[derive(Debug, Serialize)]
pub struct FrontendStatus {
    pub name: &'static str,
    pub enabled: bool,
    pub writes: u64,
    pub rows: u64,
    pub rejected_lines: u64,
    pub failures: u64,
}

#[derive(Debug, Serialize)]
pub struct DatabaseRows {
    pub name: String,
    pub rows: u64,
}

#[derive(Debug, Serialize)]
pub struct Mqtt {
    pub addr: String,
    pub clients: u64,
    pub sessions: u64,
    pub subscriptions: u64,
    pub messages_stored: u64,
    pub rows_stored: u64,
    pub dead_letters: u64,
}

#[derive(Debug, Serialize)]
pub struct Kafka {
    pub messages: u64,
    pub rows: u64,
    pub dead_letters: u64,
    pub offset_commit_failures: u64,
    pub backpressure_pauses: u64,
    pub partitions: Vec<KafkaPartition>,
}

#[derive(Debug, Serialize)]
pub struct KafkaPartition {
    pub topic: String,
    pub partition: i32,
    pub assigned: bool,
    pub committed_offset: Option<i64>,
    pub high_watermark: Option<i64>,
    pub lag: Option<i64>,
    pub rows_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct Storage {
    pub buffer_bytes: u64,
    /// Per shard, the buffered bytes above which writes are refused.
    pub memory_limit_bytes: u64,
    pub chunks: u64,
    pub chunks_written: u64,
    pub compactions: u64,
    pub backpressure_rejections: u64,
    pub disk_full_rejections: u64,
    pub log_syncs: u64,
    pub log_bytes_synced: u64,
    pub shards: Vec<ShardStatus>,
}

#[derive(Debug, Serialize)]
pub struct ShardStatus {
    pub shard: usize,
    pub buffer_bytes: u64,
    pub chunks: u64,
    pub chunks_written: u64,
    pub compactions: u64,
    pub backpressure_rejections: u64,
    pub disk_full_rejections: u64,
    pub log_syncs: u64,
    pub log_bytes_synced: u64,
    pub log_sync_seconds: f64,
    pub log_segments_removed: u64,
    pub raft_last_index: u64,
}

#[derive(Debug, Serialize)]
pub struct QueryCounters {
    pub queries: u64,
    pub point_statements: u64,
    pub chunks_from_stats: u64,
    pub chunks_decoded: u64,
}

/// What [`collect`] needs beyond the shared state.
pub struct Started {
    pub at: Instant,
    pub memory_limit_bytes: u64,
    pub tcp_enabled: bool,
}

pub async fn collect(st: &AppState) -> Result<Status, crate::error::ApiError> {
    let shards = st.engine.stats().await?;
    let mqtt = match &st.mqtt {
        Some(broker) => {
            let b = broker.status().await;
            let m = &sluice_ingest::mqtt::METRICS;
            Some(Mqtt {
                addr: broker
                    .local_addr
                    .map_or_else(|| "tls only".to_string(), |a| a.to_string()),
                clients: b.connections,
                sessions: b.sessions,
                subscriptions: b.subscriptions,
                messages_stored: m.messages_stored.load(Ordering::Relaxed),
                rows_stored: STATS.totals(Frontend::Mqtt).rows,
                dead_letters: m.dead_letters.load(Ordering::Relaxed),
            })
        }
        None => None,
    };
    let kafka = st.kafka.as_ref().map(|k| {
        let m = &sluice_ingest::kafka::METRICS;
        let opt = |v: i64| (v >= 0).then_some(v);
        Kafka {
            messages: m.messages.load(Ordering::Relaxed),
            rows: STATS.totals(Frontend::Kafka).rows,
            dead_letters: m.dead_letters.load(Ordering::Relaxed),
            offset_commit_failures: m.offset_commit_failures.load(Ordering::Relaxed),
            backpressure_pauses: m.backpressure_pauses.load(Ordering::Relaxed),
            partitions: k
                .snapshot()
                .into_iter()
                .map(|p| KafkaPartition {
                    lag: p.lag(),
                    committed_offset: opt(p.committed_offset),
                    high_watermark: opt(p.high_watermark),
                    topic: p.topic,
                    partition: p.partition,
                    assigned: p.assigned,
                    rows_per_second: p.rows_per_second,
                })
                .collect(),
        }
    });
    let enabled = |f: Frontend| match f {
        Frontend::Http => true,
        Frontend::Tcp => st.started.tcp_enabled,
        Frontend::Mqtt => mqtt.is_some(),
        Frontend::Kafka => kafka.is_some(),
    };
    let frontends = Frontend::ALL
        .iter()
        .map(|&f| {
            let t = STATS.totals(f);
            FrontendStatus {
                name: f.name(),
                enabled: enabled(f),
                writes: t.writes,
                rows: t.rows,
                rejected_lines: t.rejected,
                failures: t.failures,
            }
        })
        .collect();
    let q = &sluice_query::metrics::METRICS;
    let dead_letters =
        mqtt.as_ref().map_or(0, |m| m.dead_letters) + kafka.as_ref().map_or(0, |k| k.dead_letters);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Ok(Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: st.started.at.elapsed().as_secs_f64(),
        now_ms,
        auth: st.auth_on,
        ingest: Ingest {
            frontends,
            databases: STATS
                .databases()
                .into_iter()
                .map(|(name, rows)| DatabaseRows { name, rows })
                .collect(),
        },
        mqtt,
        kafka,
        storage: storage(&shards, st.started.memory_limit_bytes),
        query: QueryCounters {
            queries: q.queries.load(Ordering::Relaxed),
            point_statements: q.point_statements.load(Ordering::Relaxed),
            chunks_from_stats: q.chunks_from_stats.load(Ordering::Relaxed),
            chunks_decoded: q.chunks_decoded.load(Ordering::Relaxed),
        },
        dead_letters,
        http: HttpConnections::of(&crate::http::server::CONNECTIONS),
        pg: HttpConnections::of(&crate::pg::CONNECTIONS),
        mqtt_tls: HttpConnections::of(&crate::mqtt_tls::CONNECTIONS),
        mqtt_connections: HttpConnections::of(&crate::conn_limits::MQTT),
        lp_tcp: HttpConnections::of(&crate::conn_limits::LP_TCP),
    })
}

fn storage(shards: &[ShardStats], memory_limit_bytes: u64) -> Storage {
    let shards: Vec<ShardStatus> = shards
        .iter()
        .map(|s| ShardStatus {
            shard: s.shard,
            buffer_bytes: s.buffer_bytes as u64,
            chunks: s.chunks as u64,
            chunks_written: s.chunks_written,
            compactions: s.compactions,
            backpressure_rejections: s.backpressure_rejections,
            disk_full_rejections: s.disk_full_rejections,
            log_syncs: s.log_syncs,
            log_bytes_synced: s.log_bytes_synced,
            log_sync_seconds: s.log_sync_seconds,
            log_segments_removed: s.log_segments_removed,
            raft_last_index: s.raft_last_index,
        })
        .collect();
    let sum = |f: &dyn Fn(&ShardStatus) -> u64| shards.iter().map(f).sum::<u64>();
    Storage {
        buffer_bytes: sum(&|s| s.buffer_bytes),
        memory_limit_bytes,
        chunks: sum(&|s| s.chunks),
        chunks_written: sum(&|s| s.chunks_written),
        compactions: sum(&|s| s.compactions),
        backpressure_rejections: sum(&|s| s.backpressure_rejections),
        disk_full_rejections: sum(&|s| s.disk_full_rejections),
        log_syncs: sum(&|s| s.log_syncs),
        log_bytes_synced: sum(&|s| s.log_bytes_synced),
        shards,
    }
}
