//! The time-series SQL functions through a real engine and `QueryEngine`:
//! two shards, data partly flushed to chunks and partly in the buffers.

use std::sync::Arc;

use arrow::array::{DictionaryArray, Float64Array, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{Field, Int32Type, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use sluice_engine::catalog::{tag_data_type, time_data_type, TIME_COLUMN};
use sluice_engine::{
    ColumnKind, ColumnRequest, Engine, EngineConfig, FieldType, TableBatch, WriteBatch,
};
use sluice_query::QueryEngine;

/// 2024-01-01T00:00:00Z in nanoseconds.
const BASE: i64 = 1_704_067_200_000_000_000;
const MINUTE: i64 = 60_000_000_000;

fn write(engine: &Engine, shard: usize, host: &str, rows: &[(i64, Option<f64>)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new(TIME_COLUMN, time_data_type(), false),
        Field::new("host", tag_data_type(), true),
        Field::new("usage", arrow::datatypes::DataType::Float64, true),
    ]));
    let time = TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| BASE + r.0))
        .with_timezone("UTC");
    let hosts: DictionaryArray<Int32Type> = rows.iter().map(|_| Some(host)).collect();
    let usage = Float64Array::from_iter(rows.iter().map(|r| r.1));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(time), Arc::new(hosts), Arc::new(usage)],
    )
    .expect("batch");
    let wb = WriteBatch::new(vec![TableBatch {
        database: "db".into(),
        table: "cpu".into(),
        batch,
    }])
    .expect("write batch");
    futures::executor::block_on(engine.handle().write(vec![(shard, wb)])).expect("write");
}

async fn sql(q: &QueryEngine, query: &str) -> String {
    let stream = match q.execute(Some("db"), None, query).await {
        Ok(s) => s,
        Err(e) => panic!("{query}: {e}"),
    };
    let batches = datafusion::physical_plan::common::collect(stream)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    pretty_format_batches(&batches).expect("format").to_string()
}

#[test]
fn time_series_functions_over_the_engine() {
    let dir = std::env::temp_dir().join(format!("sluice-functions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = EngineConfig {
        data_dir: dir.clone(),
        shards: 2,
        io_memory: 1 << 20,
        pin_cores: false,
        catalog: None,
        storage: Default::default(),
    };
    let engine = Engine::start(&cfg, vec![]).expect("engine");
    engine
        .handle()
        .catalog()
        .ensure_columns(
            "db",
            "cpu",
            &[
                ColumnRequest {
                    name: "host",
                    kind: ColumnKind::Tag,
                },
                ColumnRequest {
                    name: "usage",
                    kind: ColumnKind::Field(FieldType::Float),
                },
            ],
        )
        .expect("columns");
    // Chunks first, then buffered rows, out of time order.
    write(&engine, 0, "a", &[(MINUTE, Some(20.0)), (10, Some(10.0))]);
    write(&engine, 1, "b", &[(2 * MINUTE + 5, Some(5.0))]);
    futures::executor::block_on(engine.handle().flush()).expect("flush");
    write(
        &engine,
        0,
        "a",
        &[(4 * MINUTE, Some(50.0)), (7 * MINUTE, Some(99.0))],
    );
    write(
        &engine,
        1,
        "b",
        &[(5 * MINUTE + 30, Some(9.0)), (-MINUTE, None)],
    );

    let q = QueryEngine::new(engine.handle());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let got = sql(
            &q,
            "SELECT date_bin_gapfill(INTERVAL '1 minute', time) AS minute, host, \
             avg(usage) AS v, locf(avg(usage)) AS l, round(interpolate(avg(usage)), 3) AS i \
             FROM cpu WHERE time >= '2024-01-01T00:00:00Z' AND time < '2024-01-01T00:06:00Z' \
             GROUP BY 1, 2 ORDER BY host, minute",
        )
        .await;
        let expected = [
            "+----------------------+------+------+------+-------+",
            "| minute               | host | v    | l    | i     |",
            "+----------------------+------+------+------+-------+",
            "| 2024-01-01T00:00:00Z | a    | 10.0 | 10.0 | 10.0  |",
            "| 2024-01-01T00:01:00Z | a    | 20.0 | 20.0 | 20.0  |",
            "| 2024-01-01T00:02:00Z | a    |      | 20.0 | 30.0  |",
            "| 2024-01-01T00:03:00Z | a    |      | 20.0 | 40.0  |",
            "| 2024-01-01T00:04:00Z | a    | 50.0 | 50.0 | 50.0  |",
            "| 2024-01-01T00:05:00Z | a    |      | 50.0 |       |",
            "| 2024-01-01T00:00:00Z | b    |      |      |       |",
            "| 2024-01-01T00:01:00Z | b    |      |      |       |",
            "| 2024-01-01T00:02:00Z | b    | 5.0  | 5.0  | 5.0   |",
            "| 2024-01-01T00:03:00Z | b    |      | 5.0  | 6.333 |",
            "| 2024-01-01T00:04:00Z | b    |      | 5.0  | 7.667 |",
            "| 2024-01-01T00:05:00Z | b    | 9.0  | 9.0  | 9.0   |",
            "+----------------------+------+------+------+-------+",
        ]
        .join("\n");
        assert_eq!(got, expected);

        let got = sql(
            &q,
            "SELECT host, first(usage, time) AS f, last(usage) AS l, \
             time_bucket('10 minutes', max(time)) AS b FROM cpu GROUP BY host ORDER BY host",
        )
        .await;
        let expected = [
            "+------+------+------+----------------------+",
            "| host | f    | l    | b                    |",
            "+------+------+------+----------------------+",
            "| a    | 10.0 | 99.0 | 2024-01-01T00:00:00Z |",
            "| b    | 5.0  | 9.0  | 2024-01-01T00:00:00Z |",
            "+------+------+------+----------------------+",
        ]
        .join("\n");
        assert_eq!(got, expected);
    });
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
