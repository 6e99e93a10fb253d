//! The chunk codec through its public API: sort and dedup against a model,
//! encode → file → decode roundtrips, statistics, page cutting, and
//! corrupt or truncated files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice_engine::catalog::{tag_data_type, time_data_type, TIME_COLUMN};
use sluice_engine::chunk::{
    encode_chunk, sort_dedup, ChunkReader, ColumnStats, DedupPolicy, Footer, Stat, MAGIC, PAGE_ROWS,
};
use sluice_engine::{ColumnKind, EngineError, FieldType};

const TAGS: [&str; 2] = ["host", "region"];
/// Field names in schema (name) order, with their types.
const FIELDS: [(&str, FieldType); 6] = [
    ("b", FieldType::Boolean),
    ("f", FieldType::Float),
    ("i", FieldType::Integer),
    ("n", FieldType::Float),
    ("s", FieldType::String),
    ("u", FieldType::UInteger),
];

/// A field value; floats as bits so NaN payloads and -0.0 compare exactly.
#[derive(Debug, Clone, PartialEq)]
enum V {
    F(u64),
    I(i64),
    U(u64),
    B(bool),
    S(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    tags: Vec<Option<String>>,
    time: i64,
    fields: Vec<Option<V>>,
}

fn schema() -> SchemaRef {
    let mut f = vec![Field::new(TIME_COLUMN, time_data_type(), false)];
    f.extend(TAGS.iter().map(|t| Field::new(*t, tag_data_type(), true)));
    f.extend(
        FIELDS
            .iter()
            .map(|(n, t)| Field::new(*n, t.data_type(), true)),
    );
    Arc::new(Schema::new(f))
}

const SPECIAL_F: [u64; 12] = [
    0x7ff8_0000_0000_0000, // NaN
    0x7ff8_0000_0000_1234, // NaN with a payload
    0xfff4_0000_0000_0001, // negative signalling NaN
    0x8000_0000_0000_0000, // -0.0
    0x0000_0000_0000_0000, // 0.0
    0x7ff0_0000_0000_0000, // inf
    0xfff0_0000_0000_0000, // -inf
    0x0000_0000_0000_0001, // smallest subnormal
    0x000f_ffff_ffff_ffff, // largest subnormal
    0x7fef_ffff_ffff_ffff, // f64::MAX
    0xffef_ffff_ffff_ffff, // f64::MIN
    0x3ff0_0000_0000_0000, // 1.0
];
const STRINGS: [&str; 7] = [
    "",
    "plain",
    "héllo wörld",
    "日本語テキスト",
    "🦀 crab",
    "a\u{0}b",
    "x",
];

fn random_value(rng: &mut StdRng, t: FieldType) -> V {
    match t {
        FieldType::Float => {
            if rng.gen_bool(0.3) {
                V::F(SPECIAL_F[rng.gen_range(0..SPECIAL_F.len())])
            } else {
                V::F((rng.gen_range(-1000.0..1000.0f64)).to_bits())
            }
        }
        FieldType::Integer => V::I(match rng.gen_range(0..6) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => 0,
            _ => rng.gen_range(-1_000_000..1_000_000),
        }),
        FieldType::UInteger => V::U(match rng.gen_range(0..5) {
            0 => u64::MAX,
            1 => 0,
            _ => rng.gen_range(0..1_000_000),
        }),
        FieldType::Boolean => V::B(rng.gen()),
        FieldType::String => {
            if rng.gen_bool(0.7) {
                V::S(STRINGS[rng.gen_range(0..STRINGS.len())].to_string())
            } else {
                V::S(format!("v{}", rng.gen_range(0..100)))
            }
        }
    }
}

/// Rows in arrival order with many duplicate (series, time) and times out of
/// order; `n` is always null (all-null pages).
fn random_rows(rng: &mut StdRng, n: usize, hosts: usize, times: i64) -> Vec<Row> {
    let host_values: Vec<Option<String>> = (0..hosts)
        .map(|h| match h {
            0 => None,
            1 => Some("日本".to_string()),
            h => Some(format!("host-{h:03}")),
        })
        .collect();
    let regions = [
        None,
        Some(String::new()),
        Some("east".into()),
        Some("west".into()),
    ];
    (0..n)
        .map(|_| Row {
            tags: vec![
                host_values[rng.gen_range(0..host_values.len())].clone(),
                regions[rng.gen_range(0..regions.len())].clone(),
            ],
            time: rng.gen_range(-5..times) * 10_000_000_000,
            fields: FIELDS
                .iter()
                .map(|(name, t)| (*name != "n" && rng.gen_bool(0.8)).then(|| random_value(rng, *t)))
                .collect(),
        })
        .collect()
}

