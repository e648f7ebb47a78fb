//! `surnames`: SpikingJelly's Spiking LSTM surname-classification tutorial, end to end.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "surnames", version, about = "Spiking LSTM surname → language classifier (SpikingJelly tutorial, in Rust)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the library against reference vectors made with SpikingJelly + PyTorch.
    Conformance {
        /// Files in the golden schema (e.g. ../shared/golden/rnn_cases.json).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Measure training and inference throughput of the tutorial model.
    Bench {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Seconds per measurement round.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Rounds per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Threads for the batched measurements (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Only the measurements whose key contains this text (e.g. `train_b1`).
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // One line: the chain of causes, no backtrace.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Conformance { files } => conformance(&files),
        Command::Bench { json, seconds, rounds, threads, only } => {
            if !(seconds > 0.0 && seconds.is_finite()) || rounds == 0 {
                bail!("--seconds must be > 0 and --rounds ≥ 1");
            }
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let opts = surnames::bench::BenchOptions {
                rounds,
                budget: Duration::from_secs_f64(seconds),
                threads,
                names: None,
                only,
            };
            let results = surnames::bench::run(&opts)?;
            if json {
                let mut obj = serde_json::Map::new();
                for r in &results {
                    obj.insert(r.key.clone(), serde_json::json!(r.value));
                }
                obj.insert("details".into(), serde_json::to_value(&results)?);
                println!("{}", serde_json::Value::Object(obj));
            } else {
                for r in &results {
                    println!("{:<28} {:>12.0} {:<8} (median of {}, {} thread(s))", r.key, r.value, r.unit, r.rounds.len(), r.threads);
                }
            }
            Ok(())
        }
    }
}

fn conformance(files: &[PathBuf]) -> Result<()> {
    let mut failed = 0usize;
    let mut total = 0usize;
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let reports = surnames::conformance::check_file(&text).with_context(|| format!("{}", f.display()))?;
        println!("# {}", f.display());
        for r in &reports {
            println!("{}", r.line());
            total += 1;
            failed += usize::from(!r.pass());
        }
    }
    println!("{} passed, {} failed", total - failed, failed);
    if failed > 0 {
        bail!("{failed} of {total} conformance cases failed");
    }
    Ok(())
}
