//! The loader: replays a line protocol file over HTTP (keep-alive, one
//! connection per worker) or raw TCP, as fast as the server acknowledges.
//!
//! Everything that costs CPU on the client — reading the file, splitting it
//! into batches, gzip — is done before the clock starts, so during the timed
//! section a worker only hands ready-made buffers to the socket.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;

pub enum Target {
    Http { url: String, gzip: bool },
    Tcp { addr: String },
}

pub struct LoadArgs {
    pub file: std::path::PathBuf,
    pub target: Target,
    pub batch: usize,
    pub workers: usize,
    /// GET after the last batch, inside the timed section (VictoriaMetrics'
    /// `/internal/force_flush`, so buffered-but-unflushed data is not counted as written).
    pub flush_url: Option<String>,
    pub expect_rows: Option<u64>,
    pub timeout: Duration,
}

struct Batch {
    body: &'static [u8],
    rows: u64,
}

/// CPU time (user + system) this process has used so far, in seconds.
/// From /proc/self/stat, whose times are in USER_HZ (100 on Linux).
pub fn self_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, the 12th and 13th after the name.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Splits `data` into batches of `batch` non-empty lines. Each batch ends in
/// a newline (one is added to the last line if the file lacks it).
fn split_batches(data: &'static [u8], batch: usize) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut rows = 0u64;
    let mut pos = 0usize;
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |i| pos + i + 1);
        let line = &data[pos..end];
        let blank = line.iter().all(u8::is_ascii_whitespace);
        let comment = line.first() == Some(&b'#');
        if !blank && !comment {
            rows += 1;
        }
        pos = end;
        if rows as usize == batch {
            out.push(Batch {
                body: &data[start..pos],
                rows,
            });
            start = pos;
            rows = 0;
        }
    }
    if rows > 0 {
        let body = &data[start..];
        let body: &'static [u8] = if body.ends_with(b"\n") {
            body
        } else {
            let mut v = body.to_vec();
            v.push(b'\n');
            Box::leak(v.into_boxed_slice())
        };
        out.push(Batch { body, rows });
    }
    out
}

fn gzip(data: &[u8]) -> &'static [u8] {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 4), Compression::fast());
    enc.write_all(data).expect("gzip into memory");
    Box::leak(enc.finish().expect("gzip into memory").into_boxed_slice())
}

