//! What a run directory's `config.json` records: alphabet, categories, the model, the data split
//! and every training hyper-parameter, so a model can be used and a run resumed or repeated.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use spiking_rnn::{CellKind, ClassifierConfig, Readout, RnnConfig, SeqClassifier, Surrogate};

/// The network: spiking RNN → last valid step → Linear → softmax.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// `lstm`, `gru`, `rnn` (spiking) or `ann-lstm` (conventional baseline).
    pub cell: String,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub dropout: f32,
    pub invariant_dropout_mask: bool,
    /// `NAME:alpha`, e.g. `Erf:2`.
    pub surrogate: String,
    /// LSTM cell-state cap at 1 (SpikingJelly ≥ 2022); false = the 2020 tutorial's behaviour.
    pub clamp_cell: bool,
    pub num_classes: usize,
    /// What the Linear layer reads: `last` (the output at the last letter, the tutorial's) or
    /// `mean` (the mean output over the letters: spike rates).
    #[serde(default = "default_readout")]
    pub readout: String,
    /// Networks of this shape trained side by side from different initial weights; the model's
    /// output is the mean of their softmax outputs (1 = one network).
    #[serde(default = "one")]
    pub members: usize,
}

/// Largest hidden size, input size, class count or sequence dimension accepted from a user.
pub const MAX_DIM: usize = 1 << 16;
/// Most stacked layers accepted from a user.
pub const MAX_LAYERS: usize = 64;
/// Most networks in an ensemble.
pub const MAX_MEMBERS: usize = 64;
/// Most parameters accepted from a user: 1 GiB of weights, 4 GiB with gradients and Adam's
/// moments. Beyond it a typo (`--hidden 1000000`) would abort on allocation instead of failing.
pub const MAX_PARAMS: u128 = 1 << 28;

/// Rejects a model whose parameters would not fit in [`MAX_PARAMS`] (counted without overflow,
/// before anything is allocated), and returns their number. `classes` = 0 counts the recurrent
/// layers only.
pub fn check_model_size(
    cell: CellKind,
    input: usize,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
    classes: usize,
) -> Result<u128> {
    let gates: u128 = match cell {
        CellKind::Lstm | CellKind::AnnLstm => 4,
        CellKind::Gru => 3,
        CellKind::Rnn => 1,
    };
    let (h, dirs) = (hidden as u128, if bidirectional { 2 } else { 1 });
    let mut total = 0u128;
    for l in 0..layers.min(MAX_LAYERS + 1) as u128 {
        let i = if l == 0 { input as u128 } else { h * dirs };
        total += dirs * gates * h * (i + h + 2);
    }
    total += classes as u128 * (h * dirs + 1);
    if total > MAX_PARAMS {
        bail!("the model would have {total} parameters; at most {MAX_PARAMS} are supported");
    }
    Ok(total)
}

fn default_readout() -> String {
    "last".into()
}

fn one() -> usize {
    1
}

impl ModelSpec {
    /// The tutorial's `Net`: SpikingLSTM(58, 256, 1) + Linear(256, 18), Erf(α=2), clamp on.
    pub fn tutorial(num_classes: usize) -> Self {
        Self {
            cell: "lstm".into(),
            input_size: surnames_data::N_LETTERS,
            hidden_size: 256,
            num_layers: 1,
            bidirectional: false,
            dropout: 0.0,
            invariant_dropout_mask: false,
            surrogate: "Erf:2".into(),
            clamp_cell: true,
            num_classes,
            readout: default_readout(),
            members: 1,
        }
    }

