//! `system.dead_letters`: messages (or the parts of them) that could not
//! become rows, kept durable and queryable so that a bad device or producer
//! can be found and its data replayed, while everything else keeps flowing.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, Ordering};

use sluice_engine::EngineHandle;

use crate::error::IngestError;
use crate::rows::{Row, RowSink, Value};

pub const TABLE: &str = "dead_letters";
/// Payload bytes kept per dead letter.
pub const PAYLOAD_LIMIT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Mqtt,
    Kafka,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Kafka => "kafka",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub source: Source,
    pub topic: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub error: String,
    pub payload: Vec<u8>,
    /// Fixed at creation, so writing the letter again (after backpressure)
    /// rewrites the same row instead of adding one.
    pub time: i64,
}

impl DeadLetter {
    /// `payload` is cut to [`PAYLOAD_LIMIT`] bytes here, so callers may pass
    /// the whole message.
    pub fn new(source: Source, topic: &str, error: String, payload: &[u8]) -> Self {
        DeadLetter {
            source,
            topic: topic.to_string(),
            partition: None,
            offset: None,
            error,
            payload: payload[..payload.len().min(PAYLOAD_LIMIT)].to_vec(),
            time: next_time(),
        }
    }
}

/// Dead letters of one series (source, topic) must not share a timestamp,
/// or the table's dedup policy would keep only one of them.
fn next_time() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = crate::lp::now_ns();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let t = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, t, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return t,
            Err(p) => prev = p,
        }
    }
}

/// Writes `letters` durably to `system.dead_letters`.
pub async fn record(engine: &EngineHandle, letters: Vec<DeadLetter>) -> Result<(), IngestError> {
    if letters.is_empty() {
        return Ok(());
    }
    let prepared = {
        let mut sink = RowSink::system(engine.catalog(), engine.shard_count());
        for (i, l) in letters.iter().enumerate() {
            let mut row = Row {
                time: l.time,
                ..Default::default()
            };
            row.tags
                .push((Cow::Borrowed("source"), Cow::Borrowed(l.source.name())));
            row.tags
                .push((Cow::Borrowed("topic"), Cow::Borrowed(l.topic.as_str())));
            row.fields.push((
                Cow::Borrowed("error"),
                Value::Str(Cow::Borrowed(l.error.as_str())),
            ));
            row.fields.push((
                Cow::Borrowed("payload"),
                Value::Str(String::from_utf8_lossy(&l.payload)),
            ));
            if let Some(p) = l.partition {
                row.fields
                    .push((Cow::Borrowed("partition"), Value::I64(p.into())));
            }
            if let Some(o) = l.offset {
                row.fields.push((Cow::Borrowed("offset"), Value::I64(o)));
            }
            sink.push(i + 1, TABLE, &mut row)?;
        }
        sink.finish()?
    };
    if let Some(r) = prepared.rejected.first() {
        // Only a catalog conflict on the system table itself gets here.
        tracing::error!(reason = %r.reason, "a dead letter could not be stored");
    }
    engine.write(prepared.writes).await?;
    Ok(())
}
