//! Who is calling: the credentials InfluxDB clients and browsers send,
//! checked against the access directory; and `/api/v1/tokens`, where API
//! tokens are made, listed and revoked.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sluice_access::{Grants, Principal, Privilege, Privs, TokenRequest};

use super::body::read_body;
use super::AppState;
use crate::error::ApiError;

/// Who a request acts as: None when authentication is off.
pub type Caller = Option<Arc<Principal>>;

/// The user name (if any) and secret a request carries: `Authorization:
/// Token …` or `Bearer …` (a token), basic auth (user and password, or a
/// token as the password), or the v1 `u` and `p` parameters.
fn credentials(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Option<(Option<String>, String)> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Token ")
            .or_else(|| v.strip_prefix("Bearer "))
        {
            return Some((None, t.trim().to_string()));
        }
        if let Some(b) = v.strip_prefix("Basic ") {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()?;
            let s = String::from_utf8(raw).ok()?;
            let (u, p) = s.split_once(':')?;
            return Some((Some(u.to_string()).filter(|u| !u.is_empty()), p.to_string()));
        }
    }
    let p = params.get("p")?;
    Some((
        params.get("u").cloned().filter(|u| !u.is_empty()),
        p.clone(),
    ))
}

/// The address a request came from, as the accept loop recorded it; None
/// for a request that did not come through it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Peer, Self::Rejection> {
        let addr = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        Ok(Peer(addr.map(|c| c.0.ip())))
    }
}

impl AppState {
    /// Authenticates the request when authentication is on; failures count
    /// against the client's address.
    pub async fn authorize(
        &self,
        peer: Peer,
        headers: &HeaderMap,
        params: &HashMap<String, String>,
    ) -> Result<Caller, ApiError> {
        if !self.auth_on {
            return Ok(None);
        }
        let Some((user, secret)) = credentials(headers, params) else {
            return Err(ApiError::Unauthorized(
                "send `Authorization: Token <token>`, or a user name and password (basic auth, or u= and p=)"
                    .into(),
            ));
        };
        let p = self.access.login(peer.0, user.as_deref(), &secret).await?;
        Ok(Some(Arc::new(p)))
    }
}

/// Refuses a caller without `need` on `db`.
pub fn require(caller: &Caller, db: &str, need: Privilege) -> Result<(), ApiError> {
    match caller {
        Some(p) => Ok(p.check(db, need)?),
        None => Ok(()),
    }
}

pub fn require_superuser(caller: &Caller, what: &str) -> Result<(), ApiError> {
    match caller {
        Some(p) => Ok(p.check_superuser(what)?),
        None => Ok(()),
    }
}

/// Whether the caller may see that `db` exists (it may do something there).
pub fn may_see(caller: &Caller, db: &str) -> bool {
    caller
        .as_ref()
        .is_none_or(|p| !p.privileges_on(db).is_empty())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    description: String,
    /// The user it acts as; a superuser may make tokens for others.
    user: Option<String>,
    /// Database → privileges ("read", "write", "admin"); absent: all of the
    /// user's. `"*"` means every database.
    permissions: Option<BTreeMap<String, Vec<String>>>,
    expires_in_secs: Option<u64>,
    /// RFC 3339, or a date.
    expires_at: Option<String>,
}

fn rfc3339(ms: Option<i64>) -> serde_json::Value {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => serde_json::Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => serde_json::Value::Null,
    }
}

fn token_json(t: &sluice_access::Token) -> serde_json::Value {
    let permissions = t.grants.as_ref().map(|g| {
        g.0.iter()
            .map(|(db, p)| (db.clone(), serde_json::json!(p.names())))
            .collect::<serde_json::Map<_, _>>()
    });
    serde_json::json!({
        "id": t.id,
        "user": t.owner,
        "description": t.description,
        "permissions": permissions,
        "created": rfc3339(Some(t.created_ms)),
        "expires": rfc3339(t.expires_ms),
        "expired": t.expired(sluice_access::now_ms()),
    })
}

