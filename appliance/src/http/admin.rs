//! Operations endpoints: an explicit flush and Prometheus metrics.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use sluice_query::metrics::METRICS;

use super::AppState;
use crate::error::ApiError;

/// `POST /api/v1/flush`: every buffer to chunks, then compaction; answers
/// once all of it is durable. For benchmarks, backups and tests.
pub async fn flush(
    State(st): State<Arc<AppState>>,
    Query(p): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    st.authorize(&headers, p.get("p").map(String::as_str))?;
    let started = std::time::Instant::now();
    st.engine.flush().await?;
    Ok(axum::Json(serde_json::json!({
        "flushed": true,
        "seconds": started.elapsed().as_secs_f64(),
    })))
}

fn metric(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics(State(st): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let shards = st.engine.stats().await?;
    let mut out = String::new();
    let per_shard = |f: &dyn Fn(&sluice_engine::ShardStats) -> f64| -> Vec<(String, f64)> {
        shards
            .iter()
            .map(|s| (format!("{{shard=\"{}\"}}", s.shard), f(s)))
            .collect()
    };
    metric(
        &mut out,
        "sluice_buffer_bytes",
        "Arrow bytes held in memory (buffer and flushing).",
        "gauge",
        &per_shard(&|s| s.buffer_bytes as f64),
    );
    metric(
        &mut out,
        "sluice_chunks",
        "Live chunk files.",
        "gauge",
        &per_shard(&|s| s.chunks as f64),
    );
    metric(
        &mut out,
        "sluice_chunks_written_total",
        "Chunk files written by flushes.",
        "counter",
        &per_shard(&|s| s.chunks_written as f64),
    );
    metric(
        &mut out,
        "sluice_compactions_total",
        "Compactions finished.",
        "counter",
        &per_shard(&|s| s.compactions as f64),
    );
    metric(
        &mut out,
        "sluice_log_bytes_synced_total",
        "Bytes made durable in the shard log.",
        "counter",
        &per_shard(&|s| s.log_bytes_synced as f64),
    );
    metric(
        &mut out,
        "sluice_log_syncs_total",
        "Group commits of the shard log (write + fdatasync).",
        "counter",
        &per_shard(&|s| s.log_syncs as f64),
    );
    metric(
        &mut out,
        "sluice_log_sync_seconds_total",
        "Time spent in group commits of the shard log.",
        "counter",
        &per_shard(&|s| s.log_sync_seconds),
    );
    metric(
        &mut out,
        "sluice_log_segments_removed_total",
        "Log segments deleted behind chunks.",
        "counter",
        &per_shard(&|s| s.log_segments_removed as f64),
    );
    metric(
        &mut out,
        "sluice_backpressure_rejections_total",
        "Writes refused over the memory limit.",
        "counter",
        &per_shard(&|s| s.backpressure_rejections as f64),
    );
    metric(
        &mut out,
        "sluice_raft_last_index",
        "Last raft log index.",
        "gauge",
        &per_shard(&|s| s.raft_last_index as f64),
    );
    metric(
        &mut out,
        "sluice_query_chunks_from_stats_total",
        "Chunks whose part of an aggregate came from footer statistics.",
        "counter",
        &[(
            String::new(),
            METRICS.chunks_from_stats.load(Ordering::Relaxed) as f64,
        )],
    );
    metric(
        &mut out,
        "sluice_query_chunks_decoded_total",
        "Chunks decoded by scans.",
        "counter",
        &[(
            String::new(),
            METRICS.chunks_decoded.load(Ordering::Relaxed) as f64,
        )],
    );
    metric(
        &mut out,
        "sluice_queries_total",
        "SQL queries planned.",
        "counter",
        &[(
            String::new(),
            METRICS.queries.load(Ordering::Relaxed) as f64,
        )],
    );
    let mqtt = &sluice_ingest::mqtt::METRICS;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    metric(
        &mut out,
        "sluice_mqtt_messages_stored_total",
        "MQTT publishes on routed topics made durable (rows or dead letter).",
        "counter",
        &[(String::new(), load(&mqtt.messages_stored))],
    );
    metric(
        &mut out,
        "sluice_mqtt_rows_stored_total",
        "Rows stored from MQTT publishes.",
        "counter",
        &[(String::new(), load(&mqtt.rows_stored))],
    );
    metric(
        &mut out,
        "sluice_mqtt_dead_letters_total",
        "MQTT publishes (or parts of them) written to system.dead_letters.",
        "counter",
        &[(String::new(), load(&mqtt.dead_letters))],
    );
    if let Some(status) = &st.kafka {
        for (name, help, kind, samples) in crate::kafka::metrics(status) {
            metric(&mut out, name, help, kind, &samples);
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
