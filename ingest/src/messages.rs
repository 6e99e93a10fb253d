//! Many small messages (MQTT publishes, Kafka records) turned into few shard
//! writes: one sink per database for the whole batch, one write per shard,
//! one group commit. What a message could not store becomes a dead letter
//! that commits with the batch.

use sluice_engine::{Catalog, EngineHandle, WriteBatch};

use crate::deadletter::{self, DeadLetter, Source};
use crate::error::IngestError;
use crate::route::Route;
use crate::rows::RowSink;
use crate::stats::{Frontend, Tally, STATS};

/// One message as its front end received it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub payload: &'a [u8],
    /// Time (ns) of the rows that carry none. Fixed when the message is
    /// received, so a retried or redelivered message rewrites the same points.
    pub arrival: i64,
}

/// A route resolved for one message: its database and the tags its
/// captures add, or why it could not be resolved (see [`Route::resolve`]).
pub type ResolvedRoute<'a> = Result<(&'a str, &'a [(String, String)]), &'a str>;

/// What a committed batch stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub messages: usize,
    pub rows: usize,
    pub dead_letters: usize,
}

pub struct MessageBatch<'c> {
    catalog: &'c Catalog,
    shards: usize,
    source: Source,
    /// One per database; a batch names few, so a list searched by name
    /// costs less per message than hashing the name twice.
    sinks: Vec<(String, RowSink<'c>)>,
    dead: Vec<DeadLetter>,
    messages: usize,
    bytes: usize,
}

/// How many rejected rows a dead letter describes one by one.
const REASONS_PER_LETTER: usize = 5;

impl<'c> MessageBatch<'c> {
    pub fn new(catalog: &'c Catalog, shards: usize, source: Source) -> Self {
        MessageBatch {
            catalog,
            shards,
            source,
            sinks: Vec::new(),
            dead: Vec::new(),
            messages: 0,
            bytes: 0,
        }
    }

    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Payload bytes added so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn dead_letter(&mut self, msg: &Message<'_>, error: String) {
        let mut l = DeadLetter::new(self.source, msg.topic, error, msg.payload);
        l.partition = msg.partition;
        l.offset = msg.offset;
        self.dead.push(l);
    }

    /// Adds a message that no route claims.
    pub fn add_unrouted(&mut self, msg: &Message<'_>) {
        self.messages += 1;
        self.bytes += msg.payload.len();
        self.dead_letter(msg, "no route matches this topic".into());
    }

    /// Adds `msg` under `route` and returns how many of its rows will be
    /// stored. Rows that cannot be stored, or a payload that does not parse,
    /// become a dead letter; only a failure of the catalog itself is an error.
    pub fn add(
        &mut self,
        route: &Route,
        captures: &[(String, String)],
        msg: &Message<'_>,
    ) -> Result<usize, IngestError> {
        let resolved = route.resolve(captures);
        let resolved = resolved
            .as_ref()
            .map(|(db, tags)| (*db, tags.as_slice()))
            .map_err(String::as_str);
        self.add_resolved(route, resolved, msg)
    }

    /// [`MessageBatch::add`] with the route already resolved
    /// ([`Route::resolve`]) to a database and capture tags, or to why not:
    /// for a run of messages that share a topic, and so the resolution.
    pub fn add_resolved(
        &mut self,
        route: &Route,
        resolved: ResolvedRoute<'_>,
        msg: &Message<'_>,
    ) -> Result<usize, IngestError> {
        self.messages += 1;
        self.bytes += msg.payload.len();
        let (db, tags) = match resolved {
            Ok(r) => r,
            Err(e) => {
                self.dead_letter(msg, e.to_string());
                return Ok(0);
            }
        };
        let i = match self.sinks.iter().position(|(name, _)| name == db) {
            Some(i) => i,
            None => match RowSink::new(self.catalog, db, self.shards) {
                Ok(s) => {
                    self.sinks.push((db.to_string(), s));
                    self.sinks.len() - 1
                }
                Err(IngestError::Database(e)) => {
                    self.dead_letter(msg, e);
                    return Ok(0);
                }
                Err(e) => return Err(e),
            },
        };
        let sink = &mut self.sinks[i].1;
        let before = sink.accepted();
        let res = route.prepare_into(sink, msg.payload, tags, msg.arrival);
        let rows = sink.accepted() - before;
        let (count, reasons) = sink.take_rejections();
        match res {
            Ok(()) => {}
            Err(IngestError::Engine(e)) => return Err(IngestError::Engine(e)),
            Err(e) => {
                self.dead_letter(msg, e.to_string());
                return Ok(rows);
            }
        }
        if count > 0 {
            let mut error = reasons
                .iter()
                .take(REASONS_PER_LETTER)
                .map(|r| format!("row {}: {}", r.line, r.reason))
                .collect::<Vec<_>>()
                .join("; ");
            if count > REASONS_PER_LETTER.min(reasons.len()) {
                error.push_str(&format!(" ({count} rows rejected in all)"));
            }
            self.dead_letter(msg, error);
        }
        Ok(rows)
    }

    /// Builds the shard writes, ready to be written (and retried).
    pub fn into_writes(self) -> Result<PreparedMessages, IngestError> {
        let mut committed = Committed {
            messages: self.messages,
            dead_letters: self.dead.len(),
            ..Default::default()
        };
        let mut per_shard: Vec<Vec<sluice_engine::TableBatch>> =
            vec![Vec::new(); self.shards.max(1)];
        for (_, sink) in self.sinks {
            committed.rows += sink.accepted();
            for (shard, tables) in sink.finish_tables()?.0 {
                if let Some(v) = per_shard.get_mut(shard) {
                    v.extend(tables);
                }
            }
        }
        let mut writes = Vec::new();
        for (shard, tables) in per_shard.into_iter().enumerate() {
            if !tables.is_empty() {
                writes.push((shard, WriteBatch::new(tables)?));
            }
        }
        Ok(PreparedMessages {
            writes,
            dead: self.dead,
            committed,
        })
    }
}

/// A batch turned into shard writes.
pub struct PreparedMessages {
    writes: Vec<(usize, WriteBatch)>,
    dead: Vec<DeadLetter>,
    committed: Committed,
}

impl PreparedMessages {
    pub fn committed(&self) -> Committed {
        self.committed
    }

    /// Appends `later`, prepared from the messages that followed this
    /// batch's: its writes go to each shard after this batch's, so the
    /// messages keep their order.
    pub fn append(&mut self, later: PreparedMessages) {
        self.writes.extend(later.writes);
        self.dead.extend(later.dead);
        self.committed.messages += later.committed.messages;
        self.committed.rows += later.committed.rows;
        self.committed.dead_letters += later.committed.dead_letters;
    }

    /// Writes rows, then dead letters, and resolves when both are durable.
    /// Writing again after an error rewrites the same points.
    pub async fn write(
        &self,
        engine: &EngineHandle,
        frontend: Frontend,
    ) -> Result<Committed, IngestError> {
        let tally = Tally::of(&self.writes);
        if !self.writes.is_empty() {
            engine.write(self.writes.clone()).await?;
        }
        deadletter::record(engine, self.dead.clone()).await?;
        STATS.stored(frontend, &tally, self.committed.dead_letters);
        Ok(self.committed)
    }
}
