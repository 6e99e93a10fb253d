//! Applying schema changes: validation against the current catalog (a
//! rejection changes nothing), then the change itself, including the rows it
//! rewrites (a new column's fill value, an index's backfill).

use redb::{ReadableTable, WriteTransaction};

use crate::command::{Applied, DdlOp};
use crate::error::{RelError, Result};
use crate::schema::{RelCatalog, TableDef, ViewDef};
use crate::state::{describe_key, index_key, split_versioned, versioned, DATA, DEFS, SEQS, TVER};
use crate::value::{decode_row, encode_row, Row};

pub(crate) struct IdAlloc(pub u64);

impl IdAlloc {
    fn next(&mut self) -> u64 {
        let id = self.0;
        self.0 += 1;
        id
    }
}

fn table(cat: &RelCatalog, id: u64) -> Result<&TableDef> {
    cat.table_by_id(id)
        .map(|t| t.as_ref())
        .ok_or_else(|| RelError::UndefinedTable(format!("#{id}")))
}

fn rows_of(txn: &WriteTransaction, id: u64) -> Result<Vec<(Vec<u8>, Row)>> {
    let data = txn.open_table(DATA)?;
    let mut out = Vec::new();
    for item in data.range((id, &[][..])..(id + 1, &[][..]))? {
        let (k, v) = item?;
        let (_, payload) = split_versioned(v.value())?;
        out.push((k.value().1.to_vec(), decode_row(payload)?));
    }
    Ok(out)
}

fn clear_space(txn: &WriteTransaction, id: u64) -> Result<()> {
    let mut data = txn.open_table(DATA)?;
    data.retain_in((id, &[][..])..(id + 1, &[][..]), |_, _| false)?;
    Ok(())
}

fn name_taken(cat: &RelCatalog, schema: &str, name: &str) -> bool {
    cat.table(schema, name).is_some() || cat.view(schema, name).is_some()
}

fn index_name_taken(cat: &RelCatalog, schema: &str, name: &str) -> bool {
    cat.tables
        .values()
        .filter(|t| t.schema == schema)
        .any(|t| t.pk_name == name || t.indexes.iter().any(|i| i.name == name))
}

/// Whether `op` may be applied to the state `cat` describes.
pub(crate) fn check(cat: &RelCatalog, txn: &WriteTransaction, op: &DdlOp) -> Result<Result<()>> {
    Ok(check_inner(cat, txn, op))
}

