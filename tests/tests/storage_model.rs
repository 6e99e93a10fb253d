//! Round trip on random data: every type, nulls (absent fields), duplicate
//! timestamps, out-of-order and late rows. What SQL returns must equal a
//! model of the table (override dedup: the last write of a (series, time)
//! replaces the whole row) before flush, after flush, after compaction and
//! after restart.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sluice_tests::TestServer;

const T0: i64 = 1_700_000_000_000_000_000;
const DAY: i64 = 86_400_000_000_000;

type Series = (Option<String>, Option<String>);
type Row = BTreeMap<&'static str, Value>;

fn random_batch(rng: &mut StdRng, model: &mut BTreeMap<(Series, i64), Row>, n: usize) -> String {
    let mut body = String::new();
    for _ in 0..n {
        let host = rng
            .gen_bool(0.9)
            .then(|| format!("h{}", rng.gen_range(0..6)));
        let zone = rng
            .gen_bool(0.7)
            .then(|| ["eu", "us", "a b", "x=y"][rng.gen_range(0..4)].to_string());
        // Mostly recent, some late (days back), few far future; many repeats.
        let t = match rng.gen_range(0..10) {
            0 => T0 - rng.gen_range(1..5) * DAY + rng.gen_range(0..100),
            1 => T0 + 3 * DAY + rng.gen_range(0..100),
            _ => T0 + rng.gen_range(0..200) * 1_000_000_000,
        };
        let mut row: Row = BTreeMap::new();
        let mut fields = Vec::new();
        if rng.gen_bool(0.8) {
            let v: f64 = match rng.gen_range(0..6) {
                0 => 0.0,
                1 => -0.0,
                2 => f64::MAX,
                3 => rng.gen_range(-1e-300..1e-300),
                _ => rng.gen_range(-1e6..1e6),
            };
            fields.push(format!("f={v:?}"));
            row.insert("f", Value::from(v));
        }
        if rng.gen_bool(0.6) {
            let v: i64 = match rng.gen_range(0..4) {
                0 => i64::MIN,
                1 => i64::MAX,
                _ => rng.gen_range(-1000..1000),
            };
            fields.push(format!("i={v}i"));
            row.insert("i", Value::from(v));
        }
        if rng.gen_bool(0.4) {
            let v: u64 = if rng.gen_bool(0.2) {
                u64::MAX
            } else {
                rng.gen_range(0..1000)
            };
            fields.push(format!("u={v}u"));
            row.insert("u", Value::from(v));
        }
        if rng.gen_bool(0.4) {
            let v = rng.gen_bool(0.5);
            fields.push(format!("b={v}"));
            row.insert("b", Value::from(v));
        }
        if rng.gen_bool(0.4) || fields.is_empty() {
            let v = ["", "ok", "ünïcode", "with \\\"quote\\\"", "a,b=c"][rng.gen_range(0..5)];
            fields.push(format!("s=\"{v}\""));
            row.insert("s", Value::from(v.replace("\\\"", "\"")));
        }
        let mut line = String::from("m");
        if let Some(h) = &host {
            line.push_str(&format!(",host={h}"));
        }
        if let Some(z) = &zone {
            line.push_str(&format!(
                ",zone={}",
                z.replace(' ', "\\ ").replace('=', "\\=")
            ));
        }
        line.push_str(&format!(" {} {t}\n", fields.join(",")));
        body.push_str(&line);
        model.insert(((host, zone), t), row);
    }
    body
}

fn expected(model: &BTreeMap<(Series, i64), Row>) -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = model
        .iter()
        .map(|(((h, z), t), r)| {
            let get = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
            vec![
                h.clone().map_or(Value::Null, Value::from),
                z.clone().map_or(Value::Null, Value::from),
                Value::from(*t),
                get("f"),
                get("i"),
                get("u"),
                get("b"),
                get("s"),
            ]
        })
        .collect();
    rows.sort_by(|a, b| {
        let key = |r: &Vec<Value>| (r[0].to_string(), r[1].to_string(), r[2].as_i64());
        key(a).cmp(&key(b))
    });
    rows
}

fn actual(s: &TestServer) -> Vec<Vec<Value>> {
    let mut rows = s.rows(
        "db",
        "SELECT host, zone, CAST(time AS BIGINT), f, i, u, b, s FROM m",
    );
    rows.sort_by(|a, b| {
        let key = |r: &Vec<Value>| (r[0].to_string(), r[1].to_string(), r[2].as_i64());
        key(a).cmp(&key(b))
    });
    rows
}

fn same(stage: &str, want: &[Vec<Value>], got: &[Vec<Value>]) {
    assert_eq!(want.len(), got.len(), "{stage}: row count");
    for (w, g) in want.iter().zip(got) {
        for (i, (a, b)) in w.iter().zip(g).enumerate() {
            let equal = match (a.as_f64(), b.as_f64()) {
                // Floats compare by bits (JSON keeps -0.0 and the shortest
                // round-trip form), everything else by value.
                (Some(x), Some(y)) if i == 3 => x.to_bits() == y.to_bits(),
                _ => a == b,
            };
            assert!(equal, "{stage}: column {i} differs\nwant {w:?}\ngot  {g:?}");
        }
    }
}

#[test]
fn random_tables_read_back_identically_at_every_stage() {
    let mut s = TestServer::start();
    for seed in 0..2u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut model = BTreeMap::new();
        // A fresh data directory per round.
        if seed > 0 {
            s.terminate();
            std::fs::remove_dir_all(&s.data_dir).unwrap();
            std::fs::create_dir_all(&s.data_dir).unwrap();
            s.restart();
        }
        for _ in 0..3 {
            let body = random_batch(&mut rng, &mut model, 400);
            let r = s.write("db", &body);
            assert_eq!(r.status(), 204, "{}", r.text().unwrap_or_default());
        }
        let want = expected(&model);
        same("buffer", &want, &actual(&s));
        s.flush();
        same("after flush", &want, &actual(&s));
        // More writes over the flushed data, then compaction.
        for _ in 0..2 {
            let body = random_batch(&mut rng, &mut model, 400);
            assert_eq!(s.write("db", &body).status(), 204);
        }
        let want = expected(&model);
        same("buffer over chunks", &want, &actual(&s));
        s.flush();
        same("after compaction", &want, &actual(&s));
        s.terminate();
        s.restart();
        same("after restart", &want, &actual(&s));
    }
}
