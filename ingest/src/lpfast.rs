//! A fast path for the common, unescaped form of a line-protocol line.
//!
//! The `influxdb-line-protocol` crate is the reference grammar, but its
//! parser costs most of the ingest CPU (profiled on TSBS cpu-only data). Most
//! lines agents send use none of the grammar's hard parts: no quotes, no
//! escapes, plain names, plain numbers. This parser accepts exactly such lines
//! and returns `None` for anything else, which then goes to the crate. For
//! every line it accepts it must produce what the crate produces; the
//! differential tests below hold it to that, over the shared corpus and over
//! generated lines.

use std::borrow::Cow;

use crate::rows::{Row, Value};

/// Bytes allowed in names on the fast path: a conservative subset of what the
/// grammar allows, with nothing that needs escaping or has a meaning. A table,
/// because this test runs for nearly every byte of a line.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/');
        i += 1;
    }
    t
};

fn plain(b: u8) -> bool {
    PLAIN[b as usize]
}

/// Powers of ten that an `f64` holds exactly.
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A plain decimal (`-?d+(.d+)?`, no exponent) whose digits, read as one
/// integer, fit in 53 bits: that integer and the power of ten are both exact
/// in an `f64`, so one division rounds correctly and gives the bits the
/// standard parser gives (Clinger's fast path), without its general
/// machinery. Anything else is `None` and goes to `str::parse`.
fn simple_float(s: &[u8]) -> Option<f64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let mut mantissa: u64 = 0;
    let mut int_digits = 0;
    let mut frac_digits = 0;
    let mut seen_point = false;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                if seen_point {
                    frac_digits += 1;
                } else {
                    int_digits += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => return None,
        }
    }
    if int_digits == 0 || (seen_point && frac_digits == 0) || mantissa > (1 << 53) {
        return None;
    }
    let v = mantissa as f64 / *EXACT_POW10.get(frac_digits)?;
    Some(if neg { -v } else { v })
}

fn digits(s: &[u8]) -> usize {
    s.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// The crate's float grammar: `-?d+(.d+)?([eE][+-]?d+)?`.
fn is_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let n = digits(&b[i..]);
    if n == 0 {
        return false;
    }
    i += n;
    if b.get(i) == Some(&b'.') {
        let n = digits(&b[i + 1..]);
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(&b[i..]);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == b.len()
}

fn is_signed_int(s: &str) -> bool {
    let b = s.as_bytes();
    let start = usize::from(b.first() == Some(&b'-'));
    b.len() > start && digits(&b[start..]) == b.len() - start
}

fn value(s: &str) -> Option<Value<'_>> {
    if let Some(v) = s.strip_suffix('i') {
        return if is_signed_int(v) {
            v.parse().ok().map(Value::I64)
        } else {
            None
        };
    }
    if let Some(v) = s.strip_suffix('u') {
        return if !v.is_empty() && digits(v.as_bytes()) == v.len() {
            v.parse().ok().map(Value::U64)
        } else {
            None
        };
    }
    match s {
        "t" | "T" | "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        _ => {}
    }
    if let Some(v) = simple_float(s.as_bytes()) {
        return Some(Value::F64(v));
    }
    if is_float(s) {
        return s.parse().ok().map(Value::F64);
    }
    None
}

/// Length of the run of plain bytes at the start of `b`.
fn plain_run(b: &[u8]) -> usize {
    b.iter().take_while(|c| plain(**c)).count()
}