    pub fn classifier_config(&self) -> Result<ClassifierConfig> {
        let Some(cell) = CellKind::parse(&self.cell) else {
            bail!(
                "unknown cell '{}' (expected lstm, gru, rnn or ann-lstm)",
                self.cell
            )
        };
        for (what, n, max) in [
            ("hidden size", self.hidden_size, MAX_DIM),
            ("number of layers", self.num_layers, MAX_LAYERS),
            ("number of classes", self.num_classes, MAX_DIM),
        ] {
            if n > max {
                bail!("{what} {n} is too large (at most {max})");
            }
        }
        if !(1..=MAX_MEMBERS).contains(&self.members) {
            bail!(
                "an ensemble has 1 to {MAX_MEMBERS} networks, not {}",
                self.members
            );
        }
        // Each member is checked alone, then all of them together.
        let per_member = check_model_size(
            cell,
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bidirectional,
            self.num_classes,
        )?;
        let total = per_member * self.members as u128;
        if total > MAX_PARAMS {
            bail!(
                "{} networks would have {total} parameters; at most {MAX_PARAMS} are supported",
                self.members
            );
        }
        let mut rnn = RnnConfig::new(cell, self.input_size, self.hidden_size);
        rnn.num_layers = self.num_layers;
        rnn.bidirectional = self.bidirectional;
        rnn.dropout = self.dropout;
        rnn.invariant_dropout_mask = self.invariant_dropout_mask;
        rnn.surrogate1 = Surrogate::parse(&self.surrogate)?;
        rnn.clamp_cell = self.clamp_cell;
        let readout = match self.readout.as_str() {
            "last" => Readout::Last,
            "mean" => Readout::Mean,
            "final" => Readout::Final,
            "cell" => Readout::Cell,
            other => bail!("unknown readout '{other}' (expected last, mean, final or cell)"),
        };
        Ok(ClassifierConfig {
            rnn,
            num_classes: self.num_classes,
            readout,
        })
    }

    pub fn build(&self) -> Result<SeqClassifier> {
        Ok(SeqClassifier::new(self.classifier_config()?)?)
    }
}

/// Which names are for training, validation and test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitSpec {
    /// `tutorial` (first 80% of each file, in file order) or `dedup` (distinct names, shuffled).
    pub kind: String,
    /// Seed of the `dedup` shuffle.
    pub seed: u64,
    /// Share of the training names held out for validation (0 = none).
    pub val_fraction: f64,
    /// Which of them: `random` (seeded) or `tail` (the end of each category's training list).
    #[serde(default = "random_pick")]
    pub val_from: String,
}

impl SplitSpec {
    /// How the validation names are chosen.
    pub fn validation_pick(&self) -> Result<surnames_data::ValidationPick> {
        Ok(match self.val_from.as_str() {
            // The seed is the split's, mixed so that the dedup shuffle and this one differ.
            "random" => surnames_data::ValidationPick::Random {
                seed: self.seed ^ 0x5eed,
            },
            "tail" => surnames_data::ValidationPick::Tail,
            other => bail!("unknown validation pick '{other}' (expected random or tail)"),
        })
    }
}

fn random_pick() -> String {
    "random".into()
}

impl Default for SplitSpec {
    fn default() -> Self {
        Self {
            kind: "tutorial".into(),
            seed: 0,
            val_fraction: 0.0,
            val_from: random_pick(),
        }
    }
}

/// Every training choice (see `surnames train --help`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub preset: String,
    /// Optimiser steps in total.
    pub steps: u64,
    pub batch_size: usize,
    /// Evaluate (and print a line) every this many steps.
    pub eval_every: u64,
    pub lr: f32,
    /// `mse` (the tutorial's: softmax vs one-hot) or `ce` (cross-entropy).
    pub loss: String,
    /// Cross-entropy class weights: `none`, `inverse` (n / (C·n_c)), `sqrt` (its square root) or
    /// a power of it between 0 and 4 (`0.35`).
    pub class_weights: String,
    /// `class-uniform` (tutorial), `natural` (names uniformly), `shuffled` (epochs) or `mixed`
    /// (each name class-uniform or natural with probability ½: balances rare languages without
    /// ignoring the real frequencies).
    pub sampling: String,
    /// `constant`, `cosine` or `step` (×0.1 at 50% and 75% of the steps).
    pub schedule: String,
    pub warmup_steps: u64,
    /// Adam L2 weight decay (PyTorch `Adam(weight_decay=…)`).
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0 = off).
    pub clip_norm: f32,
    /// Stop after this many evaluations without a better validation score (0 = never).
    pub patience: u32,
    /// Train on names with capitals read as small letters. The saved model gives every capital
    /// its small letter's input weights, so it reads either case the same way without being
    /// told (here, after `export`, in Python).
    #[serde(default)]
    pub ignore_case: bool,
    pub threads: usize,
    pub seed: u64,
}

