//! `sluice-bench`: generates TSBS cpu-only line protocol, replays it against
//! Sluice or any InfluxDB line protocol endpoint or MQTT broker, preloads
//! Kafka topics, times queries and checks what Sluice stored. See
//! benches/README.md.

mod generate;
mod json;
mod kafka;
mod load;
mod mqtt;
mod query;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice-bench",
    about = "Benchmarks on TSBS cpu-only data: ingest over HTTP, TCP, MQTT or Kafka, query latency, read-back checks"
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
        /// How to write the field values: full precision, rounded to 2 decimals, or integers.
        #[arg(long, value_enum, default_value_t = generate::Values::Full)]
        values: generate::Values,
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
    /// Publish TSBS cpu-only line protocol over MQTT and report messages/s and rows/s
    /// until every message is acknowledged (QoS 1) or written (QoS 0).
    Mqtt {
        /// Broker address, host:port.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Topic to publish to (Sluice stores line protocol on ingest/<db> in <db>).
        #[arg(long, default_value = "ingest/bench")]
        topic: String,
        /// 1: done when every PUBACK is in; 0: done when every PUBLISH is written to the socket.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        /// Publishing connections; each sends every Nth message (round robin).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Unacknowledged QoS 1 messages allowed per connection (rumqttc's in-flight window).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
        inflight: u16,
        /// Line protocol rows per message (the benchmark uses 1 and 100).
        #[arg(long, default_value_t = 1)]
        lines: usize,
        /// Messages to publish in all.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Hosts in the generated data (rows cycle through them, then advance 10 s).
        #[arg(long, default_value_t = 100)]
        scale: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = generate::Values::Full)]
        values: generate::Values,
        /// Also subscribe to the topic on one more connection and time until every
        /// message has been delivered to it (for brokers that store nothing).
        #[arg(long)]
        subscribe: bool,
        /// Client runtime threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Give up (and fail) after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Preload a Kafka topic with TSBS cpu-only line protocol, N lines per message,
    /// and report messages, rows and seconds once every message is acknowledged.
    KafkaProduce {
        /// Bootstrap servers, host:port[,host:port…].
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value = "cpu")]
        topic: String,
        /// Create the topic with this many partitions if it does not exist
        /// (otherwise it must exist, or the broker must create it).
        #[arg(long)]
        partitions: Option<i32>,
        /// host: one host per message, keyed by host name (a host's rows stay in
        /// order in one partition); round-robin: consecutive lines, partitions in turn.
        #[arg(long, value_enum, default_value_t = kafka::Partitioning::Host)]
        partitioning: kafka::Partitioning,
        /// Line protocol rows per message.
        #[arg(long, default_value_t = 1000)]
        lines: usize,
        /// Number of hosts.
        #[arg(long, default_value_t = 100)]
        scale: u32,
        /// Time span from 2016-01-01T00:00:00Z: 10s, 30m, 1h, 1d, 1w.
        #[arg(long, default_value = "1d")]
        duration: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = generate::Values::Full)]
        values: generate::Values,
        /// librdkafka linger.ms: how long a batch waits for more messages.
        #[arg(long, default_value_t = 20)]
        linger_ms: u32,
        /// librdkafka batch.size: most bytes per partition batch.
        #[arg(long, default_value_t = 1_000_000)]
        batch_bytes: u32,
        /// librdkafka batch.num.messages: most messages per partition batch.
        #[arg(long, default_value_t = 10_000)]
        batch_messages: u32,
        /// Further librdkafka setting, key=value, applied last; repeatable.
        #[arg(long = "property", value_parser = kafka::parse_property)]
        properties: Vec<(String, String)>,
        /// Give up (and fail) after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Read a table back from Sluice over SQL and compare it, bit for bit, with the loaded file.
    Verify {
        /// The line protocol file that was loaded (as `generate` writes it).
        #[arg(long)]
        data: PathBuf,
        /// Sluice's base URL, e.g. http://127.0.0.1:8086.
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "bench")]
        db: String,
        /// Timeout in seconds for the whole read.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Time one HTTP query: warm-ups, then timed runs; prints the median and the answer's size.
    Query {
        /// Endpoint, e.g. http://127.0.0.1:8086/api/v1/sql.
        #[arg(long)]
        url: String,
        #[arg(long, value_enum, default_value_t = query::Method::Get)]
        method: query::Method,
        /// Query-string parameter, key=value (URL-encoded by the tool); repeatable.
        #[arg(long = "param", value_parser = query::parse_param)]
        params: Vec<(String, String)>,
        /// Answer format: sluice (format=json), influx (/query) or prom (Prometheus API).
        #[arg(long, value_enum)]
        kind: query::Kind,
        /// Untimed runs first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Timed runs.
        #[arg(long, default_value_t = 15)]
        runs: usize,
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
            values,
            out,
        } => generate::parse_duration(&duration)
            .and_then(|d| generate::generate(scale, d, seed, values, &out))
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
        Command::Mqtt {
            broker,
            topic,
            qos,
            connections,
            inflight,
            lines,
            messages,
            scale,
            seed,
            values,
            subscribe,
            threads,
            timeout,
        } => mqtt::run(&mqtt::MqttArgs {
            broker,
            topic,
            qos,
            connections,
            inflight,
            lines,
            messages,
            scale,
            seed,
            values,
            subscribe,
            threads,
            timeout: Duration::from_secs(timeout),
        }),
        Command::KafkaProduce {
            brokers,
            topic,
            partitions,
            partitioning,
            lines,
            scale,
            duration,
            seed,
            values,
            linger_ms,
            batch_bytes,
            batch_messages,
            properties,
            timeout,
        } => generate::parse_duration(&duration).and_then(|duration_s| {
            kafka::run(&kafka::ProduceArgs {
                brokers,
                topic,
                partitions,
                partitioning,
                lines,
                scale,
                duration_s,
                seed,
                values,
                linger_ms,
                batch_bytes,
                batch_messages,
                properties,
                timeout: Duration::from_secs(timeout),
            })
        }),
        Command::Verify {
            data,
            url,
            db,
            timeout,
        } => verify::verify(&verify::VerifyArgs {
            data,
            url,
            db,
            timeout: Duration::from_secs(timeout),
        }),
        Command::Query {
            url,
            method,
            params,
            kind,
            warmup,
            runs,
            timeout,
        } => query::run(&query::QueryArgs {
            url,
            method,
            params,
            kind,
            warmup,
            runs,
            timeout: Duration::from_secs(timeout),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
