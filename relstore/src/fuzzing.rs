//! What the fuzz targets (`sluice-fuzz`) drive: the state machine, fed
//! entries the way replay at start (or, once replicated, a leader) hands
//! them over. Entries in the log passed a checksum, but one written by a
//! buggy or older build must still be refused, never panic the store.

use std::collections::BTreeMap;

use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase};

use crate::command::{Command, DdlOp, TxnCommit};
use crate::error::Result;
use crate::schema::{ColumnDef, IndexDef, SequenceDef, TableDef};
use crate::state::{load_catalog, State, DEFS};
use crate::value::{encode_key, SqlType, Value};

fn machine() -> Result<State> {
    let db = Database::builder().create_with_backend(InMemoryBackend::new())?;
    State::on(db)
}

/// Applies `entries` from index 1 on a fresh in-memory state machine. An
/// entry's own answer (a rejection) is not an error; a storage failure is.
pub fn apply(entries: &[&[u8]]) -> Result<()> {
    let mut m = machine()?;
    for (i, e) in entries.iter().enumerate() {
        let _answer = m.apply(i as u64 + 1, 1, e)?;
    }
    Ok(())
}

fn column(name: &str, ty: SqlType, nullable: bool) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        ty,
        nullable,
        default: None,
    }
}

/// `accounts (id int8 primary key, owner text unique, balance int8 not
/// null)`, which the seeds and the unit tests use.
pub(crate) fn accounts() -> TableDef {
    TableDef {
        id: 0,
        schema: "public".into(),
        name: "accounts".into(),
        columns: vec![
            column("id", SqlType::Int8, false),
            column("owner", SqlType::Text, true),
            column("balance", SqlType::Int8, false),
        ],
        primary_key: vec![0],
        pk_name: "accounts_pkey".into(),
        hidden_rowid: false,
        indexes: vec![IndexDef {
            id: 0,
            name: "accounts_owner_key".into(),
            columns: vec![1],
            unique: true,
            constraint: true,
        }],
        checks: vec![],
        foreign_keys: vec![],
        comment: None,
        column_comments: BTreeMap::new(),
    }
}

fn row(id: i64, owner: &str, balance: i64) -> (Vec<u8>, Option<Vec<Value>>) {
    (
        encode_key(&[&Value::Int(id)]),
        Some(vec![
            Value::Int(id),
            Value::Text(owner.into()),
            Value::Int(balance),
        ]),
    )
}

/// Entries as the store writes them: how many of the first set up the
/// schema (a target applies those before its input), and every entry.
pub fn seed_entries() -> Result<(usize, Vec<Vec<u8>>)> {
    let enc = |c: &Command| -> Result<Vec<u8>> { Ok(postcard::to_allocvec(c)?) };
    let create = enc(&Command::Ddl(DdlOp::CreateTable(accounts())))?;
    let sequence = enc(&Command::Ddl(DdlOp::CreateSequence(SequenceDef {
        id: 0,
        schema: "public".into(),
        name: "ids".into(),
        increment: 1,
        min: 1,
        max: i64::MAX,
        start: 1,
        cycle: false,
    })))?;
    // The ids the schema got at apply, which the commits below name.
    let mut m = machine()?;
    for (i, e) in [&create, &sequence].into_iter().enumerate() {
        m.apply(i as u64 + 1, 1, e)?
            .map_err(|e| crate::RelError::Storage(format!("seed entry refused: {e}")))?;
    }
    let read = m.database().begin_read()?;
    let cat = load_catalog(&read.open_table(DEFS)?, 0)?;
    let t = cat
        .table("public", "accounts")
        .ok_or_else(|| crate::RelError::Storage("seed table missing".into()))?;
    let (table, index) = (t.id, t.indexes[0].id);
    let seq = cat.sequences.values().next().map(|s| s.id).unwrap_or(0);
    let (k1, r1) = row(1, "ann", 100);
    let (k2, r2) = row(2, "bob", 100);
    let insert = Command::Commit(TxnCommit {
        read_index: 2,
        schema_version: 2,
        reads: vec![(table, k1.clone(), 0), (table, k2.clone(), 0)],
        scans: vec![],
        writes: vec![(table, k1.clone(), r1), (table, k2.clone(), r2)],
    });
    let (_, moved) = row(1, "ann", 60);
    let update = Command::Commit(TxnCommit {
        read_index: 3,
        schema_version: 2,
        reads: vec![(table, k1.clone(), 3)],
        scans: vec![table],
        writes: vec![(table, k1.clone(), moved), (table, k2, None)],
    });
    let mut all = vec![create, sequence];
    for c in [
        insert,
        update,
        Command::SeqReserve { id: seq, count: 32 },
        Command::SeqSet { id: seq, value: 7 },
        Command::RowIds { table, count: 4 },
        Command::PutSystem {
            entries: vec![
                ("role/ops".into(), Some(b"{}".to_vec())),
                ("x".into(), None),
            ],
        },
        Command::Ddl(DdlOp::AddColumn {
            table,
            column: column("note", SqlType::Text, true),
            fill: Value::Null,
        }),
        Command::Ddl(DdlOp::CreateIndex {
            table,
            index: IndexDef {
                id: 0,
                name: "by_balance".into(),
                columns: vec![2],
                unique: false,
                constraint: false,
            },
        }),
        Command::Ddl(DdlOp::DropIndex { table, index }),
        Command::Ddl(DdlOp::DropColumn { table, column: 1 }),
        Command::Ddl(DdlOp::Truncate { ids: vec![table] }),
        Command::Ddl(DdlOp::DropTable { id: table }),
    ] {
        all.push(enc(&c)?);
    }
    Ok((2, all))
}