/// `POST /api/v1/tokens`: makes a token and shows it, this once.
pub async fn create_token(
    State(st): State<Arc<AppState>>,
    Query(p): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = st.authorize(peer, &headers, &p).await?;
    let (raw, _held) = read_body(&headers, body, 64 << 10, &st.bodies).await?;
    let req: NewToken = if raw.iter().all(u8::is_ascii_whitespace) {
        NewToken::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| {
            ApiError::BadRequest(format!(
                "body must be JSON {{\"description\", \"user\", \"permissions\", \"expires_in_secs\" | \"expires_at\"}}: {e}"
            ))
        })?
    };
    let grants = match req.permissions {
        None => None,
        Some(m) => {
            let mut g = Grants::default();
            for (db, names) in m {
                let mut privs = Privs::NONE;
                for n in names {
                    privs = privs.union(Privs::of(&[Privilege::parse(&n)?]));
                }
                g.add(&db, privs);
            }
            Some(g)
        }
    };
    let expires_ms = match (req.expires_in_secs, req.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give expires_in_secs or expires_at, not both".into(),
            ))
        }
        (Some(s), None) => {
            Some(sluice_access::now_ms().saturating_add(s.saturating_mul(1000) as i64))
        }
        (None, Some(at)) => Some(sluice_query::parse_time_ms(&at).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "expires_at {at:?} is not an RFC 3339 time or a date"
            ))
        })?),
        (None, None) => None,
    };
    let root = Principal::root();
    let by = caller.as_deref().unwrap_or(&root);
    if caller.is_none() && req.user.is_none() {
        return Err(ApiError::BadRequest(
            "authentication is off, so there is no caller to make a token for: name the \"user\""
                .into(),
        ));
    }
    let (t, token) = st
        .access
        .create_token(
            by,
            TokenRequest {
                owner: req.user,
                description: req.description,
                grants,
                expires_ms,
            },
        )
        .await?;
    tracing::info!(id = %t.id, user = %t.owner, "token created");
    let mut body = token_json(&t);
    body["token"] = serde_json::Value::String(token);
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET /api/v1/tokens`: the caller's tokens (a superuser's: all).
pub async fn list_tokens(
    State(st): State<Arc<AppState>>,
    Query(p): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = st.authorize(peer, &headers, &p).await?;
    let dir = st.access.directory();
    let all = caller.as_ref().is_none_or(|c| c.is_superuser());
    let list: Vec<_> = dir
        .tokens
        .values()
        .filter(|t| all || caller.as_ref().is_some_and(|c| c.user == t.owner))
        .map(token_json)
        .collect();
    Ok(axum::Json(serde_json::json!({ "tokens": list })).into_response())
}

/// `DELETE /api/v1/tokens/{id}`.
pub async fn revoke_token(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(p): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = st.authorize(peer, &headers, &p).await?;
    let root = Principal::root();
    st.access
        .revoke_token(caller.as_deref().unwrap_or(&root), &id)
        .await?;
    tracing::info!(%id, "token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            auth.parse().unwrap_or_else(|e| panic!("{e}")),
        );
        h
    }

    #[test]
    fn every_form_of_credentials_is_read() {
        let none = HashMap::new();
        assert_eq!(
            credentials(&headers("Token abc"), &none),
            Some((None, "abc".into()))
        );
        assert_eq!(
            credentials(&headers("Bearer  abc "), &none),
            Some((None, "abc".into()))
        );
        // "alice:pa:ss" — the password may hold colons.
        assert_eq!(
            credentials(&headers("Basic YWxpY2U6cGE6c3M="), &none),
            Some((Some("alice".into()), "pa:ss".into()))
        );
        // ":tok" — no user name, a token as the password.
        assert_eq!(
            credentials(&headers("Basic OnRvaw=="), &none),
            Some((None, "tok".into()))
        );
        let v1: HashMap<String, String> = [
            ("u".to_string(), "bob".to_string()),
            ("p".to_string(), "pw".to_string()),
        ]
        .into();
        assert_eq!(
            credentials(&HeaderMap::new(), &v1),
            Some((Some("bob".into()), "pw".into()))
        );
        assert_eq!(credentials(&HeaderMap::new(), &none), None);
    }
}
