//! TSBS "cpu-only" data in InfluxDB line protocol.
//!
//! Mirrors `tsbs_generate_data --use-case=cpu-only --format=influx`: one `cpu`
//! row per host per 10 s interval, rows ordered by time then host, the ten
//! TSBS host tags, and ten fields that are clamped random walks on [0, 100]
//! with standard-normal steps, starting from a uniform value. Unlike current
//! TSBS (which truncates the cpu fields to integers) the fields are written as
//! floats with full precision, as the older influxdb-comparisons tool did.
//! The random number generator is not Go's, so the values differ from TSBS's
//! for the same seed; the shape and sizes are the same.
//!
//! [`Values`] picks how the field values are written: `full` (the default,
//! above), `round2` (the same walk rounded to 2 decimals, as real sensors
//! send) or `int` (rounded to the nearest integer, with line protocol's `i`
//! suffix, as current TSBS writes them). Only the written values change: the
//! walk itself keeps full precision, so every variant has the same shape.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// 2016-01-01T00:00:00Z, TSBS's default `--timestamp-start`.
pub const START_NS: i64 = 1_451_606_400 * 1_000_000_000;
/// TSBS's `--log-interval` default.
pub const INTERVAL_NS: i64 = 10 * 1_000_000_000;

pub const FIELDS: [&str; 10] = [
    "usage_user",
    "usage_system",
    "usage_idle",
    "usage_nice",
    "usage_iowait",
    "usage_irq",
    "usage_softirq",
    "usage_steal",
    "usage_guest",
    "usage_guest_nice",
];

const REGIONS: [(&str, &[&str]); 9] = [
    (
        "us-east-1",
        &["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1e"],
    ),
    ("us-west-1", &["us-west-1a", "us-west-1b"]),
    ("us-west-2", &["us-west-2a", "us-west-2b", "us-west-2c"]),
    ("eu-west-1", &["eu-west-1a", "eu-west-1b", "eu-west-1c"]),
    ("eu-central-1", &["eu-central-1a", "eu-central-1b"]),
    ("ap-southeast-1", &["ap-southeast-1a", "ap-southeast-1b"]),
    ("ap-southeast-2", &["ap-southeast-2a", "ap-southeast-2b"]),
    ("ap-northeast-1", &["ap-northeast-1a", "ap-northeast-1c"]),
    ("sa-east-1", &["sa-east-1a", "sa-east-1b", "sa-east-1c"]),
];
const TEAMS: [&str; 4] = ["SF", "NYC", "LON", "CHI"];
const OSES: [&str; 3] = ["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"];
const ARCHES: [&str; 2] = ["x64", "x86"];
const ENVIRONMENTS: [&str; 3] = ["production", "staging", "test"];
const RACKS: u32 = 100;
const SERVICES: u32 = 20;
const SERVICE_VERSIONS: u32 = 2;

/// How field values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Values {
    /// Full precision: the shortest decimal that round-trips the f64.
    Full,
    /// Rounded to 2 decimals (still floats).
    Round2,
    /// Rounded to the nearest integer, written as an integer (`42i`).
    Int,
}

/// What `generate` produced.
pub struct Summary {
    pub rows: u64,
    pub bytes: u64,
}

/// Parses `10s`, `30m`, `1h`, `1d`, `2w` (or a bare number of seconds)
/// into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 1d, 12h, 30m"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use s, m, h, d or w"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// Standard normal variates by the polar Box–Muller method.
struct Normal {
    spare: Option<f64>,
}

impl Normal {
    fn sample(&mut self, rng: &mut StdRng) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            let u: f64 = rng.gen::<f64>() * 2.0 - 1.0;
            let v: f64 = rng.gen::<f64>() * 2.0 - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let m = (-2.0 * s.ln() / s).sqrt();
                self.spare = Some(v * m);
                return u * m;
            }
        }
    }
}