fn to_batch(schema: &SchemaRef, rows: &[Row]) -> RecordBatch {
    let mut cols: Vec<ArrayRef> = vec![Arc::new(
        TimestampNanosecondArray::from(rows.iter().map(|r| r.time).collect::<Vec<_>>())
            .with_timezone("UTC"),
    )];
    for k in 0..TAGS.len() {
        let d: DictionaryArray<Int32Type> = rows.iter().map(|r| r.tags[k].as_deref()).collect();
        cols.push(Arc::new(d));
    }
    for (k, (_, t)) in FIELDS.iter().enumerate() {
        let vals = rows.iter().map(|r| r.fields[k].as_ref());
        let a: ArrayRef = match t {
            FieldType::Float => Arc::new(Float64Array::from_iter(vals.map(|v| match v {
                Some(V::F(b)) => Some(f64::from_bits(*b)),
                _ => None,
            }))),
            FieldType::Integer => Arc::new(Int64Array::from_iter(vals.map(|v| match v {
                Some(V::I(x)) => Some(*x),
                _ => None,
            }))),
            FieldType::UInteger => Arc::new(UInt64Array::from_iter(vals.map(|v| match v {
                Some(V::U(x)) => Some(*x),
                _ => None,
            }))),
            FieldType::Boolean => Arc::new(BooleanArray::from_iter(vals.map(|v| match v {
                Some(V::B(x)) => Some(*x),
                _ => None,
            }))),
            FieldType::String => Arc::new(StringArray::from_iter(vals.map(|v| match v {
                Some(V::S(x)) => Some(x.clone()),
                _ => None,
            }))),
        };
        cols.push(a);
    }
    RecordBatch::try_new(schema.clone(), cols).unwrap()
}

fn tag_at(col: &ArrayRef, i: usize) -> Option<String> {
    let d = col
        .as_any()
        .downcast_ref::<DictionaryArray<Int32Type>>()
        .unwrap();
    let values = d.values().as_any().downcast_ref::<StringArray>().unwrap();
    d.keys()
        .is_valid(i)
        .then(|| values.value(d.keys().value(i) as usize).to_string())
}

fn value_at(col: &ArrayRef, t: FieldType, i: usize) -> Option<V> {
    if col.is_null(i) {
        return None;
    }
    let a = col.as_any();
    Some(match t {
        FieldType::Float => V::F(a.downcast_ref::<Float64Array>().unwrap().value(i).to_bits()),
        FieldType::Integer => V::I(a.downcast_ref::<Int64Array>().unwrap().value(i)),
        FieldType::UInteger => V::U(a.downcast_ref::<UInt64Array>().unwrap().value(i)),
        FieldType::Boolean => V::B(a.downcast_ref::<BooleanArray>().unwrap().value(i)),
        FieldType::String => V::S(a.downcast_ref::<StringArray>().unwrap().value(i).into()),
    })
}

fn from_batch(b: &RecordBatch) -> Vec<Row> {
    let times = b
        .column_by_name(TIME_COLUMN)
        .unwrap()
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .unwrap();
    (0..b.num_rows())
        .map(|i| Row {
            tags: TAGS
                .iter()
                .map(|t| tag_at(b.column_by_name(t).unwrap(), i))
                .collect(),
            time: times.value(i),
            fields: FIELDS
                .iter()
                .map(|(n, t)| value_at(b.column_by_name(n).unwrap(), *t, i))
                .collect(),
        })
        .collect()
}

/// The dedup rules written the obvious way.
fn model(rows: &[Row], policy: DedupPolicy) -> Vec<Row> {
    type Key = (Vec<Option<String>>, i64);
    let mut m: BTreeMap<Key, Vec<Option<V>>> = BTreeMap::new();
    for r in rows {
        let key = (r.tags.clone(), r.time);
        match m.get_mut(&key) {
            None => {
                m.insert(key, r.fields.clone());
            }
            Some(old) => match policy {
                DedupPolicy::Override => *old = r.fields.clone(),
                DedupPolicy::Discard => {}
                DedupPolicy::Merge => {
                    for (o, n) in old.iter_mut().zip(&r.fields) {
                        if n.is_some() {
                            *o = n.clone();
                        }
                    }
                }
            },
        }
    }
    m.into_iter()
        .map(|((tags, time), fields)| Row { tags, time, fields })
        .collect()
}

/// Splits rows into arrival batches of random sizes.
fn batches(rng: &mut StdRng, schema: &SchemaRef, rows: &[Row]) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let end = (start + rng.gen_range(1..2000)).min(rows.len());
        out.push(to_batch(schema, &rows[start..end]));
        start = end;
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn read_all(r: &ChunkReader, schema: &SchemaRef) -> Vec<RecordBatch> {
    r.read(schema, &|_, _| true).unwrap()
}

fn concat(schema: &SchemaRef, b: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(schema, b).unwrap()
}

fn encode(batch: &RecordBatch, level: usize) -> (Vec<u8>, Footer) {
    encode_chunk("db", "cpu", 0, 86_400_000_000_000, batch, level).unwrap()
}

#[test]
fn sort_dedup_matches_the_model_for_every_policy() {
    let s = schema();
    for seed in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let rows = random_rows(&mut rng, 3000 + seed as usize * 500, 5, 60);
        let input = batches(&mut rng, &s, &rows);
        for policy in [
            DedupPolicy::Override,
            DedupPolicy::Discard,
            DedupPolicy::Merge,
        ] {
            let got = sort_dedup(&s, &input, policy).unwrap();
            assert_eq!(got.schema(), s);
            let want = model(&rows, policy);
            assert!(want.len() < rows.len(), "the test needs duplicates");
            assert_eq!(from_batch(&got), want, "seed {seed}, {policy:?}");
        }
    }
}

