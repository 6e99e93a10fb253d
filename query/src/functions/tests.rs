//! SQL-level tests of the time-series functions over a MemTable shaped like
//! a Sluice table, with two partitions so partial aggregates are merged.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

/// 2024-01-01T00:00:00Z in seconds.
const BASE: i64 = 1_704_067_200;

struct Row {
    /// Seconds after `BASE`.
    secs: i64,
    host: &'static str,
    usage: Option<f64>,
    count: Option<i64>,
    ucount: Option<u64>,
    ok: Option<bool>,
    msg: Option<&'static str>,
}

fn row(secs: i64, host: &'static str, usage: Option<f64>) -> Row {
    Row {
        secs,
        host,
        usage,
        count: usage.map(|u| u as i64),
        ucount: usage.map(|u| u as u64),
        ok: usage.map(|u| u > 10.0),
        msg: usage.map(|u| if u > 10.0 { "high" } else { "low" }),
    }
}

fn schema() -> SchemaRef {
    let tz = Some("UTC".into());
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new("time", DataType::Timestamp(TimeUnit::Nanosecond, tz), false),
        Field::new("host", dict, true),
        Field::new("usage", DataType::Float64, true),
        Field::new("count", DataType::Int64, true),
        Field::new("ucount", DataType::UInt64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("msg", DataType::Utf8, true),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    let time = TimestampNanosecondArray::from_iter_values(
        rows.iter().map(|r| (BASE + r.secs) * 1_000_000_000),
    )
    .with_timezone("UTC");
    let host: DictionaryArray<Int32Type> = rows.iter().map(|r| Some(r.host)).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time),
        Arc::new(host),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.usage))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.count))),
        Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.ucount))),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.ok))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.msg))),
    ];
    RecordBatch::try_new(schema(), columns).expect("test batch")
}

/// A context wired like `QueryEngine::context`, with `cpu` made of the
/// given partitions.
fn context(partitions: Vec<Vec<Row>>) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new().with_target_partitions(4))
        .with_default_features()
        .with_analyzer_rule(super::analyzer_rule())
        .with_query_planner(super::query_planner())
        .build();
    let ctx = SessionContext::new_with_state(state);
    super::register(&ctx);
    let parts = partitions.iter().map(|p| vec![batch(p)]).collect();
    let table = MemTable::try_new(schema(), parts).expect("mem table");
    ctx.register_table("cpu", Arc::new(table))
        .expect("register");
    ctx
}

async fn query(ctx: &SessionContext, sql: &str) -> datafusion::common::Result<String> {
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(pretty_format_batches(&batches)?.to_string())
}

async fn run(ctx: &SessionContext, sql: &str) -> String {
    match query(ctx, sql).await {
        Ok(s) => s,
        Err(e) => panic!("{sql}: {e}"),
    }
}

async fn error(ctx: &SessionContext, sql: &str) -> String {
    match query(ctx, sql).await {
        Ok(s) => panic!("{sql} should fail, gave\n{s}"),
        Err(e) => e.to_string(),
    }
}

fn table(lines: &[&str]) -> String {
    lines.join("\n")
}

fn sample() -> SessionContext {
    context(vec![
        vec![
            row(30, "a", Some(5.0)),
            row(150, "a", Some(20.0)),
            row(610, "b", Some(7.0)),
        ],
        vec![
            row(0, "b", Some(1.0)),
            row(299, "a", Some(12.5)),
            row(300, "b", None),
            row(1200, "a", Some(3.0)),
        ],
    ])
}

