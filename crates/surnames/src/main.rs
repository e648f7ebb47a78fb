//! `surnames`: SpikingJelly's Spiking LSTM surname-classification tutorial, end to end.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use surnames::commands;

#[derive(Parser)]
#[command(
    name = "surnames",
    version,
    about = "Spiking LSTM surname → language classifier (SpikingJelly's tutorial, in Rust)",
    after_help = "Data: --data DIR or SURNAMES_DATA, else the official archive is downloaded to the cache on first use."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Get and verify the names data set; print names per language and the split.
    Data(commands::DataArgs),
    /// Train a model into a run directory (tutorial protocol by default).
    Train(Box<commands::TrainArgs>),
    /// Test accuracy, baselines, per-language accuracy and F1, macro-F1, spike rates.
    Eval(commands::EvalArgs),
    /// Top-K languages for names given as arguments, on stdin, or typed interactively.
    Predict(commands::PredictArgs),
    /// Confusion matrix (CSV, .npy, SVG) from random draws or the test set.
    Confusion(commands::ConfusionArgs),
    /// Turn a state_dict of the Python tutorial's Net (safetensors) into a run directory.
    Import(commands::ImportArgs),
    /// Write a run's weights as a state_dict for the Python tutorial's Net (safetensors).
    Export(commands::ExportArgs),
    /// Check the library against reference vectors made with SpikingJelly + PyTorch.
    Conformance(ConformanceArgs),
    /// Measure training and inference throughput of the tutorial model.
    Bench(commands::BenchArgs),
}

#[derive(Args)]
struct ConformanceArgs {
    /// Files in the golden schema (e.g. ../shared/golden/rnn_cases.json).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[global_allocator]
static ALLOCATOR: spiking_rnn::CacheLineAligned = spiking_rnn::CacheLineAligned;

fn main() {
    // Die quietly on a closed pipe (`surnames data | head`), like other command-line tools,
    // instead of panicking inside println!.
    #[cfg(unix)]
    // SAFETY: restoring the default action of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // clap's message starts with "error: " and may list the arguments on the next lines
            // (missing ones, say); keep it on one line and drop the usage that follows.
            let msg = e.to_string();
            let text: Vec<&str> = msg
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect();
            eprintln!("{} (see --help)", text.join(" "));
            std::process::exit(2);
        }
    };
    let result: Result<()> = match cli.command {
        Command::Data(a) => commands::data(a),
        Command::Train(a) => commands::train(*a),
        Command::Eval(a) => commands::eval(a),
        Command::Predict(a) => commands::predict(a),
        Command::Confusion(a) => commands::confusion(a),
        Command::Import(a) => commands::import(a),
        Command::Export(a) => commands::export(a),
        Command::Conformance(a) => commands::conformance(&a.files),
        Command::Bench(a) => commands::bench(a),
    };
    if let Err(e) = result {
        // One line: the chain of causes, no backtrace.
        // (Not eprintln!: with SIGPIPE ignored during training, a closed stderr must not panic.)
        surnames::fsutil::eprint_line(&format!("error: {}", format!("{e:#}").replace('\n', " ")));
        std::process::exit(1);
    }
}