#[test]
fn sort_dedup_edge_cases() {
    let s = schema();
    let empty = sort_dedup(&s, &[], DedupPolicy::Merge).unwrap();
    assert_eq!((empty.num_rows(), empty.schema()), (0, s.clone()));
    let none = sort_dedup(&s, &[to_batch(&s, &[])], DedupPolicy::Override).unwrap();
    assert_eq!(none.num_rows(), 0);
    // Tag values that are equal strings under different dictionary keys
    // (one batch's dictionary vs another's) are one series.
    let mut rng = StdRng::seed_from_u64(9);
    let rows = random_rows(&mut rng, 50, 3, 3);
    let input: Vec<RecordBatch> = rows
        .iter()
        .map(|r| to_batch(&s, std::slice::from_ref(r)))
        .collect();
    let got = sort_dedup(&s, &input, DedupPolicy::Merge).unwrap();
    assert_eq!(from_batch(&got), model(&rows, DedupPolicy::Merge));
    // Already sorted input whose kept rows are a prefix of it (the trailing
    // duplicate dropped): the output is shorter, not the input as is.
    let mut sorted = model(&rows, DedupPolicy::Override);
    sorted.push(sorted.last().unwrap().clone());
    for policy in [
        DedupPolicy::Override,
        DedupPolicy::Discard,
        DedupPolicy::Merge,
    ] {
        let got = sort_dedup(&s, &[to_batch(&s, &sorted)], policy).unwrap();
        assert_eq!(from_batch(&got), model(&sorted, policy), "{policy:?}");
        let no_dups = sort_dedup(&s, std::slice::from_ref(&got), policy).unwrap();
        assert_eq!(no_dups, got);
    }
}

#[test]
fn roundtrip_projection_pages_and_missing_columns() {
    let s = schema();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    // Many series and enough rows for several pages.
    let rows = random_rows(&mut rng, 40_000, 40, 2000);
    let sorted = sort_dedup(&s, &batches(&mut rng, &s, &rows), DedupPolicy::Merge).unwrap();
    let want = from_batch(&sorted);
    let (bytes, footer) = encode(&sorted, 4);
    assert!(footer.pages.len() >= 3, "{} pages", footer.pages.len());
    let path = write(dir.path(), "a.chunk", &bytes);
    let r = ChunkReader::open(&path).unwrap();
    assert_eq!(r.file_len(), bytes.len() as u64);
    assert_eq!(r.path(), path);
    // NaN statistics make the footers unequal under ==; their Debug forms
    // are equal exactly when every value is.
    assert_eq!(format!("{:?}", r.footer()), format!("{footer:?}"));
    assert_eq!(footer.rows as usize, sorted.num_rows());

    let pages = read_all(&r, &s);
    assert_eq!(pages.len(), footer.pages.len());
    for (b, p) in pages.iter().zip(&footer.pages) {
        assert_eq!(b.num_rows(), p.rows as usize);
        assert_eq!(b.schema(), s);
    }
    assert_eq!(from_batch(&concat(&s, &pages)), want);

    // A projection in another order, with keep_page dropping odd pages.
    let proj = Arc::new(Schema::new(vec![
        s.field_with_name("s").unwrap().clone(),
        s.field_with_name("region").unwrap().clone(),
        s.field_with_name(TIME_COLUMN).unwrap().clone(),
        s.field_with_name("f").unwrap().clone(),
    ]));
    let even = r.read(&proj, &|i, _| i % 2 == 0).unwrap();
    assert_eq!(even.len(), footer.pages.len().div_ceil(2));
    for (k, b) in even.iter().enumerate() {
        let p = &footer.pages[2 * k];
        let full = sorted.slice(p.start_row as usize, p.rows as usize);
        assert_eq!(b.schema(), proj);
        for f in proj.fields() {
            assert_eq!(
                b.column_by_name(f.name()).unwrap().to_data(),
                arrow::compute::cast(full.column_by_name(f.name()).unwrap(), f.data_type())
                    .unwrap()
                    .to_data(),
                "column {} page {}",
                f.name(),
                2 * k
            );
        }
    }

    // Columns the chunk lacks come out null; a stored column is cast to the
    // type asked for; no columns at all still gives the row counts.
    let other = Arc::new(Schema::new(vec![
        Field::new("zz", DataType::Int64, true),
        Field::new("ghost", tag_data_type(), true),
        Field::new("i", DataType::Float64, true),
    ]));
    for (b, p) in read_all(&r, &other).iter().zip(&footer.pages) {
        assert_eq!(b.column(0).null_count(), p.rows as usize);
        assert_eq!(b.column(1).null_count(), p.rows as usize);
        assert_eq!(b.column(1).data_type(), &tag_data_type());
        let want = arrow::compute::cast(
            sorted
                .column_by_name("i")
                .unwrap()
                .slice(p.start_row as usize, p.rows as usize)
                .as_ref(),
            &DataType::Float64,
        )
        .unwrap();
        assert_eq!(b.column(2).to_data(), want.to_data());
    }
    let counts: Vec<usize> = read_all(&r, &Arc::new(Schema::empty()))
        .iter()
        .map(|b| b.num_rows())
        .collect();
    let want_counts: Vec<usize> = footer.pages.iter().map(|p| p.rows as usize).collect();
    assert_eq!(counts, want_counts);
    assert!(r.read(&s, &|_, _| false).unwrap().is_empty());
}

