//! The corpus cases and the divergence list, as the test reads them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;

use super::json::{parse_json, J};

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    /// A string field; bytes because the corpus may give it as binary.
    Str(Vec<u8>),
}

impl Val {
    pub fn sql_type(&self) -> &'static str {
        match self {
            Val::Int(_) => "Int64",
            Val::UInt(_) => "UInt64",
            Val::Float(_) => "Float64",
            Val::Bool(_) => "Boolean",
            Val::Str(_) => "Utf8",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Point {
    pub time: i64,
    pub name: Vec<u8>,
    pub tags: Vec<(Vec<u8>, Vec<u8>)>,
    pub fields: Vec<(Vec<u8>, Val)>,
}

#[derive(Debug)]
pub enum Expect {
    /// The reference error, and the (1-based) line it names, if it names one.
    Error(String, Option<usize>),
    Points(Vec<Point>),
}

#[derive(Debug)]
pub struct Case {
    pub key: String,
    pub body: Vec<u8>,
    pub default_time: i64,
    pub precision: &'static str,
    pub unit: i64,
    pub expect: Expect,
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("bad base64 {s:?}: {e}"))
}

/// A `string | {"binary": base64}` value.
fn str_or_bin(v: &J) -> Vec<u8> {
    match v {
        J::Str(s) => s.as_bytes().to_vec(),
        J::Obj(_) => b64(v.get("binary").and_then(J::str).expect("binary")),
        other => panic!("expected string or binary, got {other:?}"),
    }
}

fn parse_val(v: &J) -> Val {
    let (kind, x) = v
        .obj()
        .and_then(|m| m.first())
        .unwrap_or_else(|| panic!("bad field value {v:?}"));
    match kind.as_str() {
        "int" => Val::Int(x.num().and_then(|n| n.parse().ok()).expect("int")),
        "uint" => Val::UInt(x.num().and_then(|n| n.parse().ok()).expect("uint")),
        "float" => Val::Float(x.num().and_then(|n| n.parse().ok()).expect("float")),
        "bool" => Val::Bool(matches!(x, J::Bool(true))),
        "string" => Val::Str(x.str().expect("string").as_bytes().to_vec()),
        "binary" => Val::Str(b64(x.str().expect("binary"))),
        other => panic!("unknown field value kind {other}"),
    }
}

/// The line named by a reference error ("… at line 3:14: …").
pub fn error_line(err: &str) -> Option<usize> {
    let rest = &err[err.find("at line ")? + "at line ".len()..];
    rest.split(':').next()?.parse().ok()
}

/// This package's directory as `cargo test` gives it at run time; the
/// compile-time value is only the fallback, because a test binary reused from
/// a shared target directory may have been built from a checkout elsewhere.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn corpus_path() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_LP_CORPUS") {
        return PathBuf::from(p);
    }
    manifest_dir().join("../../shared/testdata/line-protocol-corpus/corpus.json")
}

pub fn load_corpus() -> Vec<Case> {
    let path = corpus_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the line-protocol corpus at {} ({e}); set SLUICE_LP_CORPUS",
            path.display()
        )
    });
    let doc = parse_json(&text).expect("corpus JSON");
    let decode = doc.get("decode").and_then(J::obj).expect("decode section");
    let mut cases = Vec::with_capacity(decode.len());
    for (key, case) in decode {
        let input = case.get("input").expect("input");
        let output = case.get("output").expect("output");
        let body = str_or_bin(input.get("text").expect("text"));
        let default_time: i64 = input
            .get("defaultTime")
            .and_then(J::num)
            .and_then(|n| n.parse().ok())
            .expect("defaultTime");
        let (precision, unit) = match input.get("precision").and_then(J::str) {
            Some("1ns") => ("ns", 1),
            Some("1µs") => ("u", 1_000),
            Some("1ms") => ("ms", 1_000_000),
            Some("1s") => ("s", 1_000_000_000),
            Some("1m") => ("m", 60_000_000_000),
            Some("1h") => ("h", 3_600_000_000_000),
            other => panic!("{key}: unknown precision {other:?}"),
        };
        let expect = if let Some(e) = output.get("error") {
            let e = e.str().expect("error text").to_string();
            let line = error_line(&e);
            Expect::Error(e, line)
        } else {
            let points = output
                .get("result")
                .and_then(J::arr)
                .expect("result")
                .iter()
                .map(|p| Point {
                    time: p
                        .get("time")
                        .and_then(J::num)
                        .and_then(|n| n.parse().ok())
                        .expect("time"),
                    name: str_or_bin(p.get("name").expect("name")),
                    tags: p
                        .get("tags")
                        .and_then(J::arr)
                        .unwrap_or(&[])
                        .iter()
                        .map(|t| {
                            (
                                str_or_bin(t.get("key").expect("tag key")),
                                str_or_bin(t.get("value").expect("tag value")),
                            )
                        })
                        .collect(),
                    fields: p
                        .get("fields")
                        .and_then(J::arr)
                        .unwrap_or(&[])
                        .iter()
                        .map(|f| {
                            (
                                str_or_bin(f.get("key").expect("field key")),
                                parse_val(f.get("value").expect("field value")),
                            )
                        })
                        .collect(),
                })
                .collect();
            Expect::Points(points)
        };
        cases.push(Case {
            key: key.clone(),
            body,
            default_time,
            precision,
            unit,
            expect,
        });
    }
    cases.sort_by(|a, b| a.key.cmp(&b.key));
    cases
}

// ---------------------------------------------------------------------------
// The divergence list.

pub struct Divergences {
    /// key → (category, reason)
    pub cases: BTreeMap<String, (String, String)>,
}

pub fn divergences_path() -> PathBuf {
    manifest_dir().join("corpus_divergences.tsv")
}

pub fn load_divergences() -> Divergences {
    let path = divergences_path();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut cases = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        let (Some(key), Some(cat), Some(reason)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!(
                "{}:{}: want key<TAB>category<TAB>reason",
                path.display(),
                i + 1
            );
        };
        let prev = cases.insert(key.to_string(), (cat.to_string(), reason.to_string()));
        assert!(prev.is_none(), "{}: {key} listed twice", path.display());
    }
    Divergences { cases }
}
