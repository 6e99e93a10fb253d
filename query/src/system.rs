//! The `system` schema: what the engine knows about its own storage, as
//! tables (`system.chunks`, `system.tables`).

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use sluice_engine::EngineHandle;

pub const SYSTEM: &str = "system";
const TABLES: [&str; 3] = ["chunks", "tables", DEAD_LETTERS];
const DEAD_LETTERS: &str = "dead_letters";

/// A `system` table whose rows live outside the engine (such as the Kafka
/// consumer's partitions), read afresh by every query.
pub trait LiveTable: Send + Sync {
    fn name(&self) -> &str;
    fn batch(&self) -> std::result::Result<RecordBatch, arrow::error::ArrowError>;
}

pub struct SystemSchema {
    pub engine: EngineHandle,
    pub live: Arc<[Arc<dyn LiveTable>]>,
    /// The relational schema of the statement's snapshot, when there is a
    /// relational store.
    pub rel: Option<Arc<sluice_relstore::RelCatalog>>,
}

impl fmt::Debug for SystemSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemSchema")
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES
            .iter()
            .map(|t| t.to_string())
            .chain(self.live.iter().map(|t| t.name().to_string()))
            .chain(
                self.rel
                    .iter()
                    .flat_map(|_| crate::rel::introspect::TABLES.map(str::to_string)),
            )
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.live.iter().find(|t| t.name() == name) {
            let batch = t.batch()?;
            let mem = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
            return Ok(Some(Arc::new(mem)));
        }
        if let Some(cat) = &self.rel {
            if let Some(batch) = crate::rel::introspect::batch(name, cat) {
                let batch = batch?;
                let mem =
                    datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])?;
                return Ok(Some(Arc::new(mem)));
            }
        }
        let kind = match name {
            DEAD_LETTERS => return dead_letters(&self.engine).await.map(Some),
            "chunks" => Kind::Chunks,
            "tables" => Kind::Tables,
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(SystemTable {
            engine: self.engine.clone(),
            kind,
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
            || self.live.iter().any(|t| t.name() == name)
            || (self.rel.is_some() && crate::rel::introspect::TABLES.contains(&name))
    }
}

/// Dead letters are an ordinary table of the `system` database once the
/// first one is written; before that, an empty table of the same shape.
async fn dead_letters(engine: &EngineHandle) -> Result<Arc<dyn TableProvider>> {
    let stored = crate::table::SluiceSchema {
        rel: None,
        engine: engine.clone(),
        database: sluice_engine::catalog::SYSTEM_DATABASE.to_string(),
        captures: Default::default(),
    };
    if let Some(t) = stored.table(DEAD_LETTERS).await? {
        return Ok(t);
    }
    let tag = sluice_engine::catalog::tag_data_type();
    let schema = Arc::new(Schema::new(vec![
        Field::new("time", ts(), false),
        Field::new("source", tag.clone(), true),
        Field::new("topic", tag, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("payload", DataType::Utf8, true),
        Field::new("offset", DataType::Int64, true),
        Field::new("partition", DataType::Int64, true),
    ]));
    let empty = datafusion::datasource::MemTable::try_new(schema, vec![vec![]])?;
    Ok(Arc::new(empty))
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Chunks,
    Tables,
}

struct SystemTable {
    engine: EngineHandle,
    kind: Kind,
}

impl fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SystemTable({:?})", self.kind)
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn chunks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("database", DataType::Utf8, true),
        Field::new("table", DataType::Utf8, true),
        Field::new("shard", DataType::UInt64, false),
        Field::new("chunk_id", DataType::UInt64, false),
        Field::new("partition", ts(), true),
        Field::new("rows", DataType::UInt64, true),
        Field::new("min_time", ts(), true),
        Field::new("max_time", ts(), true),
        Field::new("series", DataType::UInt64, true),
        Field::new("pages", DataType::UInt64, true),
        Field::new("bytes_on_disk", DataType::UInt64, true),
        Field::new("bytes_raw", DataType::UInt64, true),
        Field::new("overlaps", DataType::Boolean, true),
        Field::new("error", DataType::Utf8, true),
    ]))
}

fn tables_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("database", DataType::Utf8, false),
        Field::new("table", DataType::Utf8, false),
        Field::new("dedup", DataType::Utf8, false),
        Field::new("retention", DataType::Utf8, true),
        Field::new("columns", DataType::UInt64, false),
        Field::new("chunks", DataType::UInt64, false),
        Field::new("chunk_rows", DataType::UInt64, false),
        Field::new("bytes_on_disk", DataType::UInt64, false),
        Field::new("bytes_raw", DataType::UInt64, false),
        Field::new("buffered_rows", DataType::UInt64, false),
        Field::new("buffered_bytes", DataType::UInt64, false),
    ]))
}

/// Human form of a retention in ns, e.g. `30d`, `12h`.
pub fn format_duration(ns: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
    ];
    for (n, u) in UNITS {
        if ns % n == 0 {
            return format!("{}{u}", ns / n);
        }
    }
    format!("{ns}ns")
}

/// What a time-series table holds, summed over shards.
#[derive(Debug, Default, Clone, Copy)]
pub struct TableUsage {
    pub chunks: u64,
    pub chunk_rows: u64,
    pub bytes_on_disk: u64,
    pub bytes_raw: u64,
    pub buffered_rows: u64,
    pub buffered_bytes: u64,
}

impl TableUsage {
    fn as_array(&self) -> [u64; 6] {
        [
            self.chunks,
            self.chunk_rows,
            self.bytes_on_disk,
            self.bytes_raw,
            self.buffered_rows,
            self.buffered_bytes,
        ]
    }
}

