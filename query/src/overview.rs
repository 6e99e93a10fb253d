//! Every database and table with its columns and usage, in one answer:
//! what the console's schema browser and its editor's completion need,
//! without a round trip per table.

use serde::Serialize;
use sluice_engine::catalog::ColumnKind;

use crate::output::type_name;
use crate::system::{format_duration, table_usage};
use crate::{QueryEngine, QueryError};

#[derive(Debug, Serialize)]
pub struct SchemaOverview {
    pub databases: Vec<DatabaseOverview>,
}

#[derive(Debug, Serialize)]
pub struct DatabaseOverview {
    pub name: String,
    pub comment: Option<String>,
    pub tables: Vec<TableOverview>,
}

#[derive(Debug, Serialize)]
pub struct TableOverview {
    pub name: String,
    /// `timeseries`, `relational` or `view`.
    pub kind: &'static str,
    pub columns: Vec<ColumnOverview>,
    /// Rows of a time-series table, in chunks and buffers (before
    /// deduplication of what has not been compacted yet).
    pub rows: Option<u64>,
    pub chunks: Option<u64>,
    pub bytes_on_disk: Option<u64>,
    pub bytes_raw: Option<u64>,
    pub dedup: Option<String>,
    pub retention: Option<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ColumnOverview {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    /// `time`, `tag` or `field` in a time-series table; `key` or `column`
    /// in a relational one.
    pub role: &'static str,
    pub nullable: bool,
    pub comment: Option<String>,
}

impl TableOverview {
    fn new(name: String, kind: &'static str) -> Self {
        TableOverview {
            name,
            kind,
            columns: Vec::new(),
            rows: None,
            chunks: None,
            bytes_on_disk: None,
            bytes_raw: None,
            dedup: None,
            retention: None,
            comment: None,
        }
    }
}

impl QueryEngine {
    pub async fn overview(&self) -> Result<SchemaOverview, QueryError> {
        let snap = self.engine.catalog().snapshot();
        let usage = table_usage(&self.engine, &snap).await?;
        let mut dbs: std::collections::BTreeMap<String, DatabaseOverview> = Default::default();
        let db_entry = |dbs: &mut std::collections::BTreeMap<String, DatabaseOverview>,
                        name: &str| {
            dbs.entry(name.to_string())
                .or_insert_with(|| DatabaseOverview {
                    name: name.to_string(),
                    comment: None,
                    tables: Vec::new(),
                });
        };
        for (dbn, d) in &snap.databases {
            db_entry(&mut dbs, dbn);
            for (tn, t) in &d.tables {
                let mut out = TableOverview::new(tn.clone(), "timeseries");
                for f in t.arrow_schema().fields() {
                    let role = match t.column(f.name()) {
                        None => "time",
                        Some(ColumnKind::Tag) => "tag",
                        Some(ColumnKind::Field(_)) => "field",
                    };
                    out.columns.push(ColumnOverview {
                        name: f.name().clone(),
                        data_type: type_name(f.data_type()),
                        role,
                        nullable: f.is_nullable(),
                        comment: None,
                    });
                }
                if let Some(u) = usage.get(&(dbn.clone(), tn.clone())) {
                    out.rows = Some(u.chunk_rows + u.buffered_rows);
                    out.chunks = Some(u.chunks);
                    out.bytes_on_disk = Some(u.bytes_on_disk);
                    out.bytes_raw = Some(u.bytes_raw);
                }
                out.dedup = Some(format!("{:?}", t.options.dedup).to_lowercase());
                out.retention = snap.retention(dbn, tn).map(format_duration);
                if let Some(db) = dbs.get_mut(dbn) {
                    db.tables.push(out);
                }
            }
        }
        if let Some(rel) = &self.rel {
            let cat = rel.catalog();
            for t in cat.tables.values() {
                db_entry(&mut dbs, &t.schema);
                let mut out = TableOverview::new(t.name.clone(), "relational");
                for (i, c) in t.visible_columns().iter().enumerate() {
                    out.columns.push(ColumnOverview {
                        name: c.name.clone(),
                        data_type: type_name(&crate::rel::convert::arrow_type(c.ty)),
                        role: if t.primary_key.contains(&i) && !t.hidden_rowid {
                            "key"
                        } else {
                            "column"
                        },
                        nullable: c.nullable,
                        comment: t.column_comments.get(&c.name).cloned(),
                    });
                }
                out.comment = t.comment.clone();
                if let Some(db) = dbs.get_mut(&t.schema) {
                    db.tables.push(out);
                }
            }
            for v in cat.views.values() {
                db_entry(&mut dbs, &v.schema);
                let mut out = TableOverview::new(v.name.clone(), "view");
                out.columns = v
                    .columns
                    .iter()
                    .map(|c| ColumnOverview {
                        name: c.clone(),
                        data_type: String::new(),
                        role: "column",
                        nullable: true,
                        comment: None,
                    })
                    .collect();
                out.comment = v.comment.clone();
                if let Some(db) = dbs.get_mut(&v.schema) {
                    db.tables.push(out);
                }
            }
            for (db, c) in &cat.database_comments {
                if let Some(d) = dbs.get_mut(db) {
                    d.comment = Some(c.clone());
                }
            }
        }
        let mut databases: Vec<DatabaseOverview> = dbs.into_values().collect();
        for d in &mut databases {
            d.tables.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(SchemaOverview { databases })
    }
}
