//! The web console: the files of `ui/dist`, built into the binary (or read
//! from `http.ui_dir` while working on them), and the schema overview its
//! browser and completion read.
//!
//! The files carry no data, so they are served without credentials; every
//! API call the page makes is authorized like any other.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use rust_embed::RustEmbed;

use super::auth::Peer;
use super::AppState;
use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "../ui/dist"]
struct Bundle;

/// Only what the page itself loads: nothing from another origin, so the
/// console works on a closed network and leaks nothing to one. Styles may be
/// inline because the editor and the chart set them from script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; \
base-uri 'none'; frame-ancestors 'none'";

struct Served {
    body: Bytes,
    gzip: Option<Bytes>,
    etag: HeaderValue,
    content_type: &'static str,
}

type Files = HashMap<String, Arc<Served>>;

pub struct Assets {
    dir: Option<PathBuf>,
    /// The built-in files, compressed once, off the request path.
    embedded: Arc<OnceLock<Files>>,
}

fn embedded_files() -> Files {
    Bundle::iter()
        .filter_map(|path| {
            let file = Bundle::get(&path)?;
            let hash = file.metadata.sha256_hash();
            let mut short = [0u8; 8];
            short.copy_from_slice(&hash[..8]);
            let s = served(&path, Bytes::from(file.data.into_owned()), short);
            Some((path.to_string(), Arc::new(s)))
        })
        .collect()
}

impl Assets {
    pub fn new(dir: Option<PathBuf>) -> Self {
        let embedded = Arc::new(OnceLock::new());
        if dir.is_none() {
            let e = embedded.clone();
            // A request that comes first waits for this (or does it).
            let _ = std::thread::Builder::new()
                .name("sluice-ui-assets".into())
                .spawn(move || {
                    e.get_or_init(embedded_files);
                });
        }
        Assets { dir, embedded }
    }

    /// Blocking (a file read, compression): call it off the async threads.
    fn load(&self, path: &str) -> Option<Arc<Served>> {
        if let Some(dir) = &self.dir {
            let rel = Path::new(path);
            if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                return None;
            }
            let body = std::fs::read(dir.join(rel)).ok()?;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            body.hash(&mut h);
            return Some(Arc::new(served(
                path,
                body.into(),
                h.finish().to_be_bytes(),
            )));
        }
        self.embedded.get_or_init(embedded_files).get(path).cloned()
    }
}

fn served(path: &str, body: Bytes, hash: [u8; 8]) -> Served {
    let content_type = content_type(path);
    let compressible = content_type.starts_with("text/")
        || content_type.starts_with("application/javascript")
        || content_type.starts_with("application/json")
        || content_type.starts_with("image/svg");
    let gzip = (compressible && body.len() > 512)
        .then(|| gzip(&body))
        .flatten();
    let tag: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    Served {
        body,
        gzip,
        etag: HeaderValue::from_str(&format!("\"{tag}\""))
            .unwrap_or(HeaderValue::from_static("\"0\"")),
        content_type,
    }
}

fn gzip(body: &[u8]) -> Option<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body).ok()?;
    enc.finish().ok().map(Bytes::from)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "application/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            (name == "gzip" || name == "*") && !refused
        })
}

fn respond(s: &Served, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == s.etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match (&s.gzip, accepts_gzip(headers)) {
            (Some(gz), true) => {
                let mut r = gz.clone().into_response();
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            _ => s.body.clone().into_response(),
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(s.content_type),
    );
    h.insert(header::ETAG, s.etag.clone());
    // Revalidated on every load: a new binary must never run an old page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if s.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    resp
}

/// `GET /` and `GET /ui`: the console lives under `/ui/`.
pub async fn to_console() -> Redirect {
    Redirect::temporary("/ui/")
}

/// `GET /ui/`.
pub async fn index(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    file(st, "index.html".into(), &headers).await
}

/// `GET /ui/{*path}`.
pub async fn asset(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    file(st, path, &headers).await
}

async fn file(st: Arc<AppState>, path: String, headers: &HeaderMap) -> Response {
    let found = match st.ui.embedded.get() {
        Some(files) if st.ui.dir.is_none() => files.get(&path).cloned(),
        _ => {
            let p = path.clone();
            tokio::task::spawn_blocking(move || st.ui.load(&p))
                .await
                .ok()
                .flatten()
        }
    };
    match found {
        Some(s) => respond(&s, headers),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": format!("no console file /ui/{path}") })),
        )
            .into_response(),
    }
}

/// `GET /api/v1/schema`: databases, tables, columns and usage.
pub async fn schema(
    State(st): State<Arc<AppState>>,
    Query(p): Query<HashMap<String, String>>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = st.authorize(peer, &headers, &p).await?;
    let mut overview = st.query.overview().await?;
    overview.databases.retain(|d| {
        caller
            .as_ref()
            .is_none_or(|c| c.allows(&d.name, sluice_access::Privilege::Read))
    });
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(overview)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_sent_only_where_accepted() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&h("gzip;q=0, br")));
        assert!(!accepts_gzip(&h("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn a_folder_serves_no_file_outside_it() {
        let dir = std::env::temp_dir().join(format!("sluice-ui-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.js"), "x".repeat(2000)).unwrap();
        let assets = Assets::new(Some(dir.clone()));
        let s = assets.load("a.js").unwrap();
        assert_eq!(s.content_type, "application/javascript; charset=utf-8");
        assert!(s.gzip.as_ref().unwrap().len() < 100);
        assert!(assets.load("../a.js").is_none());
        assert!(assets.load("/etc/passwd").is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_built_in_console_has_its_page() {
        let assets = Assets::new(None);
        let index = assets.load("index.html").unwrap();
        assert!(index.content_type.starts_with("text/html"));
        assert!(assets.load("missing.js").is_none());
    }
}
