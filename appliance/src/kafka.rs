//! The Kafka consumer's partitions as a table: `system.kafka_partitions`.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use sluice_ingest::kafka::KafkaStatus;
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
