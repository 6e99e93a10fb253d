//! The decoders under test, their seeds, and what each must uphold.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use bytes::BytesMut;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
use sluice_engine::catalog::{tag_data_type, time_data_type, Catalog, ColumnKind, TIME_COLUMN};
use sluice_engine::chunk::{encode_chunk, sort_dedup, ChunkReader, DedupPolicy};
use sluice_ingest::json::JsonMapping;
use sluice_ingest::route::TopicPattern;
use sluice_ingest::{lp, Precision, WriteOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Line protocol bodies (HTTP, TCP, MQTT, Kafka).
    LineProtocol,
    /// JSON payloads of MQTT and Kafka routes.
    Json,
    /// MQTT route patterns and the topics matched against them.
    Topic,
    /// Chunk files read back from disk.
    Chunk,
    /// The raft log, replayed at start.
    Wal,
    /// PostgreSQL frontend messages (pgwire's decoder, as Sluice drives it).
    Postgres,
}

pub struct Context {
    /// Holds the catalog and the input file; removed with the context.
    _dir: tempfile::TempDir,
    catalog: Catalog,
    file: PathBuf,
}

impl Context {
    pub fn new() -> std::io::Result<Context> {
        let dir = tempfile::tempdir()?;
        let catalog = Catalog::open_dir(dir.path()).map_err(std::io::Error::other)?;
        let file = dir.path().join("input");
        Ok(Context {
            _dir: dir,
            catalog,
            file,
        })
    }
}

const LINES: &[&str] = &[
    "cpu,host=a,region=eu-west usage_user=12.5,usage_system=3i,ok=true 1700000000000000000",
    "weather,location=us\\ midwest temperature=82,note=\"too \\\"warm\\\"\" 1465839830100400200",
    "disk,path=/var,fs=ext4 free=123456789u,used_percent=42.1 1",
    "m v=-1.5e-3,s=\"a,b=c d\"",
    "# a comment\nm,t=1 f=1i 2\n\nm,t=2 f=2i 3",
];

const JSON: &[&str] = &[
    r#"{"ts": 1700000000000, "device": "d1", "temp": 21.5, "ok": true}"#,
    r#"[{"ts": 1, "device": "d2", "nested": {"a": 1, "b": [1, 2]}}, {"ts": 2, "device": "d3"}]"#,
    r#"{"device": "d4", "v": null, "s": "x"}"#,
];

const TOPICS: &[&str] = &[
    "factory/{site}/{device}/telemetry",
    "ingest/#",
    "sensors/+/{kind}",
    "a/b/c",
];

fn wal_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(payload);
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn wal_seed() -> Vec<u8> {
    let mut entry = Vec::new();
    entry.extend_from_slice(&7u64.to_le_bytes());
    entry.extend_from_slice(&2u64.to_le_bytes());
    entry.push(0);
    entry.extend_from_slice(&3u32.to_le_bytes());
    entry.extend_from_slice(b"ctxdata of the entry");
    let mut hard = Vec::new();
    for w in [2u64, 1, 7] {
        hard.extend_from_slice(&w.to_le_bytes());
    }
    let mut out = wal_frame(1, &entry);
    out.extend(wal_frame(2, &hard));
    out.extend(wal_frame(1, &entry));
    out
}

