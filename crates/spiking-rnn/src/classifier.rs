//! The tutorial's network: spiking RNN → output at each sequence's last valid step (or another
//! readout) → Linear → softmax. Works on letter-index sequences of any lengths, one or many at a time,
//! and splits a batch over threads for training.

use crate::linear::Linear;
use crate::loss;
use crate::params::ParamLayout;
use crate::rnn::{Batch, Input, RnnCache, RnnConfig, SpikingRnn, States};
use crate::{shape_err, CellKind, Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierConfig {
    pub rnn: RnnConfig,
    pub num_classes: usize,
    pub readout: Readout,
}

impl ClassifierConfig {
    /// The tutorial's head: the output at the last step.
    pub fn new(rnn: RnnConfig, num_classes: usize) -> Self {
        Self {
            rnn,
            num_classes,
            readout: Readout::Last,
        }
    }
}

/// What the Linear layer reads from the output sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readout {
    /// The output at each sequence's last valid step (the tutorial's `output[-1]`).
    Last,
    /// The mean output over the valid steps: a spike-rate code, graded where one step's spikes
    /// are binary.
    Mean,
    /// Each direction's final output (what PyTorch's `h_n` holds): the forward direction at the
    /// last letter, the reverse direction at the first, after it has read the whole name. The
    /// same as `Last` for one direction.
    Final,
    /// Each direction's final cell state `c` in the top layer (LSTM cells only), read where
    /// `Final` reads the output. The output is `h = c·o`: at the last letter the output gate
    /// hides the units whose `o` is silent, the cell state shows them all. In the 2020 spiking
    /// cell `c` is a whole number (it adds the spikes `i·g` the forget gate keeps), so what the
    /// Linear layer reads is still a count of spikes.
    Cell,
}

impl Readout {
    /// The step whose output fills direction `d`'s block of features for a sequence of `len`
    /// (`Last` and `Final`).
    fn step(self, d: usize, len: usize) -> usize {
        if self == Readout::Final && d == 1 {
            0
        } else {
            len - 1
        }
    }
}

/// Which loss to train with.
#[derive(Clone, Debug, PartialEq)]
pub enum LossKind {
    /// The tutorial's: MSE between the softmax output and the one-hot label (mean over B·C).
    Mse,
    /// Cross-entropy on the logits, optionally class-weighted (weighted mean over the batch).
    CrossEntropy { class_weights: Option<Vec<f32>> },
}

/// Everything one forward/backward of one batch needs; one per thread.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub rnn: RnnCache,
    tokens: Vec<u32>,
    lengths: Vec<usize>,
    /// `[B, D·H]` last-valid-step features.
    feat: Vec<f32>,
    logits: Vec<f32>,
    probs: Vec<f32>,
    d_logits: Vec<f32>,
    d_feat: Vec<f32>,
    d_out: Vec<f32>,
    /// Gradient w.r.t. the final states (the `Cell` readout's way into the backward).
    d_final: States,
    /// This worker's gradient buffer (private: `grads_clean` must follow every write).
    grads: Vec<f32>,
    /// `grads` is known to be all zeros (a new workspace, after [`Workspace::apply_adam`], or
    /// after `batch_grad` has summed it into the first workspace), so the next batch need not
    /// clear it.
    grads_clean: bool,
    /// This worker's dropout randomness.
    pub rng: ChaCha8Rng,
}

