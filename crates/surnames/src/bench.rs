//! Throughput of the tutorial model (I=58, H=256, 18 classes, MSE, Adam, spiking LSTM, clamp on).
//! Each measurement runs for a fixed wall-time budget several times; the median is reported.
//!
//! The training measurements do the whole step (forward, backward, Adam over every parameter)
//! but apply the update to a copy of the weights, so that every round measures the same model,
//! the one at initialisation. Training the measured model changed how it fires, each round was
//! slower than the one before (`train_b64`: 6,448 → 4,547 seqs/s over six rounds), and the
//! median depended on `--rounds` and `--seconds`.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use spiking_rnn::optim::Adam;
use spiking_rnn::{CellKind, ClassifierConfig, LossKind, RnnConfig, SeqClassifier};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub key: String,
    /// Median over the rounds.
    pub value: f64,
    pub unit: String,
    pub rounds: Vec<f64>,
    pub threads: usize,
}

pub fn tutorial_model(hidden: usize) -> Result<SeqClassifier> {
    Ok(SeqClassifier::new(ClassifierConfig::new(
        RnnConfig::new(CellKind::Lstm, surnames_data::N_LETTERS, hidden),
        18,
    ))?)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Runs `step` (which processes `items` items) repeatedly for `budget`, `rounds` times.
fn measure(
    rounds: usize,
    budget: Duration,
    items: usize,
    mut step: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..3 {
        step()?; // warm-up: caches, allocations, thread pool
    }
    let mut out = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let (mut steps, mut n) = (0usize, 0usize);
        // At least one step, however small the budget.
        while steps == 0 || start.elapsed() < budget {
            step()?;
            steps += 1;
            n += items;
        }
        out.push(n as f64 / start.elapsed().as_secs_f64());
    }
    Ok(out)
}

fn random_names(rng: &mut ChaCha8Rng, n: usize, len: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|_| (0..len).map(|_| rng.gen_range(0..58)).collect())
        .collect()
}

/// What to measure.
pub struct BenchOptions {
    pub rounds: usize,
    pub budget: Duration,
    pub threads: usize,
    /// Real training names (letter indices, labels) for `train_batched_names_per_s`.
    pub names: Option<(Vec<Vec<u32>>, Vec<usize>)>,
    /// Real test names for the evaluation measurements.
    pub test_names: Option<Vec<Vec<u32>>>,
    /// Only the measurements whose key contains this text.
    pub only: Option<String>,
}

/// Every key the benchmark can measure (the last three need the names data).
pub const KEYS: [&str; 8] = [
    "train_b1_steps_per_s",
    "adam_steps_per_s",
    "adam_in_cache_steps_per_s",
    "infer_b1_seqs_per_s",
    "train_b64_seqs_per_s",
    "train_batched_names_per_s",
    "eval_test_names_per_s",
    "eval_test_names_per_s_no_prefix_sharing",
];

/// Names per step of `train_batched_names_per_s` (and so the fewest training names it needs).
const NAMES_BATCH: usize = 64;

