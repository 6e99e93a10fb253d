//! SQL for who may do what: `CREATE USER | ROLE`, `ALTER USER | ROLE`,
//! `DROP USER | ROLE`, `GRANT` and `REVOKE` (privileges on databases, and
//! role membership), the checks every statement passes before it runs, and
//! the `system.roles`, `system.role_grants` and `system.tokens` tables.
//!
//! sqlparser reads CREATE/ALTER ROLE and DROP in PostgreSQL's grammar (a
//! user is a role that may log in, so `CREATE USER` is read as
//! `CREATE ROLE … LOGIN`, as PostgreSQL does). Its GRANT knows neither role
//! membership nor Sluice's `read`/`write`/`admin`, so GRANT and REVOKE are
//! read here, from sqlparser's tokens.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{
    AlterRoleOperation, ObjectType, Password, RoleOption, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use sluice_access::{
    Access, AccessError, Grants, Principal, Privilege, Privs, RoleChange, RoleSpec, ALL_DATABASES,
};

use crate::error::QueryError;
use crate::rel::ddl::norm;
use crate::session::{Outcome, Session};
use crate::QueryEngine;

/// The statement kinds this module runs, by their first words.
pub(crate) fn is_access_statement(sql: &str) -> bool {
    let mut words = sql.split_whitespace().map(str::to_ascii_uppercase);
    matches!(
        (words.next().as_deref(), words.next().as_deref()),
        (Some("CREATE" | "ALTER" | "DROP"), Some("USER" | "ROLE"))
            | (Some("GRANT" | "REVOKE"), Some(_))
    )
}

/// Whether a statement the general parser read belongs here (in a body of
/// several statements).
pub(crate) fn is_access_ast(st: &Statement) -> bool {
    matches!(
        st,
        Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::CreateUser(_)
            | Statement::AlterUser(_)
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::Drop {
                object_type: ObjectType::Role | ObjectType::User,
                ..
            }
    )
}

fn syntax(msg: impl Into<String>) -> QueryError {
    QueryError::Syntax(msg.into())
}

fn pg_parse(sql: &str) -> Result<Statement, QueryError> {
    let mut v = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| QueryError::Syntax(e.to_string()))?;
    match (v.pop(), v.is_empty()) {
        (Some(st), true) => Ok(st),
        _ => Err(syntax("one statement expected")),
    }
}

/// `sql` with its first two words replaced by `head`.
fn with_head(sql: &str, head: &str) -> String {
    let t = sql.trim_start();
    let first = t.find(char::is_whitespace).unwrap_or(t.len());
    let rest = t[first..].trim_start();
    let second = rest.find(char::is_whitespace).unwrap_or(rest.len());
    format!("{head}{}", &rest[second..])
}

fn string_literal(
    e: &datafusion::sql::sqlparser::ast::Expr,
    what: &str,
) -> Result<String, QueryError> {
    use datafusion::sql::sqlparser::ast::Expr as E;
    match e {
        E::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(s.clone()),
            _ => Err(syntax(format!("{what} must be a string literal"))),
        },
        _ => Err(syntax(format!("{what} must be a string literal"))),
    }
}

fn password(p: &Password) -> Result<Option<String>, QueryError> {
    match p {
        Password::Password(e) => string_literal(e, "PASSWORD").map(Some),
        Password::NullPassword => Ok(None),
    }
}

/// `VALID UNTIL '…'`: a date or timestamp (UTC unless it names an offset),
/// or 'infinity'.
fn valid_until(e: &datafusion::sql::sqlparser::ast::Expr) -> Result<Option<i64>, QueryError> {
    let s = string_literal(e, "VALID UNTIL")?;
    let t = s.trim();
    if t.eq_ignore_ascii_case("infinity") {
        return Ok(None);
    }
    parse_time_ms(t).map(Some).ok_or_else(|| {
        QueryError::InvalidValue(format!("VALID UNTIL {s:?} is not a date or timestamp"))
    })
}