impl Workspace {
    /// Softmax outputs of the last forward, `[B, C]`.
    pub fn probs(&self) -> &[f32] {
        &self.probs
    }
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }
    /// The gradients accumulated by [`SeqClassifier::loss_and_grad`] (or summed by
    /// [`SeqClassifier::batch_grad`] into the first workspace).
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    fn clear_grads(&mut self) {
        if !self.grads_clean {
            self.grads.fill(0.0);
        }
        self.grads_clean = false;
    }

    /// Applies one Adam step with this workspace's gradients (as left by
    /// [`SeqClassifier::batch_grad`] in the first workspace) and clears them in the same pass;
    /// `threads > 1` splits the update over cores. With `max_grad_norm` (> 0), gradients whose
    /// norm exceeds it are first scaled down to it, like `torch.nn.utils.clip_grad_norm_` (which
    /// divides by the norm + 1e-6), and the norm is returned.
    pub fn apply_adam(
        &mut self,
        adam: &mut crate::optim::Adam,
        params: &mut [f32],
        threads: usize,
        max_grad_norm: Option<f32>,
    ) -> Result<Option<f32>> {
        if params.len() != self.grads.len() || adam.m.len() != params.len() {
            return shape_err(format!(
                "Adam step over {} parameters with {} gradients and {} moments",
                params.len(),
                self.grads.len(),
                adam.m.len()
            ));
        }
        if let Some(max) = max_grad_norm {
            if !(max > 0.0 && max.is_finite()) {
                return Err(Error::Config(format!(
                    "the gradient-norm limit must be a positive number, not {max}"
                )));
            }
        }
        let (norm, scale) = match max_grad_norm {
            Some(max) => {
                let n = crate::optim::grad_norm(&self.grads, threads);
                (Some(n), if n > max { max / n } else { 1.0 })
            }
            None => (None, 1.0),
        };
        adam.scaled_step_and_zero_grads(params, &mut self.grads, scale, threads);
        self.grads_clean = true;
        Ok(norm)
    }
}

pub struct SeqClassifier {
    pub cfg: ClassifierConfig,
    pub rnn: SpikingRnn,
    pub fc: Linear,
    pub layout: ParamLayout,
}

impl SeqClassifier {
    /// Tensor names as in the tutorial's `Net`: `lstm.cells.0.…` (`gru.`/`rnn.` for the other
    /// cells), `fc.weight`, `fc.bias`.
    pub fn new(cfg: ClassifierConfig) -> Result<Self> {
        if cfg.num_classes < 2 {
            return Err(Error::Config(
                "a classifier needs at least 2 classes".into(),
            ));
        }
        if cfg.readout == Readout::Cell && cfg.rnn.cell.states() != 2 {
            return Err(Error::Config(format!(
                "the cell-state readout needs an LSTM cell, not {}",
                cfg.rnn.cell.name()
            )));
        }
        let mut layout = ParamLayout::new();
        let prefix = match cfg.rnn.cell {
            CellKind::Lstm => "lstm.",
            CellKind::Gru => "gru.",
            CellKind::Rnn => "rnn.",
            CellKind::AnnLstm => "ann_lstm.",
        };
        let rnn = SpikingRnn::new(cfg.rnn.clone(), &mut layout, prefix)?;
        let fc = Linear::new(cfg.rnn.output_size(), cfg.num_classes, &mut layout, "fc.");
        Ok(Self {
            cfg,
            rnn,
            fc,
            layout,
        })
    }

    pub fn num_params(&self) -> usize {
        self.layout.total
    }