/// Usage of every table of the catalog snapshot, in chunks and buffers.
pub async fn table_usage(
    engine: &EngineHandle,
    snap: &sluice_engine::catalog::CatalogSnapshot,
) -> sluice_engine::Result<std::collections::BTreeMap<(String, String), TableUsage>> {
    let mut acc = std::collections::BTreeMap::new();
    for (dbn, d) in &snap.databases {
        for t in d.tables.keys() {
            acc.insert((dbn.clone(), t.clone()), TableUsage::default());
        }
    }
    for (live, _) in engine.chunks().await? {
        for c in live {
            let f = c.footer();
            if let Some(a) = acc.get_mut(&(f.database.clone(), f.table.clone())) {
                a.chunks += 1;
                a.chunk_rows += f.rows;
                a.bytes_on_disk += c.reader.file_len();
                a.bytes_raw += f.raw_bytes;
            }
        }
    }
    for s in engine.stats().await? {
        for (d, t, ts) in s.tables {
            if let Some(a) = acc.get_mut(&(d, t)) {
                a.buffered_rows += ts.rows as u64;
                a.buffered_bytes += ts.bytes as u64;
            }
        }
    }
    Ok(acc)
}

fn ext<E: std::error::Error + Send + Sync + 'static>(e: E) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl SystemTable {
    async fn chunks(&self) -> Result<RecordBatch> {
        let shards = self.engine.chunks().await.map_err(ext)?;
        let mut db = Vec::new();
        let mut table = Vec::new();
        let mut shard = Vec::new();
        let mut id = Vec::new();
        let mut part = Vec::new();
        let mut rows = Vec::new();
        let mut min = Vec::new();
        let mut max = Vec::new();
        let mut series = Vec::new();
        let mut pages = Vec::new();
        let mut disk = Vec::new();
        let mut raw = Vec::new();
        let mut overlaps = Vec::new();
        let mut error: Vec<Option<String>> = Vec::new();
        for (i, (live, broken)) in shards.into_iter().enumerate() {
            for c in live {
                let f = c.footer();
                db.push(Some(f.database.clone()));
                table.push(Some(f.table.clone()));
                shard.push(i as u64);
                id.push(c.id);
                part.push(Some(f.partition));
                rows.push(Some(f.rows));
                min.push(Some(f.min_time));
                max.push(Some(f.max_time));
                series.push(Some(f.series.len() as u64));
                pages.push(Some(f.pages.len() as u64));
                disk.push(Some(c.reader.file_len()));
                raw.push(Some(f.raw_bytes));
                overlaps.push(Some(c.overlaps));
                error.push(None);
            }
            for b in broken {
                db.push(None);
                table.push(None);
                shard.push(i as u64);
                id.push(b.id);
                part.push(None);
                rows.push(None);
                min.push(None);
                max.push(None);
                series.push(None);
                pages.push(None);
                disk.push(std::fs::metadata(&b.path).ok().map(|m| m.len()));
                raw.push(None);
                overlaps.push(None);
                error.push(Some(b.error));
            }
        }
        let tsa = |v: Vec<Option<i64>>| -> ArrayRef {
            Arc::new(TimestampNanosecondArray::from(v).with_timezone("UTC"))
        };
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(db)),
            Arc::new(StringArray::from(table)),
            Arc::new(UInt64Array::from(shard)),
            Arc::new(UInt64Array::from(id)),
            tsa(part),
            Arc::new(UInt64Array::from(rows)),
            tsa(min),
            tsa(max),
            Arc::new(UInt64Array::from(series)),
            Arc::new(UInt64Array::from(pages)),
            Arc::new(UInt64Array::from(disk)),
            Arc::new(UInt64Array::from(raw)),
            Arc::new(BooleanArray::from(overlaps)),
            Arc::new(StringArray::from(error)),
        ];
        RecordBatch::try_new(chunks_schema(), cols).map_err(DataFusionError::from)
    }

    async fn tables(&self) -> Result<RecordBatch> {
        let snap = self.engine.catalog().snapshot();
        let acc = table_usage(&self.engine, &snap).await.map_err(ext)?;
        let mut cols: [Vec<u64>; 7] = Default::default();
        let (mut dbs, mut tables, mut dedup, mut retention) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((d, t), a) in acc {
            let schema = snap.table(&d, &t);
            dedup.push(
                schema
                    .map(|s| format!("{:?}", s.options.dedup).to_lowercase())
                    .unwrap_or_default(),
            );
            retention.push(snap.retention(&d, &t).map(format_duration));
            cols[0].push(schema.map_or(0, |s| s.columns().count() as u64 + 1));
            for (i, v) in a.as_array().iter().enumerate() {
                cols[i + 1].push(*v);
            }
            dbs.push(d);
            tables.push(t);
        }
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(dbs)),
            Arc::new(StringArray::from(tables)),
            Arc::new(StringArray::from(dedup)),
            Arc::new(StringArray::from(retention)),
        ];
        for c in cols {
            arrays.push(Arc::new(UInt64Array::from(c)));
        }
        RecordBatch::try_new(tables_schema(), arrays).map_err(DataFusionError::from)
    }
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        match self.kind {
            Kind::Chunks => chunks_schema(),
            Kind::Tables => tables_schema(),
        }
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = match self.kind {
            Kind::Chunks => self.chunks().await?,
            Kind::Tables => self.tables().await?,
        };
        let schema = batch.schema();
        MemorySourceConfig::try_new_exec(&[vec![batch]], schema, projection.cloned())
            .map(|e| e as Arc<dyn ExecutionPlan>)
    }
}
