//! Fuzz targets for every decoder that reads input from the network or the
//! disk, and a mutation fuzzer to drive them on the stable toolchain.
//!
//! A target takes arbitrary bytes and must neither panic nor break its
//! decoder's promises (for line protocol: every line is accepted or
//! rejected, never both, never neither). The driver starts from valid seeds,
//! mutates them (bit flips, interesting bytes, insertions, deletions,
//! splices with other seeds), and keeps every input that panicked.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod targets;

pub use targets::Target;

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub executions: u64,
    /// Inputs that made the target panic, as saved files.
    pub crashes: Vec<PathBuf>,
}

/// Bytes that often sit on a decoder's edges.
const INTERESTING: [u8; 16] = [
    0, 1, 0x7f, 0x80, 0xff, b' ', b',', b'=', b'\\', b'"', b'\n', b'{', b'}', b'[', b'#', b'0',
];

fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..rng.gen_range(1..=4) {
        let len = input.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=8);
                for _ in 0..n {
                    input.insert(i, rng.gen());
                }
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(16));
                input.drain(i..i + n);
            }
            4 if !seeds.is_empty() => {
                // Splice: a piece of another seed at a random place.
                let other = &seeds[rng.gen_range(0..seeds.len())];
                if !other.is_empty() {
                    let a = rng.gen_range(0..other.len());
                    let b = rng.gen_range(a..=other.len());
                    let at = rng.gen_range(0..=len);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
            5 if len > 1 => {
                // Duplicate a range: repeated structures, long tokens.
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 64));
                let piece = input[a..b].to_vec();
                input.splice(b..b, piece);
            }
            _ if len > 0 => {
                let i = rng.gen_range(0..len);
                input.truncate(i);
            }
            _ => input.push(rng.gen()),
        }
    }
    // Keep inputs small enough that a run makes many executions.
    input.truncate(1 << 16);
}

/// Runs `target` for `time` from `seed`, saving panicking inputs in
/// `crashes`.
pub fn run(target: Target, time: Duration, seed: u64, crashes: &Path) -> std::io::Result<Report> {
    let mut harness = Harness::new(target)?;
    let seeds = harness.seeds()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = Report::default();
    let started = Instant::now();
    // Panics are expected findings here, not noise for the terminal.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while started.elapsed() < time {
        let mut input = seeds[rng.gen_range(0..seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        report.executions += 1;
        let outcome = catch_unwind(AssertUnwindSafe(|| harness.exec(&input)));
        if outcome.is_err() {
            std::fs::create_dir_all(crashes)?;
            let name = format!("{}-{:016x}", target.name(), crc32c::crc32c(&input));
            let path = crashes.join(name);
            std::fs::write(&path, &input)?;
            if !report.crashes.contains(&path) {
                report.crashes.push(path);
            }
        }
    }
    std::panic::set_hook(hook);
    Ok(report)
}

/// A target with its context, fed one input at a time (by the driver
/// here, or by an outside engine such as libFuzzer).
pub struct Harness {
    target: Target,
    ctx: targets::Context,
}

impl Harness {
    pub fn new(target: Target) -> std::io::Result<Harness> {
        Ok(Harness {
            target,
            ctx: targets::Context::new()?,
        })
    }

    /// Feeds one input; panics on a broken promise.
    pub fn exec(&mut self, data: &[u8]) {
        self.target.exec(&mut self.ctx, data);
    }

    /// The valid inputs a run starts from.
    pub fn seeds(&mut self) -> std::io::Result<Vec<Vec<u8>>> {
        self.target.seeds(&mut self.ctx)
    }
}

/// Runs `target` once on `data`, letting a panic through.
pub fn replay(target: Target, data: &[u8]) -> std::io::Result<()> {
    Harness::new(target)?.exec(data);
    Ok(())
}
