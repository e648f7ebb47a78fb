//! The subcommands: argument types and what each one does.

use crate::checkpoint::{self, load_run, save_run, LoadedModel};
use crate::config::{ModelSpec, RunConfig, SplitSpec, TrainConfig};
use crate::datasets::{self, encode, Encoded};
use crate::evaluate::{argmaxes, predict as predict_probs, score};
use crate::fsutil::{self, write_atomic};
use crate::plots;
use crate::train::{self, TrainData};
use anyhow::{bail, Context, Result};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use spiking_rnn::classifier::FiringStats;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where the names data comes from.
#[derive(Args, Clone, Debug, Default)]
pub struct DataSourceArgs {
    /// Directory with the 18 `<Language>.txt` files (default: $SURNAMES_DATA, else the cache).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Accept files whose SHA-256 differs from the official archive's.
    #[arg(long)]
    pub no_verify: bool,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most worker threads accepted: more only adds memory and scheduling overhead.
const MAX_THREADS: usize = 256;

/// Most evaluations in one run (each is a row of the metrics kept in the resume state).
const MAX_EVALUATIONS: u64 = 100_000;

/// `--threads` as given (default: all cores, at most [`MAX_THREADS`]), checked.
fn threads_arg(threads: Option<usize>) -> Result<usize> {
    let Some(n) = threads else {
        return Ok(default_threads().min(MAX_THREADS));
    };
    if n == 0 || n > MAX_THREADS {
        bail!("--threads must be between 1 and {MAX_THREADS}, got {n}");
    }
    Ok(n)
}

fn set_threads(threads: usize) -> Result<()> {
    // The global pool can only be built once; later calls in the same process keep the first.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// data
// ---------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(flatten)]
    pub source: DataSourceArgs,
    /// Which split to describe: `tutorial` or `dedup`.
    #[arg(long, default_value = "tutorial")]
    pub split: String,
    /// Seed of the dedup split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn data(a: DataArgs) -> Result<()> {
    let (dir, ds) = datasets::open(a.source.data.as_deref(), !a.source.no_verify)?;
    let spec = SplitSpec {
        kind: a.split.clone(),
        seed: a.seed,
        ..SplitSpec::default()
    };
    let lists = datasets::split(&ds, &spec)?;
    let split = surnames_data::Split {
        train: lists.train,
        test: lists.test,
    };
    let rows = surnames_data::counts_table(&ds, &split);
    if a.json {
        let cats: Vec<_> = rows
            .iter()
            .map(|r| json!({"name": r.name, "n": r.n, "distinct": r.distinct, "train": r.train, "test": r.test}))
            .collect();
        let out = json!({
            "dir": dir.display().to_string(),
            "split": a.split,
            "n_names": ds.len(),
            "n_train": split.n_train(),
            "n_test": split.n_test(),
            "max_name_length": ds.max_name_len(),
            "categories": cats,
        });
        println!("{out}");
    } else {
        println!("data: {} ({} split)", dir.display(), a.split);
        print!("{}", surnames_data::format_counts_table(&rows));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// train
// ---------------------------------------------------------------------------------------------

#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// Run directory to write (model, config, metrics, plots).
    #[arg(long, value_name = "RUN", required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run in RUN with its saved sampler and optimiser state (and the
    /// settings of its config.json: only --data, --no-verify and --checkpoint-minutes may be
    /// given with it).
    #[arg(long, value_name = "RUN", conflicts_with_all = [
        "out", "preset", "episodes", "epochs", "eval_every", "seed", "lr", "batch_size", "hidden",
        "layers", "bidirectional", "cell", "surrogate", "no_clamp", "clamp", "loss",
        "class_weights", "sampling", "schedule", "warmup", "weight_decay", "clip", "readout",
        "ignore_case", "keep_case",
        "members",
        "dropout", "split", "val_fraction", "val_from", "patience", "threads",
    ])]
    pub resume: Option<PathBuf>,
    /// `tutorial` (1,000,000 single-name steps, MSE, Adam 1e-4; the default) or `fast`
    /// (batched recipe: five networks, 20 s to a little over a minute on two cores).
    #[arg(long)]
    pub preset: Option<String>,
    #[command(flatten)]
    pub source: DataSourceArgs,
    /// Optimiser steps (the tutorial calls them episodes/epochs).
    #[arg(long, alias = "steps", value_name = "N")]
    pub episodes: Option<u64>,
    /// Passes over the training names (sets the steps from the batch size).
    #[arg(long, conflicts_with = "episodes", allow_negative_numbers = true)]
    pub epochs: Option<f64>,
    /// Evaluate on the test set every N steps.
    #[arg(long, value_name = "N")]
    pub eval_every: Option<u64>,
    /// Seed of initialisation, sampling and dropout.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Adam learning rate (tutorial 1e-4, fast 3e-3).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Names per step (tutorial 1, fast 32).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Hidden units per layer (tutorial 256).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Stacked recurrent layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Add a reverse-direction layer (its output at the last letter has seen only that letter;
    /// `--readout final` reads it at the first letter, after the whole name).
    #[arg(long)]
    pub bidirectional: bool,
    /// `lstm`, `gru`, `rnn` (spiking) or `ann-lstm` (conventional LSTM baseline).
    #[arg(long)]
    pub cell: Option<String>,
    /// Surrogate gradient, `NAME[:alpha]` (Erf, Sigmoid, ATan, PiecewiseQuadratic, …).
    #[arg(long)]
    pub surrogate: Option<String>,
    /// The 2020 cell (no cap on the LSTM cell state), as in the tutorial's published numbers
    /// (the `fast` preset's default).
    #[arg(long, conflicts_with = "clamp")]
    pub no_clamp: bool,
    /// Cap the LSTM cell state at 1 (SpikingJelly since 2022; the `tutorial` preset's default).
    #[arg(long)]
    pub clamp: bool,
    /// `mse` (softmax vs one-hot, the tutorial's) or `ce` (cross-entropy).
    #[arg(long)]
    pub loss: Option<String>,
    /// Cross-entropy class weights: `none`, `inverse` (inverse frequency), `sqrt` (its root) or
    /// another power of it between 0 and 4 (`0.35`).
    #[arg(long)]
    pub class_weights: Option<String>,
    /// Train on the names with capitals read as small letters (the `fast` preset's default):
    /// the tutorial split tests on names whose initials its training names rarely have. The
    /// saved model reads both cases the same way.
    #[arg(long, conflicts_with = "keep_case")]
    pub ignore_case: bool,
    /// Train on the names as they are written (the `tutorial` preset's default).
    #[arg(long)]
    pub keep_case: bool,
    /// `class-uniform` (tutorial), `natural`, `shuffled` (epochs) or `mixed` (half each).
    #[arg(long)]
    pub sampling: Option<String>,
    /// Learning-rate schedule: `constant`, `cosine` or `step`.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Linear warm-up steps.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Adam L2 weight decay.
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Clip the gradient norm (0 = off).
    #[arg(long, allow_negative_numbers = true)]
    pub clip: Option<f32>,
    /// What the classifier reads: `last` (output at the last letter, the tutorial's), `mean`
    /// (mean output over the letters), `final` (with --bidirectional: the reverse direction's
    /// output at the first letter, after reading the whole name) or `cell` (LSTM cells: the
    /// cell state where `final` reads the output; the `fast` preset's default).
    #[arg(long)]
    pub readout: Option<String>,
    /// Dropout between stacked layers.
    #[arg(long, allow_negative_numbers = true)]
    pub dropout: Option<f32>,
    /// Train this many networks side by side from different initial weights (same batches);
    /// the model's output is the mean of their softmax outputs (tutorial 1, fast 5).
    #[arg(long, value_name = "N")]
    pub members: Option<usize>,
    /// `tutorial` (file order, first 80% train) or `dedup` (distinct names, shuffled 80/20).
    #[arg(long)]
    pub split: Option<String>,
    /// Hold out this share of the training names for validation / best checkpoint.
    #[arg(long, allow_negative_numbers = true)]
    pub val_fraction: Option<f64>,
    /// Which training names --val-fraction holds out: `random` (seeded; the default) or `tail`
    /// (the end of each language's training list: on the tutorial split, whose test names are
    /// the end of each file, mostly later initials than the names left to train on).
    #[arg(long, value_name = "PICK", value_parser = ["random", "tail"])]
    pub val_from: Option<String>,
    /// Early stopping: evaluations without a better validation score (0 = off).
    #[arg(long)]
    pub patience: Option<u32>,
    /// Worker threads (default: all cores, or 1 at batch size 1, where the test evaluations use
    /// another core); results are reproducible for the same value.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Save what resuming needs at the first evaluation after this many minutes (default 5;
    /// 0 = at every evaluation), so that a crash or `kill -9` loses at most that much training
    /// plus one evaluation period. Does not change the results.
    #[arg(long, value_name = "MINUTES", allow_negative_numbers = true)]
    pub checkpoint_minutes: Option<f64>,
}

