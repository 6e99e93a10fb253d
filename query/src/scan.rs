//! The physical scan of one Sluice table: chunks and buffered batches of
//! every shard, one DataFusion partition per shard.
//!
//! Planning (in `SluiceTable::scan`) decides, per shard, which chunk pages
//! are needed (time range and tag predicates against the footers), and which
//! sources must be deduplicated together (see `plan_shard`). Execution only
//! decodes the projected columns of the kept pages.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use sluice_engine::chunk::{sort_dedup, DedupPolicy, Footer, PageMeta};
use sluice_engine::{adapt_batch, ChunkHandle, TableSnapshot};

use crate::metrics::METRICS;

/// Tag predicates a page must satisfy: per tag column, the accepted values.
pub type TagFilter = Vec<(String, Vec<String>)>;

pub enum Unit {
    /// A buffered batch in the table's full layout.
    Batch(RecordBatch),
    /// Kept pages of a chunk; `whole` when every row of the chunk is kept
    /// and lies inside the scan's time range (statistics then describe
    /// exactly what the scan returns).
    Chunk {
        chunk: Arc<ChunkHandle>,
        pages: Vec<bool>,
        whole: bool,
    },
    /// Sources that may share (series, time): read, merged and resolved by
    /// the table's dedup policy at read time, until compaction does it.
    Dedup {
        chunks: Vec<(Arc<ChunkHandle>, Vec<bool>)>,
        batches: Vec<RecordBatch>,
    },
}

pub struct ScanExec {
    pub table: String,
    /// The table's full schema (dedup needs every column).
    pub full: SchemaRef,
    pub projected: SchemaRef,
    pub policy: DedupPolicy,
    pub partitions: Vec<Arc<Vec<Unit>>>,
    pub min: i64,
    pub max: i64,
    pub limit: Option<usize>,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for ScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScanExec({})", self.table)
    }
}

fn page_matches(footer: &Footer, page: &PageMeta, min: i64, max: i64, tags: &TagFilter) -> bool {
    if page.max_time < min || page.min_time > max {
        return false;
    }
    if tags.is_empty() {
        return true;
    }
    // Per filtered tag: which value indexes of this chunk are accepted
    // (None: the chunk lacks the tag, so no series can match).
    let mut wanted: Vec<(usize, Vec<u32>)> = Vec::with_capacity(tags.len());
    for (name, values) in tags {
        let Some(ti) = footer.tags.iter().position(|t| &t.name == name) else {
            return false;
        };
        let idx: Vec<u32> = values
            .iter()
            .filter_map(|v| footer.tags[ti].values.binary_search(v).ok())
            .map(|i| i as u32)
            .collect();
        if idx.is_empty() {
            return false;
        }
        wanted.push((ti, idx));
    }
    let first = page.first_series as usize;
    let end = first.saturating_add(page.series as usize);
    footer
        .series
        .get(first..end.min(footer.series.len()))
        .unwrap_or(&[])
        .iter()
        .any(|s| {
            wanted
                .iter()
                .all(|(ti, idx)| s.tags.get(*ti).is_some_and(|v| idx.contains(v)))
        })
}

/// Splits one shard's snapshot into units. Rows that may repeat a (series,
/// time) of other rows are flagged (buffered batches) or marked (chunks
/// flushed over older data); everything whose time range meets such a
/// range is read together and deduplicated.
pub fn plan_shard(snap: TableSnapshot, min: i64, max: i64, tags: &TagFilter) -> Vec<Unit> {
    let mut dirty: Vec<(i64, i64)> = Vec::new();
    for c in &snap.chunks {
        if c.overlaps {
            dirty.push((c.footer().min_time, c.footer().max_time));
        }
    }
    for b in &snap.batches {
        if let Some(range) = b.overlaps {
            dirty.push(range);
        }
    }
    let touches = |lo: i64, hi: i64| dirty.iter().any(|(a, b)| lo <= *b && hi >= *a);
    let mut units = Vec::new();
    let mut dchunks = Vec::new();
    let mut dbatches = Vec::new();
    for c in snap.chunks {
        let f = c.footer();
        let pages: Vec<bool> = f
            .pages
            .iter()
            .map(|p| page_matches(f, p, min, max, tags))
            .collect();
        if !pages.iter().any(|k| *k) {
            continue;
        }
        if touches(f.min_time, f.max_time) {
            dchunks.push((c, pages));
            continue;
        }
        let whole = pages.iter().all(|k| *k) && f.min_time >= min && f.max_time <= max;
        units.push(Unit::Chunk {
            chunk: c,
            pages,
            whole,
        });
    }
    for b in snap.batches {
        if touches(b.min_time, b.max_time) {
            dbatches.push(b.batch);
        } else {
            units.push(Unit::Batch(b.batch));
        }
    }
    if !dchunks.is_empty() || !dbatches.is_empty() {
        units.push(Unit::Dedup {
            chunks: dchunks,
            batches: dbatches,
        });
    }
    units
}