/// Statistics recomputed naively from the rows.
fn naive_stats(rows: &[Row], k: usize, t: FieldType) -> ColumnStats {
    let vals: Vec<(i64, &V)> = rows
        .iter()
        .filter_map(|r| r.fields[k].as_ref().map(|v| (r.time, v)))
        .collect();
    let stat = |v: &V| match v {
        V::F(b) => Stat::F64(f64::from_bits(*b)),
        V::I(x) => Stat::I64(*x),
        V::U(x) => Stat::U64(*x),
        V::B(x) => Stat::Bool(*x),
        V::S(x) => Stat::Str(x.clone()),
    };
    let cmp = |a: &V, b: &V| match (a, b) {
        (V::F(a), V::F(b)) => f64::from_bits(*a).total_cmp(&f64::from_bits(*b)),
        (V::I(a), V::I(b)) => a.cmp(b),
        (V::U(a), V::U(b)) => a.cmp(b),
        (V::B(a), V::B(b)) => a.cmp(b),
        (V::S(a), V::S(b)) => a.cmp(b),
        _ => unreachable!(),
    };
    let min = vals
        .iter()
        .map(|(_, v)| *v)
        .reduce(|a, b| if cmp(b, a).is_lt() { b } else { a });
    let max = vals
        .iter()
        .map(|(_, v)| *v)
        .reduce(|a, b| if cmp(b, a).is_gt() { b } else { a });
    let min_t = vals.iter().map(|(t, _)| *t).min();
    let max_t = vals.iter().map(|(t, _)| *t).max();
    let first = vals.iter().find(|(t, _)| Some(*t) == min_t);
    let last = vals.iter().rev().find(|(t, _)| Some(*t) == max_t);
    let sum = match t {
        _ if vals.is_empty() => None,
        FieldType::Float => Some(Stat::F64(
            vals.iter()
                .map(|(_, v)| match v {
                    V::F(b) => f64::from_bits(*b),
                    _ => unreachable!(),
                })
                .fold(0.0, |a, b| a + b),
        )),
        FieldType::Integer => vals
            .iter()
            .try_fold(0i64, |a, (_, v)| match v {
                V::I(x) => a.checked_add(*x),
                _ => None,
            })
            .map(Stat::I64),
        FieldType::UInteger => vals
            .iter()
            .try_fold(0u64, |a, (_, v)| match v {
                V::U(x) => a.checked_add(*x),
                _ => None,
            })
            .map(Stat::U64),
        _ => None,
    };
    ColumnStats {
        count: vals.len() as u64,
        nulls: (rows.len() - vals.len()) as u64,
        min: min.map(stat),
        max: max.map(stat),
        sum,
        first: first.map(|(t, v)| (*t, stat(v))),
        last: last.map(|(t, v)| (*t, stat(v))),
    }
}

#[test]
fn footer_statistics_series_and_tags() {
    let s = schema();
    let dir = tempfile::tempdir().unwrap();
    for (seed, n) in [(1u64, 5000usize), (2, 300), (3, 20_000)] {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut rows = random_rows(&mut rng, n, 8, 400);
        if seed == 2 {
            // Sums that fit and sums that overflow, on small values.
            for (k, r) in rows.iter_mut().enumerate() {
                r.fields[2] = Some(V::I(k as i64 - 100));
                r.fields[5] = (k % 3 != 0).then_some(V::U(k as u64));
            }
        }
        let sorted = sort_dedup(&s, &batches(&mut rng, &s, &rows), DedupPolicy::Override).unwrap();
        let want = from_batch(&sorted);
        let (bytes, _) = encode(&sorted, 8);
        let r = ChunkReader::open(&write(dir.path(), "s.chunk", &bytes)).unwrap();
        let f = r.footer();
        assert_eq!((f.database.as_str(), f.table.as_str()), ("db", "cpu"));
        assert_eq!(f.partition_len, 86_400_000_000_000);
        assert_eq!(f.version, 1);
        let names: Vec<&str> = f.columns.iter().map(|c| c.name.as_str()).collect();
        let schema_names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, schema_names);
        assert_eq!(f.rows as usize, want.len());
        assert_eq!(f.min_time, want.iter().map(|r| r.time).min().unwrap());
        assert_eq!(f.max_time, want.iter().map(|r| r.time).max().unwrap());
        let raw: usize = sorted
            .columns()
            .iter()
            .map(|c| c.get_array_memory_size())
            .sum();
        assert_eq!(f.raw_bytes, raw as u64);

        let time = &f.columns[0];
        assert_eq!(time.stats.count, f.rows);
        assert_eq!(time.stats.min, Some(Stat::I64(f.min_time)));
        assert_eq!(time.stats.max, Some(Stat::I64(f.max_time)));
        assert_eq!(time.blocks.len(), f.pages.len());

        for (k, tag) in TAGS.iter().enumerate() {
            let mut values: Vec<String> = want.iter().filter_map(|r| r.tags[k].clone()).collect();
            values.sort();
            values.dedup();
            let meta = f.tags.iter().find(|t| t.name == *tag).unwrap();
            assert_eq!(meta.values, values);
            let col = f.columns.iter().find(|c| c.name == *tag).unwrap();
            assert_eq!(col.kind, ColumnKind::Tag);
            assert!(col.blocks.is_empty());
            let nulls = want.iter().filter(|r| r.tags[k].is_none()).count() as u64;
            assert_eq!((col.stats.count, col.stats.nulls), (f.rows - nulls, nulls));
            assert_eq!(col.stats.min, values.first().cloned().map(Stat::Str));
            assert_eq!(col.stats.max, values.last().cloned().map(Stat::Str));
        }
        for (k, (name, t)) in FIELDS.iter().enumerate() {
            let col = f.columns.iter().find(|c| c.name == *name).unwrap();
            assert_eq!(col.kind, ColumnKind::Field(*t));
            assert_eq!(col.blocks.len(), f.pages.len());
            assert_eq!(
                format!("{:?}", col.stats),
                format!("{:?}", naive_stats(&want, k, *t)),
                "seed {seed} column {name}"
            );
        }

        // Series: maximal runs of equal tags, indexes into the value lists.
        let mut start = 0;
        for (i, se) in f.series.iter().enumerate() {
            assert_eq!(se.start_row, start as u64);
            let run = &want[start..start + se.rows as usize];
            let tags: Vec<Option<String>> = se
                .tags
                .iter()
                .zip(&f.tags)
                .map(|(v, t)| (*v != u32::MAX).then(|| t.values[*v as usize].clone()))
                .collect();
            assert!(run.iter().all(|r| r.tags == tags), "series {i}");
            assert_eq!(se.min_time, run.iter().map(|r| r.time).min().unwrap());
            assert_eq!(se.max_time, run.iter().map(|r| r.time).max().unwrap());
            start += se.rows as usize;
            if let Some(next) = want.get(start) {
                assert_ne!(next.tags, tags, "series {i} is not maximal");
            }
        }
        assert_eq!(start, want.len());
        assert!(f.series.iter().any(|s| s.tags.contains(&u32::MAX)));
    }
}