fn check_inner(cat: &RelCatalog, txn: &WriteTransaction, op: &DdlOp) -> Result<()> {
    match op {
        DdlOp::CreateTable(t) => {
            if name_taken(cat, &t.schema, &t.name) {
                return Err(RelError::DuplicateTable(t.name.clone()));
            }
            for ix in &t.indexes {
                if index_name_taken(cat, &t.schema, &ix.name) {
                    return Err(RelError::DuplicateTable(ix.name.clone()));
                }
            }
            check_foreign_keys(cat, t)
        }
        DdlOp::DropTable { id } => {
            let t = table(cat, *id)?;
            if let Some(child) = cat.children_of(*id).into_iter().find(|c| c.id != *id) {
                return Err(RelError::DependentObjects(format!(
                    "cannot drop table {} because table {} references it; drop that table or its foreign key first",
                    t.name, child.name
                )));
            }
            Ok(())
        }
        DdlOp::Truncate { ids } => {
            for id in ids {
                let t = table(cat, *id)?;
                if let Some(child) = cat
                    .children_of(*id)
                    .into_iter()
                    .find(|c| !ids.contains(&c.id))
                {
                    return Err(RelError::DependentObjects(format!(
                        "cannot truncate table {} referenced in a foreign key constraint of table {}; truncate them together",
                        t.name, child.name
                    )));
                }
            }
            Ok(())
        }
        DdlOp::AddColumn {
            table: id,
            column,
            fill,
        } => {
            let t = table(cat, *id)?;
            if t.column(&column.name).is_some() {
                return Err(RelError::DuplicateTable(format!(
                    "column {} of {}",
                    column.name, t.name
                )));
            }
            if !column.nullable && fill.is_null() && !rows_of(txn, *id)?.is_empty() {
                return Err(RelError::NotNullViolation {
                    table: t.name.clone(),
                    column: column.name.clone(),
                });
            }
            Ok(())
        }
        DdlOp::DropColumn { table: id, column } => {
            let t = table(cat, *id)?;
            let name = &t
                .columns
                .get(*column)
                .ok_or_else(|| RelError::UndefinedColumn {
                    table: t.name.clone(),
                    column: format!("#{column}"),
                })?
                .name;
            if t.primary_key.contains(column) {
                return Err(RelError::InvalidDefinition(format!(
                    "cannot drop column {name}: it is part of the primary key of {}",
                    t.name
                )));
            }
            let in_fk = t.foreign_keys.iter().any(|f| f.columns.contains(column))
                || cat.children_of(*id).iter().any(|c| {
                    c.foreign_keys
                        .iter()
                        .any(|f| f.parent == *id && f.parent_columns.contains(column))
                });
            if in_fk {
                return Err(RelError::InvalidDefinition(format!(
                    "cannot drop column {name} of {}: a foreign key uses it; drop the constraint first",
                    t.name
                )));
            }
            Ok(())
        }
        DdlOp::AlterConstraints {
            table: t,
            validated_at,
        } => {
            table(cat, t.id)?;
            let changed = txn
                .open_table(TVER)?
                .get(t.id)?
                .map(|v| v.value())
                .unwrap_or(0);
            if changed > *validated_at {
                return Err(RelError::Conflict(format!(
                    "table {} changed while its new constraint was being validated",
                    t.name
                )));
            }
            check_foreign_keys(cat, t)
        }
        DdlOp::CreateIndex { table: id, index } => {
            let t = table(cat, *id)?;
            if index_name_taken(cat, &t.schema, &index.name) {
                return Err(RelError::DuplicateTable(index.name.clone()));
            }
            if index.unique {
                let mut seen = std::collections::HashSet::new();
                for (pk, row) in rows_of(txn, *id)? {
                    let (k, unique) = index_key(index, &row, &pk);
                    if unique && !seen.insert(k) {
                        let (columns, key) = describe_key(t, &index.columns, &row);
                        return Err(RelError::UniqueViolation {
                            constraint: index.name.clone(),
                            columns,
                            key,
                        });
                    }
                }
            }
            Ok(())
        }
        DdlOp::DropIndex { table: id, index } => {
            let t = table(cat, *id)?;
            if !t.indexes.iter().any(|i| i.id == *index) {
                return Err(RelError::UndefinedObject(format!("index #{index}")));
            }
            Ok(())
        }
        DdlOp::CreateSequence(s) => {
            if cat.sequence(&s.schema, &s.name).is_some() || name_taken(cat, &s.schema, &s.name) {
                return Err(RelError::DuplicateTable(s.name.clone()));
            }
            Ok(())
        }
        DdlOp::AlterSequence(..) | DdlOp::DropSequence { .. } => Ok(()),
        DdlOp::CreateView(v) => {
            if name_taken(cat, &v.schema, &v.name) {
                return Err(RelError::DuplicateTable(v.name.clone()));
            }
            Ok(())
        }
        DdlOp::CommentObject { id, .. } => {
            let known = cat.sequences.values().any(|s| s.id == *id)
                || cat
                    .tables
                    .values()
                    .any(|t| t.indexes.iter().any(|i| i.id == *id));
            if !known {
                return Err(RelError::UndefinedObject(format!(
                    "index or sequence #{id}"
                )));
            }
            Ok(())
        }
        DdlOp::ReplaceView(v) => {
            if cat.table(&v.schema, &v.name).is_some() {
                return Err(RelError::DuplicateTable(v.name.clone()));
            }
            Ok(())
        }
        DdlOp::DropView { schema, name } => {
            if cat.view(schema, name).is_none() {
                return Err(RelError::UndefinedTable(name.clone()));
            }
            Ok(())
        }
        DdlOp::CommentTable { table: id, .. } => table(cat, *id).map(|_| ()),
        DdlOp::CommentColumn {
            table: id, column, ..
        } => {
            let t = table(cat, *id)?;
            if t.column(column).is_none() {
                return Err(RelError::UndefinedColumn {
                    table: t.name.clone(),
                    column: column.clone(),
                });
            }
            Ok(())
        }
        DdlOp::CommentDatabase { .. } => Ok(()),
    }
}

fn check_foreign_keys(cat: &RelCatalog, t: &TableDef) -> Result<()> {
    for fk in &t.foreign_keys {
        let parent = if fk.parent == t.id && t.id != 0 {
            t
        } else {
            table(cat, fk.parent)?
        };
        let mut cols = fk.parent_columns.clone();
        cols.sort_unstable();
        let keyed = |c: &[usize]| {
            let mut c = c.to_vec();
            c.sort_unstable();
            c == cols
        };
        if !keyed(&parent.primary_key)
            && !parent.indexes.iter().any(|i| i.unique && keyed(&i.columns))
        {
            return Err(RelError::InvalidDefinition(format!(
                "foreign key {}: there is no unique constraint matching the given keys for referenced table \"{}\"",
                fk.name, parent.name
            )));
        }
    }
    Ok(())
}