fn ext<E: std::error::Error + Send + Sync + 'static>(e: E) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl ScanExec {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: String,
        full: SchemaRef,
        projected: SchemaRef,
        policy: DedupPolicy,
        partitions: Vec<Vec<Unit>>,
        min: i64,
        max: i64,
        limit: Option<usize>,
    ) -> Self {
        let n = partitions.len().max(1);
        let mut partitions: Vec<Arc<Vec<Unit>>> = partitions.into_iter().map(Arc::new).collect();
        if partitions.is_empty() {
            partitions.push(Arc::new(Vec::new()));
        }
        let props = PlanProperties::new(
            EquivalenceProperties::new(projected.clone()),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ScanExec {
            table,
            full,
            projected,
            policy,
            partitions,
            min,
            max,
            limit,
            props: Arc::new(props),
        }
    }

    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let (mut chunks, mut whole, mut batches, mut dedup) = (0, 0, 0, 0);
        for p in &self.partitions {
            for u in p.iter() {
                match u {
                    Unit::Batch(_) => batches += 1,
                    Unit::Chunk { whole: w, .. } => {
                        chunks += 1;
                        whole += usize::from(*w);
                    }
                    Unit::Dedup {
                        chunks: c,
                        batches: b,
                    } => {
                        dedup += c.len() + b.len();
                    }
                }
            }
        }
        (chunks, whole, batches, dedup)
    }

    /// Decodes one unit into batches laid out in `schema`.
    pub fn read_unit(&self, unit: &Unit, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
        match unit {
            Unit::Batch(b) => Ok(vec![adapt_batch(b, schema).map_err(ext)?]),
            Unit::Chunk { chunk, pages, .. } => {
                METRICS
                    .chunks_decoded
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                chunk
                    .reader
                    .read(schema, &|i, _| pages.get(i).copied().unwrap_or(false))
                    .map_err(ext)
            }
            Unit::Dedup { chunks, batches } => {
                let mut all = Vec::new();
                for (c, pages) in chunks {
                    METRICS
                        .chunks_decoded
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let got = c
                        .reader
                        .read(&self.full, &|i, _| pages.get(i).copied().unwrap_or(false))
                        .map_err(ext)?;
                    all.extend(got);
                }
                for b in batches {
                    all.push(adapt_batch(b, &self.full).map_err(ext)?);
                }
                if all.is_empty() {
                    return Ok(Vec::new());
                }
                let merged = sort_dedup(&self.full, &all, self.policy).map_err(ext)?;
                Ok(vec![adapt_batch(&merged, schema).map_err(ext)?])
            }
        }
    }
}

impl DisplayAs for ScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let (chunks, whole, batches, dedup) = self.counts();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "SluiceScanExec: table={}, shards={}, chunks={chunks} (whole {whole}), buffered_batches={batches}, dedup_sources={dedup}",
                self.table,
                self.partitions.len()
            )?,
            DisplayFormatType::TreeRender => write!(f, "table={}", self.table)?,
        }
        if self.min != i64::MIN || self.max != i64::MAX {
            write!(f, ", time=[{}, {}]", self.min, self.max)?;
        }
        if let Some(l) = self.limit {
            write!(f, ", limit={l}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ScanExec {
    fn name(&self) -> &'static str {
        "SluiceScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let units =
            self.partitions.get(partition).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!("no scan partition {partition}"))
            })?;
        let this = ScanExec {
            table: self.table.clone(),
            full: self.full.clone(),
            projected: self.projected.clone(),
            policy: self.policy,
            partitions: Vec::new(),
            min: self.min,
            max: self.max,
            limit: self.limit,
            props: self.props.clone(),
        };
        let schema = self.projected.clone();
        let limit = self.limit;
        let stream = futures::stream::iter(0..units.len())
            .scan(0usize, move |seen, i| {
                if limit.is_some_and(|l| *seen >= l) {
                    return futures::future::ready(None);
                }
                let res = this.read_unit(&units[i], &this.projected);
                if let Ok(b) = &res {
                    *seen += b.iter().map(|b| b.num_rows()).sum::<usize>();
                }
                futures::future::ready(Some(res))
            })
            .map(|r: Result<Vec<RecordBatch>>| match r {
                Ok(v) => futures::stream::iter(v.into_iter().map(Ok)).left_stream(),
                Err(e) => futures::stream::once(futures::future::ready(Err(e))).right_stream(),
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let parts: Vec<&Arc<Vec<Unit>>> = match args.partition() {
            Some(p) => self.partitions.get(p).into_iter().collect(),
            None => self.partitions.iter().collect(),
        };
        let mut rows = 0usize;
        for p in parts {
            for u in p.iter() {
                rows += match u {
                    Unit::Batch(b) => b.num_rows(),
                    Unit::Chunk { chunk, .. } => chunk.footer().rows as usize,
                    Unit::Dedup { chunks, batches } => {
                        chunks
                            .iter()
                            .map(|(c, _)| c.footer().rows as usize)
                            .sum::<usize>()
                            + batches.iter().map(|b| b.num_rows()).sum::<usize>()
                    }
                };
            }
        }
        // Inexact: pruning is by whole pages and dedup may remove rows; the
        // statistics rule (`stats.rs`) answers aggregates exactly instead.
        let stats =
            Statistics::new_unknown(&self.projected).with_num_rows(Precision::Inexact(rows));
        Ok(Arc::new(stats))
    }
}

use futures::StreamExt as _;
