//! The access directory kept in the relational store's `system` space
//! (written through its raft log, like the catalog), and the first
//! superuser, made on the first start with authentication on.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sluice_access::{Access, AccessError, Backend, KEY_PREFIX};
use sluice_relstore::RelHandle;

use crate::config::Config;

struct RelBackend(RelHandle);

#[async_trait]
impl Backend for RelBackend {
    fn load(&self) -> Result<Vec<(String, Vec<u8>)>, AccessError> {
        self.0
            .system_entries(KEY_PREFIX)
            .map_err(|e| AccessError::Store(e.to_string()))
    }

    async fn store(&self, puts: Vec<(String, Option<Vec<u8>>)>) -> Result<(), AccessError> {
        self.0
            .put_system(puts)
            .await
            .map_err(|e| AccessError::Store(e.to_string()))
    }
}

/// Where a generated first password is left for the operator.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

/// The environment variable that may carry the first password.
pub const INITIAL_PASSWORD_ENV: &str = "SLUICE_INITIAL_ADMIN_PASSWORD";

pub fn open(cfg: &Config, rel: RelHandle) -> Result<Arc<Access>, String> {
    let throttle = sluice_access::LoginThrottle::new(
        cfg.auth.max_failed_logins,
        std::time::Duration::from_secs(cfg.auth.failed_login_window_secs),
    );
    Access::open(Box::new(RelBackend(rel)), cfg.http.auth_token.clone())
        .map(|a| Arc::new(a.with_throttle(Arc::new(throttle))))
        .map_err(|e| format!("reading users and roles: {e}"))
}

/// The first superuser's password: from `auth.admin_password_file`, else
/// from the environment, else made up here and written (owner-only) into
/// the data directory. The password itself is never logged.
fn initial_password(cfg: &Config) -> Result<(String, String), String> {
    if let Some(f) = &cfg.auth.admin_password_file {
        let p = std::fs::read_to_string(f)
            .map_err(|e| format!("auth.admin_password_file {}: {e}", f.display()))?;
        let p = p.trim_end_matches(['\n', '\r']).to_string();
        if p.is_empty() {
            return Err(format!("auth.admin_password_file {} is empty", f.display()));
        }
        return Ok((p, format!("the password in {}", f.display())));
    }
    if let Ok(p) = std::env::var(INITIAL_PASSWORD_ENV) {
        if !p.is_empty() {
            return Ok((p, format!("the password in {INITIAL_PASSWORD_ENV}")));
        }
    }
    let bytes: [u8; 18] = rand::random();
    use base64::Engine as _;
    let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let path = cfg.engine.data_dir.join(INITIAL_PASSWORD_FILE);
    write_private(&path, &p)?;
    Ok((
        p,
        format!(
            "a generated password, written to {} (readable by this user only); change it with ALTER USER and delete the file",
            path.display()
        ),
    ))
}

fn write_private(path: &Path, secret: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    // `mode` applies only to a file this call creates.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    f.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// With `auth.enabled`, makes the first superuser when none can log in.
pub async fn bootstrap(cfg: &Config, access: &Access) -> Result<(), String> {
    if !cfg.auth.enabled || sluice_access::has_usable_superuser(&access.directory()) {
        return Ok(());
    }
    let (password, source) = initial_password(cfg)?;
    let made = access
        .bootstrap(&cfg.auth.admin_user, &password)
        .await
        .map_err(|e| format!("making the first superuser: {e}"))?;
    if made {
        tracing::warn!(
            user = %cfg.auth.admin_user,
            "no superuser could log in: made superuser {:?} with {source}",
            cfg.auth.admin_user
        );
    }
    Ok(())
}
