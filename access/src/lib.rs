//! Users, roles, grants and API tokens: who may reach Sluice and what each
//! may do. The directory lives in the relational store (through a
//! [`Backend`]), one record per role and per token; readers hold a
//! lock-free snapshot, and every change is durable before it is seen.
//!
//! Every entry point authenticates here: HTTP (tokens, basic auth, the v1
//! `u`/`p` parameters), the PostgreSQL port (SCRAM-SHA-256 against the
//! stored verifier), the MQTT broker (user name and password, or a token as
//! the password). What a caller may do is a [`Principal`], checked by the
//! part that does the work.

pub mod error;
pub mod model;
pub mod secret;
pub mod throttle;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;

pub use error::{AccessError, Result};
pub use model::{Directory, Grants, Principal, Privilege, Privs, Role, Token, ALL_DATABASES};
pub use secret::{looks_like_token, ScramVerifier, SCRAM_ITERATIONS};
pub use throttle::LoginThrottle;

/// Where the directory is kept: the relational store's `system` space in
/// the binary, memory in tests.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Every entry under [`KEY_PREFIX`].
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>>;
    /// Writes (Some) and deletes (None) entries in one durable step.
    async fn store(&self, puts: Vec<(String, Option<Vec<u8>>)>) -> Result<()>;
}

pub const KEY_PREFIX: &str = "auth/";
const ROLE_PREFIX: &str = "auth/role/";
const TOKEN_PREFIX: &str = "auth/token/";

/// Verified secrets remembered at most, so that a client that sends its
/// password with every request pays for argon2 once.
const CACHE_CAP: usize = 10_000;

/// Argon2 checks at once: each takes ~19 MiB and tens of milliseconds, so a
/// flood of wrong passwords queues here instead of exhausting memory.
const HASHING_SLOTS: usize = 2;

/// How long a login waits for an argon2 slot before it is refused.
const HASHING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Expired tokens are dropped from the directory this long after expiry.
const EXPIRED_KEPT_MS: i64 = 24 * 3600 * 1000;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A role to create, as `CREATE ROLE` / `CREATE USER` describe it.
#[derive(Debug, Clone, Default)]
pub struct RoleSpec {
    pub name: String,
    pub login: bool,
    pub superuser: bool,
    pub password: Option<String>,
    pub valid_until: Option<i64>,
    pub in_roles: Vec<String>,
    pub if_not_exists: bool,
}

/// What `ALTER ROLE` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RoleChange {
    pub login: Option<bool>,
    pub superuser: Option<bool>,
    /// `Some(None)` removes the password.
    pub password: Option<Option<String>>,
    pub valid_until: Option<Option<i64>>,
    pub rename: Option<String>,
}

impl RoleChange {
    fn only_password(&self) -> bool {
        self.login.is_none()
            && self.superuser.is_none()
            && self.valid_until.is_none()
            && self.rename.is_none()
    }
}

/// A token to make.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// The role it acts as; by default the caller.
    pub owner: Option<String>,
    pub description: String,
    /// At most what the owner may do; absent: all of it.
    pub grants: Option<Grants>,
    pub expires_ms: Option<i64>,
}

enum Verified {
    Role(String),
}

