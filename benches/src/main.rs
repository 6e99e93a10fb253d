//! `sluice-bench`: generates TSBS cpu-only line protocol and replays it
//! against Sluice or any InfluxDB line protocol endpoint. See benches/README.md.

mod generate;
mod load;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice-bench",
    about = "Ingest benchmark: TSBS cpu-only data over HTTP or TCP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write TSBS cpu-only data (one `cpu` row per host per 10 s) as line protocol.
    Generate {
        /// Number of hosts.
        #[arg(long, default_value_t = 100)]
        scale: u32,
        /// Time span from 2016-01-01T00:00:00Z: 10s, 30m, 1h, 1d, 1w.
        #[arg(long, default_value = "1d")]
        duration: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Replay a line protocol file and report rows/s, values/s and the loader's own CPU.
    Load {
        #[arg(long)]
        file: PathBuf,
        /// HTTP write endpoint, e.g. http://127.0.0.1:8086/write?db=bench.
        #[arg(long, conflicts_with = "tcp", required_unless_present = "tcp")]
        url: Option<String>,
        /// Raw line protocol over TCP instead of HTTP: host:port.
        #[arg(long)]
        tcp: Option<String>,
        /// Lines per request.
        #[arg(long, default_value_t = 5000)]
        batch: usize,
        /// Concurrent workers, each with its own keep-alive connection.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// gzip each batch (done before timing starts).
        #[arg(long, conflicts_with = "tcp")]
        gzip: bool,
        /// URL to GET after the last write, inside the timed section.
        #[arg(long)]
        flush_url: Option<String>,
        /// Fail unless the file holds exactly this many rows.
        #[arg(long)]
        expect_rows: Option<u64>,
        /// Per-request timeout in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate {
            scale,
            duration,
            seed,
            out,
        } => generate::parse_duration(&duration)
            .and_then(|d| generate::generate(scale, d, seed, &out))
            .map(|s| println!("rows={} bytes={}", s.rows, s.bytes)),
        Command::Load {
            file,
            url,
            tcp,
            batch,
            workers,
            gzip,
            flush_url,
            expect_rows,
            timeout,
        } => {
            let target = match (url, tcp) {
                (Some(url), None) => load::Target::Http { url, gzip },
                (None, Some(addr)) => load::Target::Tcp { addr },
                _ => unreachable!("clap enforces exactly one of --url and --tcp"),
            };
            load::load(&load::LoadArgs {
                file,
                target,
                batch,
                workers,
                flush_url,
                expect_rows,
                timeout: Duration::from_secs(timeout),
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