#[test]
fn special_values_roundtrip_exactly() {
    // Every special value in every field, in one series, plus NaN and
    // infinite statistics (which JSON cannot hold directly).
    let s = schema();
    let dir = tempfile::tempdir().unwrap();
    let n = 64;
    let rows: Vec<Row> = (0..n)
        .map(|k| Row {
            tags: vec![Some("h".into()), None],
            time: k as i64,
            fields: vec![
                Some(V::B(k % 2 == 0)),
                Some(V::F(SPECIAL_F[k % SPECIAL_F.len()])),
                Some(V::I([i64::MIN, i64::MAX, 0, -1][k % 4])),
                None,
                Some(V::S(STRINGS[k % STRINGS.len()].into())),
                Some(V::U([u64::MAX, 0, 1][k % 3])),
            ],
        })
        .collect();
    let batch = to_batch(&s, &rows);
    let (bytes, footer) = encode(&batch, 8);
    let r = ChunkReader::open(&write(dir.path(), "x.chunk", &bytes)).unwrap();
    assert_eq!(from_batch(&concat(&s, &read_all(&r, &s))), rows);
    let f = r.footer().columns.iter().find(|c| c.name == "f").unwrap();
    assert!(matches!(f.stats.max, Some(Stat::F64(v)) if v.is_nan()));
    // Under total order a negative NaN is the minimum; its bits survive.
    assert!(matches!(f.stats.min, Some(Stat::F64(v)) if v.to_bits() == SPECIAL_F[2]));
    assert!(matches!(f.stats.sum, Some(Stat::F64(v)) if v.is_nan()));
    assert!(matches!(f.stats.first, Some((0, Stat::F64(v))) if v.is_nan()));
    assert_eq!(format!("{:?}", r.footer()), format!("{footer:?}"));
    // i64::MIN + i64::MAX + ... overflows; u64::MAX + 1 overflows.
    let i = r.footer().columns.iter().find(|c| c.name == "i").unwrap();
    assert_eq!(i.stats.sum, None);
    assert_eq!(i.stats.min, Some(Stat::I64(i64::MIN)));
    let n_col = r.footer().columns.iter().find(|c| c.name == "n").unwrap();
    assert_eq!((n_col.stats.count, n_col.stats.nulls), (0, n as u64));
    assert_eq!(n_col.stats.min, None);

    // Only negative infinity and finite values: min is -inf, sum -inf.
    let rows2: Vec<Row> = (0..3)
        .map(|k| {
            let mut r = rows[0].clone();
            r.time = k;
            r.fields[1] = Some(V::F([f64::NEG_INFINITY, 1.5, -0.0][k as usize].to_bits()));
            r
        })
        .collect();
    let (bytes, _) = encode(&to_batch(&s, &rows2), 8);
    let r = ChunkReader::open(&write(dir.path(), "y.chunk", &bytes)).unwrap();
    let f = r.footer().columns.iter().find(|c| c.name == "f").unwrap();
    assert_eq!(f.stats.min, Some(Stat::F64(f64::NEG_INFINITY)));
    assert_eq!(f.stats.max, Some(Stat::F64(1.5)));
    assert_eq!(f.stats.sum, Some(Stat::F64(f64::NEG_INFINITY)));
    assert_eq!(f.stats.last, Some((2, Stat::F64(-0.0))));
}

#[test]
fn empty_chunk_and_unsorted_input() {
    let s = schema();
    let dir = tempfile::tempdir().unwrap();
    let (bytes, footer) = encode(&to_batch(&s, &[]), 4);
    assert!(footer.pages.is_empty() && footer.series.is_empty());
    let r = ChunkReader::open(&write(dir.path(), "e.chunk", &bytes)).unwrap();
    assert!(read_all(&r, &s).is_empty());

    let mut rng = StdRng::seed_from_u64(5);
    let rows = random_rows(&mut rng, 200, 4, 10);
    // Unsorted, and sorted but not deduplicated: both refused.
    let err = encode_chunk("db", "t", 0, 1, &to_batch(&s, &rows), 4).unwrap_err();
    assert!(matches!(err, EngineError::Encode(_)), "{err}");
    let mut sorted_dups = rows.clone();
    sorted_dups.sort_by(|a, b| (&a.tags, a.time).cmp(&(&b.tags, b.time)));
    let err = encode_chunk("db", "t", 0, 1, &to_batch(&s, &sorted_dups), 4).unwrap_err();
    assert!(err.to_string().contains("sorted"), "{err}");
}