fn put_table(txn: &WriteTransaction, t: &TableDef) -> Result<()> {
    let bytes = postcard::to_allocvec(t)?;
    txn.open_table(DEFS)?
        .insert(format!("t/{}", t.id).as_str(), bytes.as_slice())?;
    Ok(())
}

fn load_table(txn: &WriteTransaction, id: u64) -> Result<TableDef> {
    let defs = txn.open_table(DEFS)?;
    let raw = defs
        .get(format!("t/{id}").as_str())?
        .ok_or_else(|| RelError::UndefinedTable(format!("#{id}")))?;
    Ok(postcard::from_bytes(raw.value())?)
}

fn rewrite_rows(txn: &WriteTransaction, index: u64, id: u64, f: impl Fn(&mut Row)) -> Result<()> {
    let rows = rows_of(txn, id)?;
    let mut data = txn.open_table(DATA)?;
    for (pk, mut row) in rows {
        f(&mut row);
        data.insert(
            (id, pk.as_slice()),
            versioned(index, &encode_row(&row)?).as_slice(),
        )?;
    }
    txn.open_table(TVER)?.insert(id, index)?;
    Ok(())
}

fn build_index(
    txn: &WriteTransaction,
    index: u64,
    t: &TableDef,
    ix: &crate::schema::IndexDef,
) -> Result<()> {
    let rows = rows_of(txn, t.id)?;
    let mut data = txn.open_table(DATA)?;
    for (pk, row) in rows {
        let (k, _) = index_key(ix, &row, &pk);
        data.insert((ix.id, k.as_slice()), versioned(index, &pk).as_slice())?;
    }
    Ok(())
}