#[tokio::test]
async fn time_bucket_is_date_bin() {
    let ctx = sample();
    for (tb, db) in [
        (
            "time_bucket(INTERVAL '5 minutes', time)",
            "date_bin(INTERVAL '5 minutes', time)",
        ),
        (
            "time_bucket('5 minutes', time)",
            "date_bin('5 minutes', time)",
        ),
        (
            "time_bucket(INTERVAL '7 minutes', time, TIMESTAMP '2024-01-01T00:01:00Z')",
            "date_bin(INTERVAL '7 minutes', time, TIMESTAMP '2024-01-01T00:01:00Z')",
        ),
    ] {
        let same = format!(
            "SELECT count(*) AS n, sum(CAST({tb} = {db} AS INT)) AS same, \
             bool_and(arrow_typeof({tb}) = arrow_typeof({db})) AS same_type FROM cpu"
        );
        let expected = table(&[
            "+---+------+-----------+",
            "| n | same | same_type |",
            "+---+------+-----------+",
            "| 7 | 7    | true      |",
            "+---+------+-----------+",
        ]);
        assert_eq!(run(&ctx, &same).await, expected, "{tb}");
        let grouped =
            |f: &str| format!("SELECT {f} AS b, count(*) AS n FROM cpu GROUP BY 1 ORDER BY 1");
        assert_eq!(run(&ctx, &grouped(tb)).await, run(&ctx, &grouped(db)).await);
    }
    let by_5min = run(
        &ctx,
        "SELECT time_bucket('5 minutes', time) AS b, count(*) AS n FROM cpu GROUP BY 1 ORDER BY 1",
    )
    .await;
    let expected = table(&[
        "+----------------------+---+",
        "| b                    | n |",
        "+----------------------+---+",
        "| 2024-01-01T00:00:00Z | 4 |",
        "| 2024-01-01T00:05:00Z | 1 |",
        "| 2024-01-01T00:10:00Z | 1 |",
        "| 2024-01-01T00:20:00Z | 1 |",
        "+----------------------+---+",
    ]);
    assert_eq!(by_5min, expected);
}

fn first_last_data() -> SessionContext {
    context(vec![
        vec![
            row(100, "a", Some(10.0)),
            row(50, "a", None),
            row(500, "b", Some(4.0)),
            row(200, "c", None),
            row(1000, "d", None),
        ],
        vec![
            row(900, "a", None),
            row(70, "a", Some(2.0)),
            row(800, "a", Some(18.0)),
            row(500, "b", Some(6.0)),
            row(300, "c", None),
        ],
    ])
}

#[tokio::test]
async fn first_last_per_group() {
    let ctx = first_last_data();
    let got = run(
        &ctx,
        "SELECT host, first(usage, time) AS fu, last(usage, time) AS lu, \
         first(count, time) AS fc, last(count, time) AS lc, \
         first(ucount, time) AS fuc, last(ucount, time) AS luc, \
         first(ok, time) AS fo, last(ok, time) AS lo, \
         first(msg, time) AS fm, last(msg, time) AS lm \
         FROM cpu GROUP BY host ORDER BY host",
    )
    .await;
    let expected = table(&[
        "+------+-----+------+----+----+-----+-----+-------+-------+-----+------+",
        "| host | fu  | lu   | fc | lc | fuc | luc | fo    | lo    | fm  | lm   |",
        "+------+-----+------+----+----+-----+-----+-------+-------+-----+------+",
        "| a    | 2.0 | 18.0 | 2  | 18 | 2   | 18  | false | true  | low | high |",
        "| b    | 4.0 | 6.0  | 4  | 6  | 4   | 6   | false | false | low | low  |",
        "| c    |     |      |    |    |     |     |       |       |     |      |",
        "| d    |     |      |    |    |     |     |       |       |     |      |",
        "+------+-----+------+----+----+-----+-----+-------+-------+-----+------+",
    ]);
    assert_eq!(got, expected);

    // One argument: the `time` column is implied. FILTER is honoured.
    let got = run(
        &ctx,
        "SELECT host, first(usage) AS f, last(usage) AS l, \
         last(usage, time) FILTER (WHERE usage < 10) AS low \
         FROM cpu GROUP BY host ORDER BY host",
    )
    .await;
    let expected = table(&[
        "+------+-----+------+-----+",
        "| host | f   | l    | low |",
        "+------+-----+------+-----+",
        "| a    | 2.0 | 18.0 | 2.0 |",
        "| b    | 4.0 | 6.0  | 6.0 |",
        "| c    |     |      |     |",
        "| d    |     |      |     |",
        "+------+-----+------+-----+",
    ]);
    assert_eq!(got, expected);

    // Dictionary (tag) values through the groups accumulator.
    let got = run(
        &ctx,
        "SELECT ok, first(host, time) AS f, last(host, time) AS l FROM cpu \
         GROUP BY ok ORDER BY ok NULLS LAST",
    )
    .await;
    let expected = table(&[
        "+-------+---+---+",
        "| ok    | f | l |",
        "+-------+---+---+",
        "| false | a | b |",
        "| true  | a | a |",
        "|       | a | d |",
        "+-------+---+---+",
    ]);
    assert_eq!(got, expected);
}

