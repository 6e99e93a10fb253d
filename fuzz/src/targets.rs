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
    /// Shard log entries: decoded at replay, buffered and flushed.
    Batch,
    /// Relational log entries, applied by the store's state machine.
    Relational,
    /// raft messages, as a peer would send them.
    RaftMessage,
    /// MQTT packets (the broker's v3.1.1 and v5 decoders).
    Mqtt,
}

pub struct Context {
    /// Holds the catalog and the input file; removed with the context.
    _dir: tempfile::TempDir,
    catalog: Arc<Catalog>,
    file: PathBuf,
    /// Relational entries that set up the schema the others use.
    relational: (usize, Vec<Vec<u8>>),
}

impl Context {
    pub fn new() -> std::io::Result<Context> {
        let dir = tempfile::tempdir()?;
        let catalog = Arc::new(Catalog::open_dir(dir.path()).map_err(std::io::Error::other)?);
        let file = dir.path().join("input");
        let relational = sluice_relstore::fuzzing::seed_entries().map_err(std::io::Error::other)?;
        Ok(Context {
            _dir: dir,
            catalog,
            file,
            relational,
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
    pub const ALL: [Target; 10] = [
        Target::LineProtocol,
        Target::Json,
        Target::Topic,
        Target::Chunk,
        Target::Wal,
        Target::Postgres,
        Target::Batch,
        Target::Relational,
        Target::RaftMessage,
        Target::Mqtt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::LineProtocol => "line-protocol",
            Target::Json => "json",
            Target::Topic => "topic",
            Target::Chunk => "chunk",
            Target::Wal => "wal",
            Target::Postgres => "postgres",
            Target::Batch => "batch",
            Target::Relational => "relational",
            Target::RaftMessage => "raft-message",
            Target::Mqtt => "mqtt",
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
            Target::Batch => batch_seeds(ctx)?,
            Target::Relational => ctx.relational.1.clone(),
            Target::RaftMessage => raft_seeds()?,
            Target::Mqtt => MQTT.iter().map(|p| p.to_vec()).collect(),
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
            Target::Batch => batch(ctx, data),
            Target::Relational => {
                let (setup, seeds) = &ctx.relational;
                let mut entries: Vec<&[u8]> = seeds[..*setup].iter().map(|e| &e[..]).collect();
                // Twice: the second meets the state the first left.
                entries.extend([data, data]);
                if let Err(e) = sluice_relstore::fuzzing::apply(&entries) {
                    panic!("a bad entry broke the store itself: {e}");
                }
            }
            Target::RaftMessage => {
                use protobuf::Message as _;
                if let Ok(m) = raft::eraftpb::Message::parse_from_bytes(data) {
                    // What the transport would do next: size it and pass it on.
                    let _ = m.compute_size();
                    let _ = m.write_to_bytes();
                }
            }
            Target::Mqtt => mqtt(data),
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

/// Decodes a shard log entry, buffers what it holds and encodes it as a
/// flush would: replay must survive every entry the log hands it.
fn batch(ctx: &mut Context, data: &[u8]) {
    let Ok(tables) = sluice_engine::batch::decode(1, data) else {
        return;
    };
    let mut buffer = sluice_engine::buffer::Buffer::new(ctx.catalog.clone());
    for t in tables {
        buffer.insert(&t.database, &t.table, t.batch.clone());
        if sluice_engine::batch::time_range(&t.batch).is_none() {
            continue;
        }
        if let Ok(sorted) = sort_dedup(
            &t.batch.schema(),
            std::slice::from_ref(&t.batch),
            DedupPolicy::Override,
        ) {
            let _ = encode_chunk(&t.database, &t.table, 0, i64::MAX, &sorted, 3);
        }
    }
}

/// Entries as line protocol ingest writes them.
fn batch_seeds(ctx: &mut Context) -> std::io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for body in LINES {
        let p = lp::prepare(&ctx.catalog, 1, body.as_bytes(), &write_options())
            .map_err(std::io::Error::other)?;
        for (_, w) in p.writes {
            out.push(w.encoded().to_vec());
        }
    }
    Ok(out)
}

fn raft_seeds() -> std::io::Result<Vec<Vec<u8>>> {
    use protobuf::Message as _;
    use raft::eraftpb::{Entry, Message, MessageType};
    let mut append = Message::default();
    append.set_msg_type(MessageType::MsgAppend);
    append.from = 1;
    append.to = 2;
    append.term = 3;
    append.log_term = 3;
    append.index = 41;
    append.commit = 40;
    let e = Entry {
        index: 42,
        term: 3,
        data: b"entry data".to_vec().into(),
        ..Default::default()
    };
    append.entries = vec![e].into();
    let mut vote = Message::default();
    vote.set_msg_type(MessageType::MsgRequestPreVote);
    vote.from = 3;
    vote.to = 1;
    vote.term = 4;
    vote.index = 42;
    let mut out = Vec::new();
    for m in [append, vote] {
        out.push(m.write_to_bytes().map_err(std::io::Error::other)?);
    }
    Ok(out)
}

/// CONNECT, PUBLISH (QoS 1) and SUBSCRIBE in MQTT 3.1.1, and a v5 CONNECT
/// with properties and a PUBLISH with a topic alias.
const MQTT: &[&[u8]] = &[
    b"\x10\x16\x00\x04MQTT\x04\xc2\x00\x3c\x00\x02c1\x00\x02ux\x00\x02pw",
    b"\x32\x13\x00\x08plant/l1\x00\x07v=1 123",
    b"\x82\x0a\x00\x01\x00\x05a/+/#\x01",
    b"\x10\x14\x00\x04MQTT\x05\x02\x00\x3c\x05\x11\x00\x00\x0e\x10\x00\x02c5",
    b"\x32\x10\x00\x03a/b\x00\x01\x03\x23\x00\x05v=1 1",
];

/// Feeds `data` to both protocol versions' decoders, packet after packet,
/// as a connection's reads would.
fn mqtt(data: &[u8]) {
    use tokio_util::codec::Decoder;
    let limit = 1 << 20;
    let mut version = rmqtt_codec::version::VersionCodec;
    let _ = version.decode(&mut BytesMut::from(data));
    let mut v3 = rmqtt_codec::v3::Codec::new(limit);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = v3.decode(&mut buf) {}
    let mut v5 = rmqtt_codec::v5::Codec::new(limit, limit);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = v5.decode(&mut buf) {}
}