#[test]
fn pages_end_on_series_boundaries() {
    let s = schema();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(100);
    // 100k rows: one series far over 4 * PAGE_ROWS, a few mid-sized, many
    // small ones.
    let mut sizes = vec![40_000usize, 9000, 8191, 1, 3000, 20_000];
    let mut total: usize = sizes.iter().sum();
    while total < 100_000 {
        let k = rng.gen_range(1..700).min(100_000 - total);
        sizes.push(k);
        total += k;
    }
    let mut rows = Vec::with_capacity(total);
    for (i, n) in sizes.iter().enumerate() {
        for t in 0..*n {
            rows.push(Row {
                tags: vec![Some(format!("h{i:04}")), None],
                time: t as i64 * 10_000_000_000,
                fields: vec![
                    None,
                    Some(V::F((t as f64).to_bits())),
                    None,
                    None,
                    None,
                    None,
                ],
            });
        }
    }
    let sorted = sort_dedup(&s, &[to_batch(&s, &rows)], DedupPolicy::Override).unwrap();
    assert_eq!(sorted.num_rows(), 100_000);
    let (bytes, footer) = encode(&sorted, 4);
    assert_eq!(footer.series.len(), sizes.len());
    let mut next_series = 0;
    for (i, p) in footer.pages.iter().enumerate() {
        assert_eq!(p.first_series as usize, next_series);
        let series = &footer.series[next_series..next_series + p.series as usize];
        assert_eq!(p.start_row, series[0].start_row);
        let rows: u32 = series.iter().map(|s| s.rows).sum();
        assert_eq!(p.rows, rows);
        if i + 1 < footer.pages.len() {
            assert!(p.rows as usize >= PAGE_ROWS, "page {i} has {} rows", p.rows);
            // Cut as soon as the page is full.
            let without_last = rows - series.last().unwrap().rows;
            assert!((without_last as usize) < PAGE_ROWS, "page {i} is cut late");
        }
        assert_eq!(p.min_time, series.iter().map(|s| s.min_time).min().unwrap());
        assert_eq!(p.max_time, series.iter().map(|s| s.max_time).max().unwrap());
        next_series += p.series as usize;
    }
    assert_eq!(next_series, footer.series.len());
    assert!(footer
        .pages
        .iter()
        .any(|p| p.rows == 40_000 && p.series == 1));
    let r = ChunkReader::open(&write(dir.path(), "p.chunk", &bytes)).unwrap();
    let got = concat(&s, &read_all(&r, &s));
    assert_eq!(from_batch(&got), from_batch(&sorted));
}

/// A small chunk with several pages, for the corruption tests.
fn small_chunk() -> (RecordBatch, Vec<u8>, Footer) {
    let s = schema();
    let mut rng = StdRng::seed_from_u64(7);
    let rows = random_rows(&mut rng, 25_000, 12, 3000);
    let sorted = sort_dedup(&s, &[to_batch(&s, &rows)], DedupPolicy::Override).unwrap();
    let (bytes, footer) = encode(&sorted, 2);
    assert!(footer.pages.len() >= 2);
    (sorted, bytes, footer)
}

fn open_err(path: &Path) -> EngineError {
    match ChunkReader::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

fn reason(e: EngineError) -> String {
    match e {
        EngineError::ChunkCorrupt { reason, .. } => reason,
        e => panic!("expected ChunkCorrupt, got {e}"),
    }
}

#[test]
fn corrupt_block_names_column_and_page_and_spares_other_columns() {
    let s = schema();
    let dir = tempfile::tempdir().unwrap();
    let (_, mut bytes, footer) = small_chunk();
    let col = footer.columns.iter().find(|c| c.name == "s").unwrap();
    let b = col.blocks[1];
    bytes[(b.offset + u64::from(b.len) / 2) as usize] ^= 0x40;
    let r = ChunkReader::open(&write(dir.path(), "c.chunk", &bytes)).unwrap();
    let msg = reason(r.read(&s, &|_, _| true).unwrap_err());
    assert!(msg.contains("`s`") && msg.contains("page 1"), "{msg}");
    assert!(msg.contains(&b.offset.to_string()), "{msg}");
    // Pages and columns that do not touch the bad block still read.
    assert_eq!(
        r.read(&s, &|i, _| i != 1).unwrap().len(),
        footer.pages.len() - 1
    );
    let no_s = Arc::new(Schema::new(
        s.fields()
            .iter()
            .filter(|f| f.name() != "s")
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ));
    assert_eq!(read_all(&r, &no_s).len(), footer.pages.len());
}

#[test]
fn corrupt_footer_and_truncation_fail_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, _) = small_chunk();
    let len = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[len - 12..len - 8].try_into().unwrap()) as usize;
    let footer_at = len - 12 - footer_len;
    for at in [footer_at, footer_at + footer_len / 2, len - 13] {
        let mut b = bytes.clone();
        b[at] ^= 0x01;
        let msg = reason(open_err(&write(dir.path(), "f.chunk", &b)));
        assert!(msg.contains("footer"), "{msg}");
    }
    for cut in [
        0,
        1,
        4,
        8,
        19,
        20,
        100,
        footer_at,
        footer_at + 1,
        len - 12,
        len - 5,
        len - 1,
    ] {
        let e = open_err(&write(dir.path(), "t.chunk", &bytes[..cut]));
        assert!(
            matches!(e, EngineError::ChunkCorrupt { .. }),
            "cut {cut}: {e}"
        );
    }
    // Appended garbage moves the tail: also refused.
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    assert!(ChunkReader::open(&write(dir.path(), "g.chunk", &longer)).is_err());
}