#[tokio::test]
async fn first_last_without_group_by() {
    let ctx = first_last_data();
    let got = run(
        &ctx,
        "SELECT first(host, time) AS fh, last(host, time) AS lh, \
         arrow_typeof(last(host, time)) AS th, \
         first(usage, time) AS fu, last(usage, time) AS lu, last(msg) AS lm \
         FROM cpu",
    )
    .await;
    let expected = table(&[
        "+----+----+-------------------------+-----+------+------+",
        "| fh | lh | th                      | fu  | lu   | lm   |",
        "+----+----+-------------------------+-----+------+------+",
        "| a  | d  | Dictionary(Int32, Utf8) | 2.0 | 18.0 | high |",
        "+----+----+-------------------------+-----+------+------+",
    ]);
    assert_eq!(got, expected);
    let got = run(
        &ctx,
        "SELECT first(usage, time) AS f, last(usage, time) AS l FROM cpu WHERE host = 'c'",
    )
    .await;
    let expected = table(&[
        "+---+---+",
        "| f | l |",
        "+---+---+",
        "|   |   |",
        "+---+---+",
    ]);
    assert_eq!(got, expected);
    let err = error(&ctx, "SELECT last(usage, msg) FROM cpu").await;
    assert!(err.contains("time must be a timestamp"), "{err}");
}

/// a: 00:00:10 10, 00:01 20, 00:04 50 (and 00:07 99, after the range);
/// b: 23:59 1 (before the range), 00:02:05 5, 00:05:30 9.
fn gapfill_data() -> SessionContext {
    context(vec![
        vec![
            row(10, "a", Some(10.0)),
            row(240, "a", Some(50.0)),
            row(125, "b", Some(5.0)),
            row(420, "a", Some(99.0)),
        ],
        vec![
            row(60, "a", Some(20.0)),
            row(330, "b", Some(9.0)),
            row(-60, "b", Some(1.0)),
        ],
    ])
}

const RANGE: &str = "time >= '2024-01-01T00:00:00Z' AND time < '2024-01-01T00:06:00Z'";

#[tokio::test]
async fn gapfill_nulls() {
    let ctx = gapfill_data();
    let sql = format!(
        "SELECT date_bin_gapfill(INTERVAL '1 minute', time) AS minute, host, \
         avg(usage) AS v, count(*) AS n FROM cpu WHERE {RANGE} GROUP BY 1, 2"
    );
    let expected = table(&[
        "+----------------------+------+------+---+",
        "| minute               | host | v    | n |",
        "+----------------------+------+------+---+",
        "| 2024-01-01T00:00:00Z | a    | 10.0 | 1 |",
        "| 2024-01-01T00:01:00Z | a    | 20.0 | 1 |",
        "| 2024-01-01T00:02:00Z | a    |      |   |",
        "| 2024-01-01T00:03:00Z | a    |      |   |",
        "| 2024-01-01T00:04:00Z | a    | 50.0 | 1 |",
        "| 2024-01-01T00:05:00Z | a    |      |   |",
        "| 2024-01-01T00:00:00Z | b    |      |   |",
        "| 2024-01-01T00:01:00Z | b    |      |   |",
        "| 2024-01-01T00:02:00Z | b    | 5.0  | 1 |",
        "| 2024-01-01T00:03:00Z | b    |      |   |",
        "| 2024-01-01T00:04:00Z | b    |      |   |",
        "| 2024-01-01T00:05:00Z | b    | 9.0  | 1 |",
        "+----------------------+------+------+---+",
    ]);
    // Without ORDER BY the output comes sorted by group, then time.
    assert_eq!(run(&ctx, &sql).await, expected);
    let ordered = format!("{sql} ORDER BY host, minute");
    assert_eq!(run(&ctx, &ordered).await, expected);
}