pub fn run(opts: &BenchOptions) -> Result<Vec<BenchResult>> {
    if let Some(o) = &opts.only {
        if !KEYS.iter().any(|k| k.contains(o.as_str())) {
            bail!(
                "--only {o:?} matches no measurement (keys: {})",
                KEYS.join(", ")
            );
        }
    }
    let model = tutorial_model(256)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut results = Vec::new();
    let mut push = |key: &str, rounds: Vec<f64>, unit: &str, threads: usize| {
        results.push(BenchResult {
            key: key.into(),
            value: median(&rounds),
            unit: unit.into(),
            rounds,
            threads,
        });
    };
    let kind = LossKind::Mse;

    // `--only` selects the keys containing its text, or exactly the key it names.
    let want = |key: &str| match opts.only.as_deref() {
        Some(o) if KEYS.contains(&o) => key == o,
        Some(o) => key.contains(o),
        None => true,
    };
    // Checked before any measurement, so that no results are thrown away.
    let batched_names = opts.names.as_ref().filter(|(n, _)| n.len() >= NAMES_BATCH);
    if let Some((names, _)) = &opts.names {
        if names.len() < NAMES_BATCH && want("train_batched_names_per_s") {
            // An error only when it is the one measurement asked for.
            if KEYS.iter().filter(|k| want(k)).count() == 1 {
                bail!(
                    "train_batched_names_per_s needs at least {NAMES_BATCH} training names; the data has {}",
                    names.len()
                );
            }
            eprintln!(
                "warning: skipping train_batched_names_per_s: the data has {} training names, fewer than one batch of {NAMES_BATCH}",
                names.len()
            );
        }
    }
    // Batch 1, T = 7, one thread: the tutorial's training step.
    if want("train_b1_steps_per_s") {
        // Adam updates a copy (module doc).
        let params = model.init_params(1);
        let mut updated = params.clone();
        let mut adam = Adam::new(params.len(), 1e-4);
        let mut ws = vec![model.workspace(0)];
        let names = random_names(&mut rng, 64, 7);
        let mut i = 0;
        let r = measure(opts.rounds, opts.budget, 1, || {
            let seq: &[u32] = &names[i % names.len()];
            model.batch_grad(&params, &[seq], &[i % 18], &kind, &mut ws)?;
            ws[0].apply_adam(&mut adam, &mut updated, 1, None)?;
            i += 1;
            Ok(())
        })?;
        push("train_b1_steps_per_s", r, "steps/s", 1);
    }
    // The optimiser step alone (batch-1 training's floor): Adam over every parameter, 1 thread.
    // Then the same update over a 32,768-parameter slice, whose state (512 KB) stays in the L2
    // cache, in full-model steps/s: the difference is what streaming the whole state from
    // beyond L2 costs. (Both move 32 bytes per parameter: p, g, m, v read and written.)
    let total = model.num_params();
    for (key, n) in [
        ("adam_steps_per_s", total),
        ("adam_in_cache_steps_per_s", 32_768),
    ] {
        if !want(key) {
            continue;
        }
        let mut params = model.init_params(1)[..n].to_vec();
        let mut grads = vec![0.0f32; n];
        let mut adam = Adam::new(n, 1e-4);
        let r = measure(opts.rounds, opts.budget, 1, || {
            grads[..1024].fill(1e-3);
            adam.step_and_zero_grads(&mut params, &mut grads);
            Ok(())
        })?;
        let scaled = r.iter().map(|x| x * n as f64 / total as f64).collect();
        push(key, scaled, "steps/s", 1);
    }
    // Batch 1 inference, one thread.
    if want("infer_b1_seqs_per_s") {
        let params = model.init_params(1);
        let mut ws = model.workspace(0);
        let names = random_names(&mut rng, 64, 7);
        let mut i = 0;
        let r = measure(opts.rounds, opts.budget, 1, || {
            model.forward(&params, &[&names[i % names.len()]], &mut ws, false)?;
            i += 1;
            Ok(())
        })?;
        push("infer_b1_seqs_per_s", r, "seqs/s", 1);
    }
    // Batch 64, T = 10, all threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()?;
    if want("train_b64_seqs_per_s") {
        // Adam updates a copy (module doc).
        let params = model.init_params(1);
        let mut updated = params.clone();
        let mut adam = Adam::new(params.len(), 1e-4);
        let mut ws: Vec<_> = (0..opts.threads)
            .map(|k| model.workspace(k as u64))
            .collect();
        let names = random_names(&mut rng, 64, 10);
        let refs: Vec<&[u32]> = names.iter().map(|n| n.as_slice()).collect();
        let labels: Vec<usize> = (0..64).map(|i| i % 18).collect();
        let r = pool.install(|| {
            measure(opts.rounds, opts.budget, 64, || {
                model.batch_grad(&params, &refs, &labels, &kind, &mut ws)?;
                ws[0].apply_adam(&mut adam, &mut updated, opts.threads, None)?;
                Ok(())
            })
        })?;
        push("train_b64_seqs_per_s", r, "seqs/s", opts.threads);
    }
    // Real names, batches of 64 with their natural lengths, all threads.
    if let Some((names, labels)) = batched_names.filter(|_| want("train_batched_names_per_s")) {
        // Adam updates a copy (module doc).
        let params = model.init_params(1);
        let mut updated = params.clone();
        let mut adam = Adam::new(params.len(), 1e-4);
        let mut ws: Vec<_> = (0..opts.threads)
            .map(|k| model.workspace(k as u64))
            .collect();
        let ce = LossKind::CrossEntropy {
            class_weights: None,
        };
        let mut order: Vec<usize> = (0..names.len()).collect();
        let mut pos = 0;
        let r = pool.install(|| {
            measure(opts.rounds, opts.budget, NAMES_BATCH, || {
                if pos + NAMES_BATCH > order.len() {
                    pos = 0;
                    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
                }
                let idx = &order[pos..pos + NAMES_BATCH];
                pos += NAMES_BATCH;
                let refs: Vec<&[u32]> = idx.iter().map(|&i| names[i].as_slice()).collect();
                let ys: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
                model.batch_grad(&params, &refs, &ys, &ce, &mut ws)?;
                ws[0].apply_adam(&mut adam, &mut updated, opts.threads, None)?;
                Ok(())
            })
        })?;
        push("train_batched_names_per_s", r, "names/s", opts.threads);
    }
    // Whole test-set evaluations (the tutorial does 1,000 of them), all threads.
    if let Some(test) = opts.test_names.as_ref() {
        let params = model.init_params(1);
        let refs: Vec<&[u32]> = test.iter().map(|n| n.as_slice()).collect();
        if want("eval_test_names_per_s") {
            let r = pool.install(|| {
                measure(opts.rounds, opts.budget, test.len(), || {
                    model.predict_prefix_shared(&params, &refs)?;
                    Ok(())
                })
            })?;
            push("eval_test_names_per_s", r, "names/s", opts.threads);
        }
        if want("eval_test_names_per_s_no_prefix_sharing") {
            let r = pool.install(|| {
                measure(opts.rounds, opts.budget, test.len(), || {
                    crate::evaluate::predict(&model, &params, test, None)?;
                    Ok(())
                })
            })?;
            push(
                "eval_test_names_per_s_no_prefix_sharing",
                r,
                "names/s",
                opts.threads,
            );
        }
    }
    Ok(results)
}