/// Networks in the `fast` preset's ensemble: five gained 3–5 points of accuracy and of macro-F1
/// over one network on both splits, three about two thirds of that (README, "Fast training").
const FAST_MEMBERS: usize = 5;

/// The configuration a `train` invocation asks for.
pub fn build_run_config(
    a: &TrainArgs,
    categories: Vec<String>,
    n_train_hint: usize,
) -> Result<RunConfig> {
    let mut model = ModelSpec::tutorial(categories.len());
    let mut tc = TrainConfig::tutorial();
    let mut split = SplitSpec::default();
    match a.preset.as_deref().unwrap_or("tutorial") {
        "tutorial" => {}
        // The best recipe found for the spiking LSTM (README, "Fast training"): an ensemble of
        // five networks of the 2020 cell, read through their final cell state (LSTM cells; set
        // below), names read without case, batches of 32 names, cross-entropy with square-root
        // inverse-frequency class weights (power 0.3 on the dedup split, set below), shuffled
        // epochs, Adam 3e-3 with warm-up and cosine decay, gradient clipping, 4 epochs (12 on
        // the dedup split, set below).
        "fast" => {
            model.clamp_cell = false;
            model.members = FAST_MEMBERS;
            tc.preset = "fast".into();
            tc.batch_size = 32;
            tc.lr = 3e-3;
            tc.loss = "ce".into();
            tc.class_weights = "sqrt".into();
            tc.sampling = "shuffled".into();
            tc.schedule = "cosine".into();
            tc.warmup_steps = 50;
            tc.clip_norm = 5.0;
            tc.ignore_case = true;
        }
        other => bail!("unknown preset '{other}' (expected tutorial or fast)"),
    }
    if let Some(v) = &a.cell {
        model.cell = v.clone();
    }
    if let Some(v) = a.hidden {
        model.hidden_size = v;
    }
    if let Some(v) = a.layers {
        model.num_layers = v;
    }
    model.bidirectional |= a.bidirectional;
    if let Some(v) = &a.surrogate {
        model.surrogate = v.clone();
    }
    if a.no_clamp || a.clamp {
        model.clamp_cell = a.clamp;
    }
    if let Some(v) = a.dropout {
        model.dropout = v;
    }
    if let Some(v) = a.members {
        // (0 or more than the limit is refused with the model's other bounds.)
        model.members = v;
    }
    if let Some(v) = &a.readout {
        model.readout = v.clone();
    } else if tc.preset == "fast" && has_cell_state(&model.cell) {
        model.readout = "cell".into();
    }
    if let Some(v) = &a.split {
        split.kind = v.clone();
    }
    if tc.preset == "fast" && split.kind == "dedup" {
        // Chosen on a validation split of the dedup training names (README, "Fast training"):
        // power 0.3 scored 0.808 / 0.478 there against 0.787 / 0.475 for the square root.
        tc.class_weights = "0.3".into();
    }
    if let Some(v) = a.val_fraction {
        split.val_fraction = v;
    }
    if let Some(v) = &a.val_from {
        split.val_from = v.clone();
    }
    macro_rules! set {
        ($field:ident, $opt:expr) => {
            if let Some(v) = $opt.clone() {
                tc.$field = v;
            }
        };
    }
    set!(lr, a.lr);
    set!(batch_size, a.batch_size);
    set!(loss, a.loss);
    set!(class_weights, a.class_weights);
    set!(sampling, a.sampling);
    set!(schedule, a.schedule);
    set!(warmup_steps, a.warmup);
    set!(weight_decay, a.weight_decay);
    set!(clip_norm, a.clip);
    set!(patience, a.patience);
    if a.ignore_case || a.keep_case {
        tc.ignore_case = a.ignore_case;
    }
    set!(seed, a.seed);
    split.seed = tc.seed;
    // One name per step cannot be split across cores: one worker trains, and the test
    // evaluations run beside it on another core.
    tc.threads = match a.threads {
        None if tc.batch_size == 1 => 1,
        given => threads_arg(given)?,
    };
    if tc.batch_size == 0 {
        bail!("--batch-size must be ≥ 1");
    }
    let steps_per_epoch = (n_train_hint as u64).div_ceil(tc.batch_size as u64).max(1);
    if tc.preset == "fast" {
        // The tutorial split's test names are the alphabetical tail of each file: models peak
        // after 3–4 epochs and then over-fit (4 measured best and steadiest over eight seeds);
        // on the dedup split they keep improving.
        let epochs = if split.kind == "dedup" { 12 } else { 4 };
        tc.steps = epochs * steps_per_epoch;
        tc.eval_every = steps_per_epoch;
    }
    if let Some(e) = a.epochs {
        if !(e > 0.0 && e.is_finite()) {
            bail!("--epochs must be > 0");
        }
        tc.steps = ((e * steps_per_epoch as f64).round() as u64).max(1);
    }
    set!(steps, a.episodes);
    set!(eval_every, a.eval_every);
    if tc.steps == 0 || tc.eval_every == 0 {
        bail!("--episodes and --eval-every must be ≥ 1");
    }
    // The metrics so far travel in the resume file's header, which safetensors caps at 100 MB.
    if tc.steps / tc.eval_every.min(tc.steps) > MAX_EVALUATIONS {
        bail!(
            "{} steps with an evaluation every {} would be more than {MAX_EVALUATIONS} evaluations; raise --eval-every",
            tc.steps,
            tc.eval_every
        );
    }
    tc.eval_every = tc.eval_every.min(tc.steps);
    // Options that would otherwise be accepted and have no effect.
    if tc.patience > 0 && split.val_fraction == 0.0 {
        bail!("--patience needs a validation split (--val-fraction)");
    }
    if a.val_from.is_some() && split.val_fraction == 0.0 {
        bail!("--val-from chooses the validation names; it needs --val-fraction");
    }
    if model.dropout != 0.0 && model.num_layers < 2 {
        bail!("--dropout applies between stacked layers; it needs --layers 2 or more");
    }
    if model.readout == "final" && !model.bidirectional {
        bail!("--readout final needs --bidirectional (with one direction it is --readout last)");
    }
    if model.readout == "cell"
        && spiking_rnn::CellKind::parse(&model.cell).is_some_and(|k| k.states() != 2)
    {
        bail!(
            "--readout cell reads the LSTM cell state; the {} cell has none",
            model.cell
        );
    }
    if tc.class_weights != "none" && tc.loss != "ce" && a.class_weights.is_none() {
        bail!(
            "--preset {} weights the loss by class (--class-weights {}), which needs --loss ce; add --class-weights none to train it with --loss {}",
            tc.preset,
            tc.class_weights,
            tc.loss
        );
    }
    let surrogate = spiking_rnn::Surrogate::parse(&model.surrogate)?;
    if surrogate.alpha <= 0.0 && spiking_rnn::Surrogate::new(surrogate.kind).alpha > 0.0 {
        bail!(
            "--surrogate {}: its parameter must be > 0 (0 passes no gradient, a negative one reverses it)",
            model.surrogate
        );
    }
    let cfg = RunConfig::new(categories, model, split, Some(tc), "trained");
    cfg.validate()?;
    Ok(cfg)
}

