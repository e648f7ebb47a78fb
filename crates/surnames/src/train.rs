//! Training: the tutorial's protocol (one name per step, class-uniform sampling, MSE, Adam 1e-4)
//! and batched training (variable-length mini-batches over all cores) with the usual choices.
//! Evaluates every `eval_every` steps, prints the tutorial's line above a progress bar, and on
//! completion or Ctrl-C writes the run directory; `resume` carries on from the saved state.

use crate::checkpoint::{
    bytes_to_tensors, read_metadata, save_run, tensors_to_bytes_with_metadata, Tensors,
};
use crate::config::RunConfig;
use crate::datasets::{lists_json, Encoded, Lists};
use crate::evaluate::{argmaxes, predict_shared, score, Scores};
use crate::fsutil::write_atomic;
use crate::npy::write_npy_f64;
use crate::plots::{save_svg, training_process_svg};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use spiking_rnn::optim::{Adam, WeightDecay};
use spiking_rnn::{LossKind, SeqClassifier};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use surnames_data::N_LETTERS;

/// Where runs of earlier versions kept the training state (now inside [`RESUME_FILE`]).
pub const STATE_FILE: &str = "train_state.json";
pub const RESUME_FILE: &str = "resume.safetensors";
/// The metadata key of [`RESUME_FILE`] that holds the training state as JSON.
const STATE_KEY: &str = "train_state";
/// By default a run saves what resuming needs at the first evaluation after this much time, so
/// that a crash or a kill loses at most this much training.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// One evaluation point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub step: u64,
    pub epoch: f64,
    pub lr: f32,
    pub avg_loss: f64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    pub test_macro_f1: f64,
    pub val_accuracy: Option<f64>,
    pub val_macro_f1: Option<f64>,
    pub elapsed_s: f64,
}

/// Where the sampler's random stream stands (ChaCha8: seed, stream and word position).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RngState {
    seed: [u8; 32],
    stream: u64,
    word_pos: String,
}

impl RngState {
    fn of(r: &ChaCha8Rng) -> Self {
        Self {
            seed: r.get_seed(),
            stream: r.get_stream(),
            word_pos: r.get_word_pos().to_string(),
        }
    }
    fn restore(&self) -> Result<ChaCha8Rng> {
        let mut r = ChaCha8Rng::from_seed(self.seed);
        r.set_stream(self.stream);
        r.set_word_pos(self.word_pos.parse().context("bad random-state position")?);
        Ok(r)
    }
}

/// Everything besides the parameters and Adam moments that resuming needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TrainState {
    step: u64,
    adam_step: u64,
    sampler_rng: RngState,
    worker_rngs: Vec<RngState>,
    shuffle_order: Vec<u32>,
    shuffle_pos: usize,
    window_loss: f64,
    window_correct: u64,
    window_count: u64,
    metrics: Vec<MetricRow>,
    best_score: Option<f64>,
    best_step: u64,
    evals_since_best: u32,
    elapsed_s: f64,
    finished: bool,
}

impl TrainState {
    /// Brings the bookkeeping up to date before a save: time, optimiser step, random streams.
    fn record(
        &mut self,
        elapsed_s: f64,
        adams: &[Adam],
        rng: &ChaCha8Rng,
        workers: &[Vec<spiking_rnn::classifier::Workspace>],
    ) {
        self.elapsed_s = elapsed_s;
        self.adam_step = adams.first().map_or(0, |a| a.step);
        self.sampler_rng = RngState::of(rng);
        // Network after network, each network's workers in order.
        self.worker_rngs = workers
            .iter()
            .flatten()
            .map(|w| RngState::of(&w.rng))
            .collect();
    }

    /// Rejects a state that this run cannot have saved (a damaged or edited resume file), before
    /// it can index out of bounds or mark the run finished without training.
    fn check(&self, steps: u64, n_train: usize) -> Result<()> {
        let bad = |what: &str| Err(anyhow::anyhow!("the training state is corrupt: {what}"));
        if self.step >= steps && !self.finished {
            return bad(&format!(
                "step {} is not below the run's {steps} steps",
                self.step
            ));
        }
        if self.step > steps {
            return bad(&format!(
                "step {} is beyond the run's {steps} steps",
                self.step
            ));
        }
        if self.adam_step != self.step {
            return bad(&format!(
                "{} optimiser steps for {} training steps",
                self.adam_step, self.step
            ));
        }
        if !(self.shuffle_order.is_empty() || self.shuffle_order.len() == n_train)
            || self.shuffle_pos > self.shuffle_order.len()
            || self.shuffle_order.iter().any(|&i| i as usize >= n_train)
        {
            return bad("the shuffled order does not fit the training names");
        }
        if self.metrics.iter().any(|r| r.step > self.step) || self.best_step > self.step {
            return bad("it holds evaluations after its own step");
        }
        Ok(())
    }
}