pub fn parse_time_ms(t: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(d.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

/// GRANT or REVOKE, as read from tokens.
#[derive(Debug, PartialEq)]
enum GrantStmt {
    Privileges {
        privs: Privs,
        databases: Vec<String>,
        roles: Vec<String>,
    },
    Membership {
        granted: Vec<String>,
        members: Vec<String>,
    },
}

struct Tokens {
    t: Vec<Token>,
    at: usize,
}

impl Tokens {
    fn new(sql: &str) -> Result<Tokens, QueryError> {
        let t = Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize()
            .map_err(|e| QueryError::Syntax(e.to_string()))?
            .into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect();
        Ok(Tokens { t, at: 0 })
    }

    fn peek_word(&self) -> Option<String> {
        match self.t.get(self.at) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    fn keyword(&mut self, k: &str) -> bool {
        if self.peek_word().as_deref() == Some(k) {
            self.at += 1;
            return true;
        }
        false
    }

    fn expect(&mut self, k: &str) -> Result<(), QueryError> {
        if self.keyword(k) {
            return Ok(());
        }
        Err(syntax(format!("expected {k}, found {}", self.found())))
    }

    fn found(&self) -> String {
        self.t
            .get(self.at)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "the end of the statement".into())
    }

    /// A name: a word (lower-cased unless quoted) or a quoted identifier.
    fn name(&mut self) -> Result<String, QueryError> {
        match self.t.get(self.at) {
            Some(Token::Word(w)) => {
                self.at += 1;
                Ok(match w.quote_style {
                    Some(_) => w.value.clone(),
                    None => w.value.to_lowercase(),
                })
            }
            _ => Err(syntax(format!("expected a name, found {}", self.found()))),
        }
    }

    /// Comma-separated words up to (not including) `stop`.
    fn list_until(&mut self, stop: &str) -> Result<Vec<String>, QueryError> {
        let mut out = vec![self.name()?];
        while matches!(self.t.get(self.at), Some(Token::Comma)) {
            self.at += 1;
            out.push(self.name()?);
        }
        if self.peek_word().as_deref() != Some(stop) {
            return Err(syntax(format!("expected {stop}, found {}", self.found())));
        }
        Ok(out)
    }

    fn end(&mut self) -> Result<(), QueryError> {
        while matches!(self.t.get(self.at), Some(Token::SemiColon)) {
            self.at += 1;
        }
        match self.t.get(self.at) {
            None | Some(Token::EOF) => Ok(()),
            Some(_) => Err(syntax(format!(
                "expected the end of the statement, found {}",
                self.found()
            ))),
        }
    }
}

fn privilege_word(w: &str) -> Option<Privs> {
    let p = match w {
        "READ" | "SELECT" => Privilege::Read,
        "WRITE" | "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE" => Privilege::Write,
        "ADMIN" | "CREATE" => Privilege::Admin,
        "ALL" => return Some(Privs::ALL),
        _ => return None,
    };
    Some(Privs::of(&[p]))
}

/// `GRANT privs ON DATABASE db[, …] TO role[, …]`, `GRANT role[, …] TO
/// role[, …]`, and REVOKE with FROM.
fn parse_grant(sql: &str) -> Result<(bool, GrantStmt), QueryError> {
    let mut t = Tokens::new(sql)?;
    let grant = if t.keyword("GRANT") {
        true
    } else {
        t.expect("REVOKE")?;
        false
    };
    let to = if grant { "TO" } else { "FROM" };
    // Privilege words followed by ON make a privilege grant; anything else
    // names roles.
    let start = t.at;
    let mut privs = Privs::NONE;
    let mut all_privilege_words = true;
    loop {
        match t.peek_word().as_deref().and_then(privilege_word) {
            Some(p) => {
                privs = privs.union(p);
                t.at += 1;
                t.keyword("PRIVILEGES");
            }
            None => {
                all_privilege_words = false;
                break;
            }
        }
        if matches!(t.t.get(t.at), Some(Token::Comma)) {
            t.at += 1;
        } else {
            break;
        }
    }
    if all_privilege_words && t.keyword("ON") {
        if !(t.keyword("DATABASE") || t.keyword("SCHEMA")) {
            return Err(syntax(format!(
                "privileges are granted ON DATABASE name (or ON DATABASE \"*\" for all), found {}",
                t.found()
            )));
        }
        let databases = if t.keyword("ALL") {
            vec![ALL_DATABASES.to_string()]
        } else {
            t.list_until(to)?
        };
        t.expect(to)?;
        let roles = t.list_until_end()?;
        return Ok((
            grant,
            GrantStmt::Privileges {
                privs,
                databases,
                roles,
            },
        ));
    }
    t.at = start;
    let granted = t.list_until(to)?;
    t.expect(to)?;
    let members = t.list_until_end()?;
    Ok((grant, GrantStmt::Membership { granted, members }))
}

impl Tokens {
    fn list_until_end(&mut self) -> Result<Vec<String>, QueryError> {
        let mut out = vec![self.name()?];
        while matches!(self.t.get(self.at), Some(Token::Comma)) {
            self.at += 1;
            out.push(self.name()?);
        }
        self.end()?;
        Ok(out)
    }
}

impl QueryEngine {
    fn access(&self) -> Result<&Arc<Access>, QueryError> {
        self.access.as_ref().ok_or_else(|| {
            QueryError::Unsupported("users and roles need the relational store".into())
        })
    }

    /// Runs one access statement as the session's principal (or as root
    /// when authentication is off).
    pub(crate) async fn run_access(&self, s: &Session, sql: &str) -> Result<Outcome, QueryError> {
        let access = self.access()?;
        let root = Principal::root();
        let by: &Principal = s.principal.as_deref().unwrap_or(&root);
        let mut words = sql.split_whitespace().map(str::to_ascii_uppercase);
        let (first, second) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        match first.as_str() {
            "GRANT" | "REVOKE" => {
                let (grant, st) = parse_grant(sql)?;
                match st {
                    GrantStmt::Privileges {
                        privs,
                        databases,
                        roles,
                    } => {
                        for r in &roles {
                            access
                                .set_privileges(by, r, &databases, privs, grant)
                                .await?;
                        }
                    }
                    GrantStmt::Membership { granted, members } => {
                        for g in &granted {
                            for m in &members {
                                access.set_membership(by, g, m, grant).await?;
                            }
                        }
                    }
                }
                Ok(Outcome::Command(first))
            }
            "CREATE" => {
                let st = pg_parse(&with_head(sql, "CREATE ROLE"))?;
                let Statement::CreateRole(cr) = st else {
                    return Err(syntax("expected CREATE ROLE"));
                };
                let user = second == "USER";
                for name in &cr.names {
                    let name = object_name(name)?;
                    let spec = RoleSpec {
                        name: name.clone(),
                        login: cr.login.unwrap_or(user),
                        superuser: cr.superuser.unwrap_or(false),
                        password: cr.password.as_ref().map(password).transpose()?.flatten(),
                        valid_until: cr
                            .valid_until
                            .as_ref()
                            .map(valid_until)
                            .transpose()?
                            .flatten(),
                        in_roles: cr.in_role.iter().chain(&cr.in_group).map(norm).collect(),
                        if_not_exists: cr.if_not_exists,
                    };
                    if access.create_role(by, spec).await? {
                        for m in cr.role.iter().chain(&cr.user) {
                            access.set_membership(by, &name, &norm(m), true).await?;
                        }
                    }
                }
                Ok(Outcome::Command("CREATE ROLE".into()))
            }
            "ALTER" => {
                let st = pg_parse(&with_head(sql, "ALTER ROLE"))?;
                let Statement::AlterRole { name, operation } = st else {
                    return Err(syntax("expected ALTER ROLE"));
                };
                let mut change = RoleChange::default();
                match operation {
                    AlterRoleOperation::RenameRole { role_name } => {
                        change.rename = Some(norm(&role_name));
                    }
                    AlterRoleOperation::WithOptions { options } => {
                        for o in &options {
                            match o {
                                RoleOption::Login(b) => change.login = Some(*b),
                                RoleOption::SuperUser(b) => change.superuser = Some(*b),
                                RoleOption::Password(p) => change.password = Some(password(p)?),
                                RoleOption::ValidUntil(e) => change.valid_until = Some(valid_until(e)?),
                                other => {
                                    return Err(QueryError::Unsupported(format!(
                                        "role option {other}: Sluice knows LOGIN, SUPERUSER, PASSWORD and VALID UNTIL"
                                    )))
                                }
                            }
                        }
                    }
                    other => return Err(QueryError::Unsupported(format!("ALTER ROLE … {other}"))),
                }
                access.alter_role(by, &norm(&name), change).await?;
                Ok(Outcome::Command("ALTER ROLE".into()))
            }
            "DROP" => {
                let st = pg_parse(sql)?;
                let Statement::Drop {
                    if_exists, names, ..
                } = st
                else {
                    return Err(syntax("expected DROP ROLE"));
                };
                for n in &names {
                    access.drop_role(by, &object_name(n)?, if_exists).await?;
                }
                Ok(Outcome::Command("DROP ROLE".into()))
            }
            _ => Err(syntax("not a statement about users or roles")),
        }
    }
}

fn object_name(n: &datafusion::sql::sqlparser::ast::ObjectName) -> Result<String, QueryError> {
    match n.0.as_slice() {
        [part] => part
            .as_ident()
            .map(norm)
            .ok_or_else(|| syntax(format!("{n} is not a role name"))),
        _ => Err(syntax(format!("{n} is not a role name"))),
    }
}

/// The database a scan reads: the table's schema, or the statement's own.
fn scan_database(scan: &datafusion::logical_expr::TableScan, db: &str) -> String {
    if let Ok(p) = datafusion::datasource::source_as_provider(&scan.source) {
        if let Some(l) = p.downcast_ref::<crate::latest::Latest>() {
            return l.database().to_string();
        }
    }
    scan.table_name.schema().unwrap_or(db).to_string()
}

/// Schemas Sluice fills itself; no statement may create or change
/// anything in them.
pub(crate) const RESERVED_SCHEMAS: [&str; 3] = ["information_schema", "pg_catalog", "system"];

/// Whether `p` may use schema `schema` as `need` says.
pub(crate) fn check_schema(
    p: &Principal,
    schema: &str,
    need: Privilege,
) -> Result<(), AccessError> {
    match schema {
        // Names only, of what the caller can see anyway through the API.
        "information_schema" | "pg_catalog" if need == Privilege::Read => Ok(()),
        "system" if need == Privilege::Read => p.check_superuser("read the system tables"),
        s if RESERVED_SCHEMAS.contains(&s) => {
            Err(p.denied(format!("change the built-in schema {s}")))
        }
        db => p.check(db, need),
    }
}

/// Refuses a plan that reads a database `p` may not read.
pub(crate) fn check_plan(p: &Principal, plan: &LogicalPlan, db: &str) -> Result<(), QueryError> {
    let mut denied: Option<AccessError> = None;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Err(e) = check_schema(p, &scan_database(scan, db), Privilege::Read) {
                denied = Some(e);
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match denied {
        Some(e) => Err(QueryError::Access(e)),
        None => Ok(()),
    }
}

fn batch(cols: Vec<(&str, DataType, ArrayRef)>) -> Result<RecordBatch, arrow::error::ArrowError> {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, t, _)| Field::new(*n, t.clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        cols.into_iter().map(|(_, _, a)| a).collect(),
    )
}

fn millis() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn time_array(v: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
}

/// `system.roles`: every role, whether it may log in, and what it is a
/// member of.
pub struct RolesTable(pub Arc<Access>);
/// `system.role_grants`: one row per role and database.
pub struct GrantsTable(pub Arc<Access>);
/// `system.tokens`: every token, never its secret.
pub struct TokensTable(pub Arc<Access>);

impl crate::LiveTable for RolesTable {
    fn name(&self) -> &str {
        "roles"
    }
    fn batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let dir = self.0.directory();
        let r: Vec<_> = dir.roles.values().collect();
        batch(vec![
            (
                "name",
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    r.iter().map(|r| r.name.clone()),
                )),
            ),
            (
                "login",
                DataType::Boolean,
                Arc::new(BooleanArray::from_iter(r.iter().map(|r| Some(r.login)))),
            ),
            (
                "superuser",
                DataType::Boolean,
                Arc::new(BooleanArray::from_iter(r.iter().map(|r| Some(r.superuser)))),
            ),
            (
                "has_password",
                DataType::Boolean,
                Arc::new(BooleanArray::from_iter(
                    r.iter().map(|r| Some(r.password.is_some())),
                )),
            ),
            (
                "valid_until",
                millis(),
                time_array(r.iter().map(|r| r.valid_until).collect()),
            ),
            (
                "member_of",
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(r.iter().map(|r| {
                    r.member_of.iter().cloned().collect::<Vec<_>>().join(",")
                }))),
            ),
            (
                "created",
                millis(),
                time_array(r.iter().map(|r| Some(r.created_ms)).collect()),
            ),
        ])
    }
}