/// Rewrites the footer of a valid file with a correct checksum, so only
/// the footer's own consistency checks stand between it and the reader.
fn with_footer(bytes: &[u8], f: &Footer) -> Vec<u8> {
    let len = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[len - 12..len - 8].try_into().unwrap()) as usize;
    let mut out = bytes[..len - 12 - footer_len].to_vec();
    // serde_json writes NaN as null; such statistics are not what is tested.
    let mut f = f.clone();
    for c in &mut f.columns {
        if format!("{:?}", c.stats).contains("NaN") || format!("{:?}", c.stats).contains("inf") {
            c.stats = ColumnStats::default();
        }
    }
    for s in &mut f.series {
        if format!("{:?}", s.last).contains("NaN") || format!("{:?}", s.last).contains("inf") {
            s.last.clear();
        }
    }
    let json = serde_json::to_vec(&f).unwrap();
    out.extend_from_slice(&json);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    out.extend_from_slice(MAGIC);
    out
}

#[test]
fn inconsistent_footers_are_refused() {
    let s = schema();
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, footer) = small_chunk();
    let len = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[len - 12..len - 8].try_into().unwrap()) as usize;
    let data_end = (len - 12 - footer_len) as u64;
    type Edit = Box<dyn Fn(&mut Footer)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "block past data",
            Box::new(move |f| f.columns[5].blocks[0].offset = data_end),
        ),
        (
            "block in header",
            Box::new(|f| f.columns[0].blocks[1].offset = 2),
        ),
        (
            "huge block",
            Box::new(|f| f.columns[4].blocks[0].len = u32::MAX),
        ),
        (
            "missing block",
            Box::new(|f| {
                f.columns[3].blocks.pop();
            }),
        ),
        ("tag index", Box::new(|f| f.series[3].tags[0] = 1_000_000)),
        ("series rows", Box::new(|f| f.series[2].rows += 1)),
        ("page rows", Box::new(|f| f.pages[0].rows = u32::MAX)),
        ("page gap", Box::new(|f| f.pages[1].first_series += 1)),
        ("rows", Box::new(|f| f.rows *= 1000)),
        ("no time", Box::new(|f| f.columns[0].name = "tame".into())),
        ("version", Box::new(|f| f.version = 99)),
        (
            "tag blocks",
            Box::new(|f| {
                let b = f.columns[0].blocks[0];
                f.columns[1].blocks.push(b)
            }),
        ),
    ];
    for (what, edit) in edits {
        let mut f = footer.clone();
        edit(&mut f);
        let path = write(dir.path(), "i.chunk", &with_footer(&bytes, &f));
        match ChunkReader::open(&path) {
            Err(e) => assert!(matches!(e, EngineError::ChunkCorrupt { .. }), "{what}: {e}"),
            Ok(r) => panic!(
                "{what}: opened; read gives {:?}",
                r.read(&s, &|_, _| true).err()
            ),
        }
    }
    // The untouched footer rewritten the same way still opens.
    let path = write(dir.path(), "ok.chunk", &with_footer(&bytes, &footer));
    assert_eq!(
        read_all(&ChunkReader::open(&path).unwrap(), &s).len(),
        footer.pages.len()
    );
}

#[test]
fn every_single_byte_flip_is_detected() {
    let s = schema();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let rows = random_rows(&mut rng, 60, 3, 20);
    let sorted = sort_dedup(&s, &[to_batch(&s, &rows)], DedupPolicy::Merge).unwrap();
    let (bytes, _) = encode(&sorted, 4);
    let path = dir.path().join("flip.chunk");
    for at in 0..bytes.len() {
        let mut b = bytes.clone();
        b[at] ^= 0x08;
        std::fs::write(&path, &b).unwrap();
        let res = ChunkReader::open(&path).and_then(|r| r.read(&s, &|_, _| true));
        assert!(
            res.is_err(),
            "flip at byte {at} of {} went unnoticed",
            bytes.len()
        );
    }
    for cut in 0..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(ChunkReader::open(&path).is_err(), "cut at {cut}");
    }
}

/// Bytes per value of typical series: a day at a 10 s interval (8640 rows)
/// per series, 12 series, so pages have their usual size.
#[test]
fn compression_ratios() {
    let per_series = 8640usize;
    let series = 12usize;
    let n = per_series * series;
    let schema = Arc::new(Schema::new(vec![
        Field::new(TIME_COLUMN, time_data_type(), false),
        Field::new("host", tag_data_type(), true),
        Field::new("counter", DataType::Int64, true),
        Field::new("ints", DataType::Int64, true),
        Field::new("temp2dp", DataType::Float64, true),
        Field::new("walk", DataType::Float64, true),
    ]));
    let mut rng = StdRng::seed_from_u64(3);
    let start = 1_700_000_000_000_000_000i64;
    let (mut times, mut hosts, mut counter, mut ints, mut temp, mut walk) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for h in 0..series {
        let (mut c, mut x) = (0i64, 100.0f64);
        for k in 0..per_series as i64 {
            times.push(start + k * 10_000_000_000);
            hosts.push(format!("host{h:02}"));
            c += rng.gen_range(0..100);
            counter.push(c);
            ints.push(rng.gen_range(0..1000i64));
            temp.push(f64::from(rng.gen_range(1500..3500)) / 100.0);
            x += rng.gen_range(-1.0..1.0);
            walk.push(x);
        }
    }
    let host: DictionaryArray<Int32Type> = hosts.iter().map(|h| h.as_str()).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(TimestampNanosecondArray::from(times).with_timezone("UTC")),
            Arc::new(host),
            Arc::new(Int64Array::from(counter)),
            Arc::new(Int64Array::from(ints)),
            Arc::new(Float64Array::from(temp)),
            Arc::new(Float64Array::from(walk)),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for level in [4, 8] {
        let (bytes, footer) = encode(&batch, level);
        let r = ChunkReader::open(&write(dir.path(), "z.chunk", &bytes)).unwrap();
        let back = concat(&schema, &read_all(&r, &schema));
        assert_eq!(from_host_batch(&back), from_host_batch(&batch));
        let mut per: BTreeMap<&str, f64> = BTreeMap::new();
        for c in footer.columns.iter().filter(|c| !c.blocks.is_empty()) {
            let total: u64 = c.blocks.iter().map(|b| u64::from(b.len)).sum();
            per.insert(&c.name, total as f64 / n as f64);
        }
        println!(
            "level {level}: {} bytes for {n} rows ({} pages, footer {} bytes); bytes/value {per:?}",
            bytes.len(),
            footer.pages.len(),
            bytes.len() as u64
                - footer
                    .columns
                    .iter()
                    .flat_map(|c| &c.blocks)
                    .map(|b| u64::from(b.len))
                    .sum::<u64>(),
        );
        assert!(per["time"] < 0.1, "{per:?}");
        assert!(per["temp2dp"] < 2.5, "{per:?}");
        assert!(per["ints"] < 1.5, "{per:?}");
        assert!(per["walk"] < 8.0, "{per:?}");
    }
}