fn prepare(ds: &surnames_data::Dataset, cfg: &RunConfig) -> Result<TrainData> {
    let lists = datasets::split(ds, &cfg.split)?;
    let ignore_case = cfg.training.as_ref().is_some_and(|t| t.ignore_case);
    let encode = |names| -> Result<_> {
        let e = encode(names)?;
        Ok(if ignore_case { e.ignore_case() } else { e })
    };
    Ok(TrainData {
        train: encode(&lists.train)?,
        val: encode(&lists.val)?,
        test: encode(&lists.test)?,
        lists,
    })
}

pub fn train(a: TrainArgs) -> Result<()> {
    // What can be refused without the data is refused before it is downloaded.
    let resume_cfg = a.resume.as_deref().map(check_resumable).transpose()?;
    if let Some(out) = &a.out {
        check_new_run_dir(out)?;
    }
    let checkpoint_every = match a.checkpoint_minutes {
        None => train::CHECKPOINT_EVERY,
        Some(m) if (0.0..=1e6).contains(&m) => Duration::from_secs_f64(m * 60.0),
        Some(m) => bail!("--checkpoint-minutes must be between 0 and 1e6, got {m}"),
    };
    let (dir, ds) = datasets::open(a.source.data.as_deref(), !a.source.no_verify)?;
    let (run_dir, cfg, resume) = match (&a.resume, resume_cfg) {
        (Some(r), Some(cfg)) => {
            if !datasets::same_data(&ds, &cfg) {
                bail!(
                    "the names in {} are not the ones run {} was trained on; resume with the same --data",
                    dir.display(),
                    r.display()
                );
            }
            (r.clone(), cfg, true)
        }
        _ => {
            let out = a.out.clone().context("--out RUN is required")?;
            // Training-set size for epoch-based settings comes from the split itself.
            let probe = build_run_config(&a, ds.categories.clone(), 1)?;
            let n_train = datasets::split(&ds, &probe.split)?
                .train
                .iter()
                .map(Vec::len)
                .sum();
            let mut cfg = build_run_config(&a, ds.categories.clone(), n_train)?;
            cfg.data_fingerprint = Some(ds.fingerprint());
            (out, cfg, false)
        }
    };
    datasets::check_categories(&ds, &cfg.categories, &dir)?;
    let data = prepare(&ds, &cfg)?;
    if data.train.is_empty() || data.test.is_empty() {
        bail!(
            "the {} split of {} leaves {} training and {} test names; both must be non-empty",
            cfg.split.kind,
            dir.display(),
            data.train.len(),
            data.test.len()
        );
    }
    let empty: Vec<&str> = (0..cfg.categories.len())
        .filter(|&c| data.train.per_class[c] == 0)
        .map(|c| cfg.categories[c].as_str())
        .collect();
    if !empty.is_empty() {
        eprintln!(
            "warning: the split leaves no training names for {}; the model cannot learn to predict {}",
            empty.join(", "),
            if empty.len() == 1 { "it" } else { "them" }
        );
    }
    let tc = cfg.training.clone().context("no training section")?;
    set_threads(tc.threads)?;
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    // One training per run directory at a time (released when this process ends, however).
    let _lock = fsutil::lock_dir(&run_dir)
        .with_context(|| format!("cannot lock run directory {}", run_dir.display()))?
        .with_context(|| {
            format!(
                "another `surnames train` is using {}; wait for it or use another --out",
                run_dir.display()
            )
        })?;
    // The checks made before the data was loaded, again under the lock: another training may
    // have used the directory meanwhile.
    if resume {
        check_resumable(&run_dir)?;
    } else {
        check_new_run_dir(&run_dir)?;
        write_atomic(&run_dir.join(fsutil::UNSAVED_MARK), b"")
            .with_context(|| format!("run directory {} is not writable", run_dir.display()))?;
    }
    fsutil::remove_stale_temp_files(&run_dir, &[".safetensors", ".json", ".csv", ".npy", ".svg"]);
    // A closed stdout must not kill the training: printing fails quietly instead.
    #[cfg(unix)]
    // SAFETY: sets the disposition of SIGPIPE; no handler is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // Fail early, before hours of training, if the directory is not writable.
    write_atomic(
        &run_dir.join(checkpoint::CONFIG_FILE),
        serde_json::to_string_pretty(&cfg)?.as_bytes(),
    )
    .with_context(|| format!("run directory {} is not writable", run_dir.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        // Ctrl-C, SIGTERM and SIGHUP stop and save; but under `nohup` (SIGHUP ignored) a
        // logout must not stop the run.
        #[cfg(unix)]
        // SAFETY: reads the current disposition of SIGHUP into a zeroed struct.
        let hup_ignored = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
        };
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                fsutil::eprint_line("\ninterrupted twice: exiting without saving");
                std::process::exit(130);
            }
            fsutil::eprint_line("\nstopping after this step; saving (Ctrl-C again to abort)…");
        });
        #[cfg(unix)]
        if hup_ignored {
            // SAFETY: restores the ignored disposition `nohup` set; no handler is involved.
            unsafe {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
            }
        }
    }
    fsutil::eprint_line(&format!(
        "training {} ({}{} cell, hidden {}, {} layer(s)) on {} names, {}testing on {}; {} steps of batch {}, {} thread(s) → {}",
        tc.preset,
        match cfg.model.members {
            1 => String::new(),
            n => format!("{n} networks of "),
        },
        cfg.model.cell,
        cfg.model.hidden_size,
        cfg.model.num_layers,
        data.train.len(),
        match data.val.len() {
            0 => String::new(),
            n => format!("validating on {n} ({}), ", cfg.split.val_from),
        },
        data.test.len(),
        tc.steps,
        tc.batch_size,
        tc.threads,
        run_dir.display()
    ));
    // The command that continues, with the data this one used.
    let mut again = format!("surnames train --resume {}", shell_word(&run_dir));
    if a.source.data.is_some()
        || std::env::var_os(surnames_data::ENV_VAR).is_some_and(|v| !v.is_empty())
    {
        again.push_str(&format!(" --data {}", shell_word(&dir)));
    }
    if a.source.no_verify {
        again.push_str(" --no-verify");
    }
    let out = match train::run(&run_dir, &cfg, &data, resume, &stop, checkpoint_every) {
        Ok(out) => out,
        // The final save failed (a full disk, say) but an earlier checkpoint survives: say how
        // to go on.
        Err(e)
            if e.downcast_ref::<train::SaveFailed>().is_some()
                && train::has_state(&run_dir)
                && !train::is_finished(&run_dir).unwrap_or(true) =>
        {
            return Err(e.context(format!(
                "the checkpoint saved earlier is intact; after fixing this, continue with: {again}"
            )))
        }
        Err(e) => return Err(e),
    };
    let secs = out.elapsed_s;
    if out.interrupted {
        fsutil::eprint_line(&format!(
            "interrupted at step {}; saved to {}. Continue with: {again}",
            out.steps,
            run_dir.display(),
        ));
        std::process::exit(130);
    }
    if let Some(r) = &out.last {
        let kept = match &out.best {
            Some(b) => format!(
                "; kept the best validation checkpoint (step {}: test accuracy {:.4}, macro-F1 {:.4})",
                out.best_step, b.test_accuracy, b.test_macro_f1
            ),
            None => String::new(),
        };
        fsutil::eprint_line(&format!(
            "done: {} steps in {:.0}m {:.0}s; last evaluation: test accuracy {:.4}, macro-F1 {:.4}{kept} → {}",
            out.steps,
            (secs / 60.0).floor(),
            secs % 60.0,
            r.test_accuracy,
            r.test_macro_f1,
            run_dir.display()
        ));
    }
    Ok(())
}