/// The data of a run, encoded.
pub struct TrainData {
    pub lists: Lists,
    pub train: Encoded,
    pub val: Encoded,
    pub test: Encoded,
}

/// Scores the test set on its own thread while training goes on. Test scores never feed back
/// into training, and the tutorial's 1,000 whole-test-set evaluations are ~15 % of a one-core
/// run, so the second core can take them. At most two parameter snapshots wait at a time.
struct BackgroundTest {
    jobs: Option<std::sync::mpsc::SyncSender<Vec<f32>>>,
    results: std::sync::mpsc::Receiver<Result<Scores>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pending: usize,
}

impl BackgroundTest {
    fn start(model: SeqClassifier, test: Encoded, classes: usize) -> Self {
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Vec<f32>>(1);
        let (result_tx, results) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            for params in job_rx {
                let scores = predict_shared(&model, &params, &test.seqs)
                    .map(|probs| score(&argmaxes(&probs, classes), &test.labels, classes));
                if result_tx.send(scores).is_err() {
                    break;
                }
            }
        });
        Self {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
            pending: 0,
        }
    }

    fn submit(&mut self, params: Vec<f32>) -> Result<()> {
        let jobs = self
            .jobs
            .as_ref()
            .context("test evaluation already closed")?;
        jobs.send(params)
            .map_err(|_| anyhow::anyhow!("the test evaluation thread stopped"))?;
        self.pending += 1;
        Ok(())
    }

    /// The next finished evaluation, in submission order; waits for it if `wait`.
    fn next(&mut self, wait: bool) -> Result<Option<Scores>> {
        if self.pending == 0 {
            return Ok(None);
        }
        let got = if wait {
            Some(
                self.results
                    .recv()
                    .map_err(|_| anyhow::anyhow!("the test evaluation thread stopped"))?,
            )
        } else {
            self.results.try_recv().ok()
        };
        match got {
            Some(r) => {
                self.pending -= 1;
                Ok(Some(r?))
            }
            None => Ok(None),
        }
    }
}

