//! [`Status`] in the Prometheus text exposition format.

use std::fmt::Write as _;

use super::{ShardStatus, Status};

struct Out(String);

impl Out {
    fn metric(&mut self, name: &str, help: &str, kind: &str, samples: &[(String, f64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(self.0, "{name}{labels} {v}");
        }
    }

    fn single(&mut self, name: &str, help: &str, kind: &str, v: f64) {
        self.metric(name, help, kind, &[(String::new(), v)]);
    }

    fn per_shard(
        &mut self,
        s: &Status,
        name: &str,
        help: &str,
        kind: &str,
        f: fn(&ShardStatus) -> f64,
    ) {
        let samples: Vec<(String, f64)> = s
            .storage
            .shards
            .iter()
            .map(|sh| (format!("{{shard=\"{}\"}}", sh.shard), f(sh)))
            .collect();
        self.metric(name, help, kind, &samples);
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(s: &Status) -> String {
    let mut o = Out(String::new());
    o.per_shard(
        s,
        "sluice_buffer_bytes",
        "Arrow bytes held in memory (buffer and flushing).",
        "gauge",
        |x| x.buffer_bytes as f64,
    );
    o.per_shard(s, "sluice_chunks", "Live chunk files.", "gauge", |x| {
        x.chunks as f64
    });
    o.per_shard(
        s,
        "sluice_chunks_written_total",
        "Chunk files written by flushes.",
        "counter",
        |x| x.chunks_written as f64,
    );
    o.per_shard(
        s,
        "sluice_compactions_total",
        "Compactions finished.",
        "counter",
        |x| x.compactions as f64,
    );
    o.per_shard(
        s,
        "sluice_log_bytes_synced_total",
        "Bytes made durable in the shard log.",
        "counter",
        |x| x.log_bytes_synced as f64,
    );
    o.per_shard(
        s,
        "sluice_log_syncs_total",
        "Group commits of the shard log (write + fdatasync).",
        "counter",
        |x| x.log_syncs as f64,
    );
    o.per_shard(
        s,
        "sluice_log_sync_seconds_total",
        "Time spent in group commits of the shard log.",
        "counter",
        |x| x.log_sync_seconds,
    );
    o.per_shard(
        s,
        "sluice_log_segments_removed_total",
        "Log segments deleted behind chunks.",
        "counter",
        |x| x.log_segments_removed as f64,
    );
    o.per_shard(
        s,
        "sluice_backpressure_rejections_total",
        "Writes refused over the memory limit.",
        "counter",
        |x| x.backpressure_rejections as f64,
    );
    o.per_shard(
        s,
        "sluice_disk_full_rejections_total",
        "Writes refused while the disk was below storage.min_free_bytes.",
        "counter",
        |x| x.disk_full_rejections as f64,
    );
    o.per_shard(
        s,
        "sluice_raft_last_index",
        "Last raft log index.",
        "gauge",
        |x| x.raft_last_index as f64,
    );
    o.single(
        "sluice_query_chunks_from_stats_total",
        "Chunks whose part of an aggregate came from footer statistics.",
        "counter",
        s.query.chunks_from_stats as f64,
    );
    o.single(
        "sluice_query_chunks_decoded_total",
        "Chunks decoded by scans.",
        "counter",
        s.query.chunks_decoded as f64,
    );
    o.single(
        "sluice_queries_total",
        "SQL queries planned.",
        "counter",
        s.query.queries as f64,
    );
    o.single(
        "sluice_sql_point_statements_total",
        "Statements about one relational row by its primary key, run without a DataFusion plan.",
        "counter",
        s.query.point_statements as f64,
    );
    o.single(
        "sluice_http_connections",
        "HTTP connections open.",
        "gauge",
        s.http.open as f64,
    );
    o.single(
        "sluice_http_connections_refused_total",
        "HTTP connections closed at once because a connection limit was reached.",
        "counter",
        s.http.refused as f64,
    );
    o.single(
        "sluice_pg_connections",
        "PostgreSQL protocol connections open.",
        "gauge",
        s.pg.open as f64,
    );
    o.single(
        "sluice_pg_connections_refused_total",
        "PostgreSQL connections refused at once because a connection limit was reached.",
        "counter",
        s.pg.refused as f64,
    );
    o.single(
        "sluice_lp_tcp_connections",
        "Raw TCP line protocol connections open.",
        "gauge",
        s.lp_tcp.open as f64,
    );
    o.single(
        "sluice_lp_tcp_connections_refused_total",
        "Raw TCP line protocol connections closed at once because a connection limit was reached.",
        "counter",
        s.lp_tcp.refused as f64,
    );
    o.single(
        "sluice_mqtt_connections_refused_total",
        "MQTT connections closed at once because a connection limit was reached.",
        "counter",
        s.mqtt_connections.refused as f64,
    );
    o.single(
        "sluice_mqtt_tls_connections",
        "MQTT connections over TLS open.",
        "gauge",
        s.mqtt_tls.open as f64,
    );
    o.single(
        "sluice_mqtt_tls_connections_refused_total",
        "MQTT TLS connections closed at once because a connection limit was reached.",
        "counter",
        s.mqtt_tls.refused as f64,
    );
    let per_frontend = |f: fn(&super::FrontendStatus) -> u64| -> Vec<(String, f64)> {
        s.ingest
            .frontends
            .iter()
            .filter(|fe| fe.enabled)
            .map(|fe| (format!("{{frontend=\"{}\"}}", fe.name), f(fe) as f64))
            .collect()
    };
    o.metric(
        "sluice_ingest_writes_total",
        "Writes made durable, per front end (request, TCP chunk or message batch).",
        "counter",
        &per_frontend(|f| f.writes),
    );
    o.metric(
        "sluice_ingest_rows_total",
        "Rows made durable, per front end.",
        "counter",
        &per_frontend(|f| f.rows),
    );
    o.metric(
        "sluice_ingest_rejected_total",
        "Lines or messages refused as invalid while the valid rest was stored, per front end.",
        "counter",
        &per_frontend(|f| f.rejected_lines),
    );
    o.metric(
        "sluice_ingest_failures_total",
        "Writes that failed as a whole, per front end.",
        "counter",
        &per_frontend(|f| f.failures),
    );
    let dbs: Vec<(String, f64)> = s
        .ingest
        .databases
        .iter()
        .map(|d| {
            (
                format!("{{database=\"{}\"}}", label(&d.name)),
                d.rows as f64,
            )
        })
        .collect();
    o.metric(
        "sluice_ingest_database_rows_total",
        "Rows made durable, per database.",
        "counter",
        &dbs,
    );
    if let Some(m) = &s.mqtt {
        o.single(
            "sluice_mqtt_connections",
            "MQTT clients connected.",
            "gauge",
            m.clients as f64,
        );
        o.single(
            "sluice_mqtt_sessions",
            "MQTT sessions, connected or kept for clients that come back.",
            "gauge",
            m.sessions as f64,
        );
        o.single(
            "sluice_mqtt_subscriptions",
            "MQTT subscriptions of all sessions.",
            "gauge",
            m.subscriptions as f64,
        );
        o.single(
            "sluice_mqtt_messages_stored_total",
            "MQTT publishes on routed topics made durable (rows or dead letter).",
            "counter",
            m.messages_stored as f64,
        );
        o.single(
            "sluice_mqtt_dead_letters_total",
            "MQTT publishes (or parts of them) written to system.dead_letters.",
            "counter",
            m.dead_letters as f64,
        );
    }
    if let Some(k) = &s.kafka {
        o.single(
            "sluice_kafka_messages_total",
            "Kafka messages made durable (rows or dead letter).",
            "counter",
            k.messages as f64,
        );
        o.single(
            "sluice_kafka_dead_letters_total",
            "Kafka messages (or parts of them) written to system.dead_letters.",
            "counter",
            k.dead_letters as f64,
        );
        o.single(
            "sluice_kafka_offset_commit_failures_total",
            "Offset commits the group coordinator refused (the rows were durable).",
            "counter",
            k.offset_commit_failures as f64,
        );
        o.single(
            "sluice_kafka_backpressure_pauses_total",
            "Times the consumer paused its partitions because the shards pushed back.",
            "counter",
            k.backpressure_pauses as f64,
        );
        let per_partition = |f: &dyn Fn(&super::KafkaPartition) -> Option<f64>| {
            k.partitions
                .iter()
                .filter(|p| p.assigned)
                .filter_map(|p| {
                    let labels = format!(
                        "{{topic=\"{}\",partition=\"{}\"}}",
                        label(&p.topic),
                        p.partition
                    );
                    f(p).map(|v| (labels, v))
                })
                .collect::<Vec<_>>()
        };
        o.metric(
            "sluice_kafka_lag",
            "Messages of an assigned partition not yet durable in Sluice.",
            "gauge",
            &per_partition(&|p| p.lag.map(|l| l as f64)),
        );
        o.metric(
            "sluice_kafka_rows_per_second",
            "Rows per second made durable, per assigned partition.",
            "gauge",
            &per_partition(&|p| Some(p.rows_per_second)),
        );
    }
    o.0
}