fn grant_rows(g: &Grants) -> impl Iterator<Item = (String, String)> + '_ {
    g.0.iter().map(|(db, p)| (db.clone(), p.to_string()))
}

impl crate::LiveTable for GrantsTable {
    fn name(&self) -> &str {
        "role_grants"
    }
    fn batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let dir = self.0.directory();
        let mut rows: Vec<(String, String, String)> = Vec::new();
        for r in dir.roles.values() {
            for (db, p) in grant_rows(&r.grants) {
                rows.push((r.name.clone(), db, p));
            }
        }
        batch(vec![
            (
                "role",
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.clone()),
                )),
            ),
            (
                "database",
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1.clone()),
                )),
            ),
            (
                "privileges",
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.2.clone()),
                )),
            ),
        ])
    }
}

/// A token's grants as text: `plant:read,write; lab:read`, or `all` (all of
/// its owner's).
pub fn grants_text(g: &Option<Grants>) -> String {
    match g {
        None => "all".into(),
        Some(g) => grant_rows(g)
            .map(|(db, p)| format!("{db}:{p}"))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

impl crate::LiveTable for TokensTable {
    fn name(&self) -> &str {
        "tokens"
    }
    fn batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let dir = self.0.directory();
        let now = sluice_access::now_ms();
        let t: Vec<_> = dir.tokens.values().collect();
        batch(vec![
            (
                "id",
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    t.iter().map(|t| t.id.clone()),
                )),
            ),
            (
                "owner",
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    t.iter().map(|t| t.owner.clone()),
                )),
            ),
            (
                "description",
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    t.iter().map(|t| t.description.clone()),
                )),
            ),
            (
                "privileges",
                DataType::Utf8,
                Arc::new(StringArray::from_iter_values(
                    t.iter().map(|t| grants_text(&t.grants)),
                )),
            ),
            (
                "created",
                millis(),
                time_array(t.iter().map(|t| Some(t.created_ms)).collect()),
            ),
            (
                "expires",
                millis(),
                time_array(t.iter().map(|t| t.expires_ms).collect()),
            ),
            (
                "expired",
                DataType::Boolean,
                Arc::new(BooleanArray::from_iter(
                    t.iter().map(|t| Some(t.expired(now))),
                )),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn grant_and_revoke_read_both_forms() {
        let read = Privs::of(&[Privilege::Read]);
        let rw = Privs::of(&[Privilege::Read, Privilege::Write]);
        let cases = [
            (
                "GRANT read ON DATABASE plant TO ops",
                true,
                GrantStmt::Privileges {
                    privs: read,
                    databases: names(&["plant"]),
                    roles: names(&["ops"]),
                },
            ),
            (
                "grant SELECT, insert on database plant, \"Lab\" to ops, \"Bob\";",
                true,
                GrantStmt::Privileges {
                    privs: rw,
                    databases: names(&["plant", "Lab"]),
                    roles: names(&["ops", "Bob"]),
                },
            ),
            (
                "GRANT ALL PRIVILEGES ON DATABASE \"*\" TO root2",
                true,
                GrantStmt::Privileges {
                    privs: Privs::ALL,
                    databases: names(&["*"]),
                    roles: names(&["root2"]),
                },
            ),
            (
                "REVOKE write ON SCHEMA plant FROM ops",
                false,
                GrantStmt::Privileges {
                    privs: Privs::of(&[Privilege::Write]),
                    databases: names(&["plant"]),
                    roles: names(&["ops"]),
                },
            ),
            (
                "GRANT ops TO alice",
                true,
                GrantStmt::Membership {
                    granted: names(&["ops"]),
                    members: names(&["alice"]),
                },
            ),
            (
                "REVOKE ops, readers FROM alice",
                false,
                GrantStmt::Membership {
                    granted: names(&["ops", "readers"]),
                    members: names(&["alice"]),
                },
            ),
        ];
        for (sql, grant, want) in cases {
            let (g, st) = parse_grant(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!((g, st), (grant, want), "{sql}");
        }
        for bad in [
            "GRANT read ON TABLE x TO ops",
            "GRANT read ON DATABASE plant",
            "GRANT TO alice",
            "GRANT ops TO alice extra",
        ] {
            assert!(parse_grant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_for_valid_until() {
        assert_eq!(parse_time_ms("2027-01-01"), Some(1_798_761_600_000));
        assert_eq!(
            parse_time_ms("2027-01-01 00:00:01"),
            Some(1_798_761_601_000)
        );
        assert_eq!(
            parse_time_ms("2027-01-01T01:00:00+01:00"),
            Some(1_798_761_600_000)
        );
        assert_eq!(parse_time_ms("soon"), None);
    }

    #[test]
    fn access_statements_are_recognised_by_their_first_words() {
        for s in [
            "CREATE USER a",
            "alter role a login",
            "DROP USER x",
            "grant a to b",
            "REVOKE a FROM b",
        ] {
            assert!(is_access_statement(s), "{s}");
        }
        for s in [
            "CREATE TABLE users (id int)",
            "SELECT 1",
            "DROP TABLE roles",
            "GRANT",
        ] {
            assert!(!is_access_statement(s), "{s}");
        }
    }
}
