//! Relational table definitions: columns, keys, constraints and indexes.
//! Stored in the state machine and read by the SQL layer through a
//! [`RelCatalog`] snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::value::SqlType;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    /// The DEFAULT expression as SQL text, evaluated by the SQL layer when a
    /// row is written (never at apply time, which must be deterministic).
    pub default: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FkAction {
    Restrict,
    Cascade,
    SetNull,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub name: String,
    /// Column positions in this table.
    pub columns: Vec<usize>,
    pub parent: u64,
    /// Column positions in the parent, which form its primary key or a
    /// unique index.
    pub parent_columns: Vec<usize>,
    pub on_delete: FkAction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// A boolean SQL expression over the row's columns.
    pub expr: String,
}

/// A secondary index. A unique index is also how UNIQUE constraints are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Key space of the index's entries (allocated like a table id).
    pub id: u64,
    pub name: String,
    pub columns: Vec<usize>,
    pub unique: bool,
    /// Made by a UNIQUE constraint rather than CREATE INDEX.
    pub constraint: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    /// Key space of the table's rows; never reused.
    pub id: u64,
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Column positions of the primary key. A table declared without one
    /// gets a hidden row id (the last column, `rowid`), filled by the SQL
    /// layer from a sequence.
    pub primary_key: Vec<usize>,
    pub pk_name: String,
    pub hidden_rowid: bool,
    pub indexes: Vec<IndexDef>,
    pub checks: Vec<Check>,
    pub foreign_keys: Vec<ForeignKey>,
    pub comment: Option<String>,
    pub column_comments: BTreeMap<String, String>,
}

impl TableDef {
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The columns users see (without the hidden row id).
    pub fn visible_columns(&self) -> &[ColumnDef] {
        if self.hidden_rowid {
            &self.columns[..self.columns.len() - 1]
        } else {
            &self.columns
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceDef {
    pub id: u64,
    pub schema: String,
    pub name: String,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub start: i64,
    pub cycle: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewDef {
    pub schema: String,
    pub name: String,
    /// The query, as written; planned anew by every statement that reads it.
    pub sql: String,
    pub columns: Vec<String>,
    pub comment: Option<String>,
}

/// Everything the SQL layer needs to know about the relational schema, as of
/// one applied index. Cheap to clone; readers hold it without locks.
#[derive(Debug, Clone, Default)]
pub struct RelCatalog {
    /// The schema version it reflects (bumped by every DDL).
    pub version: u64,
    pub tables: BTreeMap<(String, String), Arc<TableDef>>,
    pub sequences: BTreeMap<(String, String), Arc<SequenceDef>>,
    pub views: BTreeMap<(String, String), Arc<ViewDef>>,
    pub database_comments: BTreeMap<String, String>,
    /// Comments of indexes and sequences, by id.
    pub object_comments: BTreeMap<u64, String>,
}

impl RelCatalog {
    pub fn table(&self, schema: &str, name: &str) -> Option<&Arc<TableDef>> {
        self.tables.get(&(schema.to_string(), name.to_string()))
    }

    pub fn table_by_id(&self, id: u64) -> Option<&Arc<TableDef>> {
        self.tables.values().find(|t| t.id == id)
    }

    pub fn view(&self, schema: &str, name: &str) -> Option<&Arc<ViewDef>> {
        self.views.get(&(schema.to_string(), name.to_string()))
    }

    pub fn sequence(&self, schema: &str, name: &str) -> Option<&Arc<SequenceDef>> {
        self.sequences.get(&(schema.to_string(), name.to_string()))
    }

    /// Schemas that hold at least one relational object.
    pub fn schemas(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .tables
            .keys()
            .chain(self.views.keys())
            .chain(self.sequences.keys())
            .map(|(s, _)| s.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Tables whose foreign keys point at `parent`.
    pub fn children_of(&self, parent: u64) -> Vec<Arc<TableDef>> {
        self.tables
            .values()
            .filter(|t| t.foreign_keys.iter().any(|f| f.parent == parent))
            .cloned()
            .collect()
    }
}