#[tokio::test]
async fn gapfill_locf_and_interpolate() {
    let ctx = gapfill_data();
    let sql = format!(
        "SELECT date_bin_gapfill(INTERVAL '1 minute', time) AS minute, host, \
         locf(avg(usage)) AS l, round(interpolate(avg(usage)), 3) AS i, \
         interpolate(sum(count)) AS s \
         FROM cpu WHERE {RANGE} GROUP BY 1, 2 ORDER BY host, minute"
    );
    let expected = table(&[
        "+----------------------+------+------+-------+----+",
        "| minute               | host | l    | i     | s  |",
        "+----------------------+------+------+-------+----+",
        "| 2024-01-01T00:00:00Z | a    | 10.0 | 10.0  | 10 |",
        "| 2024-01-01T00:01:00Z | a    | 20.0 | 20.0  | 20 |",
        "| 2024-01-01T00:02:00Z | a    | 20.0 | 30.0  | 30 |",
        "| 2024-01-01T00:03:00Z | a    | 20.0 | 40.0  | 40 |",
        "| 2024-01-01T00:04:00Z | a    | 50.0 | 50.0  | 50 |",
        "| 2024-01-01T00:05:00Z | a    | 50.0 |       |    |",
        "| 2024-01-01T00:00:00Z | b    |      |       |    |",
        "| 2024-01-01T00:01:00Z | b    |      |       |    |",
        "| 2024-01-01T00:02:00Z | b    | 5.0  | 5.0   | 5  |",
        "| 2024-01-01T00:03:00Z | b    | 5.0  | 6.333 | 6  |",
        "| 2024-01-01T00:04:00Z | b    | 5.0  | 7.667 | 8  |",
        "| 2024-01-01T00:05:00Z | b    | 9.0  | 9.0   | 9  |",
        "+----------------------+------+------+-------+----+",
    ]);
    assert_eq!(run(&ctx, &sql).await, expected);
}

#[tokio::test]
async fn gapfill_bounds_origin_and_copies() {
    let ctx = gapfill_data();
    // BETWEEN is inclusive; the same aggregate with and without locf.
    let got = run(
        &ctx,
        "SELECT date_bin_gapfill(INTERVAL '1 minute', time) AS m, avg(usage) AS v, \
         locf(avg(usage)) AS l FROM cpu WHERE host = 'a' AND \
         time BETWEEN '2024-01-01T00:00:00Z' AND '2024-01-01T00:05:00Z' GROUP BY 1 ORDER BY 1",
    )
    .await;
    let expected = table(&[
        "+----------------------+------+------+",
        "| m                    | v    | l    |",
        "+----------------------+------+------+",
        "| 2024-01-01T00:00:00Z | 10.0 | 10.0 |",
        "| 2024-01-01T00:01:00Z | 20.0 | 20.0 |",
        "| 2024-01-01T00:02:00Z |      | 20.0 |",
        "| 2024-01-01T00:03:00Z |      | 20.0 |",
        "| 2024-01-01T00:04:00Z | 50.0 | 50.0 |",
        "| 2024-01-01T00:05:00Z |      | 50.0 |",
        "+----------------------+------+------+",
    ]);
    assert_eq!(got, expected);

    // An origin shifts the buckets; `>` / `<=` bounds.
    let got = run(
        &ctx,
        "SELECT date_bin_gapfill(INTERVAL '2 minutes', time, TIMESTAMP '2024-01-01T00:01:00Z') AS m, \
         max(usage) AS v FROM cpu WHERE host = 'a' AND time > '2023-12-31T23:59:59Z' \
         AND time <= '2024-01-01T00:05:59Z' GROUP BY 1",
    )
    .await;
    let expected = table(&[
        "+----------------------+------+",
        "| m                    | v    |",
        "+----------------------+------+",
        "| 2023-12-31T23:59:00Z | 10.0 |",
        "| 2024-01-01T00:01:00Z | 20.0 |",
        "| 2024-01-01T00:03:00Z | 50.0 |",
        "| 2024-01-01T00:05:00Z |      |",
        "+----------------------+------+",
    ]);
    assert_eq!(got, expected);
}

