//! Views: stored as SQL text and expanded into every statement that reads
//! them, as a derived table in place of the name. So a view is planned anew
//! each time and reads the same snapshot as the rest of its statement, and
//! a view over a view expands in turn.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, ObjectNamePart, Query, Statement, TableAlias, TableAliasColumnDef,
    TableFactor, Visit, VisitMut, Visitor, VisitorMut,
};
use sluice_relstore::schema::ViewDef;
use sluice_relstore::RelCatalog;

use super::ddl::{norm, resolve};
use crate::error::QueryError;

/// Expansions one statement may need; more means a view reads itself.
const MAX_EXPANSIONS: usize = 256;

/// Names that a `WITH` clause anywhere in `node` defines; a table factor
/// with such a name is the CTE, not a view.
fn cte_names<V: Visit>(node: &V) -> HashSet<String> {
    struct Ctes(HashSet<String>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(w) = &q.with {
                self.0
                    .extend(w.cte_tables.iter().map(|c| norm(&c.alias.name)));
            }
            ControlFlow::Continue(())
        }
    }
    let mut c = Ctes(HashSet::new());
    let _ = node.visit(&mut c);
    c.0
}

fn single(name: &ObjectName) -> Option<&Ident> {
    match name.0.as_slice() {
        [p] => p.as_ident(),
        _ => None,
    }
}

/// Replaces every view named in `stmt` by its query. `db` is the schema of
/// unqualified names.
pub fn expand(stmt: &mut Statement, cat: &RelCatalog, db: &str) -> Result<(), QueryError> {
    if cat.views.is_empty() {
        return Ok(());
    }
    struct Expand<'a> {
        cat: &'a RelCatalog,
        db: &'a str,
        ctes: HashSet<String>,
        done: usize,
        error: Option<QueryError>,
    }
    impl VisitorMut for Expand<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table { name, alias, .. } = tf else {
                return ControlFlow::Continue(());
            };
            if single(name).is_some_and(|i| self.ctes.contains(&norm(i))) {
                return ControlFlow::Continue(());
            }
            let Ok((schema, n)) = resolve(name, self.db) else {
                return ControlFlow::Continue(());
            };
            let Some(view) = self.cat.view(&schema, &n) else {
                return ControlFlow::Continue(());
            };
            self.done += 1;
            if self.done > MAX_EXPANSIONS {
                self.error = Some(QueryError::InvalidValue(format!(
                    "view {schema}.{n} expands without end (a view that reads itself?)"
                )));
                return ControlFlow::Break(());
            }
            let subquery = match parse_query(&view.sql) {
                Ok(q) => q,
                Err(e) => {
                    self.error = Some(e);
                    return ControlFlow::Break(());
                }
            };
            let alias = alias.clone().unwrap_or_else(|| TableAlias {
                explicit: true,
                name: Ident::with_quote('"', n.clone()),
                columns: Vec::new(),
                at: None,
            });
            let alias = TableAlias {
                columns: if alias.columns.is_empty() {
                    view.columns
                        .iter()
                        .map(|c| TableAliasColumnDef {
                            name: Ident::with_quote('"', c.clone()),
                            data_type: None,
                        })
                        .collect()
                } else {
                    alias.columns
                },
                ..alias
            };
            *tf = TableFactor::Derived {
                lateral: false,
                subquery,
                alias: Some(alias),
                sample: None,
            };
            ControlFlow::Continue(())
        }
    }
    let mut v = Expand {
        cat,
        db,
        ctes: cte_names(&*stmt),
        done: 0,
        error: None,
    };
    let _ = stmt.visit(&mut v);
    match v.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn parse_query(sql: &str) -> Result<Box<Query>, QueryError> {
    match crate::session::parse(sql)?.pop() {
        Some(Statement::Query(q)) => Ok(q),
        _ => Err(QueryError::InvalidValue(format!(
            "a stored view is not a query: {sql}"
        ))),
    }
}

/// Qualifies every unqualified table name of a view's query with `db`, so
/// the view reads the same tables whatever a later session's database is.
pub fn qualify(query: &mut Query, db: &str) {
    struct Qualify<'a> {
        db: &'a str,
        ctes: HashSet<String>,
    }
    impl VisitorMut for Qualify<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { name, .. } = tf {
                if let Some(i) = single(name) {
                    if !self.ctes.contains(&norm(i)) {
                        let i = i.clone();
                        name.0 = vec![
                            ObjectNamePart::Identifier(Ident::with_quote('"', self.db)),
                            ObjectNamePart::Identifier(i),
                        ];
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut q = Qualify {
        db,
        ctes: cte_names(&*query),
    };
    let _ = query.visit(&mut q);
}

/// The definition `CREATE VIEW` stores.
pub fn define(
    schema: String,
    name: String,
    mut query: Query,
    db: &str,
    columns: Vec<String>,
) -> ViewDef {
    qualify(&mut query, db);
    ViewDef {
        schema,
        name,
        sql: query.to_string(),
        columns,
        comment: None,
    }
}

impl crate::QueryEngine {
    /// `CREATE [OR REPLACE] VIEW`: the query must plan now (in a snapshot
    /// of its own), and a column list may rename at most its columns.
    pub(crate) async fn create_view(
        &self,
        s: &crate::Session,
        db: &str,
        cv: &datafusion::sql::sqlparser::ast::CreateView,
    ) -> Result<(), QueryError> {
        if cv.materialized || cv.temporary {
            return Err(QueryError::Unsupported(
                "materialized and temporary views".into(),
            ));
        }
        let rel = self
            .rel
            .as_ref()
            .ok_or(QueryError::Rel(sluice_relstore::RelError::Unavailable))?;
        let (schema, name) = resolve(&cv.name, db)?;
        let cat = rel.catalog();
        if cat.view(&schema, &name).is_some() && cv.if_not_exists {
            return Ok(());
        }
        self.refuse_time_series_name(&schema, &name)?;
        let columns: Vec<String> = cv.columns.iter().map(|c| norm(&c.name)).collect();
        let def = define(schema, name, (*cv.query).clone(), db, columns);
        let (_, plan) = self
            .plan(s, Statement::Query(parse_query(&def.sql)?))
            .await?;
        let have = plan.schema().fields().len();
        if def.columns.len() > have {
            return Err(QueryError::InvalidValue(format!(
                "view {} names {} columns but its query has {have}",
                def.name,
                def.columns.len()
            )));
        }
        let op = if cv.or_replace {
            sluice_relstore::DdlOp::ReplaceView(def)
        } else {
            sluice_relstore::DdlOp::CreateView(def)
        };
        rel.ddl(op).await?;
        Ok(())
    }
}