struct Host {
    /// `cpu,hostname=…,…,service_environment=… ` including the trailing space.
    prefix: String,
    state: [f64; 10],
}

fn pick<'a>(rng: &mut StdRng, choices: &[&'a str]) -> &'a str {
    choices[rng.gen_range(0..choices.len())]
}

fn new_host(rng: &mut StdRng, id: u32) -> Host {
    // Same order of draws as TSBS: the distributions' starting values, then tags.
    let mut state = [0.0; 10];
    for s in &mut state {
        *s = rng.gen::<f64>() * 100.0;
    }
    let (region, datacenters) = REGIONS[rng.gen_range(0..REGIONS.len())];
    let datacenter = pick(rng, datacenters);
    let rack = rng.gen_range(0..RACKS);
    let arch = pick(rng, &ARCHES);
    let os = pick(rng, &OSES);
    let service = rng.gen_range(0..SERVICES);
    let service_version = rng.gen_range(0..SERVICE_VERSIONS);
    let environment = pick(rng, &ENVIRONMENTS);
    let team = pick(rng, &TEAMS);
    let prefix = format!(
        "cpu,hostname=host_{id},region={region},datacenter={datacenter},rack={rack},os={os},\
arch={arch},team={team},service={service},service_version={service_version},\
service_environment={environment} "
    );
    Host { prefix, state }
}

/// Produces the rows one at a time, in file order (by time, then host), so
/// that `generate` and the MQTT loader (which needs them in memory, cut into
/// messages) share one definition of the data.
pub struct Rows {
    rng: StdRng,
    normal: Normal,
    hosts: Vec<Host>,
    values: Values,
    /// The epoch and host of the next row.
    epoch: u64,
    host: usize,
}

impl Rows {
    pub fn new(hosts: u32, seed: u64, values: Values) -> Result<Rows, String> {
        if hosts == 0 {
            return Err("--scale must be at least 1".into());
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let hosts: Vec<Host> = (0..hosts).map(|i| new_host(&mut rng, i)).collect();
        Ok(Rows {
            rng,
            normal: Normal { spare: None },
            hosts,
            values,
            epoch: 0,
            host: 0,
        })
    }

    /// Appends the next row to `line`, newline included. The data has no
    /// end: callers stop after as many rows as they need.
    pub fn next_into(&mut self, line: &mut String) {
        let ts = START_NS + self.epoch as i64 * INTERVAL_NS;
        let h = &mut self.hosts[self.host];
        if self.epoch > 0 {
            for s in &mut h.state {
                *s = (*s + self.normal.sample(&mut self.rng)).clamp(0.0, 100.0);
            }
        }
        line.push_str(&h.prefix);
        for (i, (name, v)) in FIELDS.iter().zip(h.state.iter()).enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(name);
            line.push('=');
            push_value(line, *v, self.values);
        }
        line.push(' ');
        push_int(line, ts);
        line.push('\n');
        self.host += 1;
        if self.host == self.hosts.len() {
            self.host = 0;
            self.epoch += 1;
        }
    }
}

