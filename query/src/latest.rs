//! `latest('table')`: the newest row of every series, without reading history.
//!
//! ```sql
//! SELECT host, usage_user, time FROM latest('cpu');
//! SELECT * FROM latest('plant.telemetry') WHERE line = 'L2';
//! ```
//!
//! Chunk footers list each series with its newest time, so per series only
//! the chunk holding its newest row is opened, and there only the page with
//! that row; the buffer (recent, bounded) is read whole. On equal times the
//! later write wins, as with the default dedup policy.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray, UInt32Array};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, DataFusionError, Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use sluice_engine::catalog::{tag_data_type, TIME_COLUMN};
use sluice_engine::chunk::{Footer, SeriesMeta, Stat};
use sluice_engine::{adapt_batch, EngineHandle};

pub struct LatestFunction {
    pub engine: EngineHandle,
}

impl fmt::Debug for LatestFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("latest")
    }
}

/// A series' tag values (by the table's tag order) as a chunk footer has them.
fn series_key<'a>(tags: &[(String, usize)], f: &'a Footer, s: &SeriesMeta) -> Vec<Option<&'a str>> {
    tags.iter()
        .map(|(name, _)| {
            let ti = f.tags.iter().position(|t| &t.name == name)?;
            let i = *s.tags.get(ti)?;
            f.tags.get(ti)?.values.get(i as usize).map(String::as_str)
        })
        .collect()
}

impl TableFunctionImpl for LatestFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let [Expr::Literal(ScalarValue::Utf8(Some(name)), _)] = args.exprs() else {
            return plan_err!(
                "latest takes one string: latest('table') or latest('database.table')"
            );
        };
        let (db, table) = match name.split_once('.') {
            Some((d, t)) => (d.to_string(), t.to_string()),
            None => (
                args.session()
                    .config()
                    .options()
                    .catalog
                    .default_schema
                    .clone(),
                name.clone(),
            ),
        };
        let Some(schema) = self
            .engine
            .catalog()
            .snapshot()
            .table(&db, &table)
            .map(|t| t.arrow_schema())
        else {
            return plan_err!("latest: table {db}.{table} not found");
        };
        Ok(Arc::new(Latest {
            engine: self.engine.clone(),
            db,
            table,
            schema,
        }))
    }
}

pub(crate) struct Latest {
    engine: EngineHandle,
    db: String,
    table: String,
    schema: SchemaRef,
}

impl Latest {
    /// The database it reads, for the privilege check.
    pub(crate) fn database(&self) -> &str {
        &self.db
    }
}

impl fmt::Debug for Latest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "latest({}.{})", self.db, self.table)
    }
}

