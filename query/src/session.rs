//! Sessions and statement dispatch. SQL is parsed once; each statement goes
//! to the part that owns it: transaction control to the session, relational
//! DDL and DML to `rel`, time-series storage settings to `ddl`, and every
//! read to DataFusion, bound to the session's transaction (or, outside one,
//! to a snapshot taken for the statement).
//!
//! A session holds at most one transaction. Outside `BEGIN … COMMIT` every
//! statement is its own transaction. A statement that fails inside a
//! transaction aborts it: later statements fail with SQLSTATE 25P02 until
//! `ROLLBACK` (or `ROLLBACK TO SAVEPOINT`); `COMMIT` of an aborted
//! transaction rolls it back.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SQLOptions;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    ObjectType, Statement, TransactionAccessMode, TransactionMode,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use parking_lot::Mutex;
use sluice_access::{Principal, Privilege};
use sluice_relstore::{DdlOp, RelError, RelHandle, Txn};

use crate::error::QueryError;
use crate::rel::{ddl as relddl, view as relview, RelBinding};
use crate::QueryEngine;

/// What one statement answered.
pub enum Outcome {
    Rows(SendableRecordBatchStream),
    /// A command tag, as PostgreSQL names it (`INSERT 0 3`, `COMMIT`).
    Command(String),
}

impl Outcome {
    /// The answer as a stream: rows, or one row holding the command tag.
    pub fn into_stream(self) -> Result<SendableRecordBatchStream, QueryError> {
        match self {
            Outcome::Rows(s) => Ok(s),
            Outcome::Command(tag) => {
                let batch = RecordBatch::try_from_iter([(
                    "result",
                    Arc::new(StringArray::from(vec![tag])) as ArrayRef,
                )])
                .map_err(|e| QueryError::Execution(e.into()))?;
                Ok(Box::pin(RecordBatchStreamAdapter::new(
                    batch.schema(),
                    futures::stream::iter([Ok(batch)]),
                )))
            }
        }
    }
}

pub struct Session {
    pub db: Option<String>,
    /// Who runs the statements; None when authentication is off.
    pub principal: Option<Arc<Principal>>,
    txn: Option<Arc<Mutex<Txn>>>,
    failed: bool,
    currvals: crate::rel::seqfn::Currvals,
}

impl Session {
    pub fn new(db: Option<&str>) -> Session {
        Session {
            db: db.map(str::to_string),
            principal: None,
            txn: None,
            failed: false,
            currvals: Default::default(),
        }
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    pub fn rollback(&mut self) {
        self.txn = None;
        self.failed = false;
    }
}

fn batches_stream(
    (schema, batches): crate::rel::dml::Returned,
) -> Result<SendableRecordBatchStream, QueryError> {
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(batches.into_iter().map(Ok)),
    )))
}

/// What follows `words` (case-insensitive, separated by any whitespace) at
/// the start of `sql`, without a trailing semicolon, when `sql` is one
/// statement.
fn strip_words<'a>(sql: &'a str, words: &[&str]) -> Option<&'a str> {
    let mut rest = sql.trim_start();
    for w in words {
        let head = rest.get(..w.len())?;
        if !head.eq_ignore_ascii_case(w) {
            return None;
        }
        rest = &rest[w.len()..];
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        rest = rest.trim_start();
    }
    let rest = rest.trim_end().trim_end_matches(';').trim_end();
    (!rest.contains(';')).then_some(rest)
}

/// Whether `stmt` is a SELECT with two or more unaliased expressions in its
/// output, the case [`name_outputs`] can help.
fn unnamed_outputs(stmt: &Statement) -> bool {
    use datafusion::sql::sqlparser::ast::{Expr, SelectItem, SetExpr};
    let Statement::Query(q) = stmt else {
        return false;
    };
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return false;
    };
    sel.projection
        .iter()
        .filter(|i| {
            matches!(i, SelectItem::UnnamedExpr(e)
                if !matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)))
        })
        .count()
        >= 2
}