/// Parses `line` into `row` if it has the plain form; returns the
/// measurement and the raw timestamp (`row.time` is left alone). One pass over
/// the bytes. `row` is the caller's, reused line after line so that its
/// vectors are allocated once per body rather than grown for every line; on
/// `None` it holds a partial row.
pub fn parse<'a>(line: &'a str, row: &mut Row<'a>) -> Option<(&'a str, Option<i64>)> {
    row.tags.clear();
    row.fields.clear();
    let b = line.as_bytes();
    let n = plain_run(b);
    if n == 0 {
        return None;
    }
    let measurement = &line[..n];
    let mut i = n;
    while b.get(i) == Some(&b',') {
        let ks = i + 1;
        let kl = plain_run(&b[ks..]);
        let vs = ks + kl + 1;
        if kl == 0 || b.get(ks + kl) != Some(&b'=') {
            return None;
        }
        let vl = plain_run(b.get(vs..)?);
        if vl == 0 {
            return None;
        }
        row.tags.push((
            Cow::Borrowed(&line[ks..ks + kl]),
            Cow::Borrowed(&line[vs..vs + vl]),
        ));
        i = vs + vl;
    }
    if b.get(i) != Some(&b' ') {
        return None;
    }
    loop {
        let ks = i + 1;
        let kl = plain_run(b.get(ks..)?);
        if kl == 0 || b.get(ks + kl) != Some(&b'=') {
            return None;
        }
        let vs = ks + kl + 1;
        let vl = b[vs..]
            .iter()
            .take_while(|c| **c != b',' && **c != b' ')
            .count();
        row.fields.push((
            Cow::Borrowed(&line[ks..ks + kl]),
            value(&line[vs..vs + vl])?,
        ));
        i = vs + vl;
        if b.get(i) != Some(&b',') {
            break;
        }
    }
    let ts = match b.get(i) {
        None => None,
        Some(b' ') if is_signed_int(&line[i + 1..]) => Some(line[i + 1..].parse().ok()?),
        Some(_) => return None,
    };
    Some((measurement, ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use influxdb_line_protocol::{parse_lines, FieldValue};
    use rand::{Rng, SeedableRng};

    /// Asserts that the crate agrees with the fast path wherever it answers.
    fn agree(line: &str) -> bool {
        let mut row = Row::default();
        let Some((m, ts)) = parse(line, &mut row) else {
            return false;
        };
        let reference = match parse_lines(line).next() {
            Some(Ok(r)) => r,
            // Repeated tag keys pass the fast path; the row sink rejects them.
            Some(Err(influxdb_line_protocol::Error::DuplicateTag { tag_key })) => {
                let n = row
                    .tags
                    .iter()
                    .filter(|(k, _)| *k == tag_key.as_str())
                    .count();
                assert!(n > 1, "{line:?}");
                return true;
            }
            Some(Err(e)) => panic!("fast path accepted {line:?}, crate rejects: {e}"),
            None => panic!("fast path accepted {line:?}, crate saw no line"),
        };
        assert_eq!(reference.series.measurement.as_str(), m, "{line:?}");
        let tags: Vec<(String, String)> = reference
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mine: Vec<(String, String)> = row
            .tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(tags, mine, "{line:?}");
        assert_eq!(reference.field_set.len(), row.fields.len(), "{line:?}");
        for ((rk, rv), (k, v)) in reference.field_set.iter().zip(&row.fields) {
            assert_eq!(rk.as_str(), k.as_ref(), "{line:?}");
            let same = match (rv, v) {
                (FieldValue::F64(a), Value::F64(b)) => a.to_bits() == b.to_bits(),
                (FieldValue::I64(a), Value::I64(b)) => a == b,
                (FieldValue::U64(a), Value::U64(b)) => a == b,
                (FieldValue::Boolean(a), Value::Bool(b)) => a == b,
                _ => false,
            };
            assert!(same, "{line:?}: crate {rv:?}, fast path {v:?}");
        }
        assert_eq!(reference.timestamp, ts, "{line:?}");
        true
    }

    #[test]
    fn simple_floats_round_as_the_standard_parser_does() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut took = 0;
        for _ in 0..200_000 {
            let digits = rng.gen_range(1..=20);
            let mut s: String = (0..digits)
                .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
                .collect();
            let point = rng.gen_range(0..=digits);
            if point < digits {
                s.insert(point.max(1), '.');
            }
            if rng.gen_bool(0.3) {
                s.insert(0, '-');
            }
            let expected: f64 = s.parse().unwrap();
            if let Some(v) = simple_float(s.as_bytes()) {
                assert_eq!(v.to_bits(), expected.to_bits(), "{s}");
                took += 1;
            }
        }
        assert!(took > 50_000, "fast path took only {took}");
    }

    #[test]
    fn agrees_with_the_crate_on_the_corpus() {
        // The run-time value first: a test binary reused from a shared
        // target directory may have been built from a checkout elsewhere.
        let dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let path = dir.join("../../shared/testdata/line-protocol-corpus/corpus.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            panic!("corpus not found at {}", path.display());
        };
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut accepted = 0;
        for case in doc["decode"].as_object().unwrap().values() {
            let Some(input) = case["input"]["text"].as_str() else {
                continue;
            };
            for line in input.split('\n') {
                if agree(line.trim_end_matches(['\r', ' ', '\t'])) {
                    accepted += 1;
                }
            }
        }
        assert!(accepted > 50, "fast path took only {accepted} corpus lines");
    }

    #[test]
    fn agrees_with_the_crate_on_generated_lines() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let atoms = [
            "0",
            "-0",
            "1",
            "-1",
            "007",
            "1.5",
            "-2.25",
            "1e5",
            "1E5",
            "1.5e-3",
            "2e+10",
            "1e400",
            "-1e400",
            "1.",
            ".5",
            "1e",
            "--1",
            "1.5.5",
            "9223372036854775807i",
            "9223372036854775808i",
            "-9223372036854775808i",
            "18446744073709551615u",
            "18446744073709551616u",
            "-1u",
            "5i",
            "i",
            "u",
            "t",
            "T",
            "true",
            "True",
            "TRUE",
            "f",
            "false",
            "FALSE",
            "tru",
            "x",
            "",
            "1_0",
            "0x10",
            "58.1317132304976",
            "-0.000000000000000000001",
            "0.1",
            "0.30000000000000004",
            "9007199254740992",
            "9007199254740993",
            "9007199254740993.5",
            "123456789012345678901234567890",
            "1.00000000000000000000000000001",
            "3.14159265358979323846",
            "4503599627370497.5",
            "-0.0",
            "00.5",
            "1..2",
            "-.5",
            "1.5-",
        ];
        let names = [
            "a",
            "b.c",
            "host",
            "us-east-1",
            "a:b/c",
            "",
            "x y",
            "k=v",
            "é",
            "#c",
        ];
        let mut took = 0;
        for _ in 0..60_000 {
            let mut line = String::from(names[rng.gen_range(0..names.len())]);
            for _ in 0..rng.gen_range(0..3) {
                let k = names[rng.gen_range(0..names.len())];
                let v = names[rng.gen_range(0..names.len())];
                line.push_str(&format!(",{k}={v}"));
            }
            line.push(' ');
            for i in 0..rng.gen_range(1..4) {
                if i > 0 {
                    line.push(',');
                }
                let k = names[rng.gen_range(0..names.len())];
                line.push_str(&format!("{k}={}", atoms[rng.gen_range(0..atoms.len())]));
            }
            if rng.gen_bool(0.5) {
                line.push_str(&format!(" {}", atoms[rng.gen_range(0..atoms.len())]));
            }
            if agree(&line) {
                took += 1;
            }
        }
        assert!(took > 600, "fast path took only {took} generated lines");
    }
}
