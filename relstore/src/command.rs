//! What a relational raft entry carries. Everything an entry needs to be
//! applied is decided before it is proposed (row values, defaults, clock
//! readings); apply only validates versions and writes, so every replica
//! reaches the same state.

use serde::{Deserialize, Serialize};

use crate::schema::{IndexDef, SequenceDef, TableDef, ViewDef};
use crate::value::{Row, Value};

/// One committed read-write transaction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TxnCommit {
    /// The applied index of the snapshot the transaction read.
    pub read_index: u64,
    /// The schema version that snapshot had; any DDL since aborts it.
    pub schema_version: u64,
    /// Point reads: (key space, key, version seen; 0 = absent).
    pub reads: Vec<(u64, Vec<u8>, u64)>,
    /// Tables read by range or in full.
    pub scans: Vec<u64>,
    /// Row writes in order: (table, primary key, new row or deletion).
    pub writes: Vec<(u64, Vec<u8>, Option<Row>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DdlOp {
    /// Ids of the table and its indexes are allocated at apply.
    CreateTable(TableDef),
    DropTable {
        id: u64,
    },
    Truncate {
        ids: Vec<u64>,
    },
    /// A new column, with the value every existing row gets.
    AddColumn {
        table: u64,
        column: crate::schema::ColumnDef,
        fill: Value,
    },
    DropColumn {
        table: u64,
        column: usize,
    },
    /// Replaces the table's constraints (checks, foreign keys), validated
    /// by the SQL layer against the data as of entry `validated_at`; any
    /// change to the table since rejects it (the validation may be stale).
    AlterConstraints {
        table: TableDef,
        validated_at: u64,
    },
    /// Builds the index over existing rows; a duplicate fails it.
    CreateIndex {
        table: u64,
        index: IndexDef,
    },
    DropIndex {
        table: u64,
        index: u64,
    },
    CreateSequence(SequenceDef),
    AlterSequence(SequenceDef, Option<i64>),
    DropSequence {
        id: u64,
    },
    CreateView(ViewDef),
    DropView {
        schema: String,
        name: String,
    },
    CommentTable {
        table: u64,
        comment: Option<String>,
    },
    CommentColumn {
        table: u64,
        column: String,
        comment: Option<String>,
    },
    CommentDatabase {
        database: String,
        comment: Option<String>,
    },
    /// `CREATE OR REPLACE VIEW`: a view of that name may exist, a table
    /// may not. Its comment is kept.
    ReplaceView(ViewDef),
    /// The comment of an index or a sequence, by its id.
    CommentObject {
        id: u64,
        comment: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Commit(TxnCommit),
    Ddl(DdlOp),
    /// Hands out `count` values of a sequence; answered with the first.
    SeqReserve {
        id: u64,
        count: u64,
    },
    /// `setval`: the next value handed out follows `value`.
    SeqSet {
        id: u64,
        value: i64,
    },
    /// Hands out `count` hidden row ids of a table without a primary key.
    RowIds {
        table: u64,
        count: u64,
    },
    /// Writes (Some) or removes (None) entries of the `system` key space.
    PutSystem {
        entries: Vec<(String, Option<Vec<u8>>)>,
    },
}

/// What applying an entry answered.
#[derive(Debug, Clone)]
pub enum Applied {
    Done,
    /// The first and last value of a reserved block (`SeqReserve`).
    Values(i64, i64),
}