/// Applies a checked op.
pub(crate) fn apply(
    txn: &WriteTransaction,
    index: u64,
    op: DdlOp,
    ids: &mut IdAlloc,
) -> Result<()> {
    match op {
        DdlOp::CreateTable(mut t) => {
            t.id = ids.next();
            for ix in &mut t.indexes {
                ix.id = ids.next();
            }
            for fk in &mut t.foreign_keys {
                if fk.parent == 0 {
                    fk.parent = t.id;
                }
            }
            put_table(txn, &t)?;
            txn.open_table(TVER)?.insert(t.id, index)?;
        }
        DdlOp::DropTable { id } => {
            let t = load_table(txn, id)?;
            clear_space(txn, id)?;
            for ix in &t.indexes {
                clear_space(txn, ix.id)?;
                txn.open_table(DEFS)?
                    .remove(format!("k/{}", ix.id).as_str())?;
            }
            txn.open_table(DEFS)?.remove(format!("t/{id}").as_str())?;
            txn.open_table(TVER)?.remove(id)?;
        }
        DdlOp::Truncate { ids: tables } => {
            for id in tables {
                let t = load_table(txn, id)?;
                clear_space(txn, id)?;
                for ix in &t.indexes {
                    clear_space(txn, ix.id)?;
                }
                txn.open_table(TVER)?.insert(id, index)?;
            }
        }
        DdlOp::AddColumn {
            table: id,
            column,
            fill,
        } => {
            let mut t = load_table(txn, id)?;
            let at = if t.hidden_rowid {
                t.columns.len() - 1
            } else {
                t.columns.len()
            };
            t.columns.insert(at, column);
            shift_positions(&mut t, at, 1);
            put_table(txn, &t)?;
            rewrite_rows(txn, index, id, |row| {
                row.insert(at.min(row.len()), fill.clone())
            })?;
        }
        DdlOp::DropColumn { table: id, column } => {
            let mut t = load_table(txn, id)?;
            let dropped: Vec<u64> = t
                .indexes
                .iter()
                .filter(|i| i.columns.contains(&column))
                .map(|i| i.id)
                .collect();
            for ix in &dropped {
                clear_space(txn, *ix)?;
            }
            t.indexes.retain(|i| !dropped.contains(&i.id));
            let name = t.columns.remove(column).name;
            t.column_comments.remove(&name);
            shift_positions(&mut t, column + 1, -1);
            put_table(txn, &t)?;
            rewrite_rows(txn, index, id, |row| {
                if column < row.len() {
                    row.remove(column);
                }
            })?;
        }
        DdlOp::AlterConstraints { table: new, .. } => {
            let mut t = load_table(txn, new.id)?;
            t.checks = new.checks;
            t.foreign_keys = new.foreign_keys;
            put_table(txn, &t)?;
            txn.open_table(TVER)?.insert(t.id, index)?;
        }
        DdlOp::CreateIndex {
            table: id,
            index: mut ix,
        } => {
            let mut t = load_table(txn, id)?;
            ix.id = ids.next();
            build_index(txn, index, &t, &ix)?;
            t.indexes.push(ix);
            put_table(txn, &t)?;
        }
        DdlOp::DropIndex {
            table: id,
            index: ix,
        } => {
            let mut t = load_table(txn, id)?;
            clear_space(txn, ix)?;
            txn.open_table(DEFS)?.remove(format!("k/{ix}").as_str())?;
            t.indexes.retain(|i| i.id != ix);
            put_table(txn, &t)?;
        }
        DdlOp::CreateSequence(mut s) => {
            s.id = ids.next();
            let bytes = postcard::to_allocvec(&s)?;
            txn.open_table(DEFS)?
                .insert(format!("s/{}", s.id).as_str(), bytes.as_slice())?;
            txn.open_table(SEQS)?.insert(s.id, s.start - s.increment)?;
        }
        DdlOp::AlterSequence(s, restart) => {
            let bytes = postcard::to_allocvec(&s)?;
            txn.open_table(DEFS)?
                .insert(format!("s/{}", s.id).as_str(), bytes.as_slice())?;
            if let Some(v) = restart {
                txn.open_table(SEQS)?.insert(s.id, v - s.increment)?;
            }
        }
        DdlOp::DropSequence { id } => {
            txn.open_table(DEFS)?.remove(format!("s/{id}").as_str())?;
            txn.open_table(DEFS)?.remove(format!("k/{id}").as_str())?;
            txn.open_table(SEQS)?.remove(id)?;
        }
        DdlOp::CommentObject { id, comment } => {
            let mut defs = txn.open_table(DEFS)?;
            let key = format!("k/{id}");
            match comment {
                Some(c) => {
                    defs.insert(key.as_str(), postcard::to_allocvec(&c)?.as_slice())?;
                }
                None => {
                    defs.remove(key.as_str())?;
                }
            }
        }
        DdlOp::CreateView(v) | DdlOp::ReplaceView(v) => {
            let mut v = v;
            if v.comment.is_none() {
                v.comment = cat_view_comment(txn, &v.schema, &v.name)?;
            }
            let bytes = postcard::to_allocvec(&v)?;
            txn.open_table(DEFS)?.insert(
                format!("v/{}.{}", v.schema, v.name).as_str(),
                bytes.as_slice(),
            )?;
        }
        DdlOp::DropView { schema, name } => {
            txn.open_table(DEFS)?
                .remove(format!("v/{schema}.{name}").as_str())?;
        }
        DdlOp::CommentTable { table: id, comment } => {
            let mut t = load_table(txn, id)?;
            t.comment = comment;
            put_table(txn, &t)?;
        }
        DdlOp::CommentColumn {
            table: id,
            column,
            comment,
        } => {
            let mut t = load_table(txn, id)?;
            match comment {
                Some(c) => t.column_comments.insert(column, c),
                None => t.column_comments.remove(&column),
            };
            put_table(txn, &t)?;
        }
        DdlOp::CommentDatabase { database, comment } => {
            let mut defs = txn.open_table(DEFS)?;
            let key = format!("c/{database}");
            match comment {
                Some(c) => {
                    let bytes = postcard::to_allocvec(&c)?;
                    defs.insert(key.as_str(), bytes.as_slice())?;
                }
                None => {
                    defs.remove(key.as_str())?;
                }
            }
        }
    }
    Ok(())
}

/// Column positions at or after `from` move by `by` (a column inserted or
/// removed before them).
fn shift_positions(t: &mut TableDef, from: usize, by: isize) {
    let f = |c: &mut usize| {
        if *c >= from {
            *c = (*c as isize + by) as usize;
        }
    };
    t.primary_key.iter_mut().for_each(f);
    for ix in &mut t.indexes {
        ix.columns.iter_mut().for_each(f);
    }
    for fk in &mut t.foreign_keys {
        fk.columns.iter_mut().for_each(f);
        if fk.parent == t.id {
            fk.parent_columns.iter_mut().for_each(f);
        }
    }
}

fn sequence(txn: &WriteTransaction, id: u64) -> Result<crate::schema::SequenceDef> {
    let defs = txn.open_table(DEFS)?;
    let raw = defs
        .get(format!("s/{id}").as_str())?
        .ok_or_else(|| RelError::UndefinedObject(format!("sequence #{id}")))?;
    Ok(postcard::from_bytes(raw.value())?)
}