fn no_proxy_client(timeout: Duration) -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// Shared between the workers: the next batch to send, the first failure.
struct Work {
    batches: Vec<Batch>,
    next: AtomicUsize,
    failed: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Work {
    fn take(&self) -> Option<&Batch> {
        if self.failed.load(Ordering::Relaxed) {
            return None;
        }
        self.batches.get(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn fail(&self, msg: String) {
        self.failed.store(true, Ordering::Relaxed);
        let mut e = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(msg);
        }
    }
}

fn http_worker(work: &Work, url: &str, gzip: bool, timeout: Duration) -> Vec<Duration> {
    let client = match no_proxy_client(timeout) {
        Ok(c) => c,
        Err(e) => {
            work.fail(e);
            return Vec::new();
        }
    };
    let mut latencies = Vec::new();
    while let Some(b) = work.take() {
        let t = Instant::now();
        let mut req = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(b.body);
        if gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        match req.send() {
            Ok(resp) if resp.status().is_success() => {
                // Drain the (normally empty) body so the connection is reused.
                let _ = resp.bytes();
                latencies.push(t.elapsed());
            }
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().unwrap_or_default();
                let body: String = body.chars().take(2000).collect();
                work.fail(format!("POST {url} answered {status}: {body}"));
            }
            Err(e) => work.fail(format!("POST {url} failed: {e}")),
        }
    }
    latencies
}

/// Writes batches down one TCP connection, then half-closes it and waits for
/// the server to close its side: a server that closes only once the data it
/// read is written (Sluice does) makes that the point everything is durable.
fn tcp_worker(work: &Work, addr: &str, timeout: Duration) -> Vec<Duration> {
    let run = || -> Result<Vec<Duration>, String> {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut latencies = Vec::new();
        while let Some(b) = work.take() {
            let t = Instant::now();
            s.write_all(b.body)
                .map_err(|e| format!("writing to {addr}: {e}"))?;
            latencies.push(t.elapsed());
        }
        s.shutdown(Shutdown::Write)
            .map_err(|e| format!("closing the write side to {addr}: {e}"))?;
        let mut sink = [0u8; 4096];
        loop {
            match s.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(format!("waiting for {addr} to close: {e}")),
            }
        }
        Ok(latencies)
    };
    run().unwrap_or_else(|e| {
        work.fail(e);
        Vec::new()
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

pub fn load(args: &LoadArgs) -> Result<(), String> {
    if args.batch == 0 || args.workers == 0 {
        return Err("--batch and --workers must be at least 1".into());
    }
    let cpu_start = self_cpu_seconds();
    let prep_started = Instant::now();
    let data =
        std::fs::read(&args.file).map_err(|e| format!("reading {}: {e}", args.file.display()))?;
    let data: &'static [u8] = Box::leak(data.into_boxed_slice());
    let mut batches = split_batches(data, args.batch);
    let rows: u64 = batches.iter().map(|b| b.rows).sum();
    let raw_bytes: u64 = batches.iter().map(|b| b.body.len() as u64).sum();
    if let Some(expect) = args.expect_rows {
        if expect != rows {
            return Err(format!(
                "{} holds {rows} rows, expected {expect}",
                args.file.display()
            ));
        }
    }
    let gzip_on = matches!(args.target, Target::Http { gzip: true, .. });
    if gzip_on {
        for b in &mut batches {
            b.body = gzip(b.body);
        }
    }
    let wire_bytes: u64 = batches.iter().map(|b| b.body.len() as u64).sum();
    let n_batches = batches.len();
    let work = Arc::new(Work {
        batches,
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
    });
    let (target_desc, mode) = match &args.target {
        Target::Http { url, gzip } => (url.clone(), if *gzip { "http+gzip" } else { "http" }),
        Target::Tcp { addr } => (addr.clone(), "tcp"),
    };
    eprintln!(
        "loader: {rows} rows in {n_batches} batches of {} lines, {:.1} MB ({:.1} MB on the wire), \
{} {mode} workers -> {target_desc}; prepared in {:.2}s",
        args.batch,
        raw_bytes as f64 / 1e6,
        wire_bytes as f64 / 1e6,
        args.workers,
        prep_started.elapsed().as_secs_f64()
    );

    let cpu_before = self_cpu_seconds();
    let started = Instant::now();
    let handles: Vec<_> = (0..args.workers)
        .map(|_| {
            let work = work.clone();
            let target = match &args.target {
                Target::Http { url, gzip } => Target::Http {
                    url: url.clone(),
                    gzip: *gzip,
                },
                Target::Tcp { addr } => Target::Tcp { addr: addr.clone() },
            };
            let timeout = args.timeout;
            std::thread::spawn(move || match &target {
                Target::Http { url, gzip } => http_worker(&work, url, *gzip, timeout),
                Target::Tcp { addr } => tcp_worker(&work, addr, timeout),
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n_batches);
    for h in handles {
        match h.join() {
            Ok(l) => latencies.extend(l),
            Err(_) => work.fail("a worker panicked".into()),
        }
    }
    let load_elapsed = started.elapsed();
    if let Some(e) = work.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let mut flush_s = 0.0;
    if let Some(url) = &args.flush_url {
        let t = Instant::now();
        let client = no_proxy_client(args.timeout)?;
        let resp = client
            .get(url)
            .send()
            .map_err(|e| format!("GET {url} failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url} answered {}", resp.status()));
        }
        flush_s = t.elapsed().as_secs_f64();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let loader_cpu = self_cpu_seconds() - cpu_before;
    let total_cpu = self_cpu_seconds() - cpu_start;
    latencies.sort_unstable();
    let rows_s = rows as f64 / elapsed;
    println!(
        "loaded {rows} rows ({} values) in {elapsed:.3}s (writes {:.3}s + flush {flush_s:.3}s)",
        rows * 10,
        load_elapsed.as_secs_f64()
    );
    println!(
        "  {rows_s:.0} rows/s, {:.0} values/s, {:.1} MB/s of line protocol",
        rows_s * 10.0,
        raw_bytes as f64 / 1e6 / elapsed
    );
    println!(
        "  batch {} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        if mode == "tcp" { "send" } else { "latency" },
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    println!(
        "  loader CPU {loader_cpu:.2}s while loading ({:.0}% of one core), {total_cpu:.2}s in all",
        100.0 * loader_cpu / elapsed
    );
    // One line for scripts.
    println!(
        "RESULT mode={mode} rows={rows} values={} elapsed_s={elapsed:.4} flush_s={flush_s:.4} \
rows_per_s={rows_s:.0} values_per_s={:.0} loader_cpu_s={loader_cpu:.3} loader_total_cpu_s={total_cpu:.3} \
p50_ms={:.2} p99_ms={:.2}",
        rows * 10,
        rows_s * 10.0,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_line() {
        let data: &'static [u8] = b"a v=1 1\nb v=2 2\n\n# c\nc v=3 3\nd v=4 4\ne v=5 5";
        let b = split_batches(data, 2);
        assert_eq!(b.iter().map(|b| b.rows).collect::<Vec<_>>(), vec![2, 2, 1]);
        assert_eq!(b[0].body, b"a v=1 1\nb v=2 2\n");
        assert_eq!(b[1].body, b"\n# c\nc v=3 3\nd v=4 4\n");
        assert_eq!(b[2].body, b"e v=5 5\n");
    }

    #[test]
    fn cpu_time_is_readable() {
        assert!(self_cpu_seconds() >= 0.0);
    }
}