impl TrainConfig {
    /// Rejects values that cannot train, before anything is written.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("learning rate must be a positive number, got {}", self.lr);
        }
        if self.batch_size == 0 || self.steps == 0 || self.eval_every == 0 || self.threads == 0 {
            bail!("batch size, steps, eval-every and threads must all be ≥ 1");
        }
        if self.batch_size > MAX_DIM {
            bail!(
                "batch size {} is too large (at most {MAX_DIM})",
                self.batch_size
            );
        }
        if !["mse", "ce"].contains(&self.loss.as_str()) {
            bail!("unknown loss '{}' (expected mse or ce)", self.loss);
        }
        self.class_weight_power()?;
        if self.class_weights != "none" && self.loss != "ce" {
            bail!("class weights need the cross-entropy loss (--loss ce)");
        }
        if !["class-uniform", "natural", "shuffled", "mixed"].contains(&self.sampling.as_str()) {
            bail!(
                "unknown sampling '{}' (expected class-uniform, natural, shuffled or mixed)",
                self.sampling
            );
        }
        if !["constant", "cosine", "step"].contains(&self.schedule.as_str()) {
            bail!(
                "unknown schedule '{}' (expected constant, cosine or step)",
                self.schedule
            );
        }
        let non_negative = |x: f32| x >= 0.0 && x.is_finite();
        if !non_negative(self.weight_decay) || !non_negative(self.clip_norm) {
            bail!("weight decay and gradient clipping must be ≥ 0");
        }
        Ok(())
    }

    /// The power of the inverse class frequency that weights the cross-entropy (`None`: no
    /// weights).
    pub fn class_weight_power(&self) -> Result<Option<f32>> {
        Ok(match self.class_weights.as_str() {
            "none" => None,
            "sqrt" => Some(0.5),
            "inverse" => Some(1.0),
            other => match other.parse::<f32>() {
                Ok(p) if (0.0..=4.0).contains(&p) => Some(p),
                _ => bail!(
                    "unknown class weights '{other}' (expected none, inverse, sqrt or a power between 0 and 4)"
                ),
            },
        })
    }

    /// The tutorial's protocol: one name per step, class-uniform sampling, MSE, Adam 1e-4,
    /// 1,000,000 steps, evaluation every 1,000.
    pub fn tutorial() -> Self {
        Self {
            preset: "tutorial".into(),
            steps: 1_000_000,
            batch_size: 1,
            eval_every: 1000,
            lr: 1e-4,
            loss: "mse".into(),
            class_weights: "none".into(),
            sampling: "class-uniform".into(),
            schedule: "constant".into(),
            warmup_steps: 0,
            weight_decay: 0.0,
            clip_norm: 0.0,
            patience: 0,
            ignore_case: false,
            threads: 0,
            seed: 0,
        }
    }
}

/// The whole `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub tool: String,
    pub version: String,
    /// The 58 letters in index order.
    pub alphabet: String,
    /// Output index → language, alphabetical.
    pub categories: Vec<String>,
    pub model: ModelSpec,
    pub split: SplitSpec,
    /// Absent for imported models.
    pub training: Option<TrainConfig>,
    /// Where the weights came from (`trained`, or the imported file).
    pub origin: String,
    /// [`surnames_data::Dataset::fingerprint`] of the data the model was trained on (absent for
    /// imported models and runs of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprint: Option<String>,
}

impl RunConfig {
    pub fn new(
        categories: Vec<String>,
        model: ModelSpec,
        split: SplitSpec,
        training: Option<TrainConfig>,
        origin: &str,
    ) -> Self {
        Self {
            tool: "surnames".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            alphabet: surnames_data::ALPHABET.into(),
            categories,
            model,
            split,
            training,
            origin: origin.into(),
            data_fingerprint: None,
        }
    }

