//! The relational schema as `system` tables: `system.constraints`,
//! `system.indexes`, `system.sequences`, `system.views` and
//! `system.comments`, read from the catalog of the statement's snapshot.
//! (Tables and columns are in `information_schema`, which DataFusion builds
//! from the same catalog.)

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use sluice_relstore::schema::{FkAction, TableDef};
use sluice_relstore::RelCatalog;

pub const TABLES: [&str; 5] = ["constraints", "indexes", "sequences", "views", "comments"];

fn names(t: &TableDef, cols: &[usize]) -> String {
    cols.iter()
        .filter_map(|&c| t.columns.get(c).map(|c| c.name.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn strings(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

/// Column-wise rows of string columns.
struct Rows(Vec<Vec<Option<String>>>);

impl Rows {
    fn new(n: usize) -> Rows {
        Rows(vec![Vec::new(); n])
    }
    fn push(&mut self, row: Vec<Option<String>>) {
        for (c, v) in self.0.iter_mut().zip(row) {
            c.push(v);
        }
    }
    fn arrays(self) -> Vec<ArrayRef> {
        self.0.into_iter().map(strings).collect()
    }
}

fn constraints(cat: &RelCatalog) -> (Vec<Field>, Vec<ArrayRef>) {
    let fields = [
        "schema",
        "table",
        "constraint",
        "type",
        "columns",
        "definition",
    ];
    let mut rows = Rows::new(fields.len());
    for t in cat.tables.values() {
        let s = |v: &str| Some(v.to_string());
        if !t.hidden_rowid {
            rows.push(vec![
                s(&t.schema),
                s(&t.name),
                s(&t.pk_name),
                s("PRIMARY KEY"),
                s(&names(t, &t.primary_key)),
                None,
            ]);
        }
        for i in t.indexes.iter().filter(|i| i.constraint) {
            rows.push(vec![
                s(&t.schema),
                s(&t.name),
                s(&i.name),
                s("UNIQUE"),
                s(&names(t, &i.columns)),
                None,
            ]);
        }
        for f in &t.foreign_keys {
            let parent = cat.table_by_id(f.parent);
            let target = parent.map_or_else(
                || format!("#{}", f.parent),
                |p| format!("{}.{}({})", p.schema, p.name, names(p, &f.parent_columns)),
            );
            let action = match f.on_delete {
                FkAction::Restrict => "RESTRICT",
                FkAction::Cascade => "CASCADE",
                FkAction::SetNull => "SET NULL",
            };
            rows.push(vec![
                s(&t.schema),
                s(&t.name),
                s(&f.name),
                s("FOREIGN KEY"),
                s(&names(t, &f.columns)),
                Some(format!("REFERENCES {target} ON DELETE {action}")),
            ]);
        }
        for c in &t.checks {
            rows.push(vec![
                s(&t.schema),
                s(&t.name),
                s(&c.name),
                s("CHECK"),
                None,
                Some(format!("CHECK ({})", c.expr)),
            ]);
        }
    }
    (fields.iter().map(|f| text(f)).collect(), rows.arrays())
}

fn indexes(cat: &RelCatalog) -> (Vec<Field>, Vec<ArrayRef>) {
    let mut rows = Rows::new(5);
    let (mut unique, mut primary) = (Vec::new(), Vec::new());
    for t in cat.tables.values() {
        let s = |v: &str| Some(v.to_string());
        if !t.hidden_rowid {
            rows.push(vec![
                s(&t.schema),
                s(&t.name),
                s(&t.pk_name),
                s(&names(t, &t.primary_key)),
                None,
            ]);
            unique.push(true);
            primary.push(true);
        }
        for i in &t.indexes {
            rows.push(vec![
                s(&t.schema),
                s(&t.name),
                s(&i.name),
                s(&names(t, &i.columns)),
                cat.object_comments.get(&i.id).cloned(),
            ]);
            unique.push(i.unique);
            primary.push(false);
        }
    }
    let mut cols = rows.arrays();
    let comment = cols.pop();
    cols.push(Arc::new(BooleanArray::from(unique)));
    cols.push(Arc::new(BooleanArray::from(primary)));
    cols.extend(comment);
    let fields = vec![
        text("schema"),
        text("table"),
        text("index"),
        text("columns"),
        Field::new("unique", DataType::Boolean, false),
        Field::new("primary", DataType::Boolean, false),
        text("comment"),
    ];
    (fields, cols)
}

fn sequences(cat: &RelCatalog) -> (Vec<Field>, Vec<ArrayRef>) {
    let seqs: Vec<_> = cat.sequences.values().collect();
    let ints = |f: fn(&sluice_relstore::schema::SequenceDef) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(
            seqs.iter().map(|s| f(s)).collect::<Vec<_>>(),
        ))
    };
    let fields = vec![
        text("schema"),
        text("sequence"),
        Field::new("start", DataType::Int64, false),
        Field::new("increment", DataType::Int64, false),
        Field::new("min", DataType::Int64, false),
        Field::new("max", DataType::Int64, false),
        Field::new("cycle", DataType::Boolean, false),
        text("comment"),
    ];
    let cols = vec![
        strings(seqs.iter().map(|s| Some(s.schema.clone())).collect()),
        strings(seqs.iter().map(|s| Some(s.name.clone())).collect()),
        ints(|s| s.start),
        ints(|s| s.increment),
        ints(|s| s.min),
        ints(|s| s.max),
        Arc::new(BooleanArray::from(
            seqs.iter().map(|s| s.cycle).collect::<Vec<_>>(),
        )),
        strings(
            seqs.iter()
                .map(|s| cat.object_comments.get(&s.id).cloned())
                .collect(),
        ),
    ];
    (fields, cols)
}

fn views(cat: &RelCatalog) -> (Vec<Field>, Vec<ArrayRef>) {
    let fields = ["schema", "view", "columns", "definition", "comment"];
    let mut rows = Rows::new(fields.len());
    for v in cat.views.values() {
        rows.push(vec![
            Some(v.schema.clone()),
            Some(v.name.clone()),
            (!v.columns.is_empty()).then(|| v.columns.join(", ")),
            Some(v.sql.clone()),
            v.comment.clone(),
        ]);
    }
    (fields.iter().map(|f| text(f)).collect(), rows.arrays())
}

fn comments(cat: &RelCatalog) -> (Vec<Field>, Vec<ArrayRef>) {
    let fields = ["object_type", "schema", "object", "column", "comment"];
    let mut rows = Rows::new(fields.len());
    let s = |v: &str| Some(v.to_string());
    for (db, c) in &cat.database_comments {
        rows.push(vec![s("database"), s(db), s(db), None, s(c)]);
    }
    for t in cat.tables.values() {
        if let Some(c) = &t.comment {
            rows.push(vec![s("table"), s(&t.schema), s(&t.name), None, s(c)]);
        }
        for (col, c) in &t.column_comments {
            rows.push(vec![s("column"), s(&t.schema), s(&t.name), s(col), s(c)]);
        }
        for i in &t.indexes {
            if let Some(c) = cat.object_comments.get(&i.id) {
                rows.push(vec![s("index"), s(&t.schema), s(&i.name), None, s(c)]);
            }
        }
    }
    for q in cat.sequences.values() {
        if let Some(c) = cat.object_comments.get(&q.id) {
            rows.push(vec![s("sequence"), s(&q.schema), s(&q.name), None, s(c)]);
        }
    }
    (fields.iter().map(|f| text(f)).collect(), rows.arrays())
}

/// The rows of `system.<name>`, if it is one of [`TABLES`].
pub fn batch(
    name: &str,
    cat: &RelCatalog,
) -> Option<Result<RecordBatch, arrow::error::ArrowError>> {
    let (fields, cols) = match name {
        "constraints" => constraints(cat),
        "indexes" => indexes(cat),
        "sequences" => sequences(cat),
        "views" => views(cat),
        "comments" => comments(cat),
        _ => return None,
    };
    Some(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols))
}