/// The config of a run that `--resume` can continue; refuses an imported model, a run without a
/// saved state and a finished run.
fn check_resumable(r: &std::path::Path) -> Result<RunConfig> {
    let cfg = checkpoint::load_config(r)?;
    if cfg.training.is_none() {
        bail!(
            "{} holds an imported model, not a training run",
            r.display()
        );
    }
    if !train::has_state(r) {
        bail!(
            "cannot resume {}: it holds no saved training state (the run stopped before its first save); start it again with --out {}",
            r.display(),
            r.display()
        );
    }
    if train::is_finished(r)? {
        bail!(
            "run {} has already finished; start a new one with --out",
            r.display()
        );
    }
    Ok(cfg)
}

/// Refuses an `--out` that is a file or already holds a model or a run. The directory of a
/// training run that stopped before its first complete save (config.json, maybe a model, no
/// resume state, and [`fsutil::UNSAVED_MARK`]) is reused, and so is one with only config.json.
fn check_new_run_dir(out: &std::path::Path) -> Result<()> {
    refuse_file_as_out_dir(out)?;
    if train::has_state(out) {
        if train::is_finished(out).unwrap_or(false) {
            bail!(
                "{} already holds a finished run; use another --out",
                out.display()
            );
        }
        bail!(
            "{} already holds a run; use --resume {} or another --out",
            out.display(),
            out.display()
        );
    }
    // A model without a training state is kept, unless the training that wrote it was cut short
    // before its first complete save (it left the mark).
    if out.join(checkpoint::MODEL_FILE).exists() && !out.join(fsutil::UNSAVED_MARK).exists() {
        bail!("{} already holds a model; use another --out", out.display());
    }
    Ok(())
}

/// An `--out` directory that exists as a file is an error (creating it would fail obscurely).
fn refuse_file_as_out_dir(out: &std::path::Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("--out {} is a file, not a directory", out.display());
    }
    Ok(())
}

