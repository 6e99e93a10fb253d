//! Rows → per-shard Arrow write batches, shared by every front end.
//!
//! A front end hands each parsed row (table, tags, typed fields, time) to a
//! [`RowSink`]. The sink settles new columns in the catalog (durably, before
//! any batch uses them), rejects a row whose types conflict with its table,
//! routes each series to its shard, and builds one Arrow batch per (shard,
//! table).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, StringDictionaryBuilder, TimestampNanosecondArray, UInt64Builder,
};
use arrow::datatypes::{Field, Int32Type, Schema};
use sluice_engine::catalog::{tag_data_type, time_data_type, validate_name, TIME_COLUMN};
use sluice_engine::{
    Catalog, CatalogSnapshot, ColumnKind, ColumnRequest, EngineError, FieldType, TableBatch,
    WriteBatch,
};

use crate::error::IngestError;

/// At most this many rejected lines are described individually.
pub const MAX_REPORTED_ERRORS: usize = 100;

#[derive(Debug, Clone, serde::Serialize)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

/// A request body turned into shard writes, plus what was refused.
#[derive(Debug, Default)]
pub struct Prepared {
    pub writes: Vec<(usize, WriteBatch)>,
    pub accepted: usize,
    pub rejected: Vec<LineError>,
    pub rejected_total: usize,
}

impl Prepared {
    fn reject(&mut self, line: usize, reason: String) {
        self.rejected_total += 1;
        if self.rejected.len() < MAX_REPORTED_ERRORS {
            self.rejected.push(LineError { line, reason });
        }
    }
}

/// Routes a series to a shard. Stable across restarts and releases: the
/// placement of data on disk depends on it.
pub fn shard_for(db: &str, table: &str, sorted_tags: &[(&str, &str)], shards: usize) -> usize {
    let tags: Vec<(Cow<'_, str>, Cow<'_, str>)> = sorted_tags
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
        .collect();
    route(&mut Vec::new(), db, table, &tags, shards)
}

/// [`shard_for`] with a reusable key buffer: one xxh3 pass over the series key.
fn route(
    buf: &mut Vec<u8>,
    db: &str,
    table: &str,
    sorted_tags: &[(Cow<'_, str>, Cow<'_, str>)],
    shards: usize,
) -> usize {
    buf.clear();
    buf.extend_from_slice(db.as_bytes());
    buf.push(0xff);
    buf.extend_from_slice(table.as_bytes());
    for (k, v) in sorted_tags {
        buf.push(0xfe);
        buf.extend_from_slice(k.as_bytes());
        buf.push(0xfd);
        buf.extend_from_slice(v.as_bytes());
    }
    (xxhash_rust::xxh3::xxh3_64(buf) % shards.max(1) as u64) as usize
}

/// A field value as a front end hands it over.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(Cow<'a, str>),
}

impl Value<'_> {
    fn field_type(&self) -> FieldType {
        match self {
            Value::F64(_) => FieldType::Float,
            Value::I64(_) => FieldType::Integer,
            Value::U64(_) => FieldType::UInteger,
            Value::Bool(_) => FieldType::Boolean,
            Value::Str(_) => FieldType::String,
        }
    }
}

