//! What the consumer knows about each partition, for `system.kafka_partitions`
//! and `/metrics`: assignment, the durable and committed offsets, the high
//! watermark (from librdkafka's statistics), the lag behind it, and rates.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub assigned: bool,
    /// Offset after the last message whose rows are durable (-1: none yet).
    pub durable_offset: i64,
    /// Offset the group coordinator last confirmed (-1: none yet).
    pub committed_offset: i64,
    /// Offset after the newest message in the partition (-1: unknown yet).
    pub high_watermark: i64,
    pub messages: u64,
    pub rows: u64,
    /// Rows per second made durable, over the last statistics interval.
    pub rows_per_second: f64,
}

impl PartitionStatus {
    /// Messages in the partition that are not durable in Sluice yet.
    pub fn lag(&self) -> Option<i64> {
        (self.high_watermark >= 0).then(|| {
            let done = self.durable_offset.max(self.committed_offset).max(0);
            (self.high_watermark - done).max(0)
        })
    }
}

#[derive(Default)]
struct Entry {
    status: PartitionStatus,
    rate_rows: u64,
    rate_at: Option<Instant>,
}

#[derive(Default)]
pub struct KafkaStatus {
    parts: Mutex<BTreeMap<(String, i32), Entry>>,
}

impl KafkaStatus {
    fn with<F: FnMut(&mut Entry)>(&self, topic: &str, partition: i32, mut f: F) {
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        let e = parts
            .entry((topic.to_string(), partition))
            .or_insert_with(|| Entry {
                status: PartitionStatus {
                    topic: topic.to_string(),
                    partition,
                    durable_offset: -1,
                    committed_offset: -1,
                    high_watermark: -1,
                    ..Default::default()
                },
                ..Default::default()
            });
        f(e);
    }

    /// Every partition ever assigned to this consumer, in order.
    pub fn snapshot(&self) -> Vec<PartitionStatus> {
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        parts.values().map(|e| e.status.clone()).collect()
    }

    pub(super) fn assigned(&self, tpl: &TopicPartitionList, assigned: bool) {
        for el in tpl.elements() {
            self.with(el.topic(), el.partition(), |e| e.status.assigned = assigned);
        }
    }

    pub(super) fn committed(&self, tpl: &TopicPartitionList) {
        for el in tpl.elements() {
            if let Offset::Offset(o) = el.offset() {
                self.with(el.topic(), el.partition(), |e| {
                    e.status.committed_offset = e.status.committed_offset.max(o)
                });
            }
        }
    }

    pub(super) fn consumed(
        &self,
        topic: &str,
        partition: i32,
        next_offset: i64,
        messages: u64,
        rows: u64,
    ) {
        self.with(topic, partition, |e| {
            e.status.durable_offset = e.status.durable_offset.max(next_offset);
            e.status.messages += messages;
            e.status.rows += rows;
        });
    }

    /// librdkafka's periodic statistics carry each partition's high
    /// watermark as its last fetch saw it (right even where a broker's
    /// ListOffsets answer is not, as on tansu); they also pace the rate.
    pub(super) fn watermarks(&self, stats: &Statistics) {
        let now = Instant::now();
        for (name, topic) in &stats.topics {
            for (&partition, p) in &topic.partitions {
                // librdkafka's internal UA partition (-1) is not a partition.
                if partition < 0 || p.hi_offset < 0 {
                    continue;
                }
                // The committed offset is librdkafka's too: after a restart
                // it is what the group had committed before, which this
                // process never committed itself.
                self.with(name, partition, |e| {
                    e.status.high_watermark = p.hi_offset;
                    e.status.committed_offset = e.status.committed_offset.max(p.committed_offset);
                });
            }
        }
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        for e in parts.values_mut() {
            if let Some(at) = e.rate_at {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    e.status.rows_per_second =
                        e.status.rows.saturating_sub(e.rate_rows) as f64 / secs;
                }
            }
            e.rate_rows = e.status.rows;
            e.rate_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_what_is_durable() {
        let s = KafkaStatus::default();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 0);
        s.assigned(&tpl, true);
        let p = &s.snapshot()[0];
        assert!(p.assigned);
        assert_eq!(p.lag(), None);
        s.with("t", 0, |e| e.status.high_watermark = 100);
        assert_eq!(s.snapshot()[0].lag(), Some(100));
        s.consumed("t", 0, 40, 40, 400);
        assert_eq!(s.snapshot()[0].lag(), Some(60));
        let mut done = TopicPartitionList::new();
        done.add_partition_offset("t", 0, Offset::Offset(40))
            .expect("offset");
        s.committed(&done);
        let p = &s.snapshot()[0];
        assert_eq!(
            (p.committed_offset, p.durable_offset, p.rows),
            (40, 40, 400)
        );
    }
}
