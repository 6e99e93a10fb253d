//! The Kafka consumer's state as operators see it: `system.kafka_partitions`
//! and the `sluice_kafka_*` metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use sluice_ingest::kafka::{KafkaStatus, METRICS};
use sluice_query::LiveTable;

pub struct PartitionsTable {
    pub status: Arc<KafkaStatus>,
}

impl LiveTable for PartitionsTable {
    fn name(&self) -> &str {
        "kafka_partitions"
    }

    fn batch(&self) -> Result<RecordBatch, ArrowError> {
        let parts = self.status.snapshot();
        let opt = |v: i64| (v >= 0).then_some(v);
        let schema = Arc::new(Schema::new(vec![
            Field::new("topic", DataType::Utf8, false),
            Field::new("partition", DataType::Int32, false),
            Field::new("assigned", DataType::Boolean, false),
            Field::new("durable_offset", DataType::Int64, true),
            Field::new("committed_offset", DataType::Int64, true),
            Field::new("high_watermark", DataType::Int64, true),
            Field::new("lag", DataType::Int64, true),
            Field::new("messages", DataType::Int64, false),
            Field::new("rows", DataType::Int64, false),
            Field::new("rows_per_second", DataType::Float64, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                parts.iter().map(|p| p.topic.as_str()),
            )),
            Arc::new(Int32Array::from_iter_values(
                parts.iter().map(|p| p.partition),
            )),
            Arc::new(BooleanArray::from_iter(
                parts.iter().map(|p| Some(p.assigned)),
            )),
            Arc::new(Int64Array::from_iter(
                parts.iter().map(|p| opt(p.durable_offset)),
            )),
            Arc::new(Int64Array::from_iter(
                parts.iter().map(|p| opt(p.committed_offset)),
            )),
            Arc::new(Int64Array::from_iter(
                parts.iter().map(|p| opt(p.high_watermark)),
            )),
            Arc::new(Int64Array::from_iter(parts.iter().map(|p| p.lag()))),
            Arc::new(Int64Array::from_iter_values(
                parts.iter().map(|p| p.messages as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                parts.iter().map(|p| p.rows as i64),
            )),
            Arc::new(Float64Array::from_iter_values(
                parts.iter().map(|p| p.rows_per_second),
            )),
        ];
        RecordBatch::try_new(schema, columns)
    }
}

/// Metric name, help, kind and samples (labels, value), for `/metrics`.
pub type Metric = (&'static str, &'static str, &'static str, Vec<(String, f64)>);

pub fn metrics(status: &KafkaStatus) -> Vec<Metric> {
    let load =
        |a: &std::sync::atomic::AtomicU64| vec![(String::new(), a.load(Ordering::Relaxed) as f64)];
    let parts = status.snapshot();
    let per_partition = |f: &dyn Fn(&sluice_ingest::kafka::PartitionStatus) -> Option<f64>| {
        parts
            .iter()
            .filter(|p| p.assigned)
            .filter_map(|p| {
                f(p).map(|v| {
                    (
                        format!(
                            "{{topic=\"{}\",partition=\"{}\"}}",
                            label(&p.topic),
                            p.partition
                        ),
                        v,
                    )
                })
            })
            .collect()
    };
    vec![
        (
            "sluice_kafka_messages_total",
            "Kafka messages made durable (rows or dead letter).",
            "counter",
            load(&METRICS.messages),
        ),
        (
            "sluice_kafka_rows_total",
            "Rows stored from Kafka messages.",
            "counter",
            load(&METRICS.rows),
        ),
        (
            "sluice_kafka_dead_letters_total",
            "Kafka messages (or parts of them) written to system.dead_letters.",
            "counter",
            load(&METRICS.dead_letters),
        ),
        (
            "sluice_kafka_offset_commit_failures_total",
            "Offset commits the group coordinator refused (the rows were durable).",
            "counter",
            load(&METRICS.offset_commit_failures),
        ),
        (
            "sluice_kafka_backpressure_pauses_total",
            "Times the consumer paused its partitions because the shards pushed back.",
            "counter",
            load(&METRICS.backpressure_pauses),
        ),
        (
            "sluice_kafka_lag",
            "Messages of an assigned partition not yet durable in Sluice.",
            "gauge",
            per_partition(&|p| p.lag().map(|l| l as f64)),
        ),
        (
            "sluice_kafka_rows_per_second",
            "Rows per second made durable, per assigned partition.",
            "gauge",
            per_partition(&|p| Some(p.rows_per_second)),
        ),
    ]
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