    /// Fresh parameters: SpikingJelly's init for the cells, PyTorch's for the Linear.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut p = vec![0.0; self.layout.total];
        self.rnn.init(&mut p, &mut rng);
        self.fc.init(&mut p, &mut rng);
        p
    }

    /// A workspace for forward passes only (no gradient buffer).
    pub fn inference_workspace(&self) -> Workspace {
        let mut ws = self.workspace(0);
        ws.grads = Vec::new();
        ws
    }

    pub fn workspace(&self, seed: u64) -> Workspace {
        Workspace {
            rnn: RnnCache::default(),
            tokens: Vec::new(),
            lengths: Vec::new(),
            feat: Vec::new(),
            logits: Vec::new(),
            probs: Vec::new(),
            d_logits: Vec::new(),
            d_feat: Vec::new(),
            d_out: Vec::new(),
            d_final: States::default(),
            grads: vec![0.0; self.layout.total],
            grads_clean: true,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Forward over sequences of letter indices (each non-empty). `train`: apply dropout.
    pub fn forward(
        &self,
        params: &[f32],
        seqs: &[&[u32]],
        ws: &mut Workspace,
        train: bool,
    ) -> Result<()> {
        if params.len() != self.layout.total {
            return shape_err(format!(
                "{} parameters given, the model has {}",
                params.len(),
                self.layout.total
            ));
        }
        let b = seqs.len();
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if b == 0 {
            return shape_err("empty batch");
        }
        if seqs.iter().any(|s| s.is_empty()) {
            return shape_err("empty sequence in batch");
        }
        // Pack time-major [T, B]; padding uses token 0 and is never read.
        ws.tokens.clear();
        ws.tokens.resize(t * b, 0);
        ws.lengths.clear();
        for (bi, s) in seqs.iter().enumerate() {
            ws.lengths.push(s.len());
            for (ti, &tok) in s.iter().enumerate() {
                ws.tokens[ti * b + bi] = tok;
            }
        }
        let batch = Batch {
            input: Input::Tokens(&ws.tokens),
            t,
            b,
            lengths: Some(&ws.lengths),
        };
        let rng: Option<&mut dyn rand::RngCore> = if train { Some(&mut ws.rng) } else { None };
        self.rnn.forward(params, batch, None, rng, &mut ws.rnn)?;
        let f = self.cfg.rnn.output_size();
        let c = self.cfg.num_classes;
        let out = ws.rnn.output();
        ws.feat.clear();
        ws.feat.resize(b * f, 0.0);
        let cell_state = &ws.rnn.final_states.c;
        for (bi, &len) in ws.lengths.iter().enumerate() {
            let feat = &mut ws.feat[bi * f..(bi + 1) * f];
            self.readout_pieces(b, bi, len, |fo, oo, n, w| {
                crate::linalg::axpy(&mut feat[fo..fo + n], w, &out[oo..oo + n]);
            });
            self.cell_readout_pieces(b, bi, |fo, so, n| {
                feat[fo..fo + n].copy_from_slice(&cell_state[so..so + n]);
            });
        }
        ws.logits.clear();
        ws.logits.resize(b * c, 0.0);
        self.fc.forward(params, &ws.feat, &mut ws.logits);
        ws.probs.clear();
        ws.probs.resize(b * c, 0.0);
        loss::softmax(&ws.logits, c, &mut ws.probs);
        Ok(())
    }

    /// The pieces of the `[T, B, F]` output that make up sequence `bi`'s features (the readout),
    /// each as `(offset in the features, offset in the output, length, weight)`: the forward adds
    /// `weight · output` into the features, the backward `weight · d_features` into `d_output`.
    fn readout_pieces(
        &self,
        b: usize,
        bi: usize,
        len: usize,
        mut piece: impl FnMut(usize, usize, usize, f32),
    ) {
        let f = self.cfg.rnn.output_size();
        let hs = self.cfg.rnn.hidden_size;
        match self.cfg.readout {
            Readout::Last | Readout::Final => {
                for d in 0..f / hs {
                    let o = (self.cfg.readout.step(d, len) * b + bi) * f + d * hs;
                    piece(d * hs, o, hs, 1.0);
                }
            }
            Readout::Mean => {
                for ti in 0..len {
                    piece(0, (ti * b + bi) * f, f, 1.0 / len as f32);
                }
            }
            Readout::Cell => {}
        }
    }

    /// With the `Cell` readout, the pieces of the final cell states `[D·L, B, H]` that make up
    /// sequence `bi`'s features, each as `(offset in the features, offset in the states, length)`;
    /// none for the other readouts.
    fn cell_readout_pieces(&self, b: usize, bi: usize, mut piece: impl FnMut(usize, usize, usize)) {
        if self.cfg.readout != Readout::Cell {
            return;
        }
        let (hs, nl) = (self.cfg.rnn.hidden_size, self.cfg.rnn.num_layers);
        for d in 0..self.cfg.rnn.directions() {
            // States are ordered direction-major (`s = d·L + l`); the top layer is `l = L − 1`.
            let s = d * nl + nl - 1;
            piece(d * hs, (s * b + bi) * hs, hs);
        }
    }

    /// Backward from `ws.d_logits` (set by [`Self::loss_and_grad`]); adds into `ws.grads`.
    fn backward(&self, params: &[f32], ws: &mut Workspace) -> Result<()> {
        let f = self.cfg.rnn.output_size();
        let (t, b) = ws.rnn.dims();
        ws.d_feat.clear();
        ws.d_feat.resize(b * f, 0.0);
        self.fc.backward(
            params,
            &ws.feat,
            &ws.d_logits,
            &mut ws.grads,
            Some(&mut ws.d_feat),
        );
        ws.d_out.clear();
        ws.d_out.resize(t * b * f, 0.0);
        let cell_readout = self.cfg.readout == Readout::Cell;
        if cell_readout {
            let n = ws.rnn.final_states.c.len();
            for v in [&mut ws.d_final.h, &mut ws.d_final.c] {
                v.clear();
                v.resize(n, 0.0);
            }
        }
        for (bi, &len) in ws.lengths.iter().enumerate() {
            let d_feat = &ws.d_feat[bi * f..(bi + 1) * f];
            let d_out = &mut ws.d_out;
            self.readout_pieces(b, bi, len, |fo, oo, n, w| {
                crate::linalg::axpy(&mut d_out[oo..oo + n], w, &d_feat[fo..fo + n]);
            });
            let d_c = &mut ws.d_final.c;
            self.cell_readout_pieces(b, bi, |fo, so, n| {
                d_c[so..so + n].copy_from_slice(&d_feat[fo..fo + n]);
            });
        }
        self.rnn.backward(
            params,
            &mut ws.rnn,
            &ws.d_out,
            cell_readout.then_some(&ws.d_final),
            &mut ws.grads,
            None,
            None,
        )
    }

    /// Forward + loss + backward for (part of) a batch. The loss and its gradient are divided by
    /// `norm` (see [`loss`]); gradients are added to `ws.grads`. Returns (loss, #correct), where
    /// correct = argmax of the output before the update equals the label.
    pub fn loss_and_grad(
        &self,
        params: &[f32],
        seqs: &[&[u32]],
        labels: &[usize],
        kind: &LossKind,
        norm: f32,
        ws: &mut Workspace,
    ) -> Result<(f32, usize)> {
        self.check_targets(seqs, labels, kind)?;
        self.check_grad_buffer(ws)?;
        let c = self.cfg.num_classes;
        self.forward(params, seqs, ws, true)?;
        ws.grads_clean = false;
        ws.d_logits.clear();
        ws.d_logits.resize(seqs.len() * c, 0.0);
        let l = match kind {
            LossKind::Mse => loss::mse_onehot(&ws.probs, labels, c, norm, &mut ws.d_logits),
            LossKind::CrossEntropy { class_weights } => loss::cross_entropy(
                &ws.probs,
                labels,
                c,
                class_weights.as_deref(),
                norm,
                &mut ws.d_logits,
            ),
        };
        let correct = ws
            .probs
            .chunks_exact(c)
            .zip(labels)
            .filter(|(p, &y)| loss::argmax(p) == y)
            .count();
        self.backward(params, ws)?;
        Ok((l, correct))
    }

    fn check_targets(&self, seqs: &[&[u32]], labels: &[usize], kind: &LossKind) -> Result<()> {
        let c = self.cfg.num_classes;
        if labels.len() != seqs.len() {
            return shape_err(format!(
                "{} labels for {} sequences",
                labels.len(),
                seqs.len()
            ));
        }
        if let Some(&bad) = labels.iter().find(|&&y| y >= c) {
            return shape_err(format!("label {bad} is out of range 0..{c}"));
        }
        if let LossKind::CrossEntropy {
            class_weights: Some(w),
        } = kind
        {
            if w.len() != c {
                return shape_err(format!("{} class weights for {c} classes", w.len()));
            }
        }
        Ok(())
    }

    fn check_grad_buffer(&self, ws: &Workspace) -> Result<()> {
        if ws.grads.len() != self.layout.total {
            return shape_err("this workspace has no gradient buffer (made for inference)");
        }
        Ok(())
    }

    /// The normaliser that makes the loss a mean over the whole batch (PyTorch's convention).
    pub fn loss_norm(&self, kind: &LossKind, labels: &[usize]) -> f32 {
        match kind {
            LossKind::Mse => (labels.len() * self.cfg.num_classes) as f32,
            LossKind::CrossEntropy {
                class_weights: None,
            } => labels.len() as f32,
            LossKind::CrossEntropy {
                class_weights: Some(w),
            } => labels.iter().map(|&y| w[y]).sum(),
        }
    }

    /// Gradient of the mean loss over a batch, split over `workspaces.len()` workers run in
    /// parallel (one workspace each); the result is left in `workspaces[0].grads`.
    /// Deterministic for a given number of workspaces.
    pub fn batch_grad(
        &self,
        params: &[f32],
        seqs: &[&[u32]],
        labels: &[usize],
        kind: &LossKind,
        workspaces: &mut [Workspace],
    ) -> Result<(f32, usize)> {
        self.check_targets(seqs, labels, kind)?;
        if workspaces.is_empty() {
            return shape_err("no workspace given");
        }
        let n = workspaces.len().clamp(1, seqs.len().max(1));
        for ws in &workspaces[..n] {
            self.check_grad_buffer(ws)?;
        }
        let norm = self.loss_norm(kind, labels);
        // Worker w takes every n-th sequence of the batch sorted longest first: the shares are
        // about equally long (contiguous chunks of a sorted batch are not), and each is sorted,
        // which lets every step's products skip the sequences that have ended.
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
        let shares: Vec<(Vec<&[u32]>, Vec<usize>)> = (0..n)
            .map(|w| {
                let share = order.iter().skip(w).step_by(n);
                share.map(|&i| (seqs[i], labels[i])).unzip()
            })
            .collect();
        let results: Vec<Result<(f32, usize)>> = if n == 1 {
            let ws = &mut workspaces[0];
            ws.clear_grads();
            let (s, y) = &shares[0];
            vec![self.loss_and_grad(params, s, y, kind, norm, ws)]
        } else {
            workspaces[..n]
                .par_iter_mut()
                .zip(shares.par_iter())
                .map(|(ws, (s, y))| {
                    ws.clear_grads();
                    self.loss_and_grad(params, s, y, kind, norm, ws)
                })
                .collect()
        };
        let used = results.len();
        let (first, others) = workspaces.split_at_mut(1);
        // Each entry is summed in workspace order whatever the split below, and the summed
        // workspaces are left clean so that the next batch need not clear them.
        const BLOCK: usize = 16384;
        for ws in &mut others[..used - 1] {
            first[0]
                .grads
                .par_chunks_mut(BLOCK)
                .zip(ws.grads.par_chunks_mut(BLOCK))
                .for_each(|(total, part)| {
                    crate::linalg::axpy(total, 1.0, part);
                    part.fill(0.0);
                });
            ws.grads_clean = true;
        }
        let mut total = (0.0, 0);
        for r in results {
            let (l, c) = r?;
            total.0 += l;
            total.1 += c;
        }
        Ok(total)
    }

    /// Adds the firing of every gate and of `h` over the valid steps of the last forward to
    /// `stats` (names like `l0.fwd.i`, `l0.fwd.h`).
    pub fn accumulate_firing(&self, ws: &Workspace, stats: &mut FiringStats) {
        let cfg = &self.cfg.rnn;
        let hs = cfg.hidden_size;
        let names = cfg.cell.gate_names();
        let g = names.len();
        let (t, b) = ws.rnn.dims();
        if stats.names.is_empty() {
            for l in 0..cfg.num_layers {
                for d in 0..cfg.directions() {
                    let dir = if d == 0 { "fwd" } else { "rev" };
                    for n in names.iter().chain(["h"].iter()) {
                        stats.names.push(format!("l{l}.{dir}.{n}"));
                    }
                }
            }
            stats.sums = vec![0.0; stats.names.len()];
            stats.counts = vec![0.0; stats.names.len()];
        }
        let mut idx = 0;
        for l in 0..cfg.num_layers {
            for d in 0..cfg.directions() {
                let gates = ws.rnn.gates(l, d);
                let hidden = ws.rnn.hidden(l, d);
                for k in 0..t {
                    for (bi, &len) in ws.rnn.lengths().iter().enumerate() {
                        if k >= len {
                            continue;
                        }
                        let row = &gates[(k * b + bi) * g * hs..(k * b + bi + 1) * g * hs];
                        for gi in 0..g {
                            stats.sums[idx + gi] += row[gi * hs..(gi + 1) * hs]
                                .iter()
                                .map(|&x| x as f64)
                                .sum::<f64>();
                            stats.counts[idx + gi] += hs as f64;
                        }
                        let h = &hidden[(k * b + bi) * hs..(k * b + bi + 1) * hs];
                        stats.sums[idx + g] += h.iter().map(|&x| x as f64).sum::<f64>();
                        stats.counts[idx + g] += hs as f64;
                    }
                }
                idx += g + 1;
            }
        }
    }
}

impl SeqClassifier {
    /// Softmax outputs `[N, C]` for many sequences, computing each distinct prefix once.
    ///
    /// A unidirectional network's state after a prefix does not depend on what follows, and
    /// name lists share many prefixes (the tutorial's 4,021 test names have 28,969 letters but
    /// only 12,857 distinct prefixes), so the sequences are merged into a trie and evaluated level
    /// by level, each level in parallel batches. Bidirectional models use [`Self::forward`].
    pub fn predict_prefix_shared(&self, params: &[f32], seqs: &[&[u32]]) -> Result<Vec<f32>> {
        let c = self.cfg.num_classes;
        if self.cfg.rnn.bidirectional {
            let mut ws = self.inference_workspace();
            self.forward(params, seqs, &mut ws, false)?;
            return Ok(ws.probs.clone());
        }
        if let Some(i) = seqs.iter().position(|s| s.is_empty()) {
            return shape_err(format!("sequence {i} is empty"));
        }
        // Trie: node k has a parent (usize::MAX = the zero initial state) and a token.
        let mut parent: Vec<usize> = Vec::new();
        let mut token: Vec<u32> = Vec::new();
        let mut levels: Vec<Vec<usize>> = Vec::new();
        let mut index: std::collections::HashMap<(usize, u32), usize> =
            std::collections::HashMap::new();
        let mut terminal = Vec::with_capacity(seqs.len());
        for s in seqs {
            let mut at = usize::MAX;
            for (d, &tok) in s.iter().enumerate() {
                at = *index.entry((at, tok)).or_insert_with(|| {
                    parent.push(at);
                    token.push(tok);
                    if levels.len() <= d {
                        levels.push(Vec::new());
                    }
                    levels[d].push(parent.len() - 1);
                    parent.len() - 1
                });
            }
            terminal.push(at);
        }
        let cfg = &self.cfg.rnn;
        let (l, hs) = (cfg.num_layers, cfg.hidden_size);
        let two = cfg.cell.states() == 2;
        let per_node = l * hs;
        let mut h = vec![0.0f32; parent.len() * per_node];
        // Mean readout: sum of the last layer's outputs along the path to each node.
        let mean = self.cfg.readout == Readout::Mean;
        let mut path_sum = vec![0.0f32; if mean { parent.len() * hs } else { 0 }];
        let mut cst = vec![0.0f32; if two { parent.len() * per_node } else { 0 }];
        const CHUNK: usize = 256;
        for level in &levels {
            let (h_ref, c_ref) = (&h, &cst);
            let results: Vec<Result<(Vec<f32>, Vec<f32>)>> = level
                .par_chunks(CHUNK)
                .map_init(RnnCache::default, |cache, nodes| {
                    let b = nodes.len();
                    // States [L, B, H], gathered from the parents.
                    let mut init = States {
                        h: vec![0.0; l * b * hs],
                        c: vec![0.0; if two { l * b * hs } else { 0 }],
                    };
                    for (bi, &n) in nodes.iter().enumerate() {
                        let p = parent[n];
                        if p == usize::MAX {
                            continue;
                        }
                        for li in 0..l {
                            let src = p * per_node + li * hs..p * per_node + (li + 1) * hs;
                            let dst = (li * b + bi) * hs..(li * b + bi + 1) * hs;
                            init.h[dst.clone()].copy_from_slice(&h_ref[src.clone()]);
                            if two {
                                init.c[dst].copy_from_slice(&c_ref[src]);
                            }
                        }
                    }
                    let toks: Vec<u32> = nodes.iter().map(|&n| token[n]).collect();
                    let batch = Batch {
                        input: Input::Tokens(&toks),
                        t: 1,
                        b,
                        lengths: None,
                    };
                    self.rnn.forward(params, batch, Some(&init), None, cache)?;
                    Ok((cache.final_states.h.clone(), cache.final_states.c.clone()))
                })
                .collect();
            for (nodes, r) in level.chunks(CHUNK).zip(results) {
                let (fh, fc) = r?;
                let b = nodes.len();
                for (bi, &n) in nodes.iter().enumerate() {
                    for li in 0..l {
                        let src = (li * b + bi) * hs..(li * b + bi + 1) * hs;
                        let dst = n * per_node + li * hs..n * per_node + (li + 1) * hs;
                        h[dst.clone()].copy_from_slice(&fh[src.clone()]);
                        if two {
                            cst[dst].copy_from_slice(&fc[src]);
                        }
                    }
                }
                if mean {
                    for (bi, &n) in nodes.iter().enumerate() {
                        let top = ((l - 1) * b + bi) * hs..((l - 1) * b + bi + 1) * hs;
                        let p = parent[n];
                        for j in 0..hs {
                            let before = if p == usize::MAX {
                                0.0
                            } else {
                                path_sum[p * hs + j]
                            };
                            path_sum[n * hs + j] = before + fh[top.start + j];
                        }
                    }
                }
            }
        }
        // The network's output is the last layer's h (or c) at the last step.
        let top = if self.cfg.readout == Readout::Cell {
            &cst
        } else {
            &h
        };
        let mut feat = Vec::with_capacity(seqs.len() * hs);
        for (s, &n) in seqs.iter().zip(&terminal) {
            if mean {
                feat.extend(
                    path_sum[n * hs..(n + 1) * hs]
                        .iter()
                        .map(|&x| x / s.len() as f32),
                );
            } else {
                feat.extend_from_slice(&top[n * per_node + (l - 1) * hs..(n + 1) * per_node]);
            }
        }
        let mut logits = vec![0.0; seqs.len() * c];
        self.fc.forward(params, &feat, &mut logits);
        let mut probs = vec![0.0; seqs.len() * c];
        loss::softmax(&logits, c, &mut probs);
        Ok(probs)
    }
}

/// Mean spike rates per gate: `sums[i] / counts[i]` for `names[i]`.
#[derive(Clone, Debug, Default)]
pub struct FiringStats {
    pub names: Vec<String>,
    pub sums: Vec<f64>,
    pub counts: Vec<f64>,
}

impl FiringStats {
    pub fn rates(&self) -> Vec<(String, f64)> {
        self.names
            .iter()
            .zip(self.sums.iter().zip(&self.counts))
            .map(|(n, (s, c))| (n.clone(), if *c > 0.0 { s / c } else { 0.0 }))
            .collect()
    }
}

/// A random generator for callers that want the crate's choice.
pub fn seeded_rng(seed: u64) -> impl Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