/// Writes `hosts × (duration / 10 s)` rows to `out`.
pub fn generate(
    hosts: u32,
    duration_s: u64,
    seed: u64,
    values: Values,
    out: &Path,
) -> Result<Summary, String> {
    let epochs = duration_s * 1_000_000_000 / INTERVAL_NS as u64;
    let mut gen = Rows::new(hosts, seed, values)?;
    if epochs == 0 {
        return Err("--duration must be at least 10s".into());
    }
    let started = Instant::now();
    let file = File::create(out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut line = String::with_capacity(512);
    let total = epochs * u64::from(hosts);
    let mut bytes = 0u64;
    for _ in 0..total {
        line.clear();
        gen.next_into(&mut line);
        w.write_all(line.as_bytes())
            .map_err(|e| format!("writing {}: {e}", out.display()))?;
        bytes += line.len() as u64;
    }
    w.flush()
        .map_err(|e| format!("writing {}: {e}", out.display()))?;
    eprintln!(
        "generated {total} rows ({:.1} MB) in {:.1}s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(Summary { rows: total, bytes })
}

fn push_value(s: &mut String, v: f64, values: Values) {
    match values {
        // Rust's Display for f64 is the shortest representation that
        // round-trips, never in exponent form: full precision, like
        // Go's strconv.FormatFloat(v, 'f', -1, 64).
        Values::Full => push_float(s, v),
        // n / 100 with n integral is the double nearest the 2-decimal value,
        // so Display prints at most 2 decimals (`12.3`, `7`: still floats,
        // as line protocol reads a number without `i` as a float).
        Values::Round2 => push_float(s, (v * 100.0).round() / 100.0),
        Values::Int => {
            push_int(s, v.round() as i64);
            s.push('i');
        }
    }
}

fn push_float(s: &mut String, v: f64) {
    use std::fmt::Write as _;
    let _ = write!(s, "{v}");
}

fn push_int(s: &mut String, v: i64) {
    use std::fmt::Write as _;
    let _ = write!(s, "{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("90"), Ok(90));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("99999999999999999w").is_err());
    }

    #[test]
    fn rows_and_order() {
        let dir = std::env::temp_dir().join(format!("sluice-bench-gen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cpu.lp");
        let s = generate(3, 30, 1, Values::Full, &path).unwrap();
        assert_eq!(s.rows, 9);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 9);
        assert!(lines[0].starts_with("cpu,hostname=host_0,region="));
        assert!(lines[1].starts_with("cpu,hostname=host_1,"));
        assert!(lines[3].starts_with("cpu,hostname=host_0,"));
        assert!(lines[0].ends_with(" 1451606400000000000"));
        assert!(lines[3].ends_with(" 1451606410000000000"));
        for l in &lines {
            let fields = l.split(' ').nth(1).unwrap();
            assert_eq!(fields.split(',').count(), 10);
            for kv in fields.split(',') {
                let v: f64 = kv.split_once('=').unwrap().1.parse().unwrap();
                assert!((0.0..=100.0).contains(&v));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The variants write the same walk: round2 and int are `full` rounded.
    #[test]
    fn variants_round_the_same_walk() {
        let dir = std::env::temp_dir().join(format!("sluice-bench-var-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let read = |v: Values| {
            let path = dir.join(format!("{v:?}.lp"));
            generate(4, 600, 7, v, &path).unwrap();
            std::fs::read_to_string(&path).unwrap()
        };
        let (full, round2, int) = (read(Values::Full), read(Values::Round2), read(Values::Int));
        let fields = |l: &str| -> Vec<String> {
            l.split(' ')
                .nth(1)
                .unwrap()
                .split(',')
                .map(|kv| kv.split_once('=').unwrap().1.to_string())
                .collect()
        };
        let mut lines = 0;
        for ((f, r), i) in full.lines().zip(round2.lines()).zip(int.lines()) {
            lines += 1;
            let head = |l: &str| l.split(' ').next().unwrap().to_string();
            let tail = |l: &str| l.rsplit(' ').next().unwrap().to_string();
            assert_eq!(head(f), head(r));
            assert_eq!(head(f), head(i));
            assert_eq!(tail(f), tail(i));
            for ((fv, rv), iv) in fields(f).iter().zip(fields(r)).zip(fields(i)) {
                let x: f64 = fv.parse().unwrap();
                let rounded: f64 = rv.parse().unwrap();
                assert_eq!(rounded.to_bits(), ((x * 100.0).round() / 100.0).to_bits());
                assert!(rv.split_once('.').is_none_or(|(_, d)| d.len() <= 2), "{rv}");
                let n: i64 = iv.strip_suffix('i').unwrap().parse().unwrap();
                assert_eq!(n, x.round() as i64);
                assert!((0..=100).contains(&n));
            }
        }
        assert_eq!(lines, 240);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