/// One cell of a row on its way into a column builder.
#[derive(Clone, Copy)]
enum Cell<'r, 'a> {
    Tag(&'r str),
    Field(&'r Value<'a>),
}

/// Rows a column builder first has room for. Arrow's `new()` makes room for
/// 1,024 rows (and a dictionary's hash table for as many values), which a
/// QoS 1 batch of a few dozen messages per shard never fills: setting up
/// those columns was ~5% of the server's CPU. Builders double as they fill,
/// so large batches lose nothing (A/B, medians of 5 interleaved runs: QoS 1
/// 84.5k -> 87.8k msgs/s, QoS 0 255k -> 263k).
const INITIAL_ROWS: usize = 64;
/// Distinct values a tag column's dictionary first has room for.
const INITIAL_TAG_VALUES: usize = 16;

enum ColBuilder {
    Tag(StringDictionaryBuilder<Int32Type>),
    F64(Float64Builder),
    I64(Int64Builder),
    U64(UInt64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

impl ColBuilder {
    fn new(kind: ColumnKind, nulls: usize) -> Self {
        let rows = nulls + INITIAL_ROWS;
        let mut b = match kind {
            ColumnKind::Tag => ColBuilder::Tag(StringDictionaryBuilder::with_capacity(
                rows,
                INITIAL_TAG_VALUES,
                INITIAL_TAG_VALUES * 16,
            )),
            ColumnKind::Field(FieldType::Float) => {
                ColBuilder::F64(Float64Builder::with_capacity(rows))
            }
            ColumnKind::Field(FieldType::Integer) => {
                ColBuilder::I64(Int64Builder::with_capacity(rows))
            }
            ColumnKind::Field(FieldType::UInteger) => {
                ColBuilder::U64(UInt64Builder::with_capacity(rows))
            }
            ColumnKind::Field(FieldType::Boolean) => {
                ColBuilder::Bool(BooleanBuilder::with_capacity(rows))
            }
            ColumnKind::Field(FieldType::String) => {
                ColBuilder::Str(StringBuilder::with_capacity(rows, rows * 16))
            }
        };
        for _ in 0..nulls {
            b.null();
        }
        b
    }

    fn len(&self) -> usize {
        match self {
            ColBuilder::Tag(b) => b.len(),
            ColBuilder::F64(b) => b.len(),
            ColBuilder::I64(b) => b.len(),
            ColBuilder::U64(b) => b.len(),
            ColBuilder::Bool(b) => b.len(),
            ColBuilder::Str(b) => b.len(),
        }
    }

    fn null(&mut self) {
        match self {
            ColBuilder::Tag(b) => b.append_null(),
            ColBuilder::F64(b) => b.append_null(),
            ColBuilder::I64(b) => b.append_null(),
            ColBuilder::U64(b) => b.append_null(),
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::Str(b) => b.append_null(),
        }
    }

    /// Appends `v`; the catalog check guarantees the kinds match, a mismatch
    /// (which would be a bug) is stored as null rather than panicking.
    fn push(&mut self, v: &Cell<'_, '_>) {
        match (self, v) {
            (ColBuilder::Tag(b), Cell::Tag(s)) => {
                b.append_value(s);
            }
            (ColBuilder::F64(b), Cell::Field(Value::F64(x))) => b.append_value(*x),
            (ColBuilder::I64(b), Cell::Field(Value::I64(x))) => b.append_value(*x),
            (ColBuilder::U64(b), Cell::Field(Value::U64(x))) => b.append_value(*x),
            (ColBuilder::Bool(b), Cell::Field(Value::Bool(x))) => b.append_value(*x),
            (ColBuilder::Str(b), Cell::Field(Value::Str(s))) => b.append_value(s),
            (b, _) => b.null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Tag(b) => Arc::new(b.finish()),
            ColBuilder::F64(b) => Arc::new(b.finish()),
            ColBuilder::I64(b) => Arc::new(b.finish()),
            ColBuilder::U64(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
            ColBuilder::Str(b) => Arc::new(b.finish()),
        }
    }
}

#[derive(Default)]
struct TableBuilder {
    times: Vec<i64>,
    columns: Vec<(String, ColumnKind, ColBuilder)>,
    index: HashMap<String, usize>,
    /// Column used by each cell position of the previous row: rows of one
    /// source nearly always list their columns in the same order, so a string
    /// comparison replaces a hash lookup.
    cursor: Vec<usize>,
    /// Layout (see `RowSink::verified`) of the previous row; a row with the
    /// same layout maps position for position onto the cursor.
    last_layout: Option<u32>,
}

impl TableBuilder {
    /// `values` are the row's cells; every row of one `layout` has the same
    /// columns in the same order.
    fn push_row<'r, 'a: 'r>(
        &mut self,
        time: i64,
        values: impl Iterator<Item = (&'r str, ColumnKind, Cell<'r, 'a>)>,
        layout: u32,
    ) {
        let row = self.times.len();
        self.times.push(time);
        if self.last_layout == Some(layout) {
            let mut n = 0;
            for (pos, (_, _, v)) in values.enumerate() {
                self.columns[self.cursor[pos]].2.push(&v);
                n += 1;
            }
            self.fill_nulls(row, n);
            return;
        }
        self.last_layout = Some(layout);
        let mut n = 0;
        for (pos, (name, kind, v)) in values.enumerate() {
            n += 1;
            let idx = match self.cursor.get(pos) {
                Some(&i) if self.columns[i].0 == name => i,
                _ => {
                    let i = match self.index.get(name) {
                        Some(&i) => i,
                        None => {
                            self.columns
                                .push((name.to_string(), kind, ColBuilder::new(kind, row)));
                            self.index.insert(name.to_string(), self.columns.len() - 1);
                            self.columns.len() - 1
                        }
                    };
                    if pos < self.cursor.len() {
                        self.cursor[pos] = i;
                    } else {
                        self.cursor.push(i);
                    }
                    i
                }
            };
            self.columns[idx].2.push(&v);
        }
        self.cursor.truncate(n);
        self.fill_nulls(row, n);
    }

    /// Gives every column the row did not mention a null.
    fn fill_nulls(&mut self, row: usize, mentioned: usize) {
        if self.columns.len() != mentioned {
            for (_, _, b) in self.columns.iter_mut() {
                if b.len() <= row {
                    b.null();
                }
            }
        }
    }

    fn finish(mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        self.columns.sort_by(|a, b| a.0.cmp(&b.0));
        let mut fields = vec![Field::new(TIME_COLUMN, time_data_type(), false)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(
            TimestampNanosecondArray::from(self.times).with_timezone("UTC"),
        )];
        for (name, kind, mut b) in self.columns {
            let dt = match kind {
                ColumnKind::Tag => tag_data_type(),
                ColumnKind::Field(t) => t.data_type(),
            };
            fields.push(Field::new(name, dt, true));
            arrays.push(b.finish());
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
    }
}

/// A row as a front end parsed it. Tags and fields borrow from the input
/// where they can.
#[derive(Debug, Default)]
pub struct Row<'a> {
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub fields: Vec<(Cow<'a, str>, Value<'a>)>,
    pub time: i64,
}

/// Tables per shard touched, not yet encoded for the log.
pub type ShardTables = Vec<(usize, Vec<TableBatch>)>;

/// Collects the rows of one request for one database.
pub struct RowSink<'c> {
    catalog: &'c Catalog,
    db: String,
    snap: Arc<CatalogSnapshot>,
    builders: Vec<HashMap<String, TableBuilder>>,
    /// Per table, the last column list checked against the catalog in this
    /// request, with its layout number (unique within the request).
    verified: HashMap<String, (u32, Vec<(String, ColumnKind)>)>,
    next_layout: u32,
    key_buf: Vec<u8>,
    /// Tags and fields of the last row pushed (see [`RowSink::row`]).
    shape: (usize, usize),
    out: Prepared,
    rejections_taken: usize,
}

impl<'c> RowSink<'c> {
    pub fn new(catalog: &'c Catalog, database: &str, shards: usize) -> Result<Self, IngestError> {
        validate_name("database", database).map_err(|e| IngestError::Database(e.to_string()))?;
        Ok(Self::unchecked(catalog, database, shards))
    }

    /// A sink for Sluice's own `system` database, which users may not name.
    pub fn system(catalog: &'c Catalog, shards: usize) -> Self {
        Self::unchecked(catalog, sluice_engine::catalog::SYSTEM_DATABASE, shards)
    }

    fn unchecked(catalog: &'c Catalog, database: &str, shards: usize) -> Self {
        RowSink {
            catalog,
            db: database.to_string(),
            snap: catalog.snapshot(),
            builders: (0..shards.max(1)).map(|_| HashMap::new()).collect(),
            verified: HashMap::new(),
            next_layout: 0,
            key_buf: Vec::with_capacity(256),
            shape: (0, 0),
            out: Prepared::default(),
            rejections_taken: 0,
        }
    }

    /// An empty row with room for as many tags and fields as the last row
    /// pushed had. A sink fed many one-line messages (MQTT, Kafka) then
    /// allocates each row's two vectors once instead of growing them.
    pub fn row<'a>(&self) -> Row<'a> {
        Row {
            tags: Vec::with_capacity(self.shape.0),
            fields: Vec::with_capacity(self.shape.1),
            time: 0,
        }
    }

    pub fn reject(&mut self, line: usize, reason: String) {
        self.out.reject(line, reason);
    }

    /// Rows accepted so far.
    pub fn accepted(&self) -> usize {
        self.out.accepted
    }

    /// The rejections since the last call: how many, and the first ones
    /// described. A sink shared by many messages tells this way whose rows
    /// were refused.
    pub fn take_rejections(&mut self) -> (usize, Vec<LineError>) {
        let count = self.out.rejected_total - self.rejections_taken;
        self.rejections_taken = self.out.rejected_total;
        (count, std::mem::take(&mut self.out.rejected))
    }

    /// Adds `row` to `table`, or rejects it (as line `line`) with the reason.
    /// Only an I/O failure of the catalog is an error of the whole request.
    /// Takes `row` by reference so that a front end can reuse its vectors for
    /// the next row; its tags are left sorted.
    pub fn push(&mut self, line: usize, table: &str, row: &mut Row<'_>) -> Result<(), IngestError> {
        // Agents mostly send tags already sorted (line protocol asks for it).
        if !row.tags.is_sorted() {
            row.tags.sort_unstable();
        }
        self.shape = (row.tags.len(), row.fields.len());
        let row = &*row;
        if let Some(reason) = non_finite(&row.fields) {
            self.out.reject(line, reason);
            return Ok(());
        }
        // Fast path: the same columns, in the same order, as a row of this
        // table already checked in this request (no duplicates, no reserved
        // names, types agreeing with the catalog). Columns only ever get
        // added to the catalog, so that check still holds. It builds no
        // per-row vectors: the cells go straight from the row to the columns.
        let seen = self
            .verified
            .get(table)
            .filter(|(_, cols)| same_columns(cols, row))
            .map(|(layout, _)| *layout);
        let shard = route(
            &mut self.key_buf,
            &self.db,
            table,
            &row.tags,
            self.builders.len(),
        );
        if let Some(layout) = seen {
            let cells = row
                .tags
                .iter()
                .map(|(k, v)| (k.as_ref(), ColumnKind::Tag, Cell::Tag(v.as_ref())))
                .chain(row.fields.iter().map(|(k, v)| {
                    (
                        k.as_ref(),
                        ColumnKind::Field(v.field_type()),
                        Cell::Field(v),
                    )
                }));
            self.push_cells(shard, table, row.time, cells, layout);
            return Ok(());
        }
        let mut fields: Vec<(&str, &Value<'_>)> = Vec::with_capacity(row.fields.len());
        // A repeated field key keeps its last value.
        for (k, v) in &row.fields {
            match fields.iter_mut().find(|(n, _)| *n == k.as_ref()) {
                Some(slot) => slot.1 = v,
                None => fields.push((k.as_ref(), v)),
            }
        }
        if let Some(reason) = check(&row.tags, &fields) {
            self.out.reject(line, reason);
            return Ok(());
        }
        let mut cells: Vec<(&str, ColumnKind, Cell<'_, '_>)> =
            Vec::with_capacity(row.tags.len() + fields.len());
        for (k, v) in &row.tags {
            cells.push((k.as_ref(), ColumnKind::Tag, Cell::Tag(v.as_ref())));
        }
        for (k, v) in &fields {
            cells.push((k, ColumnKind::Field(v.field_type()), Cell::Field(v)));
        }
        let Some(layout) = self.verify_layout(line, table, &cells)? else {
            return Ok(());
        };
        self.push_cells(shard, table, row.time, cells.iter().copied(), layout);
        Ok(())
    }

    fn push_cells<'r, 'a: 'r>(
        &mut self,
        shard: usize,
        table: &str,
        time: i64,
        cells: impl Iterator<Item = (&'r str, ColumnKind, Cell<'r, 'a>)>,
        layout: u32,
    ) {
        let per_table = &mut self.builders[shard];
        let tb = match per_table.get_mut(table) {
            Some(b) => b,
            None => per_table.entry(table.to_string()).or_default(),
        };
        tb.push_row(time, cells, layout);
        self.out.accepted += 1;
    }

    /// Checks a column list against the catalog (adding new columns), and
    /// remembers it as the table's current layout. `None`: the row was
    /// rejected.
    fn verify_layout(
        &mut self,
        line: usize,
        table: &str,
        cells: &[(&str, ColumnKind, Cell<'_, '_>)],
    ) -> Result<Option<u32>, IngestError> {
        let db = self.db.as_str();
        let known = self
            .snap
            .table(db, table)
            .is_some_and(|s| cells.iter().all(|(n, kind, _)| s.column(n) == Some(*kind)));
        if !known {
            let reqs: Vec<ColumnRequest<'_>> = cells
                .iter()
                .map(|(n, kind, _)| ColumnRequest {
                    name: n,
                    kind: *kind,
                })
                .collect();
            match self.catalog.ensure_columns(db, table, &reqs) {
                Ok(()) => self.snap = self.catalog.snapshot(),
                Err(e @ (EngineError::Io { .. } | EngineError::CatalogStore(_))) => {
                    return Err(e.into())
                }
                Err(e) => {
                    self.out.reject(line, e.to_string());
                    return Ok(None);
                }
            }
        }
        let layout = self.next_layout;
        self.next_layout += 1;
        let cols = cells.iter().map(|(n, k, _)| (n.to_string(), *k)).collect();
        self.verified.insert(table.to_string(), (layout, cols));
        Ok(Some(layout))
    }

    /// The write batches, one per shard touched, and what was rejected.
    pub fn finish(self) -> Result<Prepared, IngestError> {
        let (tables, mut out) = self.finish_tables()?;
        for (shard, tables) in tables {
            out.writes.push((shard, WriteBatch::new(tables)?));
        }
        Ok(out)
    }

    /// The tables built per shard touched, not yet encoded for the log, so
    /// that a caller can combine several sinks into one write per shard.
    pub fn finish_tables(self) -> Result<(ShardTables, Prepared), IngestError> {
        let mut out = Vec::new();
        for (shard, per_table) in self.builders.into_iter().enumerate() {
            if per_table.is_empty() {
                continue;
            }
            let mut tables = Vec::with_capacity(per_table.len());
            for (table, tb) in per_table {
                let batch = tb
                    .finish()
                    .map_err(|e| EngineError::Encode(e.to_string()))?;
                tables.push(TableBatch {
                    database: self.db.clone(),
                    table,
                    batch,
                });
            }
            out.push((shard, tables));
        }
        Ok((out, self.out))
    }
}

/// Why a row cannot be stored whatever the table holds, if it cannot.
fn check(tags: &[(Cow<'_, str>, Cow<'_, str>)], fields: &[(&str, &Value<'_>)]) -> Option<String> {
    if fields.is_empty() {
        return Some("no fields".into());
    }
    for (i, (k, _)) in tags.iter().enumerate() {
        if k == TIME_COLUMN {
            return Some("tag key `time` is reserved for the timestamp".into());
        }
        // Sorted, so a repeated key sits next to its twin.
        if i > 0 && tags[i - 1].0 == *k {
            return Some(format!("duplicate tag key `{k}`"));
        }
    }
    for (k, _) in fields {
        if *k == TIME_COLUMN {
            return Some("field key `time` is reserved for the timestamp".into());
        }
        if tags.iter().any(|(t, _)| t == k) {
            return Some(format!("`{k}` is both a tag and a field"));
        }
    }
    None
}

fn non_finite(fields: &[(Cow<'_, str>, Value<'_>)]) -> Option<String> {
    fields.iter().find_map(|(k, v)| match v {
        Value::F64(x) if !x.is_finite() => Some(format!("field `{k}`: float value out of range")),
        _ => None,
    })
}

/// Whether `row` has exactly the columns `cols`, in order (tags, then fields).
fn same_columns(cols: &[(String, ColumnKind)], row: &Row<'_>) -> bool {
    cols.len() == row.tags.len() + row.fields.len()
        && cols
            .iter()
            .zip(&row.tags)
            .all(|(c, (k, _))| c.1 == ColumnKind::Tag && c.0 == k.as_ref())
        && cols[row.tags.len()..]
            .iter()
            .zip(&row.fields)
            .all(|(c, (k, v))| c.1 == ColumnKind::Field(v.field_type()) && c.0 == k.as_ref())
}