/// Aliases every unaliased expression of the outer SELECT with its text.
fn name_outputs(stmt: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{Expr, Ident, SelectItem, SetExpr};
    let Statement::Query(q) = stmt else { return };
    let SetExpr::Select(sel) = q.body.as_mut() else {
        return;
    };
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for item in sel.projection.iter_mut() {
        let SelectItem::UnnamedExpr(e) = item else {
            continue;
        };
        if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            continue;
        }
        let text = e.to_string();
        let n = seen.entry(text.clone()).or_insert(0);
        *n += 1;
        let alias = if *n == 1 {
            text
        } else {
            format!("{text} ({n})")
        };
        *item = SelectItem::ExprWithAlias {
            expr: e.clone(),
            alias: Ident::with_quote('"', alias),
        };
    }
}

/// What a statement did to the session's transaction block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockEffect {
    Begin,
    End,
    None,
}

impl BlockEffect {
    pub fn of(st: &Statement) -> BlockEffect {
        match st {
            Statement::StartTransaction { .. } => BlockEffect::Begin,
            Statement::Commit { .. }
            | Statement::Rollback {
                savepoint: None, ..
            } => BlockEffect::End,
            _ => BlockEffect::None,
        }
    }
}

/// Statements that change the schema, which run outside transactions.
fn is_schema_change(st: &Statement) -> bool {
    matches!(
        st,
        Statement::CreateTable(_)
            | Statement::CreateIndex(_)
            | Statement::CreateView(_)
            | Statement::CreateSequence { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateSchema { .. }
            | Statement::Truncate(_)
            | Statement::Comment { .. }
            | Statement::Drop { .. }
            | Statement::AlterTable(_)
    ) || crate::access::is_access_ast(st)
}

/// The schemas a schema change alters, each of which it needs admin on.
fn changed_schemas(st: &Statement, db: &str) -> Result<Vec<String>, QueryError> {
    use datafusion::sql::sqlparser::ast::CommentObject as C;
    let of =
        |n: &datafusion::sql::sqlparser::ast::ObjectName| relddl::resolve(n, db).map(|(s, _)| s);
    Ok(match st {
        Statement::CreateTable(ct) => vec![of(&ct.name)?],
        Statement::CreateIndex(ci) => vec![of(&ci.table_name)?],
        Statement::CreateView(cv) => vec![of(&cv.name)?],
        Statement::CreateSequence { name, .. } => vec![of(name)?],
        Statement::AlterTable(at) => vec![of(&at.name)?],
        Statement::Truncate(t) => t
            .table_names
            .iter()
            .map(|t| of(&t.name))
            .collect::<Result<_, _>>()?,
        Statement::Drop { names, .. } => names.iter().map(of).collect::<Result<_, _>>()?,
        Statement::Comment {
            object_type,
            object_name,
            ..
        } => {
            let parts: Vec<String> = object_name
                .0
                .iter()
                .filter_map(|p| p.as_ident().map(relddl::norm))
                .collect();
            match (object_type, parts.as_slice()) {
                (C::Database | C::Schema, [d, ..]) => vec![d.clone()],
                (C::Column, [s, _, _]) => vec![s.clone()],
                (C::Column, _) => vec![db.to_string()],
                _ => vec![of(object_name)?],
            }
        }
        _ => Vec::new(),
    })
}

/// The schemas of the tables a statement's foreign keys refer to.
fn referenced_schemas(st: &Statement, db: &str) -> Result<Vec<String>, QueryError> {
    use datafusion::sql::sqlparser::ast::{AlterTableOperation, ColumnOption, TableConstraint};
    let of = |n: &datafusion::sql::sqlparser::ast::ObjectName, home: &str| {
        relddl::resolve(n, home).map(|(s, _)| s)
    };
    let mut out = Vec::new();
    match st {
        Statement::CreateTable(ct) => {
            let home = of(&ct.name, db)?;
            for c in &ct.columns {
                for o in &c.options {
                    if let ColumnOption::ForeignKey(f) = &o.option {
                        out.push(of(&f.foreign_table, &home)?);
                    }
                }
            }
            for c in &ct.constraints {
                if let TableConstraint::ForeignKey(f) = c {
                    out.push(of(&f.foreign_table, &home)?);
                }
            }
        }
        Statement::AlterTable(at) => {
            let home = of(&at.name, db)?;
            for op in &at.operations {
                if let AlterTableOperation::AddConstraint {
                    constraint: TableConstraint::ForeignKey(f),
                    ..
                } = op
                {
                    out.push(of(&f.foreign_table, &home)?);
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Operators one statement may hold. An operator chain (`a + b + …`,
/// `x = 1 OR x = 2 OR …`) parses into a tree as deep as it is long, and
/// walking, printing and dropping such a tree recurses that deep: past a few
/// thousand levels a thread's stack runs out and the process aborts. Lists
/// (VALUES rows, IN lists, arguments) do not deepen the tree and are not
/// counted.
pub const MAX_OPERATORS: usize = 2000;

fn check_operators(sql: &str) -> Result<(), QueryError> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| QueryError::Syntax(e.to_string()))?;
    let (mut count, mut statement) = (0usize, 1usize);
    let mut prev: Option<&Token> = None;
    for t in &tokens {
        if matches!(t, Token::Whitespace(_)) {
            continue;
        }
        let operator = match t {
            Token::SemiColon => {
                count = 0;
                statement += 1;
                false
            }
            // A sign right after `(`, `,` or nothing is a literal's.
            Token::Minus | Token::Plus => !matches!(
                prev,
                None | Some(Token::LParen) | Some(Token::Comma) | Some(Token::SemiColon)
            ),
            Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret => true,
            Token::Word(w) => ["AND", "OR", "NOT"]
                .iter()
                .any(|k| w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k)),
            _ => false,
        };
        if operator {
            count += 1;
            if count > MAX_OPERATORS {
                return Err(QueryError::TooComplex(format!(
                    "statement {statement} has more than {MAX_OPERATORS} operators; split it, or use IN (…) for long OR lists"
                )));
            }
        }
        prev = Some(t);
    }
    Ok(())
}

pub fn parse(sql: &str) -> Result<Vec<Statement>, QueryError> {
    check_operators(sql)?;
    Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| QueryError::Syntax(e.to_string()))
}

impl QueryEngine {
    fn rel(&self) -> Result<&RelHandle, QueryError> {
        self.rel
            .as_ref()
            .ok_or(QueryError::Rel(RelError::Unavailable))
    }

    /// Runs every statement of `sql` in order; stops at the first error.
    /// Several statements outside a transaction block run in one implicit
    /// transaction, as PostgreSQL runs a multi-statement query: a failure
    /// keeps none of them. BEGIN makes it explicit, COMMIT or ROLLBACK ends
    /// it, and a schema change (never transactional here) commits what came
    /// before it and runs on its own.
    pub async fn run(&self, s: &mut Session, sql: &str) -> Result<Vec<Outcome>, QueryError> {
        let (done, res) = self.run_each(s, sql).await;
        res.map(|()| done.into_iter().map(|(_, o)| o).collect())
    }

    /// As [`QueryEngine::run`], but answers the outcome of every statement
    /// that ran (with what it did to the transaction block) and then the
    /// error that stopped the rest, as the PostgreSQL protocol reports them.
    pub async fn run_each(
        &self,
        s: &mut Session,
        sql: &str,
    ) -> (Vec<(BlockEffect, Outcome)>, Result<(), QueryError>) {
        let mut out = Vec::new();
        let res = self.run_into(s, sql, &mut out).await;
        (out, res)
    }

    async fn run_into(
        &self,
        s: &mut Session,
        sql: &str,
        out: &mut Vec<(BlockEffect, Outcome)>,
    ) -> Result<(), QueryError> {
        if let Some(rest) = strip_words(sql, &["ALTER", "SEQUENCE"]) {
            if s.failed {
                return Err(QueryError::TransactionAborted);
            }
            if s.txn.is_some() {
                return Err(QueryError::DdlInTransaction);
            }
            let db = s.db.clone().unwrap_or_else(|| "public".to_string());
            out.push((BlockEffect::None, self.alter_sequence(s, &db, rest).await?));
            return Ok(());
        }
        // CREATE USER … PASSWORD and GRANT role TO … are not in the general
        // parser's grammar: such a statement on its own is read by `access`.
        if crate::access::is_access_statement(sql)
            && !sql.trim().trim_end_matches(';').contains(';')
        {
            if s.failed {
                return Err(QueryError::TransactionAborted);
            }
            if s.txn.is_some() {
                return Err(QueryError::DdlInTransaction);
            }
            out.push((BlockEffect::None, self.run_access(s, sql).await?));
            return Ok(());
        }
        let stmts = parse(sql)?;
        let n = stmts.len();
        let wrap = n > 1 && s.txn.is_none() && self.rel.is_some();
        let mut implicit = false;
        for (i, stmt) in stmts.into_iter().enumerate() {
            let effect = BlockEffect::of(&stmt);
            if wrap {
                match &stmt {
                    Statement::StartTransaction { .. }
                    | Statement::Commit { .. }
                    | Statement::Rollback { .. } => {
                        // BEGIN carries the implicit transaction on as an
                        // explicit one; COMMIT and ROLLBACK end either.
                        implicit = false;
                    }
                    st if is_schema_change(st) && implicit => {
                        implicit = false;
                        self.end_implicit(s).await?;
                    }
                    st if is_schema_change(st) => {}
                    _ if s.txn.is_none() => {
                        s.txn = Some(Arc::new(Mutex::new(self.rel()?.begin(false)?)));
                        s.failed = false;
                        implicit = true;
                    }
                    _ => {}
                }
            }
            let res = match self.run_statement(s, stmt).await {
                // A statement runs before the next one starts, so a read
                // that is not the last is run to its end here (it may call
                // nextval, and must not see later statements' writes).
                Ok(Outcome::Rows(stream)) if i + 1 < n => {
                    let schema = stream.schema();
                    match futures::TryStreamExt::try_collect::<Vec<_>>(stream).await {
                        Ok(b) => batches_stream((schema, b)).map(Outcome::Rows),
                        Err(e) => {
                            if s.txn.is_some() {
                                s.failed = true;
                            }
                            Err(QueryError::Execution(e))
                        }
                    }
                }
                other => other,
            };
            match res {
                Ok(o) => out.push((effect, o)),
                Err(e) => {
                    if implicit {
                        s.rollback();
                    }
                    return Err(if n > 1 {
                        QueryError::InStatement {
                            index: i + 1,
                            source: Box::new(e),
                        }
                    } else {
                        e
                    });
                }
            }
        }
        if implicit {
            self.end_implicit(s).await?;
        }
        Ok(())
    }

    /// Commits the implicit transaction of a multi-statement query.
    async fn end_implicit(&self, s: &mut Session) -> Result<(), QueryError> {
        if let Some(txn) = s.txn.take() {
            s.failed = false;
            self.commit(txn).await?;
        }
        Ok(())
    }

    pub async fn run_statement(
        &self,
        s: &mut Session,
        stmt: Statement,
    ) -> Result<Outcome, QueryError> {
        match &stmt {
            Statement::StartTransaction { modes, .. } => {
                if s.txn.is_none() {
                    let read_only = modes.iter().any(|m| {
                        matches!(
                            m,
                            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly)
                        )
                    });
                    s.txn = Some(Arc::new(Mutex::new(self.rel()?.begin(read_only)?)));
                    s.failed = false;
                }
                return Ok(Outcome::Command("BEGIN".into()));
            }
            Statement::Commit { .. } => {
                let Some(txn) = s.txn.take() else {
                    return Ok(Outcome::Command("COMMIT".into()));
                };
                if std::mem::take(&mut s.failed) {
                    return Ok(Outcome::Command("ROLLBACK".into()));
                }
                self.commit(txn).await?;
                return Ok(Outcome::Command("COMMIT".into()));
            }
            Statement::Rollback { savepoint, .. } => {
                match savepoint {
                    None => s.rollback(),
                    Some(name) => {
                        let txn = s.txn.as_ref().ok_or(QueryError::NoTransaction)?;
                        txn.lock().rollback_to(&relddl::norm(name))?;
                        s.failed = false;
                    }
                }
                return Ok(Outcome::Command("ROLLBACK".into()));
            }
            _ if s.failed => return Err(QueryError::TransactionAborted),
            Statement::Savepoint { name } => {
                let txn = s.txn.as_ref().ok_or(QueryError::NoTransaction)?;
                txn.lock().savepoint(&relddl::norm(name));
                return Ok(Outcome::Command("SAVEPOINT".into()));
            }
            Statement::ReleaseSavepoint { name } => {
                let txn = s.txn.as_ref().ok_or(QueryError::NoTransaction)?;
                txn.lock().release(&relddl::norm(name))?;
                return Ok(Outcome::Command("RELEASE".into()));
            }
            _ => {}
        }
        let res = self.dispatch(s, stmt).await;
        if res.is_err() && s.txn.is_some() {
            s.failed = true;
        }
        res
    }

    async fn alter_sequence(
        &self,
        s: &Session,
        db: &str,
        rest: &str,
    ) -> Result<Outcome, QueryError> {
        let rel = self.rel()?;
        let (if_exists, name, options, restart) = relddl::parse_alter_sequence(rest)?;
        let (schema, n) = relddl::resolve(&name, db)?;
        if let Some(p) = &s.principal {
            p.check(&schema, Privilege::Admin)?;
        }
        let Some(def) = rel.catalog().sequence(&schema, &n).cloned() else {
            if if_exists {
                return Ok(Outcome::Command("ALTER SEQUENCE".into()));
            }
            return Err(QueryError::Rel(RelError::UndefinedTable(format!(
                "sequence {n}"
            ))));
        };
        let new = relddl::altered_sequence((*def).clone(), &options)?;
        // Without RESTART the sequence goes on from the last value handed
        // out, not from the end of the block reserved for this process.
        let handed = rel.forget_sequence(new.id);
        let restart = match restart {
            Some(v) => Some(v.unwrap_or(new.start)),
            None => handed.map(|h| h.saturating_add(new.increment)),
        };
        let id = new.id;
        rel.ddl(DdlOp::AlterSequence(new, restart)).await?;
        rel.forget_sequence(id);
        Ok(Outcome::Command("ALTER SEQUENCE".into()))
    }

    async fn commit(&self, txn: Arc<Mutex<Txn>>) -> Result<(), QueryError> {
        // A finished plan may still hold the binding; the transaction ends
        // here whoever else has a reference to it.
        let txn = txn.lock().take();
        self.rel()?.commit(txn).await?;
        Ok(())
    }

    fn is_relational(&self, db: &str, name: &datafusion::sql::sqlparser::ast::ObjectName) -> bool {
        let (Some(rel), Ok((schema, table))) = (&self.rel, relddl::resolve(name, db)) else {
            return false;
        };
        rel.catalog().table(&schema, &table).is_some()
    }

    fn binding(&self, s: &Session, read_only: bool) -> Result<(Arc<RelBinding>, bool), QueryError> {
        let rel = self.rel()?;
        let (txn, own) = match &s.txn {
            Some(t) => (t.clone(), false),
            None => (Arc::new(Mutex::new(rel.begin(read_only)?)), true),
        };
        Ok((
            Arc::new(RelBinding {
                handle: rel.clone(),
                txn,
                dml_target: None,
                currvals: s.currvals.clone(),
                principal: s.principal.clone(),
            }),
            own,
        ))
    }

    async fn dispatch(&self, s: &mut Session, stmt: Statement) -> Result<Outcome, QueryError> {
        let db = s.db.clone().unwrap_or_else(|| "public".to_string());
        if crate::access::is_access_ast(&stmt) {
            if s.txn.is_some() {
                return Err(QueryError::DdlInTransaction);
            }
            return self.run_access(s, &stmt.to_string()).await;
        }
        for schema in changed_schemas(&stmt, &db)? {
            if crate::access::RESERVED_SCHEMAS.contains(&schema.as_str()) {
                return Err(QueryError::Rel(RelError::InvalidDefinition(format!(
                    "schema {schema} is Sluice's own: nothing can be created or changed in it"
                ))));
            }
            if let Some(p) = &s.principal {
                crate::access::check_schema(p, &schema, Privilege::Admin)?;
            }
        }
        // A foreign key reads its parent table (whether a key exists) and
        // holds up deletes there: it needs read on the parent's database.
        if let Some(p) = &s.principal {
            for schema in referenced_schemas(&stmt, &db)? {
                crate::access::check_schema(p, &schema, Privilege::Read)?;
            }
        }
        match &stmt {
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                let (binding, own) = self.binding(s, false)?;
                let res = match &stmt {
                    Statement::Insert(i) => self.insert(&db, binding.clone(), i).await?,
                    Statement::Update(u) => self.update(&db, binding.clone(), u).await?,
                    Statement::Delete(d) => self.delete(&db, binding.clone(), d).await?,
                    _ => unreachable_statement()?,
                };
                if own {
                    let txn = binding.txn.clone();
                    drop(binding);
                    self.commit(txn).await?;
                }
                return Ok(match res.returning {
                    Some(b) => Outcome::Rows(batches_stream(b)?),
                    None => Outcome::Command(res.tag),
                });
            }
            Statement::CreateView(cv) => {
                if s.txn.is_some() {
                    return Err(QueryError::DdlInTransaction);
                }
                self.create_view(s, &db, cv).await?;
                return Ok(Outcome::Command("CREATE VIEW".into()));
            }
            Statement::CreateTable(_)
            | Statement::CreateIndex(_)
            | Statement::Truncate(_)
            | Statement::CreateSequence { .. }
            | Statement::Comment { .. } => {
                if s.txn.is_some() {
                    return Err(QueryError::DdlInTransaction);
                }
                return self.rel_ddl(&db, &stmt).await;
            }
            Statement::Drop {
                object_type:
                    ObjectType::Table | ObjectType::Index | ObjectType::Sequence | ObjectType::View,
                ..
            } => {
                if s.txn.is_some() {
                    return Err(QueryError::DdlInTransaction);
                }
                return self.rel_ddl(&db, &stmt).await;
            }
            // Prepared statements live in the protocol layer; drivers send
            // DEALLOCATE on rollback, so it must answer.
            Statement::Deallocate { .. } => {
                return Ok(Outcome::Command("DEALLOCATE".into()));
            }
            Statement::AlterTable(at) if self.is_relational(&db, &at.name) => {
                if s.txn.is_some() {
                    return Err(QueryError::DdlInTransaction);
                }
                let rel = self.rel()?;
                let (schema, name) = relddl::resolve(&at.name, &db)?;
                for op in &at.operations {
                    let cat = rel.catalog();
                    let t = cat
                        .table(&schema, &name)
                        .cloned()
                        .ok_or_else(|| QueryError::Rel(RelError::UndefinedTable(name.clone())))?;
                    if let Some(ddl) = self.alter_op(&db, rel, &t, op, &s.principal).await? {
                        rel.ddl(ddl).await?;
                    }
                }
                return Ok(Outcome::Command("ALTER TABLE".into()));
            }
            _ => {}
        }
        let text = stmt.to_string();
        if let Some(set) = crate::ddl::parse(s.db.as_deref(), &text) {
            let set = set.map_err(QueryError::Settings)?;
            if let Some(p) = &s.principal {
                p.check(&set.database, Privilege::Admin)?;
            }
            crate::ddl::apply(&self.engine, &set)?;
            return Ok(Outcome::Command("ok".into()));
        }
        // A read: DataFusion, bound to the transaction or a fresh snapshot.
        if let Some(d) = s.db.as_deref() {
            if !self.schema_exists(d) {
                return Err(QueryError::UnknownDatabase(d.to_string()));
            }
        }
        if let Some(rows) = self.point_select(s, &db, &stmt)? {
            return Ok(Outcome::Rows(batches_stream(rows)?));
        }
        let (ctx, plan) = self.plan(s, stmt).await?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(QueryError::Plan)?;
        if self.reads_no_time_series(s, &plan) {
            // Relational scans are one materialised partition; splitting
            // their rows across cores costs more than it could gain.
            ctx.state_ref()
                .write()
                .config_mut()
                .options_mut()
                .execution
                .target_partitions = 1;
        }
        let df = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(QueryError::Plan)?;
        Ok(Outcome::Rows(
            df.execute_stream().await.map_err(QueryError::Execution)?,
        ))
    }

    /// A SELECT of one relational row by its primary key, answered by a
    /// key lookup in the statement's transaction; None for any other.
    fn point_select(
        &self,
        s: &Session,
        db: &str,
        stmt: &Statement,
    ) -> Result<Option<crate::rel::dml::Returned>, QueryError> {
        if self.rel.is_none() || !matches!(stmt, Statement::Query(_)) {
            return Ok(None);
        }
        let (binding, _) = self.binding(s, true)?;
        let Some(point) = crate::rel::point::select(stmt, &binding.catalog(), db) else {
            return Ok(None);
        };
        if let Some(p) = &s.principal {
            crate::access::check_schema(p, &point.table.schema, Privilege::Read)?;
        }
        crate::rel::point::counted();
        point.run(&binding).map(Some)
    }

    /// Whether every table `plan` scans is relational or one of Sluice's own
    /// (`system`, `information_schema`).
    fn reads_no_time_series(
        &self,
        s: &Session,
        plan: &datafusion::logical_expr::LogicalPlan,
    ) -> bool {
        use datafusion::common::tree_node::TreeNodeRecursion;
        let Some(rel) = &self.rel else {
            return false;
        };
        let cat = rel.catalog();
        let db = s.db.as_deref().unwrap_or("public");
        let mut only = true;
        let _ = plan.apply_with_subqueries(|node| {
            if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node {
                let schema = scan.table_name.schema().unwrap_or(db);
                let own = matches!(schema, "system" | "information_schema");
                if !own && cat.table(schema, scan.table_name.table()).is_none() {
                    only = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        only
    }

    /// The logical plan of a read, bound to the session's transaction or a
    /// snapshot of its own, and the context that made it.
    pub(crate) async fn plan(
        &self,
        s: &Session,
        stmt: Statement,
    ) -> Result<
        (
            datafusion::prelude::SessionContext,
            datafusion::logical_expr::LogicalPlan,
        ),
        QueryError,
    > {
        let binding = match self.rel {
            Some(_) => Some(self.binding(s, true)?.0),
            None => None,
        };
        let mut stmt = stmt;
        if let Some(b) = &binding {
            relview::expand(&mut stmt, &b.catalog(), s.db.as_deref().unwrap_or("public"))?;
        }
        let ctx = self.context_with(s.db.as_deref(), binding);
        let fallback = unnamed_outputs(&stmt).then(|| stmt.clone());
        let plan = self.plan_unchecked(&ctx, stmt, fallback).await?;
        if let Some(p) = &s.principal {
            crate::access::check_plan(p, &plan, s.db.as_deref().unwrap_or("public"))?;
        }
        Ok((ctx, plan))
    }

    async fn plan_unchecked(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        stmt: Statement,
        fallback: Option<Statement>,
    ) -> Result<datafusion::logical_expr::LogicalPlan, QueryError> {
        let state = ctx.state();
        let plan = match state
            .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
            .await
        {
            Ok(p) => p,
            // PostgreSQL allows two output columns of one name; DataFusion
            // does not, and names every unaliased expression after its
            // text, so `SELECT (SELECT …), (SELECT …)` collides. Such items
            // get their SQL text as their alias, numbered where it repeats.
            Err(e) => match fallback {
                Some(mut stmt) if e.to_string().contains("unique expression names") => {
                    name_outputs(&mut stmt);
                    state
                        .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
                        .await
                        .map_err(QueryError::Plan)?
                }
                _ => return Err(QueryError::Plan(e)),
            },
        };
        Ok(plan)
    }

    /// The columns `stmt` answers with, without running it (for the
    /// extended protocol's Describe); None when it answers no rows.
    pub async fn describe(
        &self,
        s: &Session,
        stmt: &Statement,
    ) -> Result<Option<arrow::datatypes::SchemaRef>, QueryError> {
        match stmt {
            Statement::Query(_) => {
                if let Some(rel) = &self.rel {
                    let db = s.db.as_deref().unwrap_or("public");
                    if let Some(point) = crate::rel::point::select(stmt, &rel.catalog(), db) {
                        return Ok(Some(point.schema()));
                    }
                }
                let (_, plan) = self.plan(s, stmt.clone()).await?;
                Ok(Some(Arc::new(plan.schema().as_arrow().clone())))
            }
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                self.returning_schema(s, stmt).await
            }
            _ => Ok(None),
        }
    }

    /// A relational table or view may not take a time-series table's name.
    pub(crate) fn refuse_time_series_name(
        &self,
        schema: &str,
        name: &str,
    ) -> Result<(), QueryError> {
        if self
            .engine
            .catalog()
            .snapshot()
            .table(schema, name)
            .is_some()
        {
            return Err(QueryError::Rel(RelError::DuplicateTable(format!(
                "{name} (a time-series table)"
            ))));
        }
        Ok(())
    }

    async fn rel_ddl(&self, db: &str, stmt: &Statement) -> Result<Outcome, QueryError> {
        let rel = self.rel()?;
        let cat = rel.catalog();
        let not_found = |n: String| QueryError::Rel(RelError::UndefinedTable(n));
        match stmt {
            Statement::CreateTable(ct) => {
                let (schema, name) = relddl::resolve(&ct.name, db)?;
                if cat.table(&schema, &name).is_some() && ct.if_not_exists {
                    return Ok(Outcome::Command("CREATE TABLE".into()));
                }
                self.refuse_time_series_name(&schema, &name)?;
                let def = relddl::create_table(ct, db, &cat)?;
                for seq in relddl::serial_sequences(&def) {
                    if cat.sequence(&seq.schema, &seq.name).is_none() {
                        rel.ddl(DdlOp::CreateSequence(seq)).await?;
                    }
                }
                rel.ddl(DdlOp::CreateTable(def)).await?;
                Ok(Outcome::Command("CREATE TABLE".into()))
            }
            Statement::CreateIndex(ci) => {
                let (table, index) = relddl::create_index(ci, db, &cat)?;
                let schema = cat
                    .table_by_id(table)
                    .map(|t| t.schema.clone())
                    .unwrap_or_default();
                if ci.if_not_exists && relddl::drop_index(&cat, &schema, &index.name).is_some() {
                    return Ok(Outcome::Command("CREATE INDEX".into()));
                }
                rel.ddl(DdlOp::CreateIndex { table, index }).await?;
                Ok(Outcome::Command("CREATE INDEX".into()))
            }
            Statement::Truncate(t) => {
                let mut ids = Vec::new();
                for target in &t.table_names {
                    let (schema, name) = relddl::resolve(&target.name, db)?;
                    let def = cat
                        .table(&schema, &name)
                        .ok_or_else(|| not_found(name.clone()))?;
                    ids.push(def.id);
                }
                rel.ddl(DdlOp::Truncate { ids }).await?;
                Ok(Outcome::Command("TRUNCATE TABLE".into()))
            }
            Statement::Drop {
                object_type,
                if_exists,
                names,
                ..
            } => {
                for n in names {
                    let (schema, name) = relddl::resolve(n, db)?;
                    let op = match object_type {
                        ObjectType::Table => cat
                            .table(&schema, &name)
                            .map(|t| DdlOp::DropTable { id: t.id }),
                        ObjectType::Index => relddl::drop_index(&cat, &schema, &name),
                        ObjectType::View => cat.view(&schema, &name).map(|_| DdlOp::DropView {
                            schema: schema.clone(),
                            name: name.clone(),
                        }),
                        _ => cat.sequence(&schema, &name).map(|s| {
                            rel.forget_sequence(s.id);
                            DdlOp::DropSequence { id: s.id }
                        }),
                    };
                    match op {
                        Some(op) => rel.ddl(op).await?,
                        None if *if_exists => {}
                        None => return Err(not_found(name)),
                    }
                }
                Ok(Outcome::Command(format!("DROP {object_type}")))
            }
            Statement::CreateSequence {
                name,
                if_not_exists,
                sequence_options,
                ..
            } => {
                let (schema, n) = relddl::resolve(name, db)?;
                if cat.sequence(&schema, &n).is_some() && *if_not_exists {
                    return Ok(Outcome::Command("CREATE SEQUENCE".into()));
                }
                let def = relddl::sequence(schema, n, sequence_options)?;
                rel.ddl(DdlOp::CreateSequence(def)).await?;
                Ok(Outcome::Command("CREATE SEQUENCE".into()))
            }
            Statement::Comment {
                object_type,
                object_name,
                comment,
                ..
            } => {
                let op = relddl::comment(&cat, db, *object_type, object_name, comment.clone())?;
                rel.ddl(op).await?;
                Ok(Outcome::Command("COMMENT".into()))
            }
            _ => unreachable_statement(),
        }
    }
}

fn unreachable_statement<T>() -> Result<T, QueryError> {
    Err(QueryError::Unsupported("statement kind".into()))
}
