//! Who exists and what each may do: roles (a role that may log in is a
//! user), their grants per database, and API tokens. These are the records
//! the store keeps, one JSON value per role and per token.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{AccessError, Result};
use crate::secret::{PasswordHash, ScramVerifier};

/// The database name a grant uses to mean every database, present and future.
pub const ALL_DATABASES: &str = "*";

/// One kind of access to a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Query its tables.
    Read,
    /// Write points and rows into it.
    Write,
    /// Change its schema and storage settings; implies read and write.
    Admin,
}

impl Privilege {
    fn bit(self) -> u8 {
        match self {
            Privilege::Read => 1,
            Privilege::Write => 2,
            Privilege::Admin => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Privilege::Read => "read",
            Privilege::Write => "write",
            Privilege::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Privilege> {
        match s.to_ascii_lowercase().as_str() {
            "read" => Ok(Privilege::Read),
            "write" => Ok(Privilege::Write),
            "admin" => Ok(Privilege::Admin),
            other => Err(AccessError::Invalid(format!(
                "unknown privilege {other:?}: use read, write or admin"
            ))),
        }
    }
}

/// A set of privileges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Privs(u8);

impl Privs {
    pub const NONE: Privs = Privs(0);
    pub const ALL: Privs = Privs(7);

    pub fn of(list: &[Privilege]) -> Privs {
        Privs(list.iter().fold(0, |acc, p| acc | p.bit()))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether this set allows `p` (admin allows everything on its database).
    pub fn allows(self, p: Privilege) -> bool {
        self.0 & (p.bit() | Privilege::Admin.bit()) != 0
    }

    /// Whether `p` itself is in the set (admin does not count as read).
    pub fn has(self, p: Privilege) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn union(self, o: Privs) -> Privs {
        Privs(self.0 | o.0)
    }

    pub fn minus(self, o: Privs) -> Privs {
        Privs(self.0 & !o.0)
    }

    pub fn names(self) -> Vec<&'static str> {
        [Privilege::Read, Privilege::Write, Privilege::Admin]
            .into_iter()
            .filter(|p| self.has(*p))
            .map(Privilege::name)
            .collect()
    }
}

impl fmt::Display for Privs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// Grants by database name ([`ALL_DATABASES`] for every database).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Grants(pub BTreeMap<String, Privs>);

impl Grants {
    /// What these grants allow on `db`.
    pub fn on(&self, db: &str) -> Privs {
        let named = self.0.get(db).copied().unwrap_or_default();
        let all = self.0.get(ALL_DATABASES).copied().unwrap_or_default();
        named.union(all)
    }

    pub fn add(&mut self, db: &str, p: Privs) {
        let e = self.0.entry(db.to_string()).or_default();
        *e = e.union(p);
    }

    pub fn remove(&mut self, db: &str, p: Privs) {
        if let Some(e) = self.0.get_mut(db) {
            *e = e.minus(p);
            if e.is_empty() {
                self.0.remove(db);
            }
        }
    }

    fn merge(&mut self, o: &Grants) {
        for (db, p) in &o.0 {
            self.add(db, *p);
        }
    }
}

/// A role; one with `login` is a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub login: bool,
    pub superuser: bool,
    /// Absent: the role cannot log in with a password (tokens still work).
    pub password: Option<PasswordHash>,
    /// Milliseconds since the epoch after which its password no longer logs in.
    pub valid_until: Option<i64>,
    /// Roles whose grants this role has too.
    pub member_of: BTreeSet<String>,
    pub grants: Grants,
    pub created_ms: i64,
}

impl Role {
    /// Whether the role may log in now, by password or by token.
    pub fn may_log_in(&self, now_ms: i64) -> bool {
        self.login && self.valid_until.is_none_or(|v| v > now_ms)
    }
}

/// An API token. The secret is shown once, when it is made; only its hash
/// is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    /// The role it acts as; the token never allows more than its owner.
    pub owner: String,
    pub description: String,
    /// The salted hash of the secret (see `secret::token_hash`).
    pub hash: String,
    /// Absent: everything its owner may do.
    pub grants: Option<Grants>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
}

impl Token {
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|e| e <= now_ms)
    }
}

/// Every role and token, as of one change. Readers hold a snapshot; a change
/// makes a new one.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub roles: BTreeMap<String, Role>,
    pub tokens: BTreeMap<String, Token>,
}

impl Directory {
    pub fn role(&self, name: &str) -> Result<&Role> {
        self.roles
            .get(name)
            .ok_or_else(|| AccessError::UndefinedRole(name.to_string()))
    }