pub(crate) fn seq_reserve(txn: &WriteTransaction, id: u64, count: u64) -> Result<Result<Applied>> {
    let s = match sequence(txn, id) {
        Ok(s) => s,
        Err(e @ RelError::UndefinedObject(_)) => return Ok(Err(e)),
        Err(e) => return Err(e),
    };
    let mut seqs = txn.open_table(SEQS)?;
    let last = seqs
        .get(id)?
        .map(|v| v.value())
        .unwrap_or(s.start - s.increment);
    let step = |v: i64| {
        v.checked_add(s.increment)
            .filter(|n| *n >= s.min && *n <= s.max)
    };
    let Some(first) = step(last).or(if s.cycle {
        Some(if s.increment > 0 { s.min } else { s.max })
    } else {
        None
    }) else {
        let bound = if s.increment > 0 {
            "maximum"
        } else {
            "minimum"
        };
        return Ok(Err(RelError::Sequence {
            name: s.name,
            reason: format!("reached its {bound} value"),
        }));
    };
    let end = block_end(first, count, s.increment, s.min, s.max);
    seqs.insert(id, end)?;
    Ok(Ok(Applied::Values(first, end)))
}

/// The last value of a block of `count` values from `first`, in steps of
/// `increment`: a block never crosses the bound, so it ends at the last
/// value inside it. Computed, not stepped, so that an entry asking for a
/// huge block costs no more than a small one.
fn block_end(first: i64, count: u64, increment: i64, min: i64, max: i64) -> i64 {
    let (first, inc) = (i128::from(first), i128::from(increment));
    if inc == 0 {
        return first as i64;
    }
    let want = first.saturating_add(i128::from(count.max(1) - 1).saturating_mul(inc));
    let end = if inc > 0 {
        let last = first + (i128::from(max) - first) / inc * inc;
        want.min(last)
    } else {
        let last = first - (first - i128::from(min)) / -inc * -inc;
        want.max(last)
    };
    // Between `first` and a bound, both i64.
    end as i64
}

pub(crate) fn seq_set(txn: &WriteTransaction, id: u64, value: i64) -> Result<Result<Applied>> {
    let s = match sequence(txn, id) {
        Ok(s) => s,
        Err(e @ RelError::UndefinedObject(_)) => return Ok(Err(e)),
        Err(e) => return Err(e),
    };
    if value < s.min || value > s.max {
        return Ok(Err(RelError::Sequence {
            name: s.name,
            reason: format!(
                "setval: value {value} is out of bounds ({}..{})",
                s.min, s.max
            ),
        }));
    }
    txn.open_table(SEQS)?.insert(id, value)?;
    Ok(Ok(Applied::Done))
}

/// The comment of a stored view, which replacing it keeps.
fn cat_view_comment(txn: &WriteTransaction, schema: &str, name: &str) -> Result<Option<String>> {
    let defs = txn.open_table(DEFS)?;
    let Some(raw) = defs.get(format!("v/{schema}.{name}").as_str())? else {
        return Ok(None);
    };
    let v: ViewDef = postcard::from_bytes(raw.value())?;
    Ok(v.comment)
}

#[cfg(test)]
mod tests {
    use super::block_end;

    #[test]
    fn a_block_ends_inside_the_bounds_however_large_it_is() {
        assert_eq!(block_end(1, 32, 1, 1, i64::MAX), 32);
        assert_eq!(block_end(1, 1, 1, 1, i64::MAX), 1);
        assert_eq!(block_end(1, u64::MAX, 1, 1, 100), 100);
        assert_eq!(block_end(1, u64::MAX, 3, 1, 100), 100);
        assert_eq!(block_end(1, u64::MAX, 4, 1, 100), 97);
        assert_eq!(block_end(10, 5, -2, 1, 100), 2);
        assert_eq!(block_end(10, 10, -3, 1, 100), 1);
        assert_eq!(
            block_end(i64::MIN + 5, u64::MAX, 7, i64::MIN, i64::MAX),
            i64::MAX - 3
        );
        assert_eq!(
            block_end(i64::MAX, u64::MAX, -1, i64::MIN, i64::MAX),
            i64::MIN + 1
        );
        assert_eq!(
            block_end(i64::MAX, u64::MAX, -2, i64::MIN, i64::MAX),
            i64::MIN + 1
        );
        assert_eq!(block_end(5, u64::MAX, 0, 1, 10), 5);
    }
}