#[tokio::test]
async fn time_bucket_gapfill_start_finish() {
    let ctx = gapfill_data();
    // TimescaleDB style: the range comes from start/finish; rows outside
    // it pass through unchanged.
    let got = run(
        &ctx,
        "SELECT time_bucket_gapfill(INTERVAL '2 minutes', time, '2024-01-01T00:00:00Z', \
         '2024-01-01T00:08:00Z') AS t, locf(last(usage, time)) AS v \
         FROM cpu WHERE host = 'b' GROUP BY 1",
    )
    .await;
    let expected = table(&[
        "+----------------------+-----+",
        "| t                    | v   |",
        "+----------------------+-----+",
        "| 2023-12-31T23:58:00Z | 1.0 |",
        "| 2024-01-01T00:00:00Z | 1.0 |",
        "| 2024-01-01T00:02:00Z | 5.0 |",
        "| 2024-01-01T00:04:00Z | 9.0 |",
        "| 2024-01-01T00:06:00Z | 9.0 |",
        "+----------------------+-----+",
    ]);
    assert_eq!(got, expected);
    // Two arguments: same as date_bin_gapfill.
    let got = run(
        &ctx,
        &format!(
            "SELECT time_bucket_gapfill('3 minutes', time) AS t, host, count(usage) AS n \
             FROM cpu WHERE {RANGE} GROUP BY 1, 2 ORDER BY 2, 1"
        ),
    )
    .await;
    let expected = table(&[
        "+----------------------+------+---+",
        "| t                    | host | n |",
        "+----------------------+------+---+",
        "| 2024-01-01T00:00:00Z | a    | 2 |",
        "| 2024-01-01T00:03:00Z | a    | 1 |",
        "| 2024-01-01T00:00:00Z | b    | 1 |",
        "| 2024-01-01T00:03:00Z | b    | 1 |",
        "+----------------------+------+---+",
    ]);
    assert_eq!(got, expected);
}

#[tokio::test]
async fn gapfill_errors() {
    let ctx = gapfill_data();
    let cases = [
        (
            "SELECT date_bin_gapfill(INTERVAL '1 minute', time), avg(usage) FROM cpu \
             WHERE time >= '2024-01-01T00:00:00Z' GROUP BY 1",
            "lower and an upper bound",
        ),
        (
            "SELECT date_bin_gapfill(INTERVAL '1 minute', time), avg(usage) FROM cpu GROUP BY 1",
            "lower and an upper bound",
        ),
        (
            "SELECT locf(avg(usage)) FROM cpu",
            "can only wrap an aggregate",
        ),
        (
            "SELECT date_bin_gapfill(INTERVAL '1 minute', time) FROM cpu",
            "GROUP BY expression",
        ),
        (
            &format!(
                "SELECT date_bin_gapfill(INTERVAL '1 minute', time), interpolate(last(msg, time)) \
                 FROM cpu WHERE {RANGE} GROUP BY 1"
            ),
            "numeric",
        ),
        (
            &format!(
                "SELECT date_bin_gapfill(INTERVAL '1 month', time), avg(usage) \
                 FROM cpu WHERE {RANGE} GROUP BY 1"
            ),
            "month",
        ),
        (
            &format!(
                "SELECT date_bin_gapfill(INTERVAL '1 nanosecond', time), avg(usage) \
                 FROM cpu WHERE {RANGE} GROUP BY 1"
            ),
            "narrow the time range",
        ),
    ];
    for (sql, want) in cases {
        let err = error(&ctx, sql).await;
        assert!(err.contains(want), "{sql}: {err}");
    }
}

#[tokio::test]
async fn gapfill_relative_range_without_data() {
    let ctx = gapfill_data();
    // now()-relative bounds, no rows in range, no group key but time: every
    // bucket comes out empty (6 or 7 of them depending on now's alignment).
    let got = run(
        &ctx,
        "SELECT count(*) AS buckets, count(n) AS with_data FROM ( \
         SELECT date_bin_gapfill(INTERVAL '10 minutes', time) AS t, count(usage) AS n \
         FROM cpu WHERE time >= now() - INTERVAL '1 hour' AND time < now() GROUP BY 1)",
    )
    .await;
    let six = table(&[
        "+---------+-----------+",
        "| buckets | with_data |",
        "+---------+-----------+",
        "| 6       | 0         |",
        "+---------+-----------+",
    ]);
    assert!(got == six || got == six.replace("| 6 ", "| 7 "), "{got}");
}