/// `p` as one shell word: quoted when it holds anything but safe characters, and a relative
/// path starting with `-` prefixed with `./` so that it is not read as an option.
fn shell_word(p: &std::path::Path) -> String {
    let mut s = p.display().to_string();
    if s.starts_with('-') {
        s.insert_str(0, "./");
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// eval
// ---------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directory (from `train` or `import`).
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    #[command(flatten)]
    pub source: DataSourceArgs,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    set_threads(threads_arg(a.threads)?)?;
    let m = load_run(&a.model)?;
    let (dir, ds) = datasets::open(a.source.data.as_deref(), !a.source.no_verify)?;
    datasets::check_data(&ds, &m.config, &dir)?;
    let lists = datasets::split(&ds, &m.config.split)?;
    let test = encode(&lists.test)?;
    let mut firing = FiringStats::default();
    let probs = predict_probs(&m.model, &m.params, &test.seqs, Some(&mut firing))?;
    let c = m.config.categories.len();
    let s = score(&argmaxes(&probs, c), &test.labels, c);
    let random_guess = 1.0 / c as f64;
    let (maj_class, maj_n) = test
        .per_class
        .iter()
        .enumerate()
        .max_by_key(|(_, &n)| n)
        .map(|(i, &n)| (i, n))
        .unwrap_or((0, 0));
    let majority = maj_n as f64 / test.len().max(1) as f64;
    let svg = plots::accuracy_bar_svg(s.accuracy as f32, random_guess as f32)
        .map_err(anyhow::Error::msg)?;
    let plot = a.model.join("TestAccuracy.svg");
    // The figure is a by-product: a read-only or full run directory must not stop the report.
    let plot_note = match plots::save_svg(&plot, &svg) {
        Ok(()) => format!("wrote {}", plot.display()),
        Err(e) => {
            eprintln!("warning: {e}");
            String::new()
        }
    };
    let rates = firing.rates();
    if a.json {
        let per: serde_json::Map<String, serde_json::Value> = m
            .config
            .categories
            .iter()
            .zip(&s.per_category)
            .map(|(name, p)| {
                (
                    name.clone(),
                    json!({"accuracy": p.accuracy, "precision": p.precision, "f1": p.f1, "n": p.n}),
                )
            })
            .collect();
        let fr: serde_json::Map<String, serde_json::Value> =
            rates.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        println!(
            "{}",
            json!({
                "accuracy": s.accuracy, "macro_f1": s.macro_f1, "random_guess": random_guess,
                "majority_baseline": majority, "majority_category": m.config.categories[maj_class],
                "n_test": s.n, "split": m.config.split.kind, "per_category": per, "firing_rates": fr,
            })
        );
    } else {
        println!(
            "Test accuracy: {:.3}, Random guess: {:.3}",
            s.accuracy, random_guess
        );
        println!(
            "Majority baseline (always {}): {:.3}",
            m.config.categories[maj_class], majority
        );
        println!(
            "Macro-F1: {:.3}   ({} test names, {} split)",
            s.macro_f1, s.n, m.config.split.kind
        );
        println!(
            "\n{:<12} {:>8} {:>9} {:>6} {:>6}",
            "language", "accuracy", "precision", "F1", "n"
        );
        for (name, p) in m.config.categories.iter().zip(&s.per_category) {
            println!(
                "{:<12} {:>8.3} {:>9.3} {:>6.3} {:>6}",
                name, p.accuracy, p.precision, p.f1, p.n
            );
        }
        println!("\nmean firing rate over the test set:");
        for (k, v) in &rates {
            println!("  {k:<12} {v:.3}");
        }
        if !plot_note.is_empty() {
            println!("\n{plot_note}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// predict
// ---------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// How many languages to show per name.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// One JSON object per name per line.
    #[arg(long)]
    pub json: bool,
    /// Names (default: one per line on stdin, or an interactive prompt on a terminal).
    pub names: Vec<String>,
}

pub fn predict(a: PredictArgs) -> Result<()> {
    let m = load_run(&a.model)?;
    let c = m.config.categories.len();
    if a.top == 0 || a.top > c {
        bail!("--top must be between 1 and {c}");
    }
    let stdin = std::io::stdin();
    let mut failed = 0usize;
    if !a.names.is_empty() {
        failed += answer(&m, &a, &a.names)?;
    } else if !stdin.is_terminal() {
        // Line by line, so that one line that is not UTF-8 fails alone. From a pipe, the names
        // that have arrived are answered whenever the next read would wait (`tail -f names |
        // surnames predict …` answers each at once, `cat names |` still gets full batches);
        // from a file, all at once.
        let streaming = !stdin_is_file();
        let mut reader = std::io::BufReader::with_capacity(1 << 16, stdin.lock());
        let mut names = Vec::new();
        for i in 0.. {
            let mut line = Vec::new();
            if reader
                .read_until(b'\n', &mut line)
                .context("cannot read stdin")?
                == 0
            {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            match String::from_utf8(line) {
                Ok(n) => {
                    let n = n.trim_end_matches('\r');
                    if !n.trim().is_empty() {
                        names.push(n.to_string());
                    }
                }
                Err(_) => {
                    eprintln!("error: line {} of stdin is not UTF-8 text", i + 1);
                    failed += 1;
                }
            }
            let waiting = reader.buffer().is_empty();
            if streaming && !names.is_empty() && (waiting || names.len() >= 128) {
                failed += answer(&m, &a, &names)?;
                names.clear();
            }
        }
        failed += answer(&m, &a, &names)?;
    } else {
        loop {
            eprint!("Please input a surname to predict its language origin (empty line to quit): ");
            std::io::stderr().flush().ok();
            let mut bytes = Vec::new();
            if stdin
                .lock()
                .read_until(b'\n', &mut bytes)
                .context("cannot read stdin")?
                == 0
            {
                break;
            }
            let Ok(line) = String::from_utf8(bytes) else {
                eprintln!("error: that line is not UTF-8 text");
                continue;
            };
            let name = line.trim_end_matches(['\n', '\r']).to_string();
            if name.trim().is_empty() {
                break;
            }
            // Interactive: the error was shown for that name; the session goes on and ends well.
            answer(&m, &a, &[name])?;
        }
    }
    if failed > 0 {
        bail!(
            "{failed} name(s) could not be read (no letters left after normalisation, too long, or not UTF-8)"
        );
    }
    Ok(())
}

/// Whether stdin is a regular file (`< names.txt`), not a pipe, socket or terminal.
fn stdin_is_file() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsFd;
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| std::fs::File::from(fd).metadata().ok())
            .is_some_and(|m| m.is_file())
    }
    #[cfg(not(unix))]
    true
}

/// A name for a message: quoted, cut after 40 characters.
fn short(raw: &str) -> String {
    if raw.chars().count() <= 40 {
        format!("{raw:?}")
    } else {
        format!("{:?}…", raw.chars().take(40).collect::<String>())
    }
}

/// Predicts and prints; returns how many names had nothing left to predict on.
fn answer(m: &LoadedModel, a: &PredictArgs, names: &[String]) -> Result<usize> {
    let mut ok: Vec<(usize, String)> = Vec::new();
    let mut failed = 0;
    for (i, raw) in names.iter().enumerate() {
        // Spaces are letters of the alphabet, but not at either end of a name.
        let n = surnames_data::normalise(raw.trim());
        if !n.dropped.is_empty() {
            let d: String = n.dropped.iter().collect();
            eprintln!("warning: {raw:?}: ignored characters outside the alphabet: {d:?}");
        }
        let letters = n.text.chars().count();
        if n.text.is_empty() {
            eprintln!("error: {raw:?}: no letters of the alphabet left to predict on");
            failed += 1;
        } else if letters > surnames_data::MAX_NAME_LETTERS {
            eprintln!(
                "error: name {} is {letters} letters long; at most {} are read",
                short(raw),
                surnames_data::MAX_NAME_LETTERS
            );
            failed += 1;
        } else {
            ok.push((i, n.text));
        }
    }
    let seqs: Vec<Vec<u32>> = ok
        .iter()
        .filter_map(|(_, t)| surnames_data::encode(t))
        .collect();
    let probs = predict_probs(&m.model, &m.params, &seqs, None)?;
    let c = m.config.categories.len();
    let mut out = std::io::stdout().lock();
    for (k, (i, text)) in ok.iter().enumerate() {
        let p = &probs[k * c..(k + 1) * c];
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&x, &y| p[y].total_cmp(&p[x]).then(x.cmp(&y)));
        order.truncate(a.top);
        if a.json {
            let preds: Vec<_> = order
                .iter()
                .map(|&j| json!({"category": m.config.categories[j], "probability": p[j]}))
                .collect();
            writeln!(
                out,
                "{}",
                json!({"name": names[*i], "normalised": text, "predictions": preds})
            )?;
        } else {
            writeln!(out, "\n> {}", names[*i])?;
            for &j in &order {
                writeln!(out, "({:.2}) {}", p[j], m.config.categories[j])?;
            }
        }
    }
    Ok(failed)
}

// ---------------------------------------------------------------------------------------------
// confusion
// ---------------------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct ConfusionArgs {
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    #[command(flatten)]
    pub source: DataSourceArgs,
    /// Random draws (language uniformly, then a name from all its names), as the tutorial.
    #[arg(long, default_value_t = 10_000, conflicts_with = "split")]
    pub samples: usize,
    /// Use every name of a split once instead (`test`, `train` or `all`).
    #[arg(long)]
    pub split: Option<String>,
    /// Reproduce the tutorial's normalisation bug (entry (i,j) divided by the sum of row j).
    #[arg(long)]
    pub python_normalisation: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (default: the run directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A CSV field, quoted (RFC 4180) when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Most random draws `confusion` makes (each is kept in memory).
const MAX_SAMPLES: usize = 10_000_000;

pub fn confusion(a: ConfusionArgs) -> Result<()> {
    set_threads(default_threads())?;
    // The options first: a typo should not wait for (or trigger) a download.
    if let Some(s) = a.split.as_deref() {
        if !["test", "train", "all"].contains(&s) {
            bail!("unknown --split '{s}' (expected test, train or all)");
        }
    } else if a.samples == 0 || a.samples > MAX_SAMPLES {
        bail!("--samples must be between 1 and {MAX_SAMPLES}");
    }
    if let Some(o) = &a.out {
        refuse_file_as_out_dir(o)?;
    }
    let m = load_run(&a.model)?;
    let (dir, ds) = datasets::open(a.source.data.as_deref(), !a.source.no_verify)?;
    datasets::check_data(&ds, &m.config, &dir)?;
    let lists = datasets::split(&ds, &m.config.split)?;
    let c = m.config.categories.len();
    let all: Vec<Vec<String>> = (0..c)
        .map(|k| {
            lists.train[k]
                .iter()
                .chain(&lists.val[k])
                .chain(&lists.test[k])
                .cloned()
                .collect()
        })
        .collect();
    let enc: Encoded = match a.split.as_deref() {
        Some("test") => encode(&lists.test)?,
        Some("train") => encode(&lists.train)?,
        Some(_) => encode(&all)?, // "all" (the options were checked above)
        None => {
            let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
            let mut draws = vec![Vec::new(); c];
            for _ in 0..a.samples {
                let k = rng.gen_range(0..c);
                if all[k].is_empty() {
                    continue;
                }
                let i = rng.gen_range(0..all[k].len());
                draws[k].push(all[k][i].clone());
            }
            encode(&draws)?
        }
    };
    let probs = predict_probs(&m.model, &m.params, &enc.seqs, None)?;
    let mut counts = vec![0f64; c * c];
    for (p, &y) in argmaxes(&probs, c).iter().zip(&enc.labels) {
        counts[y * c + p] += 1.0;
    }
    let row_sum = |i: usize| counts[i * c..(i + 1) * c].iter().sum::<f64>();
    let norm: Vec<f32> = (0..c * c)
        .map(|k| {
            let (i, j) = (k / c, k % c);
            let s = if a.python_normalisation {
                row_sum(j)
            } else {
                row_sum(i)
            };
            if s > 0.0 {
                (counts[k] / s) as f32
            } else {
                0.0
            }
        })
        .collect();
    let out = a.out.clone().unwrap_or_else(|| a.model.clone());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let names: Vec<String> = m.config.categories.iter().map(|c| csv_field(c)).collect();
    let mut csv = format!("true\\predicted,{}\n", names.join(","));
    for i in 0..c {
        let row: Vec<String> = norm[i * c..(i + 1) * c]
            .iter()
            .map(|v| format!("{v:.6}"))
            .collect();
        csv.push_str(&format!("{},{}\n", names[i], row.join(",")));
    }
    write_atomic(&out.join("confusion.csv"), csv.as_bytes())?;
    crate::npy::write_npy_f32(&out.join("confusion.npy"), &[c, c], &norm)?;
    let counts_i: Vec<i64> = counts.iter().map(|&x| x as i64).collect();
    crate::npy::write_npy_i64(&out.join("confusion_counts.npy"), &[c, c], &counts_i)?;
    let what = match a.split.as_deref() {
        Some(s) => format!("{s} split, {} names", enc.len()),
        None => format!("{} random draws", enc.len()),
    };
    let svg = plots::confusion_svg(
        &m.config.categories,
        &norm,
        &format!("Confusion matrix ({what})"),
    )
    .map_err(anyhow::Error::msg)?;
    plots::save_svg(&out.join("ConfusionMatrix.svg"), &svg)?;
    let mut off: Vec<(f32, usize, usize)> = (0..c * c)
        .filter(|k| k / c != k % c)
        .map(|k| (norm[k], k / c, k % c))
        .collect();
    off.sort_by(|x, y| y.0.total_cmp(&x.0));
    println!("confusion matrix over {what}; rows = true language, columns = predicted");
    println!("most confused:");
    for (v, i, j) in off.iter().take(5) {
        println!(
            "  {:<11} → {:<11} {:.3}",
            m.config.categories[*i], m.config.categories[*j], v
        );
    }
    println!(
        "wrote {}/confusion.csv, confusion.npy, confusion_counts.npy, ConfusionMatrix.svg",
        out.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// import / export
// ---------------------------------------------------------------------------------------------

/// The 18 languages of the official data, alphabetical.
pub fn official_categories() -> Vec<String> {
    let mut v: Vec<String> = surnames_data::OFFICIAL_SHA256
        .iter()
        .map(|(f, _)| f.trim_end_matches(".txt").to_string())
        .collect();
    v.sort();
    v
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A `Net.state_dict()` saved with `safetensors.torch.save_file`.
    #[arg(long, value_name = "FILE")]
    pub state_dict: PathBuf,
    #[arg(long, value_name = "RUN")]
    pub out: PathBuf,
    /// The weights come from the 2020 SpikingJelly (no cell-state cap). Files exported by this
    /// tool record the cap themselves.
    #[arg(long)]
    pub no_clamp: bool,
    /// Output order of the Python model, comma-separated (default: the order recorded by
    /// `export`, else the 18 languages alphabetically; the Python script uses its
    /// directory-listing order). The run stores the outputs in alphabetical order.
    #[arg(long, value_delimiter = ',')]
    pub categories: Option<Vec<String>>,
}

/// What the Python `Net.forward` must hand to `fc` for a model whose readout is not the
/// tutorial's `output[-1]` (`output, (h_n, c_n)` as SpikingJelly returns them; the final states
/// are ordered forward layers first, then reverse layers).
fn python_readout(model: &ModelSpec) -> Option<String> {
    let (l, h) = (model.num_layers, model.hidden_size);
    match (model.readout.as_str(), model.bidirectional) {
        ("mean", _) => Some("output.mean(0) (one name per call, no padding)".into()),
        ("final", true) => Some(format!(
            "torch.cat([output[-1, :, :{h}], output[0, :, {h}:]], -1)"
        )),
        ("cell", false) => Some(format!("c_n[{}]", l - 1)),
        ("cell", true) => Some(format!(
            "torch.cat([c_n[{}], c_n[{}]], -1)",
            l - 1,
            2 * l - 1
        )),
        _ => None,
    }
}

/// LSTM cells have a cell state for `--readout cell` to read.
fn has_cell_state(cell: &str) -> bool {
    spiking_rnn::CellKind::parse(cell).is_some_and(|k| k.states() == 2)
}

pub fn import(a: ImportArgs) -> Result<()> {
    let bytes = std::fs::read(&a.state_dict)
        .with_context(|| format!("cannot read {}", a.state_dict.display()))?;
    refuse_file_as_out_dir(&a.out)?;
    if a.out.join(checkpoint::CONFIG_FILE).exists() || a.out.join(checkpoint::MODEL_FILE).exists() {
        bail!(
            "{} already holds a model or a run; import into another --out",
            a.out.display()
        );
    }
    let m = checkpoint::import_state_dict(
        &bytes,
        &a.state_dict.display().to_string(),
        a.categories.clone(),
        a.no_clamp.then_some(false),
        official_categories(),
    )?;
    save_run(&a.out, &m.config, &m.model, &m.params)?;
    println!(
        "imported {}{} (hidden {}, {} layer(s){}, clamp {}) → {}",
        a.state_dict.display(),
        match m.config.model.members {
            1 => String::new(),
            n => format!(": {n} networks"),
        },
        m.config.model.hidden_size,
        m.config.model.num_layers,
        if m.config.model.bidirectional {
            ", bidirectional"
        } else {
            ""
        },
        if m.config.model.clamp_cell {
            "on"
        } else {
            "off"
        },
        a.out.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long, value_name = "RUN")]
    pub model: PathBuf,
    /// Where to write the state_dict (`.safetensors`).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn export(a: ExportArgs) -> Result<()> {
    let m = load_run(&a.model)?;
    // Never over an existing file of a run directory (its config, weights, state, metrics...).
    let in_run_dir = a
        .out
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                p
            }
        })
        .is_some_and(|p| p.join(checkpoint::CONFIG_FILE).exists());
    if in_run_dir && a.out.exists() {
        bail!(
            "--out {} would overwrite a file of a run directory; choose another name",
            a.out.display()
        );
    }
    write_atomic(
        &a.out,
        &checkpoint::export_bytes(&m.config, &m.model, &m.params)?,
    )?;
    let members = m.config.model.members;
    let contents = match members {
        1 => format!(
            "{} tensors; load with safetensors.torch.load_file and Net.load_state_dict",
            m.model.layout.specs.len()
        ),
        n => format!(
            "{n} networks of {} tensors, numbered as in torch.nn.ModuleList: load with safetensors.torch.load_file and nn.ModuleList([Net() for _ in range({n})]).load_state_dict; the model's output is the mean of the networks' softmax outputs",
            m.model.layout.specs.len()
        ),
    };
    println!(
        "wrote {} ({contents}; outputs in this order: {})",
        a.out.display(),
        m.config.categories.join(",")
    );
    if let Some(expr) = python_readout(&m.config.model) {
        println!(
            "note: this model reads {expr}; the tutorial's Net reads output[-1], so change its forward to match (output, (h_n, c_n) = self.lstm(x))",
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// conformance, bench
// ---------------------------------------------------------------------------------------------

/// Checks every file; a file that cannot be read or parsed is reported and the others are still
/// checked. Fails if any case failed or any file was unusable.
pub fn conformance(files: &[PathBuf]) -> Result<()> {
    let mut failed = 0usize;
    let mut total = 0usize;
    let mut unusable: Vec<String> = Vec::new();
    for f in files {
        println!("# {}", f.display());
        let reports = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {}", f.display()))
            .and_then(|text| {
                crate::conformance::check_file(&text).with_context(|| format!("{}", f.display()))
            });
        match reports {
            Ok(reports) => {
                for r in &reports {
                    println!("{}", r.line());
                    total += 1;
                    failed += usize::from(!r.pass());
                }
            }
            Err(e) => {
                let e = format!("{e:#}").replace('\n', " ");
                println!("ERROR: {e}");
                unusable.push(e);
            }
        }
    }
    println!(
        "{} passed, {} failed{}",
        total - failed,
        failed,
        if unusable.is_empty() {
            String::new()
        } else {
            format!(", {} file(s) unusable", unusable.len())
        }
    );
    match (failed, unusable.as_slice()) {
        (0, []) => Ok(()),
        (0, [one]) => bail!("{one}"),
        (0, _) => bail!("{} files could not be checked", unusable.len()),
        (_, []) => bail!("{failed} of {total} conformance cases failed"),
        _ => bail!(
            "{failed} of {total} conformance cases failed, and {} file(s) could not be checked",
            unusable.len()
        ),
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Seconds per measurement round.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Rounds per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Threads for the batched measurements (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Only the measurements whose key contains this text (e.g. `train_b1`), or exactly the key
    /// it names.
    #[arg(long)]
    pub only: Option<String>,
    /// Names data for `train_batched_names_per_s` (default: $SURNAMES_DATA; skipped if neither).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

pub fn bench(a: BenchArgs) -> Result<()> {
    if !(a.seconds > 0.0 && a.seconds <= 3600.0) || a.rounds == 0 || a.rounds > 1000 {
        bail!("--seconds must be in (0, 3600] and --rounds in 1..=1000");
    }
    let threads = threads_arg(a.threads)?;
    let data_dir = a.data.clone().or_else(|| {
        std::env::var_os(surnames_data::ENV_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let (names, test_names) = match data_dir {
        Some(d) => {
            let ds = surnames_data::load_dir(&d)?;
            let split = surnames_data::tutorial_split(&ds);
            let enc = encode(&split.train)?;
            (
                Some((enc.seqs, enc.labels)),
                Some(encode(&split.test)?.seqs),
            )
        }
        None => (None, None),
    };
    let opts = crate::bench::BenchOptions {
        rounds: a.rounds,
        budget: Duration::from_secs_f64(a.seconds),
        threads,
        names,
        test_names,
        only: a.only,
    };
    let results = crate::bench::run(&opts)?;
    if results.is_empty() {
        bail!(
            "the measurements selected by --only need the names data (--data DIR or SURNAMES_DATA)"
        );
    }
    let machine = machine_description();
    if a.json {
        let mut obj = serde_json::Map::new();
        for r in &results {
            obj.insert(r.key.clone(), json!(r.value));
        }
        obj.insert("machine".into(), json!(machine));
        obj.insert("details".into(), serde_json::to_value(&results)?);
        println!("{}", serde_json::Value::Object(obj));
    } else {
        println!("{machine}");
        for r in &results {
            println!(
                "{:<28} {:>12.0} {:<8} (median of {}, {} thread(s))",
                r.key,
                r.value,
                r.unit,
                r.rounds.len(),
                r.threads
            );
        }
    }
    Ok(())
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpu}, {} logical cores", default_threads())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CSV fields with commas or quotes are quoted (a language file `Serbo,Croatian.txt`).
    #[test]
    fn csv_fields() {
        assert_eq!(csv_field("Czech"), "Czech");
        assert_eq!(csv_field("Serbo,Croatian"), "\"Serbo,Croatian\"");
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
    }

    /// The resume hint's paths paste back as one argument each, never as an option.
    #[test]
    fn shell_words() {
        let w = |s: &str| shell_word(std::path::Path::new(s));
        assert_eq!(w("runs/a-1"), "runs/a-1");
        assert_eq!(w("-dash"), "./-dash");
        assert_eq!(w("my run"), "'my run'");
        assert_eq!(w("it's"), "'it'\\''s'");
        assert_eq!(w("$HOME`x`"), "'$HOME`x`'");
    }

    fn config(preset: &str, edit: impl FnOnce(&mut TrainArgs)) -> RunConfig {
        let mut a = TrainArgs {
            preset: Some(preset.into()),
            ..Default::default()
        };
        edit(&mut a);
        let categories = (0..18).map(|k| format!("L{k:02}")).collect();
        build_run_config(&a, categories, 3200).unwrap()
    }

    #[test]
    fn presets_choose_the_cell_and_the_epochs() {
        let tutorial = config("tutorial", |_| {});
        assert!(tutorial.model.clamp_cell);
        assert_eq!(tutorial.training.as_ref().unwrap().steps, 1_000_000);
        assert!(!config("tutorial", |a| a.no_clamp = true).model.clamp_cell);

        // fast: the 2020 cell unless --clamp; 100 batches of 32 per epoch here
        let fast = config("fast", |_| {});
        assert!(!fast.model.clamp_cell);
        assert_eq!(fast.model.members, 5);
        assert_eq!(tutorial.model.members, 1);
        assert_eq!(config("fast", |a| a.members = Some(1)).model.members, 1);
        assert_eq!(config("tutorial", |a| a.members = Some(3)).model.members, 3);
        assert_eq!(fast.training.as_ref().unwrap().steps, 4 * 100);
        assert!(config("fast", |a| a.clamp = true).model.clamp_cell);
        let dedup = config("fast", |a| a.split = Some("dedup".into()));
        assert_eq!(dedup.training.as_ref().unwrap().steps, 12 * 100);
        assert_eq!(fast.training.as_ref().unwrap().class_weights, "sqrt");
        assert_eq!(dedup.training.as_ref().unwrap().class_weights, "0.3");
        let told = config("fast", |a| {
            a.split = Some("dedup".into());
            a.class_weights = Some("none".into());
        });
        assert_eq!(told.training.unwrap().class_weights, "none");
        let short = config("fast", |a| {
            a.split = Some("dedup".into());
            a.epochs = Some(2.0);
        });
        assert_eq!(short.training.as_ref().unwrap().steps, 2 * 100);
    }

    #[test]
    fn the_fast_preset_ignores_case_unless_told_not_to() {
        let ignores = |preset: &str, edit: fn(&mut TrainArgs)| {
            config(preset, edit).training.unwrap().ignore_case
        };
        assert!(ignores("fast", |_| {}));
        assert!(!ignores("fast", |a| a.keep_case = true));
        assert!(!ignores("tutorial", |_| {}));
        assert!(ignores("tutorial", |a| a.ignore_case = true));
    }

    #[test]
    fn the_validation_pick_needs_a_validation_split() {
        let fast = config("fast", |_| {});
        assert_eq!(fast.split.val_from, "random");
        let tail = config("fast", |a| {
            a.val_fraction = Some(0.2);
            a.val_from = Some("tail".into());
        });
        assert_eq!(tail.split.val_from, "tail");
        let alone = TrainArgs {
            val_from: Some("tail".into()),
            ..Default::default()
        };
        let err = build_run_config(&alone, vec!["a".into(), "b".into()], 10).unwrap_err();
        assert!(err.to_string().contains("needs --val-fraction"), "{err}");
    }

    #[test]
    fn the_fast_preset_reads_the_cell_state_of_lstm_cells_only() {
        let readout = |preset: &str, cell: &str, readout: Option<&str>| {
            config(preset, |a| {
                a.cell = Some(cell.into());
                a.readout = readout.map(String::from);
            })
            .model
            .readout
        };
        assert_eq!(readout("fast", "lstm", None), "cell");
        assert_eq!(readout("fast", "ann-lstm", None), "cell");
        assert_eq!(readout("fast", "gru", None), "last");
        assert_eq!(readout("fast", "rnn", None), "last");
        assert_eq!(readout("fast", "lstm", Some("last")), "last");
        assert_eq!(readout("tutorial", "lstm", None), "last");
        assert_eq!(readout("tutorial", "lstm", Some("cell")), "cell");
        let gru = TrainArgs {
            cell: Some("gru".into()),
            readout: Some("cell".into()),
            ..Default::default()
        };
        let err = build_run_config(&gru, vec!["a".into(), "b".into()], 10).unwrap_err();
        assert!(err.to_string().contains("cell state"), "{err}");
    }

    #[test]
    fn export_names_what_the_python_forward_must_read() {
        let mut m = ModelSpec::tutorial(18);
        assert_eq!(python_readout(&m), None);
        m.num_layers = 2;
        m.readout = "cell".into();
        assert_eq!(python_readout(&m).unwrap(), "c_n[1]");
        m.bidirectional = true;
        assert_eq!(
            python_readout(&m).unwrap(),
            "torch.cat([c_n[1], c_n[3]], -1)"
        );
        m.readout = "final".into();
        assert_eq!(
            python_readout(&m).unwrap(),
            "torch.cat([output[-1, :, :256], output[0, :, 256:]], -1)"
        );
    }
}