fn ext<E: std::error::Error + Send + Sync + 'static>(e: E) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl Latest {
    /// Batches (arrival order) that together hold every series' newest row.
    async fn sources(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for snap in self
            .engine
            .snapshot(&self.db, &self.table, i64::MIN, i64::MAX)
            .await
            .map_err(ext)?
        {
            // Newest time per series (by tag value strings) over all chunks.
            let mut best: HashMap<Vec<Option<&str>>, i64> = HashMap::new();
            let tags = self.tag_names();
            let key = |f, s| series_key(&tags, f, s);
            for c in &snap.chunks {
                let f = c.footer();
                for s in &f.series {
                    let e = best.entry(key(f, s)).or_insert(i64::MIN);
                    *e = (*e).max(s.max_time);
                }
            }
            // Series whose newest chunk records its last row are answered
            // from that footer; the rest decode the page holding the row.
            let mut from_footer: Vec<(&Footer, &SeriesMeta)> = Vec::new();
            let mut taken: std::collections::HashSet<Vec<Option<&str>>> = Default::default();
            for c in snap.chunks.iter().rev() {
                let f = c.footer();
                for s in &f.series {
                    if !s.last.is_empty()
                        && best.get(&key(f, s)).is_some_and(|b| *b == s.max_time)
                        && taken.insert(key(f, s))
                    {
                        from_footer.push((f, s));
                    }
                }
            }
            for c in &snap.chunks {
                let f = c.footer();
                let keep: Vec<bool> = f
                    .pages
                    .iter()
                    .map(|p| {
                        let end = (p.first_series + p.series) as usize;
                        f.series
                            .get(p.first_series as usize..end.min(f.series.len()))
                            .unwrap_or(&[])
                            .iter()
                            .any(|s| {
                                s.last.is_empty()
                                    && !taken.contains(&key(f, s))
                                    && best.get(&key(f, s)).is_some_and(|b| *b == s.max_time)
                            })
                    })
                    .collect();
                if keep.iter().any(|k| *k) {
                    out.extend(
                        c.reader
                            .read(&self.schema, &|i, _| keep.get(i).copied().unwrap_or(false))
                            .map_err(ext)?,
                    );
                }
            }
            if !from_footer.is_empty() {
                out.push(self.footer_rows(&from_footer)?);
            }
            for b in snap.batches {
                out.push(adapt_batch(&b.batch, &self.schema).map_err(ext)?);
            }
        }
        Ok(out)
    }

    /// The recorded last rows of `series`, laid out in the table's schema.
    fn footer_rows(&self, series: &[(&Footer, &SeriesMeta)]) -> Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let name = field.name();
            let values: Vec<ScalarValue> = series
                .iter()
                .map(|(f, s)| {
                    if name == TIME_COLUMN {
                        return ScalarValue::TimestampNanosecond(
                            Some(s.max_time),
                            Some("UTC".into()),
                        );
                    }
                    if field.data_type() == &tag_data_type() {
                        let v = f.tags.iter().position(|t| &t.name == name).and_then(|ti| {
                            let i = *s.tags.get(ti)?;
                            f.tags[ti].values.get(i as usize).cloned()
                        });
                        return ScalarValue::Utf8(v);
                    }
                    let stat = f
                        .columns
                        .iter()
                        .position(|m| &m.name == name)
                        .and_then(|i| s.last.get(i).cloned().flatten());
                    match stat {
                        Some(Stat::F64(v)) => ScalarValue::Float64(Some(v)),
                        Some(Stat::I64(v)) => ScalarValue::Int64(Some(v)),
                        Some(Stat::U64(v)) => ScalarValue::UInt64(Some(v)),
                        Some(Stat::Bool(v)) => ScalarValue::Boolean(Some(v)),
                        Some(Stat::Str(v)) => ScalarValue::Utf8(Some(v)),
                        None => ScalarValue::Null,
                    }
                })
                .collect();
            let target = field.data_type();
            let typed: Vec<ScalarValue> = values
                .into_iter()
                .map(|v| {
                    let want = if target == &tag_data_type() {
                        &arrow::datatypes::DataType::Utf8
                    } else {
                        target
                    };
                    if v.is_null() {
                        ScalarValue::try_from(want)
                    } else {
                        Ok(v)
                    }
                })
                .collect::<Result<_>>()?;
            let arr = ScalarValue::iter_to_array(typed)?;
            columns.push(if arr.data_type() == target {
                arr
            } else {
                arrow::compute::cast(&arr, target)?
            });
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn tag_names(&self) -> Vec<(String, usize)> {
        self.schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.data_type() == &tag_data_type())
            .map(|(i, f)| (f.name().clone(), i))
            .collect()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let batches = self.sources().await?;
        let tags = self.tag_names();
        let conv = RowConverter::new(
            tags.iter()
                .map(|_| SortField::new(tag_data_type()))
                .collect(),
        )?;
        // Series → (time, batch, row); later sources win ties.
        let mut newest: HashMap<Vec<u8>, (i64, usize, u32)> = HashMap::new();
        for (bi, b) in batches.iter().enumerate() {
            let cols: Vec<_> = tags.iter().map(|(_, i)| b.column(*i).clone()).collect();
            // With no tags the table is one series; the converter, given no
            // columns, would have no rows to hand out.
            let rows = if cols.is_empty() {
                None
            } else {
                Some(conv.convert_columns(&cols)?)
            };
            let Some(ts) = b
                .column_by_name(TIME_COLUMN)
                .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            else {
                continue;
            };
            for r in 0..b.num_rows() {
                let t = ts.value(r);
                let k: &[u8] = match &rows {
                    Some(rows) => rows.row(r).data(),
                    None => &[],
                };
                match newest.get_mut(k) {
                    Some(e) if t < e.0 => {}
                    Some(e) => *e = (t, bi, r as u32),
                    None => {
                        newest.insert(k.to_vec(), (t, bi, r as u32));
                    }
                }
            }
        }
        let mut picks: Vec<(usize, u32)> = newest.into_values().map(|(_, b, r)| (b, r)).collect();
        picks.sort_unstable();
        let mut parts = Vec::new();
        let mut i = 0;
        while i < picks.len() {
            let b = picks[i].0;
            let mut idx = Vec::new();
            while i < picks.len() && picks[i].0 == b {
                idx.push(picks[i].1);
                i += 1;
            }
            let idx = UInt32Array::from(idx);
            parts.push(arrow::compute::take_record_batch(&batches[b], &idx)?);
        }
        Ok(arrow::compute::concat_batches(&self.schema, &parts)?)
    }
}

#[async_trait]
impl TableProvider for Latest {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
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
        let batch = self.rows().await?;
        MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema.clone(), projection.cloned())
            .map(|e| e as Arc<dyn ExecutionPlan>)
    }
}