    /// `name`'s grants with those of every role it is a member of, directly
    /// or through others. Superuser is not inherited, as in PostgreSQL.
    pub fn effective_grants(&self, name: &str) -> Grants {
        let mut out = Grants::default();
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if let Some(r) = self.roles.get(&n) {
                out.merge(&r.grants);
                todo.extend(r.member_of.iter().cloned());
            }
        }
        out
    }

    /// Whether `role` is `target` or a member of it, directly or not.
    pub fn is_member(&self, role: &str, target: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![role.to_string()];
        while let Some(n) = todo.pop() {
            if n == target {
                return true;
            }
            if seen.insert(n.clone()) {
                if let Some(r) = self.roles.get(&n) {
                    todo.extend(r.member_of.iter().cloned());
                }
            }
        }
        false
    }

    /// The principal that `name` logs in as.
    pub fn principal(&self, name: &str) -> Result<Principal> {
        let r = self.role(name)?;
        Ok(Principal {
            user: r.name.clone(),
            token: None,
            superuser: r.superuser,
            grants: self.effective_grants(name),
            limit: None,
            root: false,
        })
    }

    /// The principal a token acts as.
    pub fn token_principal(&self, t: &Token) -> Result<Principal> {
        let mut p = self.principal(&t.owner)?;
        p.token = Some(t.id.clone());
        p.limit = t.grants.clone();
        Ok(p)
    }

    pub fn scram_verifier(&self, user: &str, now_ms: i64) -> Option<&ScramVerifier> {
        let r = self.roles.get(user)?;
        r.may_log_in(now_ms).then_some(())?;
        r.password.as_ref().map(|p| &p.scram)
    }
}

/// Who a request acts as, with what it may do, resolved from the directory
/// when it authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    /// The token it came with, if any.
    pub token: Option<String>,
    superuser: bool,
    grants: Grants,
    /// A token's own grants: the principal may do only what both allow.
    limit: Option<Grants>,
    /// The shared `http.auth_token`, not a role.
    root: bool,
}

impl Principal {
    /// The principal of the legacy shared token (`http.auth_token`), which
    /// may do everything.
    pub fn root() -> Principal {
        Principal {
            user: "root token".to_string(),
            token: None,
            superuser: true,
            grants: Grants::default(),
            limit: None,
            root: true,
        }
    }

    pub fn is_root(&self) -> bool {
        self.root
    }

    /// A principal that may do nothing (a role dropped while connected).
    pub fn nobody(user: &str) -> Principal {
        Principal {
            user: user.to_string(),
            token: None,
            superuser: false,
            grants: Grants::default(),
            limit: None,
            root: false,
        }
    }

    /// A superuser acting with all of its rights (not through a token that
    /// narrows them).
    pub fn is_superuser(&self) -> bool {
        self.superuser && self.limit.is_none()
    }

    pub fn allows(&self, db: &str, p: Privilege) -> bool {
        let own = self.superuser || self.grants.on(db).allows(p);
        own && self.limit.as_ref().is_none_or(|l| l.on(db).allows(p))
    }

    /// What this principal may do on `db`.
    pub fn privileges_on(&self, db: &str) -> Privs {
        [Privilege::Read, Privilege::Write, Privilege::Admin]
            .into_iter()
            .filter(|p| self.allows(db, *p))
            .fold(Privs::NONE, |acc, p| acc.union(Privs::of(&[p])))
    }

    pub fn check(&self, db: &str, p: Privilege) -> Result<()> {
        if self.allows(db, p) {
            return Ok(());
        }
        Err(self.denied(format!("{} database {db:?}", verb(p))))
    }

    pub fn check_superuser(&self, what: &str) -> Result<()> {
        if self.is_superuser() {
            return Ok(());
        }
        Err(self.denied(format!("{what} (it takes a superuser)")))
    }

    pub fn denied(&self, what: String) -> AccessError {
        let who = match &self.token {
            Some(t) => format!("{} (token {t})", self.user),
            None => self.user.clone(),
        };
        AccessError::Denied { who, what }
    }

    /// The grants a token made by this principal may carry at most.
    pub fn may_delegate(&self, g: &Grants) -> Result<()> {
        for (db, p) in &g.0 {
            for one in [Privilege::Read, Privilege::Write, Privilege::Admin] {
                if p.has(one) {
                    let ok = if db == ALL_DATABASES {
                        self.is_superuser() || self.grants.on(ALL_DATABASES).allows(one)
                    } else {
                        self.allows(db, one)
                    };
                    if !ok {
                        return Err(
                            self.denied(format!("hand out {} on database {db:?}", one.name()))
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

fn verb(p: Privilege) -> &'static str {
    match p {
        Privilege::Read => "read",
        Privilege::Write => "write to",
        Privilege::Admin => "change the schema of",
    }
}

/// A role name: what PostgreSQL allows (up to 63 bytes), without control
/// characters, and not the word that means every database.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 63 {
        return Err(AccessError::Invalid(format!(
            "role name {name:?} must be 1 to 63 bytes long"
        )));
    }
    if name.chars().any(char::is_control) || name == ALL_DATABASES {
        return Err(AccessError::Invalid(format!(
            "role name {name:?} is not allowed"
        )));
    }
    Ok(())
}
