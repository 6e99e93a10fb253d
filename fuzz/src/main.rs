//! `sluice-fuzz [TARGET|all] --seconds N`: runs the fuzz targets and keeps
//! what made them panic. `scripts/fuzz.sh` runs every target for longer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sluice_fuzz::Target;

#[derive(Parser)]
#[command(about = "Mutation fuzzing of Sluice's decoders of network and disk input")]
struct Args {
    /// line-protocol, json, topic, chunk, wal, postgres, batch, relational,
    /// raft-message, mqtt, or all
    #[arg(default_value = "all")]
    target: String,
    /// Seconds per target.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seed of the mutations (a run is repeatable from it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where inputs that panicked are saved.
    #[arg(long, default_value = "fuzz/crashes")]
    crashes: PathBuf,
    /// Runs the target once on this file, panic and all, to see why.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Writes each target's seeds into DIR/<target>/ (a corpus for
    /// libFuzzer) and exits.
    #[arg(long, value_name = "DIR")]
    write_seeds: Option<PathBuf>,
    /// Prints the targets' names and exits.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for t in Target::ALL {
            println!("{}", t.name());
        }
        return ExitCode::SUCCESS;
    }
    let targets: Vec<Target> = if args.target == "all" {
        Target::ALL.to_vec()
    } else {
        match Target::parse(&args.target) {
            Some(t) => vec![t],
            None => {
                eprintln!("sluice-fuzz: unknown target {:?}", args.target);
                return ExitCode::FAILURE;
            }
        }
    };
    if let Some(dir) = &args.write_seeds {
        for t in targets {
            if let Err(e) = write_seeds(t, dir) {
                eprintln!("sluice-fuzz: {}: {e}", t.name());
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    if let Some(file) = &args.replay {
        let data = match std::fs::read(file) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("sluice-fuzz: {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        };
        for t in targets {
            if let Err(e) = sluice_fuzz::replay(t, &data) {
                eprintln!("sluice-fuzz: {}: {e}", t.name());
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut failed = false;
    for t in targets {
        match sluice_fuzz::run(
            t,
            Duration::from_secs(args.seconds),
            args.seed,
            &args.crashes,
        ) {
            Ok(r) => {
                println!(
                    "{}: {} executions in {} s, {} crashing inputs",
                    t.name(),
                    r.executions,
                    args.seconds,
                    r.crashes.len()
                );
                for c in r.crashes.iter().take(5) {
                    println!("  {}", c.display());
                }
                if r.crashes.len() > 5 {
                    println!(
                        "  … and {} more in {}",
                        r.crashes.len() - 5,
                        args.crashes.display()
                    );
                }
                failed |= !r.crashes.is_empty();
            }
            Err(e) => {
                eprintln!("sluice-fuzz: {}: {e}", t.name());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn write_seeds(t: Target, dir: &std::path::Path) -> std::io::Result<()> {
    let dir = dir.join(t.name());
    std::fs::create_dir_all(&dir)?;
    for (i, seed) in sluice_fuzz::Harness::new(t)?.seeds()?.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed)?;
    }
    Ok(())
}