pub struct Access {
    backend: Box<dyn Backend>,
    dir: ArcSwap<Directory>,
    /// Changes run one at a time: each reads the directory, checks and
    /// writes.
    write: tokio::sync::Mutex<()>,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    /// Bumped by every change, so a check that began before one is not
    /// remembered after it.
    generation: std::sync::atomic::AtomicU64,
    process_key: [u8; 32],
    hashing: Arc<tokio::sync::Semaphore>,
    /// Checked against when the user named does not exist, so that a wrong
    /// name takes as long as a wrong password.
    decoy: String,
    /// The shared token of `http.auth_token`, which may do everything.
    root_token: Option<String>,
    throttle: Arc<LoginThrottle>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("roles", &self.dir.load().roles.len())
            .finish_non_exhaustive()
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, v: &[u8]) -> Result<T> {
    serde_json::from_slice(v)
        .map_err(|e| AccessError::Store(format!("entry {key:?} cannot be decoded: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| AccessError::Store(e.to_string()))
}

impl Access {
    pub fn open(backend: Box<dyn Backend>, root_token: Option<String>) -> Result<Access> {
        let mut dir = Directory::default();
        for (k, v) in backend.load()? {
            if let Some(name) = k.strip_prefix(ROLE_PREFIX) {
                let r: Role = decode(&k, &v)?;
                dir.roles.insert(name.to_string(), r);
            } else if let Some(id) = k.strip_prefix(TOKEN_PREFIX) {
                let t: Token = decode(&k, &v)?;
                dir.tokens.insert(id.to_string(), t);
            }
        }
        let decoy = secret::hash_password("decoy password, never used")?.argon2;
        Ok(Access {
            backend,
            dir: ArcSwap::from_pointee(dir),
            write: tokio::sync::Mutex::new(()),
            verified: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            process_key: rand::random(),
            hashing: Arc::new(tokio::sync::Semaphore::new(HASHING_SLOTS)),
            decoy,
            root_token,
            throttle: Arc::new(LoginThrottle::new(0, std::time::Duration::ZERO)),
        })
    }

    /// Counts failed logins per client address with `throttle` (by
    /// default nothing is counted).
    pub fn with_throttle(mut self, throttle: Arc<LoginThrottle>) -> Access {
        self.throttle = throttle;
        self
    }

    /// The failed-login counts, for front ends that decide a login's
    /// outcome themselves (the PostgreSQL port's SCRAM exchange).
    pub fn throttle(&self) -> &Arc<LoginThrottle> {
        &self.throttle
    }

    pub fn directory(&self) -> Arc<Directory> {
        self.dir.load_full()
    }

    pub fn has_roles(&self) -> bool {
        !self.dir.load().roles.is_empty()
    }

    /// Creates the first superuser when no superuser can log in (on first
    /// start, or after roles were made with authentication off). Answers
    /// whether it did.
    pub async fn bootstrap(&self, admin: &str, password: &str) -> Result<bool> {
        let _g = self.write.lock().await;
        if has_usable_superuser(&self.dir.load()) {
            return Ok(false);
        }
        model::validate_name(admin)?;
        if self.dir.load().roles.contains_key(admin) {
            return Err(AccessError::Invalid(format!(
                "no superuser can log in, and the initial admin {admin:?} cannot be made: a role of that name exists; pick another auth.admin_user"
            )));
        }
        let role = Role {
            name: admin.to_string(),
            login: true,
            superuser: true,
            password: Some(hash_blocking(password.to_string()).await?),
            valid_until: None,
            member_of: Default::default(),
            grants: Grants::default(),
            created_ms: now_ms(),
        };
        let mut dir = (*self.dir.load_full()).clone();
        dir.roles.insert(role.name.clone(), role);
        self.commit(dir, vec![admin.to_string()], vec![]).await?;
        Ok(true)
    }

    /// Authenticates a caller at `peer` (None: in-process) that sent a
    /// secret and maybe a user name: a token (the shared one, or an API
    /// token, whatever the name), else the named user's password. Failures
    /// count against the address.
    pub async fn login(
        &self,
        peer: Option<IpAddr>,
        user: Option<&str>,
        secret: &str,
    ) -> Result<Principal> {
        self.throttle.check(peer)?;
        let r = self.login_unthrottled(user, secret).await;
        if matches!(r, Err(AccessError::Unauthenticated(_))) {
            self.throttle.failed(peer);
        }
        r
    }

    async fn login_unthrottled(&self, user: Option<&str>, secret: &str) -> Result<Principal> {
        if let Some(root) = &self.root_token {
            if secret::same(root.as_bytes(), secret.as_bytes()) {
                return Ok(Principal::root());
            }
        }
        if let Some((id, s)) = secret::split_token(secret) {
            return self.login_token(id, s);
        }
        match user {
            Some(u) if !u.is_empty() => self.login_password(u, secret).await,
            _ => Err(AccessError::Unauthenticated("invalid token".into())),
        }
    }

    async fn login_password(&self, user: &str, password: &str) -> Result<Principal> {
        let wrong = || AccessError::Unauthenticated("wrong user name or password".into());
        let generation = self.generation();
        let dir = self.dir.load_full();
        let key = secret::cache_key(&self.process_key, 1, user, password.as_bytes());
        let usable = |r: &Role| r.may_log_in(now_ms());
        if matches!(self.verified.lock().get(&key), Some(Verified::Role(n)) if n == user) {
            return match dir.roles.get(user) {
                Some(r) if usable(r) => dir.principal(user),
                _ => Err(wrong()),
            };
        }
        let (phc, ok_role) = match dir.roles.get(user) {
            Some(r) if usable(r) && r.password.is_some() => (
                r.password
                    .as_ref()
                    .map(|p| p.argon2.clone())
                    .unwrap_or_default(),
                true,
            ),
            _ => (self.decoy.clone(), false),
        };
        let matched = self.verify(phc, password.as_bytes().to_vec()).await?;
        if !(matched && ok_role) {
            return Err(wrong());
        }
        self.remember(key, Verified::Role(user.to_string()), generation);
        dir.principal(user)
    }

    fn login_token(&self, id: &str, secret_part: &str) -> Result<Principal> {
        let invalid = || AccessError::Unauthenticated("invalid token".into());
        let dir = self.dir.load_full();
        let t = dir.tokens.get(id).ok_or_else(invalid)?;
        if !secret::token_verify(&t.hash, secret_part) {
            return Err(invalid());
        }
        token_principal(&dir, t)
    }

    /// The principal `p` is now: grants changed, a token revoked or
    /// expired, a user dropped or barred from logging in since it
    /// authenticated are all seen. For connections that outlive requests
    /// (an MQTT client), checked at each use.
    pub fn refresh(&self, p: &Principal) -> Result<Principal> {
        if p.is_root() {
            return match self.root_token {
                Some(_) => Ok(Principal::root()),
                None => Err(AccessError::Unauthenticated(
                    "the shared token is gone".into(),
                )),
            };
        }
        let dir = self.dir.load_full();
        match &p.token {
            Some(id) => {
                let t = dir.tokens.get(id).ok_or_else(|| {
                    AccessError::Unauthenticated(format!("token {id} was revoked"))
                })?;
                token_principal(&dir, t)
            }
            None => match dir.roles.get(&p.user) {
                Some(r) if r.may_log_in(now_ms()) => dir.principal(&p.user),
                _ => Err(AccessError::Unauthenticated(format!(
                    "{} may no longer log in",
                    p.user
                ))),
            },
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn verify(&self, phc: String, secret: Vec<u8>) -> Result<bool> {
        let waited = tokio::time::timeout(HASHING_WAIT, self.hashing.clone().acquire_owned()).await;
        let _slot = match waited {
            Ok(Ok(slot)) => slot,
            Ok(Err(e)) => return Err(AccessError::Hashing(e.to_string())),
            Err(_) => {
                return Err(AccessError::Unauthenticated(
                    "too many logins at once; try again".into(),
                ))
            }
        };
        tokio::task::spawn_blocking(move || secret::argon2_verify(&phc, &secret))
            .await
            .map_err(|e| AccessError::Hashing(e.to_string()))
    }

    fn remember(&self, key: [u8; 32], v: Verified, generation: u64) {
        let mut m = self.verified.lock();
        // A change since the check began may have made it stale.
        if self.generation() != generation {
            return;
        }
        if m.len() >= CACHE_CAP {
            m.clear();
        }
        m.insert(key, v);
    }

    /// The SCRAM verifier of a user who may log in now.
    pub fn scram_verifier(&self, user: &str) -> Option<ScramVerifier> {
        self.dir.load().scram_verifier(user, now_ms()).cloned()
    }

    /// A verifier for a user who does not exist, the same for the same name
    /// within a process, so that the exchange fails where a wrong password
    /// would and does not tell which names exist.
    pub fn mock_verifier(&self, user: &str) -> ScramVerifier {
        let k = secret::cache_key(&self.process_key, 3, user, b"");
        ScramVerifier {
            salt: k[..16].to_vec(),
            iterations: SCRAM_ITERATIONS,
            stored_key: secret::cache_key(&self.process_key, 4, user, b"").to_vec(),
            server_key: k.to_vec(),
        }
    }

    /// The principal of a user who has just proved their password by SCRAM.
    pub fn principal(&self, user: &str) -> Result<Principal> {
        self.dir.load().principal(user)
    }

    /// Makes `dir` durable and then visible. `roles` and `tokens` name the
    /// records that changed (written if present in `dir`, else deleted).
    async fn commit(&self, dir: Directory, roles: Vec<String>, tokens: Vec<String>) -> Result<()> {
        let mut puts = Vec::new();
        for r in roles {
            let v = dir.roles.get(&r).map(encode).transpose()?;
            puts.push((format!("{ROLE_PREFIX}{r}"), v));
        }
        for t in tokens {
            let v = dir.tokens.get(&t).map(encode).transpose()?;
            puts.push((format!("{TOKEN_PREFIX}{t}"), v));
        }
        self.backend.store(puts).await?;
        self.dir.store(Arc::new(dir));
        // A changed password, role or token must be checked afresh.
        let mut cache = self.verified.lock();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        cache.clear();
        Ok(())
    }

    pub async fn create_role(&self, by: &Principal, spec: RoleSpec) -> Result<bool> {
        by.check_superuser(&format!("create role {:?}", spec.name))?;
        model::validate_name(&spec.name)?;
        let password = match spec.password {
            Some(p) => Some(hash_blocking(p).await?),
            None => None,
        };
        let _g = self.write.lock().await;
        let mut dir = (*self.dir.load_full()).clone();
        if dir.roles.contains_key(&spec.name) {
            if spec.if_not_exists {
                return Ok(false);
            }
            return Err(AccessError::DuplicateRole(spec.name));
        }
        for r in &spec.in_roles {
            dir.role(r)?;
        }
        let role = Role {
            name: spec.name.clone(),
            login: spec.login,
            superuser: spec.superuser,
            password,
            valid_until: spec.valid_until,
            member_of: spec.in_roles.into_iter().collect(),
            grants: Grants::default(),
            created_ms: now_ms(),
        };
        dir.roles.insert(spec.name.clone(), role);
        self.commit(dir, vec![spec.name], vec![]).await?;
        Ok(true)
    }

    pub async fn alter_role(&self, by: &Principal, name: &str, change: RoleChange) -> Result<()> {
        // Anyone may change their own password, as in PostgreSQL.
        let own_password = by.user == name && by.token.is_none() && change.only_password();
        if !own_password {
            by.check_superuser(&format!("alter role {name:?}"))?;
        }
        let password = match change.password.clone() {
            Some(Some(p)) => Some(Some(hash_blocking(p).await?)),
            Some(None) => Some(None),
            None => None,
        };
        let _g = self.write.lock().await;
        let mut dir = (*self.dir.load_full()).clone();
        let mut role = dir.role(name)?.clone();
        if let Some(l) = change.login {
            role.login = l;
        }
        if let Some(s) = change.superuser {
            role.superuser = s;
        }
        if let Some(p) = password {
            role.password = p;
        }
        if let Some(v) = change.valid_until {
            role.valid_until = v;
        }
        let mut changed = vec![name.to_string()];
        let mut tokens = Vec::new();
        if let Some(new) = &change.rename {
            model::validate_name(new)?;
            if dir.roles.contains_key(new) {
                return Err(AccessError::DuplicateRole(new.clone()));
            }
            // PostgreSQL clears an MD5 password on rename; a SCRAM
            // verifier does not depend on the name, so it stays.
            role.name = new.clone();
            dir.roles.remove(name);
            for r in dir.roles.values_mut() {
                if r.member_of.remove(name) {
                    r.member_of.insert(new.clone());
                    changed.push(r.name.clone());
                }
            }
            for t in dir.tokens.values_mut() {
                if t.owner == name {
                    t.owner = new.clone();
                    tokens.push(t.id.clone());
                }
            }
            changed.push(new.clone());
        }
        dir.roles.insert(role.name.clone(), role);
        refuse_lockout(&self.dir.load(), &dir, self.root_token.is_some())?;
        self.commit(dir, changed, tokens).await
    }

    pub async fn drop_role(&self, by: &Principal, name: &str, if_exists: bool) -> Result<bool> {
        by.check_superuser(&format!("drop role {name:?}"))?;
        if by.user == name {
            return Err(AccessError::Invalid(
                "the current user cannot be dropped".into(),
            ));
        }
        let _g = self.write.lock().await;
        let mut dir = (*self.dir.load_full()).clone();
        if dir.roles.remove(name).is_none() {
            if if_exists {
                return Ok(false);
            }
            return Err(AccessError::UndefinedRole(name.to_string()));
        }
        let mut changed = vec![name.to_string()];
        for r in dir.roles.values_mut() {
            if r.member_of.remove(name) {
                changed.push(r.name.clone());
            }
        }
        // A dropped user's tokens go with it.
        let tokens: Vec<String> = dir
            .tokens
            .values()
            .filter(|t| t.owner == name)
            .map(|t| t.id.clone())
            .collect();
        for t in &tokens {
            dir.tokens.remove(t);
        }
        refuse_lockout(&self.dir.load(), &dir, self.root_token.is_some())?;
        self.commit(dir, changed, tokens).await?;
        Ok(true)
    }

    /// Adds (`grant`) or removes privileges of `role` on each database.
    pub async fn set_privileges(
        &self,
        by: &Principal,
        role: &str,
        databases: &[String],
        privs: Privs,
        grant: bool,
    ) -> Result<()> {
        by.check_superuser(if grant {
            "grant privileges"
        } else {
            "revoke privileges"
        })?;
        let _g = self.write.lock().await;
        let mut dir = (*self.dir.load_full()).clone();
        let r = dir
            .roles
            .get_mut(role)
            .ok_or_else(|| AccessError::UndefinedRole(role.to_string()))?;
        for db in databases {
            if grant {
                r.grants.add(db, privs);
            } else {
                r.grants.remove(db, privs);
            }
        }
        self.commit(dir, vec![role.to_string()], vec![]).await
    }

    /// Makes `member` a member of `role` (`GRANT role TO member`), or no
    /// longer one.
    pub async fn set_membership(
        &self,
        by: &Principal,
        role: &str,
        member: &str,
        add: bool,
    ) -> Result<()> {
        by.check_superuser("change role membership")?;
        let _g = self.write.lock().await;
        let mut dir = (*self.dir.load_full()).clone();
        dir.role(role)?;
        if add && dir.is_member(role, member) {
            return Err(AccessError::Invalid(format!(
                "role {member:?} cannot be a member of {role:?}: {role:?} is already a member of it"
            )));
        }
        let m = dir
            .roles
            .get_mut(member)
            .ok_or_else(|| AccessError::UndefinedRole(member.to_string()))?;
        if add {
            m.member_of.insert(role.to_string());
        } else {
            m.member_of.remove(role);
        }
        self.commit(dir, vec![member.to_string()], vec![]).await
    }

    /// Makes a token; answers its record and the token itself, which is
    /// shown this once.
    pub async fn create_token(&self, by: &Principal, req: TokenRequest) -> Result<(Token, String)> {
        if by.token.is_some() {
            return Err(by.denied("make a token with a token (log in with a password)".into()));
        }
        let owner = match &req.owner {
            Some(o) if *o != by.user => {
                by.check_superuser(&format!("make a token for {o:?}"))?;
                o.clone()
            }
            _ => by.user.clone(),
        };
        if req.description.len() > 200 {
            return Err(AccessError::Invalid(
                "a token's description is at most 200 bytes".into(),
            ));
        }
        if let Some(e) = req.expires_ms {
            if e <= now_ms() {
                return Err(AccessError::Invalid("the expiry is in the past".into()));
            }
        }
        let (id, token, hash) = secret::new_token();
        let _g = self.write.lock().await;
        let mut dir = (*self.dir.load_full()).clone();
        // Tokens long expired go when new ones come.
        let now = now_ms();
        let stale: Vec<String> = dir
            .tokens
            .values()
            .filter(|t| t.expires_ms.is_some_and(|e| e + EXPIRED_KEPT_MS <= now))
            .map(|t| t.id.clone())
            .collect();
        for s in &stale {
            dir.tokens.remove(s);
        }
        if let Some(g) = &req.grants {
            dir.principal(&owner)?.may_delegate(g)?;
        } else {
            dir.role(&owner)?;
        }
        let t = Token {
            id: id.clone(),
            owner,
            description: req.description,
            hash,
            grants: req.grants,
            created_ms: now_ms(),
            expires_ms: req.expires_ms,
        };
        dir.tokens.insert(id.clone(), t.clone());
        let mut changed = stale;
        changed.push(id);
        self.commit(dir, vec![], changed).await?;
        Ok((t, token))
    }

    /// Revokes a token: its owner or a superuser may.
    pub async fn revoke_token(&self, by: &Principal, id: &str) -> Result<()> {
        let _g = self.write.lock().await;
        let mut dir = (*self.dir.load_full()).clone();
        let t = dir
            .tokens
            .get(id)
            .ok_or_else(|| AccessError::UndefinedToken(id.to_string()))?;
        // A token may revoke itself and no other; its owner (logged in
        // with a password) or a superuser may revoke any of them.
        let allowed = match &by.token {
            Some(own) => own == id,
            None => t.owner == by.user || by.is_superuser(),
        };
        if !allowed {
            return Err(by.denied(format!("revoke token {id}")));
        }
        dir.tokens.remove(id);
        self.commit(dir, vec![], vec![id.to_string()]).await
    }
}

async fn hash_blocking(p: String) -> Result<secret::PasswordHash> {
    tokio::task::spawn_blocking(move || secret::hash_password(&p))
        .await
        .map_err(|e| AccessError::Hashing(e.to_string()))?
}

/// Whether some superuser can log in with a password.
pub fn has_usable_superuser(dir: &Directory) -> bool {
    let now = now_ms();
    dir.roles
        .values()
        .any(|r| r.superuser && r.may_log_in(now) && r.password.is_some())
}

/// A token's principal, if it has not expired and its owner may log in.
fn token_principal(dir: &Directory, t: &Token) -> Result<Principal> {
    let now = now_ms();
    if t.expired(now) {
        return Err(AccessError::Unauthenticated(format!(
            "token {} has expired",
            t.id
        )));
    }
    match dir.roles.get(&t.owner) {
        Some(r) if r.may_log_in(now) => dir.token_principal(t),
        _ => Err(AccessError::Unauthenticated(format!(
            "token {}: its user may not log in",
            t.id
        ))),
    }
}

/// Without the shared token, a change may not take away the last superuser
/// that can log in, or nobody could manage users again.
fn refuse_lockout(before: &Directory, after: &Directory, root_token: bool) -> Result<()> {
    if root_token || has_usable_superuser(after) || !has_usable_superuser(before) {
        return Ok(());
    }
    Err(AccessError::Invalid(
        "this would leave no superuser that can log in with a password".into(),
    ))
}