    /// Checks the parts that must agree with each other and with this build.
    pub fn validate(&self) -> Result<()> {
        if self.alphabet != surnames_data::ALPHABET {
            bail!(
                "the model was made for another alphabet ({} letters)",
                self.alphabet.chars().count()
            );
        }
        if self.model.input_size != surnames_data::N_LETTERS {
            bail!(
                "model input size {} does not match the {}-letter alphabet",
                self.model.input_size,
                surnames_data::N_LETTERS
            );
        }
        if self.categories.len() != self.model.num_classes {
            bail!(
                "config lists {} categories but the model has {} outputs",
                self.categories.len(),
                self.model.num_classes
            );
        }
        self.model.build()?;
        if let Some(t) = &self.training {
            t.validate()?;
        }
        if !["tutorial", "dedup"].contains(&self.split.kind.as_str()) {
            bail!(
                "unknown split '{}' (expected tutorial or dedup)",
                self.split.kind
            );
        }
        if !(0.0..1.0).contains(&self.split.val_fraction) {
            bail!(
                "validation fraction must be in [0, 1), got {}",
                self.split.val_fraction
            );
        }
        self.split.validation_pick()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weights_are_a_power_of_the_inverse_frequency() {
        let power = |w: &str| {
            let mut t = TrainConfig::tutorial();
            t.loss = "ce".into();
            t.threads = 1;
            t.class_weights = w.into();
            t.validate().map(|_| t.class_weight_power().unwrap())
        };
        assert_eq!(power("none").unwrap(), None);
        assert_eq!(power("sqrt").unwrap(), Some(0.5));
        assert_eq!(power("inverse").unwrap(), Some(1.0));
        assert_eq!(power("0.35").unwrap(), Some(0.35));
        assert_eq!(power("0").unwrap(), Some(0.0));
        for bad in ["4.5", "-1", "NaN", "inf", "half", ""] {
            let err = power(bad).unwrap_err().to_string();
            assert!(err.contains("power between 0 and 4"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_ensemble_has_1_to_64_networks_within_the_parameter_limit() {
        let mut m = ModelSpec::tutorial(18);
        for (n, ok) in [(0, false), (1, true), (5, true), (64, true), (65, false)] {
            m.members = n;
            assert_eq!(m.build().is_ok(), ok, "{n} networks");
        }
        // 4,096 hidden units: 68 M parameters per network, so 3 fit in 2^28 and 4 do not.
        m.hidden_size = 4096;
        m.members = 3;
        assert!(m.classifier_config().is_ok());
        m.members = 4;
        let err = m.classifier_config().unwrap_err().to_string();
        assert!(err.contains("4 networks"), "{err}");
    }

    /// A config.json written before a setting existed loads with the setting's old behaviour.
    #[test]
    fn settings_added_later_default_to_what_older_runs_did() {
        let mut t = TrainConfig::tutorial();
        t.threads = 1;
        let cfg = RunConfig::new(
            vec!["a".into(), "b".into()],
            ModelSpec::tutorial(2),
            SplitSpec::default(),
            Some(t),
            "trained",
        );
        let mut v = serde_json::to_value(&cfg).unwrap();
        for (section, key) in [
            ("model", "members"),
            ("split", "val_from"),
            ("training", "ignore_case"),
        ] {
            assert!(
                v[section].as_object_mut().unwrap().remove(key).is_some(),
                "{key}"
            );
        }
        let old: RunConfig = serde_json::from_value(v).unwrap();
        assert_eq!(old, cfg);
        old.validate().unwrap();
    }

    #[test]
    fn validation_names_are_picked_at_random_or_from_the_tail() {
        let mut split = SplitSpec {
            seed: 3,
            ..SplitSpec::default()
        };
        assert_eq!(
            split.validation_pick().unwrap(),
            surnames_data::ValidationPick::Random { seed: 3 ^ 0x5eed }
        );
        split.val_from = "tail".into();
        assert_eq!(
            split.validation_pick().unwrap(),
            surnames_data::ValidationPick::Tail
        );
        split.val_from = "end".into();
        let err = split.validation_pick().unwrap_err().to_string();
        assert!(err.contains("expected random or tail"), "{err}");
    }
}