impl Drop for BackgroundTest {
    fn drop(&mut self) {
        self.jobs = None; // ends the thread's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the run ended.
pub struct Outcome {
    pub steps: u64,
    pub interrupted: bool,
    pub early_stopped: bool,
    pub last: Option<MetricRow>,
    pub best_step: u64,
    /// The evaluation of the kept checkpoint (with a validation split).
    pub best: Option<MetricRow>,
    pub elapsed_s: f64,
}

/// The seed of network `k` of an ensemble (network 0 is the run's own seed, so an ensemble's first
/// network is the network a one-network run with the same seed trains).
fn member_seed(seed: u64, k: u64) -> u64 {
    seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn lr_at(cfg: &crate::config::TrainConfig, step: u64) -> f32 {
    let base = cfg.lr;
    if step < cfg.warmup_steps {
        return base * (step + 1) as f32 / cfg.warmup_steps as f32;
    }
    let span = cfg.steps.saturating_sub(cfg.warmup_steps).max(1);
    let progress = ((step - cfg.warmup_steps) as f64 / span as f64).min(1.0);
    match cfg.schedule.as_str() {
        "cosine" => base * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32,
        "step" => {
            base * if progress >= 0.75 {
                0.01
            } else if progress >= 0.5 {
                0.1
            } else {
                1.0
            }
        }
        _ => base,
    }
}

/// The tutorial's draw: a language uniformly (among those with training names), then one of its
/// names uniformly. `starts[c]..starts[c + 1]` are language `c`'s names in the training set.
fn draw_class_uniform(rng: &mut ChaCha8Rng, nonempty: &[usize], starts: &[usize]) -> usize {
    let c = nonempty[rng.gen_range(0..nonempty.len())];
    rng.gen_range(starts[c]..starts[c + 1])
}

/// Whether `dir` holds a saved training state (a run that can be resumed or has finished).
pub fn has_state(dir: &Path) -> bool {
    dir.join(RESUME_FILE).exists() || dir.join(STATE_FILE).exists()
}

/// Whether the run in `dir` has done all its steps.
pub fn is_finished(dir: &Path) -> Result<bool> {
    let (bytes, what) = read_resume_file(dir)?;
    Ok(state_of(dir, &bytes, &what)?.finished)
}

/// Reads the resume checkpoint: its tensors, and the training state.
fn read_resume(dir: &Path) -> Result<(TrainState, Tensors)> {
    let (bytes, what) = read_resume_file(dir)?;
    Ok((
        state_of(dir, &bytes, &what)?,
        bytes_to_tensors(&bytes, &what)?,
    ))
}

/// The bytes of `dir`'s resume checkpoint, and its path for messages.
fn read_resume_file(dir: &Path) -> Result<(Vec<u8>, String)> {
    let path = dir.join(RESUME_FILE);
    let what = path.display().to_string();
    let bytes =
        std::fs::read(&path).with_context(|| format!("cannot resume: cannot read {what}"))?;
    Ok((bytes, what))
}

/// The training state of a resume checkpoint, from its metadata (only the header is decoded);
/// for runs saved by earlier versions, from `train_state.json`.
fn state_of(dir: &Path, bytes: &[u8], what: &str) -> Result<TrainState> {
    Ok(match read_metadata(bytes, what)?.remove(STATE_KEY) {
        Some(json) => serde_json::from_str(&json)
            .with_context(|| format!("cannot resume: the training state in {what} is corrupt"))?,
        None => {
            let legacy = dir.join(STATE_FILE);
            let text = std::fs::read_to_string(&legacy)
                .with_context(|| format!("cannot resume: {what} holds no training state"))?;
            serde_json::from_str(&text)
                .with_context(|| format!("cannot resume: {} is corrupt", legacy.display()))?
        }
    })
}

/// Writes the resume checkpoint in one atomic rename: parameters, Adam moments and (with a
/// validation split) the best parameters as tensors, the rest of the state as JSON in the
/// header. A crash or a second Ctrl-C while saving leaves the old checkpoint or the new one,
/// never new weights with an old state.
fn write_resume(
    dir: &Path,
    st: &TrainState,
    params: &[f32],
    adams: &[Adam],
    best: Option<&[f32]>,
) -> Result<()> {
    let n = params.len();
    let moments = |f: fn(&Adam) -> &Vec<f32>| adams.iter().flat_map(f).copied().collect();
    let mut tensors = vec![
        ("params".to_string(), vec![n], params.to_vec()),
        ("adam.m".to_string(), vec![n], moments(|a| &a.m)),
        ("adam.v".to_string(), vec![n], moments(|a| &a.v)),
    ];
    if let Some(b) = best {
        tensors.push(("best".to_string(), vec![n], b.to_vec()));
    }
    let metadata = [(STATE_KEY.to_string(), serde_json::to_string(st)?)].into();
    write_atomic(
        &dir.join(RESUME_FILE),
        &tensors_to_bytes_with_metadata(&tensors, Some(metadata))?,
    )?;
    // A state file of an earlier version would now be stale; and the run is saved.
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    let _ = std::fs::remove_file(dir.join(crate::fsutil::UNSAVED_MARK));
    Ok(())
}

/// Gives every capital letter the input weights of its small letter, in every network of
/// `params`. Trained with `ignore_case`, a model never reads the capitals' weights; tied, it
/// reads both cases the same way wherever it is used, with no setting to carry along.
fn tie_capitals(model: &SeqClassifier, params: &mut [f32]) {
    let per_network = model.num_params();
    for network in params.chunks_mut(per_network) {
        // The first layer's input weights are stored one row per letter (`[58, G·H]`).
        for spec in model.layout.specs.iter().filter(|s| {
            s.transposed && s.name.ends_with(".0.linear_ih.weight") && s.shape[1] == N_LETTERS
        }) {
            let rows = &mut network[spec.range()];
            let width = spec.shape[0];
            for letter in 0..N_LETTERS {
                let small = surnames_data::lowercase_index(letter);
                rows.copy_within(small * width..(small + 1) * width, letter * width);
            }
        }
    }
}

/// Saves everything: the model (the best validation checkpoint when there is a validation split)
/// with its config, metrics, arrays, lists and plot, then the resume checkpoint. The resume
/// state comes last so that a state marked finished always has its model and outputs beside it;
/// a save cut short leaves an older resume state, from which `--resume` redoes the steps since.
/// The model file comes before the larger resume file, so a nearly full disk still gets it.
#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    dir: &Path,
    cfg: &RunConfig,
    data: &TrainData,
    model: &SeqClassifier,
    st: &TrainState,
    params: &[f32],
    adams: &[Adam],
    best: Option<&[f32]>,
) -> Result<()> {
    let every = cfg.training.as_ref().map_or(1, |t| t.eval_every);
    let mut saved = std::borrow::Cow::Borrowed(best.unwrap_or(params));
    if cfg.training.as_ref().is_some_and(|t| t.ignore_case) {
        tie_capitals(model, saved.to_mut());
    }
    // (save_run creates the directory if it is gone.)
    save_run(dir, cfg, model, &saved)?;
    write_outputs(dir, cfg, data, &st.metrics, every)?;
    write_resume(dir, st, params, adams, best).with_context(|| {
        format!(
            "the model was saved to {}, but not the state to resume from",
            dir.join(crate::checkpoint::MODEL_FILE).display()
        )
    })
}

/// Trains, writing everything into `dir`. `resume`: continue from the state saved there.
/// `checkpoint_every`: the time between saves of the resume state during training (at the
/// first evaluation after it).
pub fn run(
    dir: &Path,
    cfg: &RunConfig,
    data: &TrainData,
    resume: bool,
    stop: &AtomicBool,
    checkpoint_every: std::time::Duration,
) -> Result<Outcome> {
    let tc = cfg
        .training
        .clone()
        .context("the configuration has no training section")?;
    tc.validate()?;
    if data.train.is_empty() || data.test.is_empty() {
        bail!("no training or no test names");
    }
    let model = cfg.model.build()?;
    let classes = cfg.model.num_classes;
    let threads = tc.threads;
    let kind = match tc.loss.as_str() {
        "mse" => LossKind::Mse,
        "ce" => LossKind::CrossEntropy {
            class_weights: tc.class_weight_power()?.map(|power| {
                let n = data.train.len() as f32;
                data.train
                    .per_class
                    .iter()
                    .map(|&k| {
                        let inverse = if k == 0 {
                            0.0
                        } else {
                            n / (classes as f32 * k as f32)
                        };
                        // (sqrt and 1 exactly, as runs of earlier versions computed them.)
                        match power {
                            0.5 => inverse.sqrt(),
                            1.0 => inverse,
                            p => inverse.powf(p),
                        }
                    })
                    .collect()
            }),
        },
        other => bail!("unknown loss '{other}' (expected mse or ce)"),
    };
    // Category ranges in the flattened training set, for class-uniform sampling.
    let mut starts = vec![0usize];
    for &n in &data.train.per_class {
        starts.push(starts.last().copied().unwrap_or(0) + n);
    }
    let nonempty: Vec<usize> = (0..classes)
        .filter(|&c| data.train.per_class[c] > 0)
        .collect();

    // An ensemble's networks train side by side on the same batches, each from its own initial
    // weights with its own optimiser; `params` holds them one after the other.
    let members = cfg.model.members;
    let n_member = model.num_params();
    let (mut params, mut adams, mut st, mut workers, saved_best) = if resume {
        let (state, t) = read_resume(dir)?;
        let path = dir.join(RESUME_FILE);
        state
            .check(tc.steps, data.train.len())
            .with_context(|| format!("cannot resume from {}", path.display()))?;
        let take = |k: &str| -> Result<Vec<f32>> {
            let (_, v) = t
                .get(k)
                .with_context(|| format!("{} has no '{k}'", path.display()))?;
            if v.len() != n_member * members {
                bail!("{} does not match the model in config.json", path.display());
            }
            if v.iter().any(|x| !x.is_finite()) {
                bail!(
                    "cannot resume: '{k}' in {} holds a non-finite value (the file is damaged)",
                    path.display()
                );
            }
            Ok(v.clone())
        };
        let (m, v) = (take("adam.m")?, take("adam.v")?);
        let adams: Vec<Adam> = m
            .chunks_exact(n_member)
            .zip(v.chunks_exact(n_member))
            .map(|(m, v)| {
                let mut adam = Adam::new(n_member, tc.lr);
                adam.m = m.to_vec();
                adam.v = v.to_vec();
                adam.step = state.adam_step;
                adam
            })
            .collect();
        if state.worker_rngs.len() != threads * members {
            bail!(
                "cannot resume with {threads} threads: the run used {} (results would differ)",
                state.worker_rngs.len() / members
            );
        }
        let mut workers = Vec::new();
        for rngs in state.worker_rngs.chunks_exact(threads) {
            let mut group = Vec::new();
            for (k, r) in rngs.iter().enumerate() {
                let mut ws = model.workspace(k as u64);
                ws.rng = r.restore()?;
                group.push(ws);
            }
            workers.push(group);
        }
        let best = if t.contains_key("best") {
            Some(take("best")?)
        } else {
            None
        };
        (take("params")?, adams, state, workers, best)
    } else {
        let seeds: Vec<u64> = (0..members as u64)
            .map(|k| member_seed(tc.seed, k))
            .collect();
        let params: Vec<f32> = seeds.iter().flat_map(|&s| model.init_params(s)).collect();
        let workers: Vec<Vec<_>> = seeds
            .iter()
            .map(|&s| {
                (0..threads)
                    .map(|k| model.workspace(s.wrapping_mul(1000).wrapping_add(k as u64 + 1)))
                    .collect()
            })
            .collect();
        let state = TrainState {
            step: 0,
            adam_step: 0,
            sampler_rng: RngState::of(&ChaCha8Rng::seed_from_u64(tc.seed ^ 0x5a5a_5a5a)),
            worker_rngs: Vec::new(),
            shuffle_order: Vec::new(),
            shuffle_pos: 0,
            window_loss: 0.0,
            window_correct: 0,
            window_count: 0,
            metrics: Vec::new(),
            best_score: None,
            best_step: 0,
            evals_since_best: 0,
            elapsed_s: 0.0,
            finished: false,
        };
        (
            params,
            (0..members).map(|_| Adam::new(n_member, tc.lr)).collect(),
            state,
            workers,
            None,
        )
    };
    if let Some(wd) = (tc.weight_decay > 0.0).then_some(tc.weight_decay) {
        for adam in adams.iter_mut() {
            adam.weight_decay = Some(WeightDecay::L2(wd));
        }
    }
    if resume && st.finished {
        bail!(
            "run {} has already finished all {} steps",
            dir.display(),
            tc.steps
        );
    }
    let mut rng = st.sampler_rng.restore()?;
    // The best parameters by validation score (with a validation split only).
    let mut best_params = match (data.val.is_empty(), saved_best) {
        (true, _) => None,
        (false, Some(b)) => Some(b),
        // Runs of earlier versions: the best model so far is what model.safetensors holds.
        (false, None) if resume => Some(
            crate::checkpoint::load_run(dir)
                .map(|m| m.params)
                .unwrap_or_else(|_| params.clone()),
        ),
        (false, None) => Some(params.clone()),
    };

    let pb = ProgressBar::with_draw_target(Some(tc.steps), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_position(st.step);
    // A closed stdout (`train … | head`, a `tee` that died) must not end the training: lines
    // that cannot be written are dropped (SIGPIPE is ignored during training).
    let say = |line: String| {
        if pb.is_hidden() {
            crate::fsutil::print_line(&line);
        } else {
            pb.println(line)
        }
    };

    let mut tester = BackgroundTest::start(cfg.model.build()?, data.test.clone(), classes);
    // Evaluation rows waiting for their test scores, oldest first.
    let mut waiting: std::collections::VecDeque<MetricRow> = Default::default();
    let complete = |waiting: &mut std::collections::VecDeque<MetricRow>,
                    metrics: &mut Vec<MetricRow>,
                    test: Scores| {
        let Some(mut row) = waiting.pop_front() else {
            return;
        };
        row.test_accuracy = test.accuracy;
        row.test_macro_f1 = test.macro_f1;
        let secs = row.elapsed_s as u64;
        let mut line = format!(
            "Epoch {} {}% ({}m {}s); Avg_loss {:.4}; Train accuracy {:.4}; Test accuracy {:.4}",
            row.step,
            row.step * 100 / tc.steps,
            secs / 60,
            secs % 60,
            row.avg_loss,
            row.train_accuracy,
            row.test_accuracy
        );
        if tc.preset != "tutorial" {
            line.push_str(&format!("; Test macro-F1 {:.4}", row.test_macro_f1));
        }
        if let (Some(a), Some(f)) = (row.val_accuracy, row.val_macro_f1) {
            line.push_str(&format!("; Val accuracy {a:.4}; Val macro-F1 {f:.4}"));
        }
        say(line);
        metrics.push(row);
    };
    let save = |st: &TrainState, params: &[f32], adams: &[Adam], best: Option<&[f32]>| {
        save_checkpoint(dir, cfg, data, &model, st, params, adams, best)
    };
    let started = Instant::now();
    let mut last_checkpoint = started;
    let elapsed0 = st.elapsed_s;
    let mut early_stopped = false;
    let mut batch_idx: Vec<usize> = Vec::with_capacity(tc.batch_size);
    let mut seqs: Vec<&[u32]> = Vec::with_capacity(tc.batch_size);
    let mut labels: Vec<usize> = Vec::with_capacity(tc.batch_size);
    while st.step < tc.steps && !stop.load(Ordering::Relaxed) {
        // Draw a batch.
        batch_idx.clear();
        for _ in 0..tc.batch_size {
            let i = match tc.sampling.as_str() {
                "class-uniform" => draw_class_uniform(&mut rng, &nonempty, &starts),
                "natural" => rng.gen_range(0..data.train.len()),
                "mixed" => {
                    if rng.gen::<bool>() {
                        draw_class_uniform(&mut rng, &nonempty, &starts)
                    } else {
                        rng.gen_range(0..data.train.len())
                    }
                }
                _ => {
                    if st.shuffle_pos >= st.shuffle_order.len() {
                        st.shuffle_order = (0..data.train.len() as u32).collect();
                        rand::seq::SliceRandom::shuffle(st.shuffle_order.as_mut_slice(), &mut rng);
                        st.shuffle_pos = 0;
                    }
                    st.shuffle_pos += 1;
                    st.shuffle_order[st.shuffle_pos - 1] as usize
                }
            };
            batch_idx.push(i);
        }
        seqs.clear();
        labels.clear();
        for &i in &batch_idx {
            seqs.push(&data.train.seqs[i]);
            labels.push(data.train.labels[i]);
        }
        let lr = lr_at(&tc, st.step);
        let clip = (tc.clip_norm > 0.0).then_some(tc.clip_norm);
        // Each network learns from the batch on its own; the loss and accuracy shown are the
        // mean of theirs.
        let (mut loss, mut correct) = (0.0f64, 0u64);
        for (k, (p, (ws, adam))) in params
            .chunks_exact_mut(n_member)
            .zip(workers.iter_mut().zip(adams.iter_mut()))
            .enumerate()
        {
            let (l, c) = model.batch_grad(p, &seqs, &labels, &kind, ws)?;
            if !l.is_finite() {
                let which = if members > 1 {
                    format!(" (network {k})")
                } else {
                    String::new()
                };
                bail!(
                    "training diverged at step {}{which} (loss is {l}); try a smaller --lr",
                    st.step + 1
                );
            }
            adam.lr = lr;
            ws[0].apply_adam(adam, p, threads, clip)?;
            loss += l as f64;
            correct += c as u64;
        }
        st.step += 1;
        st.window_loss += loss / members as f64;
        st.window_correct += correct;
        st.window_count += (tc.batch_size * members) as u64;
        pb.inc(1);

        if st.step % tc.eval_every == 0 || st.step == tc.steps {
            check_finite(&params, st.step)?;
            tester.submit(params.clone())?;
            let val = if data.val.is_empty() {
                None
            } else {
                Some(score(
                    &argmaxes(&predict_shared(&model, &params, &data.val.seqs)?, classes),
                    &data.val.labels,
                    classes,
                ))
            };
            let batches = (st.window_count / tc.batch_size as u64).max(1);
            let elapsed = elapsed0 + started.elapsed().as_secs_f64();
            waiting.push_back(MetricRow {
                step: st.step,
                epoch: st.step as f64 * tc.batch_size as f64 / data.train.len() as f64,
                lr,
                avg_loss: st.window_loss / batches as f64,
                train_accuracy: st.window_correct as f64 / st.window_count.max(1) as f64,
                test_accuracy: f64::NAN, // filled in when the test evaluation comes back
                test_macro_f1: f64::NAN,
                val_accuracy: val.as_ref().map(|v| v.accuracy),
                val_macro_f1: val.as_ref().map(|v| v.macro_f1),
                elapsed_s: elapsed,
            });
            st.window_loss = 0.0;
            st.window_correct = 0;
            st.window_count = 0;
            // Best checkpoint by validation macro-F1 + accuracy (both matter on imbalanced data).
            if let Some(v) = &val {
                let s = v.accuracy + v.macro_f1;
                if st.best_score.is_none_or(|b| s > b) {
                    st.best_score = Some(s);
                    st.best_step = st.step;
                    st.evals_since_best = 0;
                    best_params = Some(params.clone());
                } else {
                    st.evals_since_best += 1;
                }
            }
            if tc.patience > 0 && st.evals_since_best >= tc.patience {
                while let Some(scores) = tester.next(true)? {
                    complete(&mut waiting, &mut st.metrics, scores);
                }
                say(format!(
                    "early stop: no better validation score for {} evaluations (best at step {})",
                    tc.patience, st.best_step
                ));
                early_stopped = true;
                break;
            }
            if st.step < tc.steps && last_checkpoint.elapsed() >= checkpoint_every {
                while let Some(scores) = tester.next(true)? {
                    complete(&mut waiting, &mut st.metrics, scores);
                }
                st.record(
                    elapsed0 + started.elapsed().as_secs_f64(),
                    &adams,
                    &rng,
                    &workers,
                );
                // A failed save (a full disk, say) does not end the run: the final save reports.
                if let Err(e) = save(&st, &params, &adams, best_params.as_deref()) {
                    let e = format!("{e:#}").replace('\n', " ");
                    pb.suspend(|| {
                        crate::fsutil::eprint_line(&format!(
                            "warning: could not save a checkpoint at step {}: {e}",
                            st.step
                        ))
                    });
                }
                last_checkpoint = Instant::now();
            }
        }
        while let Some(scores) = tester.next(false)? {
            complete(&mut waiting, &mut st.metrics, scores);
        }
    }
    while let Some(scores) = tester.next(true)? {
        complete(&mut waiting, &mut st.metrics, scores);
    }
    drop(tester);
    pb.finish_and_clear();
    let interrupted = st.step < tc.steps && !early_stopped;
    st.finished = !interrupted;
    st.record(
        elapsed0 + started.elapsed().as_secs_f64(),
        &adams,
        &rng,
        &workers,
    );
    check_finite(&params, st.step)?;
    save(&st, &params, &adams, best_params.as_deref()).map_err(|e| e.context(SaveFailed))?;
    Ok(Outcome {
        steps: st.step,
        interrupted,
        early_stopped,
        last: st.metrics.last().cloned(),
        best_step: st.best_step,
        best: (!data.val.is_empty())
            .then(|| st.metrics.iter().find(|r| r.step == st.best_step).cloned())
            .flatten(),
        elapsed_s: st.elapsed_s,
    })
}

/// The final save of a run failed (the training itself went through): an earlier checkpoint,
/// if any, is still usable.
#[derive(Debug)]
pub struct SaveFailed;

impl std::fmt::Display for SaveFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("could not save the run")
    }
}

/// A finite loss does not rule out weights that overflowed in the update after it; saving them
/// would leave a model that cannot be loaded.
fn check_finite(params: &[f32], step: u64) -> Result<()> {
    if let Some(i) = params.iter().position(|p| !p.is_finite()) {
        bail!(
            "training diverged by step {step}: the weights are no longer finite (parameter {i} is {}), so they were not saved; try a smaller --lr or --clip",
            params[i]
        );
    }
    Ok(())
}

/// metrics.csv, the tutorial's arrays, the split lists and TrainingProcess.svg.
fn write_outputs(
    dir: &Path,
    cfg: &RunConfig,
    data: &TrainData,
    metrics: &[MetricRow],
    every: u64,
) -> Result<()> {
    let mut csv = String::from(
        "step,epoch,lr,avg_loss,train_accuracy,test_accuracy,test_macro_f1,val_accuracy,val_macro_f1,elapsed_s\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.6}"));
    for r in metrics {
        csv.push_str(&format!(
            "{},{:.4},{:e},{:.6},{:.6},{:.6},{:.6},{},{},{:.2}\n",
            r.step,
            r.epoch,
            r.lr,
            r.avg_loss,
            r.train_accuracy,
            r.test_accuracy,
            r.test_macro_f1,
            opt(r.val_accuracy),
            opt(r.val_macro_f1),
            r.elapsed_s
        ));
    }
    write_atomic(&dir.join("metrics.csv"), csv.as_bytes())?;
    let col = |f: &dyn Fn(&MetricRow) -> f64| metrics.iter().map(f).collect::<Vec<f64>>();
    let losses = col(&|r| r.avg_loss);
    let train_acc = col(&|r| r.train_accuracy);
    let test_acc = col(&|r| r.test_accuracy);
    write_npy_f64(&dir.join("avg_losses.npy"), &[losses.len()], &losses)?;
    write_npy_f64(
        &dir.join("accuracy_rec.npy"),
        &[train_acc.len()],
        &train_acc,
    )?;
    write_npy_f64(&dir.join("test_accu_rec.npy"), &[test_acc.len()], &test_acc)?;
    write_atomic(
        &dir.join("category_lines_train.json"),
        lists_json(&cfg.categories, &data.lists.train)?.as_bytes(),
    )?;
    write_atomic(
        &dir.join("category_lines_test.json"),
        lists_json(&cfg.categories, &data.lists.test)?.as_bytes(),
    )?;
    if data.lists.val.iter().any(|v| !v.is_empty()) {
        write_atomic(
            &dir.join("category_lines_val.json"),
            lists_json(&cfg.categories, &data.lists.val)?.as_bytes(),
        )?;
    }
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let svg = training_process_svg(every as usize, &f(&losses), &f(&train_acc), &f(&test_acc))
        .map_err(anyhow::Error::msg)?;
    save_svg(&dir.join("TrainingProcess.svg"), &svg)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resume state goes through JSON; its floats (losses, accuracies k/n, the best score)
    /// must come back bit for bit, or a resumed run's arrays and best-checkpoint choice would
    /// differ from an uninterrupted run's (serde_json needs its `float_roundtrip` feature).
    #[test]
    fn resume_state_floats_round_trip_exactly() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let rows: Vec<MetricRow> = (0..4021u64)
            .map(|k| MetricRow {
                step: k,
                epoch: k as f64 * 32.0 / 16053.0,
                lr: rng.gen::<f32>() * 3e-3,
                avg_loss: rng.gen::<f64>() * 2.0,
                train_accuracy: k as f64 / 4021.0,
                test_accuracy: rng.gen::<f64>(),
                test_macro_f1: rng.gen::<f64>(),
                val_accuracy: Some(k as f64 / 3211.0),
                val_macro_f1: None,
                elapsed_s: rng.gen::<f64>() * 600.0,
            })
            .collect();
        let json = serde_json::to_string(&rows).unwrap();
        let back: Vec<MetricRow> = serde_json::from_str(&json).unwrap();
        for (a, b) in rows.iter().zip(&back) {
            for (x, y) in [
                (a.epoch, b.epoch),
                (a.avg_loss, b.avg_loss),
                (a.train_accuracy, b.train_accuracy),
                (a.test_accuracy, b.test_accuracy),
                (a.test_macro_f1, b.test_macro_f1),
                (a.val_accuracy.unwrap(), b.val_accuracy.unwrap()),
                (a.elapsed_s, b.elapsed_s),
            ] {
                assert_eq!(x.to_bits(), y.to_bits(), "{x} came back as {y}");
            }
            assert_eq!(a.lr.to_bits(), b.lr.to_bits());
        }
    }

    /// Tied, a model reads a name in capitals as in small letters (every network, both
    /// directions), and it still reads small letters as before: only capitals' weights change.
    #[test]
    fn tied_capitals_read_like_small_letters() {
        let spec = crate::config::ModelSpec {
            hidden_size: 8,
            num_layers: 2,
            bidirectional: true,
            members: 2,
            ..crate::config::ModelSpec::tutorial(3)
        };
        let model = spec.build().unwrap();
        let params: Vec<f32> = [model.init_params(1), model.init_params(2)].concat();
        let mut tied = params.clone();
        tie_capitals(&model, &mut tied);
        let encode = |names: &[&str]| -> Vec<Vec<u32>> {
            let names: Vec<Vec<String>> = vec![names.iter().map(|n| n.to_string()).collect()];
            crate::datasets::encode(&names).unwrap().seqs
        };
        let small = encode(&["nguyen", "o'neill", "zeng"]);
        let mixed = encode(&["NGUYEN", "O'Neill", "Zeng"]);
        let probs = |p: &[f32], seqs: &[Vec<u32>]| predict_shared(&model, p, seqs).unwrap();
        assert_eq!(probs(&tied, &mixed), probs(&tied, &small));
        assert_eq!(probs(&tied, &small), probs(&params, &small));
        // Untied, capitals have weights of their own.
        assert_ne!(probs(&params, &mixed), probs(&params, &small));
        // Only the first layer's input weights changed: 26 rows of G·H per direction and network.
        let changed = params.iter().zip(&tied).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 2 * 2 * 26 * 4 * 8);
    }
}