/// The batch's columns other than the tag, which compares by value only.
fn from_host_batch(b: &RecordBatch) -> Vec<ArrayRef> {
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    cols[1] = arrow::compute::cast(&cols[1], &DataType::Utf8).unwrap();
    cols
}

/// `cargo test -p sluice-engine --test chunk_codec -- --ignored --nocapture`
/// (a dev build is several times slower than release).
#[test]
#[ignore]
fn sort_dedup_speed() {
    let n = 1_000_000usize;
    let ntags = 6;
    let mut f = vec![Field::new(TIME_COLUMN, time_data_type(), false)];
    f.extend((0..ntags).map(|t| Field::new(format!("t{t}"), tag_data_type(), true)));
    f.extend((0..10).map(|k| Field::new(format!("f{k}"), DataType::Float64, true)));
    let schema = Arc::new(Schema::new(f));
    let mut rng = StdRng::seed_from_u64(1);
    let batch_rows = 10_000;
    let batches: Vec<RecordBatch> = (0..n / batch_rows)
        .map(|b| {
            let mut cols: Vec<ArrayRef> = vec![Arc::new(
                TimestampNanosecondArray::from(
                    (0..batch_rows)
                        .map(|k| ((b * batch_rows + k) / 1000) as i64 * 1_000_000_000)
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            )];
            for t in 0..ntags {
                let vals: Vec<String> = (0..batch_rows)
                    .map(|k| format!("v{}", ((k % 200) * (t + 1)) % (10 + t)))
                    .collect();
                let d: DictionaryArray<Int32Type> = vals.iter().map(|v| v.as_str()).collect();
                cols.push(Arc::new(d));
            }
            for _ in 0..10 {
                cols.push(Arc::new(Float64Array::from_iter(
                    (0..batch_rows).map(|_| rng.gen_bool(0.9).then(|| rng.gen::<f64>())),
                )));
            }
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect();
    let t0 = std::time::Instant::now();
    let out = sort_dedup(&schema, &batches, DedupPolicy::Merge).unwrap();
    println!(
        "sort_dedup of {n} rows: {:?} -> {} rows",
        t0.elapsed(),
        out.num_rows()
    );
    let t0 = std::time::Instant::now();
    let (bytes, footer) = encode_chunk("db", "t", 0, 1, &out, 4).unwrap();
    println!(
        "encode: {:?}, {} bytes, {} series, {} pages",
        t0.elapsed(),
        bytes.len(),
        footer.series.len(),
        footer.pages.len()
    );
}

/// Blocks whose bytes are wrong but whose checksums were recomputed to
/// match (a crafted file, or corruption that beat CRC-32C): decoding must
/// fail cleanly or produce a batch, never panic.
#[test]
fn crafted_blocks_with_valid_checksums_never_panic() {
    let s = schema();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    let rows = random_rows(&mut rng, 400, 3, 200);
    let sorted = sort_dedup(&s, &[to_batch(&s, &rows)], DedupPolicy::Override).unwrap();
    let (bytes, footer) = encode(&sorted, 4);
    let path = dir.path().join("crafted.chunk");
    let mut errors = 0;
    for c in 0..footer.columns.len() {
        for p in 0..footer.columns[c].blocks.len() {
            for trial in 0..40 {
                let mut b = bytes.clone();
                let mut f = footer.clone();
                let blk = &mut f.columns[c].blocks[p];
                let (start, len) = (blk.offset as usize, blk.len as usize);
                match trial % 4 {
                    // Flip a few bytes.
                    0 | 1 => {
                        for _ in 0..=trial % 3 {
                            b[start + rng.gen_range(0..len)] ^= 1 << rng.gen_range(0..8);
                        }
                    }
                    // Cut the block short.
                    2 => blk.len = rng.gen_range(0..len) as u32,
                    // Replace it with noise.
                    _ => rng.fill(&mut b[start..start + len]),
                }
                blk.crc = crc32c::crc32c(&b[start..start + blk.len as usize]);
                std::fs::write(&path, with_footer(&b, &f)).unwrap();
                let r = ChunkReader::open(&path).unwrap();
                if r.read(&s, &|_, _| true).is_err() {
                    errors += 1;
                }
            }
        }
    }
    assert!(errors > 0);
}