fn write_options() -> WriteOptions {
    WriteOptions {
        database: "fuzz".into(),
        precision: Precision::Nanoseconds,
        default_time: 1_700_000_000_000_000_000,
        extra_tags: Vec::new(),
    }
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::LineProtocol,
        Target::Json,
        Target::Topic,
        Target::Chunk,
        Target::Wal,
        Target::Postgres,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::LineProtocol => "line-protocol",
            Target::Json => "json",
            Target::Topic => "topic",
            Target::Chunk => "chunk",
            Target::Wal => "wal",
            Target::Postgres => "postgres",
        }
    }

    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    pub(crate) fn seeds(self, ctx: &mut Context) -> std::io::Result<Vec<Vec<u8>>> {
        let text = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect();
        Ok(match self {
            Target::LineProtocol => text(LINES),
            Target::Json => text(JSON),
            Target::Topic => text(TOPICS),
            Target::Chunk => vec![chunk_seed(ctx)?],
            Target::Wal => vec![wal_seed()],
            Target::Postgres => vec![
                // A startup message, then a simple query and a Parse/Bind/Execute/Sync.
                b"\0\0\0\x25\0\x03\0\0user\0ops\0database\0plant\0\0".to_vec(),
                b"Q\0\0\0\x0dSELECT 1\0".to_vec(),
                b"P\0\0\0\x15\0SELECT $1\0\0\x01\0\0\0\x17B\0\0\0\x0e\0\0\0\0\0\x01\0\0\0\x011\0\0E\0\0\0\x09\0\0\0\0\0S\0\0\0\x04".to_vec(),
            ],
        })
    }

    /// Feeds `data` to the decoder; panics on a broken promise.
    pub(crate) fn exec(self, ctx: &mut Context, data: &[u8]) {
        match self {
            Target::LineProtocol => {
                if let Ok(p) = lp::prepare(&ctx.catalog, 2, data, &write_options()) {
                    let rows: usize = p.writes.iter().map(|(_, w)| w.rows()).sum();
                    assert_eq!(rows, p.accepted, "accepted lines and stored rows differ");
                    let lines = data.split(|b| *b == b'\n').count();
                    assert!(
                        p.accepted + p.rejected_total <= lines,
                        "more verdicts than lines"
                    );
                }
            }
            Target::Json => {
                let mapping = JsonMapping {
                    table: "j".into(),
                    tags: vec!["device".into()],
                    time: None,
                };
                let _ =
                    sluice_ingest::json::prepare(&ctx.catalog, 2, data, "fuzz", &mapping, &[], 1);
            }
            Target::Topic => {
                let text = String::from_utf8_lossy(data);
                let (pattern, topic) = text.split_once('\n').unwrap_or((&text, "a/b/c"));
                if let Ok(p) = TopicPattern::parse(pattern) {
                    let _ = p.matches(topic);
                    let _ = p.matches(pattern);
                    let _ = TopicPattern::parse(&p.filter());
                }
            }
            Target::Chunk => {
                if std::fs::write(&ctx.file, data).is_err() {
                    return;
                }
                if let Ok(r) = ChunkReader::open(&ctx.file) {
                    let f = r.footer();
                    let mut fields = vec![Field::new(TIME_COLUMN, time_data_type(), false)];
                    fields.extend(
                        f.tags
                            .iter()
                            .map(|t| Field::new(&t.name, tag_data_type(), true)),
                    );
                    for c in &f.columns {
                        if let ColumnKind::Field(ft) = c.kind {
                            fields.push(Field::new(&c.name, ft.data_type(), true));
                        }
                    }
                    let schema = Arc::new(Schema::new(fields));
                    let _ = r.read(&schema, &|_, _| true);
                }
            }
            Target::Wal => {
                if std::fs::write(&ctx.file, data).is_ok() {
                    if let Ok(r) = sluice_raftlog::replay(&ctx.file) {
                        assert!(r.valid_len <= data.len() as u64, "valid past the end");
                    }
                }
            }
            Target::Postgres => {
                for startup in [true, false] {
                    let mut dc = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
                    dc.awaiting_frontend_ssl = startup;
                    dc.awaiting_frontend_startup = startup;
                    let mut buf = BytesMut::from(data);
                    while let Ok(Some(_)) = PgWireFrontendMessage::decode(&mut buf, &dc) {
                        dc.awaiting_frontend_ssl = false;
                        dc.awaiting_frontend_startup = false;
                    }
                }
            }
        }
    }
}

/// A real chunk file: line protocol through the ingest path, sorted and
/// encoded as a flush would.
fn chunk_seed(ctx: &mut Context) -> std::io::Result<Vec<u8>> {
    let body: String = (0..300)
        .map(|i| {
            format!(
                "c,host=h{} v={}.25,n={}i,s=\"x{}\",b={} {}\n",
                i % 7,
                i,
                i * 3,
                i % 5,
                i % 2 == 0,
                1_000_000 + i * 1000
            )
        })
        .collect();
    let p = lp::prepare(&ctx.catalog, 1, body.as_bytes(), &write_options())
        .map_err(std::io::Error::other)?;
    let (_, w) = p
        .writes
        .first()
        .ok_or_else(|| std::io::Error::other("no write"))?;
    let t = &w.tables[0];
    let sorted = sort_dedup(
        &t.batch.schema(),
        std::slice::from_ref(&t.batch),
        DedupPolicy::Override,
    )
    .map_err(std::io::Error::other)?;
    let (bytes, _) = encode_chunk("fuzz", "c", 0, 86_400_000_000_000, &sorted, 3)
        .map_err(std::io::Error::other)?;
    Ok(bytes)
}
