//! A data directory written before the catalog moved into the relational
//! store (`catalog.log` beside the shard logs) starts under today's binary
//! with every database, table, column type and setting, and its points.

use std::time::Duration;

use serde_json::Value;
use sluice_engine::chunk::DedupPolicy;
use sluice_engine::{Engine, EngineConfig, OptionsChange};
use sluice_ingest::{Precision, WriteOptions};
use sluice_tests::TestServer;

const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// What an earlier Sluice left behind: the engine on its own keeps the
/// catalog in `catalog.log`, as every release before the relational store did.
fn legacy_dir(data: &std::path::Path) {
    let mut engine = Engine::start(
        &EngineConfig {
            data_dir: data.to_path_buf(),
            // The test server runs two shards; series placement depends on it.
            shards: 2,
            io_memory: 1 << 20,
            pin_cores: false,
            storage: Default::default(),
            catalog: None,
        },
        vec![],
    )
    .expect("engine on the legacy layout");
    let h = engine.handle();
    let now = sluice_ingest::lp::now_ns();
    let body: String = (0..50)
        .map(|i| {
            format!(
                "boiler,unit=u{} temp={}.5,ok=true,code={}i {}\n",
                i % 5,
                i,
                i,
                now - i64::from(i) * 1_000_000_000
            )
        })
        .collect();
    let opts = WriteOptions {
        database: "plant".into(),
        precision: Precision::Nanoseconds,
        default_time: now,
        extra_tags: Vec::new(),
    };
    let prepared = sluice_ingest::prepare(h.catalog(), h.shard_count(), body.as_bytes(), &opts)
        .expect("prepare");
    assert_eq!(prepared.accepted, 50);
    futures::executor::block_on(h.write(prepared.writes)).expect("write");
    h.catalog()
        .set_options(
            "plant",
            Some("boiler"),
            OptionsChange {
                dedup: Some(DedupPolicy::Merge),
                retention_ns: Some(30 * DAY_NS),
            },
        )
        .expect("table options");
    h.catalog()
        .set_options(
            "plant",
            None,
            OptionsChange {
                dedup: None,
                retention_ns: Some(90 * DAY_NS),
            },
        )
        .expect("database options");
    h.catalog().create_database("empty").expect("database");
    engine.stop();
}

fn columns(s: &TestServer) -> Vec<Vec<Value>> {
    s.rows(
        "plant",
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_schema = 'plant' AND table_name = 'boiler' ORDER BY column_name",
    )
}

#[test]
fn a_catalog_log_moves_into_the_relational_store_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    legacy_dir(&data);
    let legacy = std::fs::read_to_string(data.join("catalog.log")).expect("catalog.log");
    assert!(legacy.contains("\"boiler\""), "{legacy}");

    let mut s = TestServer::start_in(tmp, &[]);
    assert!(
        !s.data_dir.join("catalog.log").exists(),
        "catalog.log is still in place"
    );
    assert_eq!(
        std::fs::read_to_string(s.data_dir.join("catalog.log.migrated")).expect("kept copy"),
        legacy
    );
    let before = columns(&s);
    let names: Vec<&str> = before.iter().filter_map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["code", "ok", "temp", "time", "unit"]);
    assert_eq!(s.count("plant", "boiler"), 50);
    assert_eq!(
        s.scalar("plant", "SELECT count(DISTINCT unit) FROM boiler"),
        Some(5)
    );
    let settings = s.rows(
        "plant",
        "SELECT dedup, retention FROM system.tables WHERE database = 'plant' AND \"table\" = 'boiler'",
    );
    assert_eq!(
        settings,
        vec![vec![Value::from("merge"), Value::from("30d")]]
    );
    let dbs = s.rows(
        "plant",
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name IN ('plant', 'empty') ORDER BY 1",
    );
    assert_eq!(
        dbs,
        vec![vec![Value::from("empty")], vec![Value::from("plant")]]
    );

    // A type decided before the move still holds after it.
    let r = s.write("plant", "boiler,unit=u1 temp=\"hot\"\n");
    assert_eq!(r.status(), 400, "a string into a float column");

    // New schema after the move lives in the store: it survives kill -9 and
    // no catalog.log comes back.
    let r = s.write("plant", "boiler,unit=u9,site=north temp=1.5,pressure=2i\n");
    assert_eq!(r.status(), 204);
    s.kill9();
    s.restart();
    assert!(!s.data_dir.join("catalog.log").exists());
    let after = columns(&s);
    let names: Vec<&str> = after.iter().filter_map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        ["code", "ok", "pressure", "site", "temp", "time", "unit"]
    );
    s.wait_scalar(
        "plant",
        "SELECT count(*) FROM boiler",
        51,
        Duration::from_secs(10),
    );
    let retention = s.rows(
        "plant",
        "SELECT retention FROM system.tables WHERE database = 'plant' AND \"table\" = 'boiler'",
    );
    assert_eq!(retention, vec![vec![Value::from("30d")]]);
}
