//! Writes through real shards, restarts, and checks the log replays.

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{Field, Schema};
use sluice_engine::catalog::{time_data_type, TIME_COLUMN};
use sluice_engine::{
    ColumnKind, ColumnRequest, Engine, EngineConfig, FieldType, TableBatch, WriteBatch,
};

fn batch(times: &[i64], vals: &[f64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new(TIME_COLUMN, time_data_type(), false),
        Field::new("v", arrow::datatypes::DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampNanosecondArray::from(times.to_vec()).with_timezone("UTC")),
            Arc::new(Float64Array::from(vals.to_vec())),
        ],
    )
    .unwrap()
}

fn rows(engine: &Engine) -> usize {
    let h = engine.handle();
    futures::executor::block_on(h.snapshot("db", "m", i64::MIN, i64::MAX))
        .unwrap()
        .iter()
        .map(|s| {
            s.batches.iter().map(|b| b.batch.num_rows()).sum::<usize>()
                + s.chunks
                    .iter()
                    .map(|c| c.footer().rows as usize)
                    .sum::<usize>()
        })
        .sum()
}

fn config(dir: &std::path::Path, shards: usize) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        shards,
        io_memory: 1 << 20,
        pin_cores: false,
        catalog: None,
        storage: Default::default(),
    }
}

fn define_float_v(engine: &Engine) {
    engine
        .handle()
        .catalog()
        .ensure_columns(
            "db",
            "m",
            &[ColumnRequest {
                name: "v",
                kind: ColumnKind::Field(FieldType::Float),
            }],
        )
        .unwrap();
}

fn write(engine: &Engine, shard: usize, times: &[i64], vals: &[f64]) {
    let wb = WriteBatch::new(vec![TableBatch {
        database: "db".into(),
        table: "m".into(),
        batch: batch(times, vals),
    }])
    .unwrap();
    futures::executor::block_on(engine.handle().write(vec![(shard, wb)])).unwrap();
}

#[test]
fn writes_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2);
    {
        let engine = Engine::start(&cfg, vec![]).unwrap();
        define_float_v(&engine);
        for i in 0..50i64 {
            for shard in 0..2 {
                write(&engine, shard, &[i * 10, i * 10 + 1], &[i as f64, 0.5]);
            }
        }
        assert_eq!(rows(&engine), 200);
    }
    let engine = Engine::start(&cfg, vec![]).unwrap();
    assert_eq!(rows(&engine), 200);
    // A torn tail: garbage appended to one shard's log is cut off, data kept.
    drop(engine);
    let wal = dir.path().join("shard-0/raft-00000001.wal");
    let mut data = std::fs::read(&wal).unwrap();
    data.extend_from_slice(&[0x55; 100]);
    std::fs::write(&wal, data).unwrap();
    let engine = Engine::start(&cfg, vec![]).unwrap();
    assert_eq!(rows(&engine), 200);
}

#[test]
fn corrupt_record_cuts_the_log_there_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1);
    {
        let engine = Engine::start(&cfg, vec![]).unwrap();
        define_float_v(&engine);
        for i in 0..10i64 {
            write(&engine, 0, &[i], &[i as f64]);
        }
        assert_eq!(rows(&engine), 10);
    }
    // Flip one byte in the last third of the log: replay keeps the records
    // before the damage, drops it and everything after, and starts.
    let wal = dir.path().join("shard-0/raft-00000001.wal");
    let mut data = std::fs::read(&wal).unwrap();
    let end = data.iter().rposition(|b| *b != 0).unwrap();
    let at = end - end / 6;
    data[at] ^= 0x40;
    std::fs::write(&wal, data).unwrap();
    let engine = Engine::start(&cfg, vec![]).unwrap();
    let n = rows(&engine);
    assert!((5..10).contains(&n), "kept {n} rows");
    // The shard keeps working after the cut.
    write(&engine, 0, &[100], &[1.0]);
    assert_eq!(rows(&engine), n + 1);
    drop(engine);
    let engine = Engine::start(&cfg, vec![]).unwrap();
    assert_eq!(rows(&engine), n + 1);
}
