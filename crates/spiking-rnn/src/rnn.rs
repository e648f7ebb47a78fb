//! Stacked / bidirectional spiking RNNs over whole sequences (SpikingJelly `SpikingRNNBase`,
//! spec §2), with variable-length batches and explicit backward-through-time.
//!
//! Shapes: `T` time steps, `B` batch, `I` input features, `H` hidden, `G` gate blocks,
//! `L` layers, `D` directions. Direction-layer `s = d·L + l` is also the index of its states
//! (`[l0_fwd, l1_fwd, …, l0_rev, l1_rev, …]`, SpikingJelly's layout).
//!
//! Variable lengths: sequence `b` is valid for `t < len[b]`. Its state stops changing after its
//! end, its outputs there are 0, and the reverse direction starts at `len[b] − 1`, so a batched
//! result equals running each sequence alone, gradients included.

use crate::cell::{self, CellFns, CellKind};
use crate::linalg::{
    add_a_b, add_at_b, add_column_sums, axpy, matmul, row_indices, rows_matmul, rows_matmul_panels,
    transpose, Mat, Panels,
};
use crate::params::ParamLayout;
use crate::surrogate::Surrogate;
use crate::{shape_err, Error, Result};
use rand::{Rng, RngCore};
use std::ops::Range;

/// Constructor arguments of `SpikingLSTM` / `SpikingGRU` / `SpikingVanillaRNN`.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnConfig {
    pub cell: CellKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub bias: bool,
    /// Inverted dropout between layers, training only (no-op with one layer).
    pub dropout: f32,
    /// One dropout mask per (layer gap, batch item, feature), constant over time.
    pub invariant_dropout_mask: bool,
    /// `surrogate_function1` (`surrogate_function` of the vanilla RNN).
    pub surrogate1: Surrogate,
    /// `surrogate_function2`: the LSTM `g` / GRU `n` gate; `None` = same as `surrogate1`.
    pub surrogate2: Option<Surrogate>,
    /// LSTM cell-state cap at 1 (SpikingJelly since 2022); `false` = the 2020 behaviour.
    pub clamp_cell: bool,
}

impl RnnConfig {
    /// SpikingJelly defaults: one layer, bias, Erf(α=2) spiking, no dropout, clamp on.
    pub fn new(cell: CellKind, input_size: usize, hidden_size: usize) -> Self {
        Self {
            cell,
            input_size,
            hidden_size,
            num_layers: 1,
            bidirectional: false,
            bias: true,
            dropout: 0.0,
            invariant_dropout_mask: false,
            surrogate1: Surrogate::default(),
            surrogate2: None,
            clamp_cell: true,
        }
    }
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
    /// Features of the output sequence: `D·H`.
    pub fn output_size(&self) -> usize {
        self.directions() * self.hidden_size
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.input_size == 0 || self.hidden_size == 0 {
            return bad("input_size and hidden_size must be ≥ 1".into());
        }
        if self.num_layers == 0 {
            return bad("num_layers must be ≥ 1".into());
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1], got {}", self.dropout));
        }
        self.surrogate1.validate()?;
        if let Some(s2) = &self.surrogate2 {
            if matches!(self.cell, CellKind::Rnn | CellKind::AnnLstm) {
                return bad(format!(
                    "{} takes no surrogate_function2",
                    self.cell.model_class()
                ));
            }
            s2.validate()?;
            if s2.spiking != self.surrogate1.spiking {
                return bad(
                    "surrogate_function2 must have the same spiking mode as surrogate_function1"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// Where one direction-layer's tensors live in the flat parameter buffer. Weights are stored
/// transposed: `w_ih` as `[I, G·H]`, `w_hh` as `[H, G·H]`.
#[derive(Clone, Debug)]
struct DirParams {
    input: usize,
    w_ih: Range<usize>,
    b_ih: Option<Range<usize>>,
    w_hh: Range<usize>,
    b_hh: Option<Range<usize>>,
}

/// Input of the first layer.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// `[T, B, I]` row-major.
    Dense(&'a [f32]),
    /// `[T, B]` letter indices: a one-hot input, read as a row gather of `W_ihᵀ`.
    Tokens(&'a [u32]),
}

/// States in SpikingJelly's layout: `h` (and `c` for LSTMs) each `[L·D, B, H]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct States {
    pub h: Vec<f32>,
    /// Empty for single-state cells.
    pub c: Vec<f32>,
}

/// A batch of sequences: `t` steps, `b` items, optional per-item lengths (each 1..=t).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub input: Input<'a>,
    pub t: usize,
    pub b: usize,
    pub lengths: Option<&'a [usize]>,
}

/// What forward keeps for backward, and scratch space; reused across calls so the time loop
/// never allocates.
#[derive(Clone, Debug, Default)]
pub struct RnnCache {
    t: usize,
    b: usize,
    lengths: Vec<usize>,
    dense_input: Vec<f32>,
    tokens: Vec<u32>,
    layers: Vec<LayerCache>,
    /// Final states `[L·D, B, H]`.
    pub final_states: States,
    // backward scratch
    d_out: Vec<f32>,
    d_in: Vec<f32>,
    d_u: Vec<f32>,
    d_v: Vec<f32>,
    d_h: Vec<f32>,
    d_c: Vec<f32>,
    /// `W_hh` of the current direction-layer in its original `[G·H, H]` layout.
    w_hh_rows: Vec<f32>,
    /// Rows of `[T, B, ·]` matrices whose step is inside its sequence.
    valid_rows: Vec<u32>,
    /// Column sums of `d_v` `[G·H]`.
    bias_sums: Vec<f32>,
}

#[derive(Clone, Debug, Default)]
struct LayerCache {
    /// Layer output `[T, B, D·H]` (before dropout).
    out: Vec<f32>,
    /// Input of the next layer: `out ⊙ mask` (empty when no dropout was applied).
    dropped: Vec<f32>,
    /// Dropout mask after this layer, `[T, B, D·H]` or `[B, D·H]` (invariant); empty if none.
    mask: Vec<f32>,
    dirs: Vec<DirCache>,
}

impl LayerCache {
    /// What the next layer reads: the output after dropout (or the output if none was applied).
    fn next_input(&self) -> &[f32] {
        if self.dropped.is_empty() {
            &self.out
        } else {
            &self.dropped
        }
    }
}

#[derive(Clone, Debug, Default)]
struct DirCache {
    /// `x·W_ihᵀ + b_ih`, time order `[T, B, G·H]` (for letter inputs, rows past a sequence's
    /// end are not written).
    u: Vec<f32>,
    /// Spike-function arguments and outputs, processing order `[T, B, G·H]`.
    pre: Vec<f32>,
    gate: Vec<f32>,
    /// States before/after each processing step `[(T+1), B, H]` (`h[0]` = initial state).
    h: Vec<f32>,
    c: Vec<f32>,
    /// GRU `v_n` `[T, B, H]`.
    vn: Vec<f32>,
    /// `h·W_hhᵀ + b_hh` of the current step `[B, G·H]` (rows past a sequence's end are not
    /// written).
    v: Vec<f32>,
    /// `W_hh` in panels, when a forward sums enough rows ([`PACK_MIN_ROWS_SUMMED`]).
    w_hh_panels: Panels,
}

/// Length `n`, all zeros.
fn reset(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

/// Length `n`, contents unspecified (for buffers whose every read entry is written first).
fn size(v: &mut Vec<f32>, n: usize) {
    v.resize(n, 0.0);
}

impl RnnCache {
    /// Output sequence of the last layer, `[T, B, D·H]`.
    pub fn output(&self) -> &[f32] {
        self.layers.last().map(|l| l.out.as_slice()).unwrap_or(&[])
    }
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }
    pub fn dims(&self) -> (usize, usize) {
        (self.t, self.b)
    }
    /// Spike-function outputs of one direction-layer, processing order `[T, B, G·H]`; entries at
    /// steps past a sequence's end are unspecified (use [`Self::lengths`] to skip them).
    pub fn gates(&self, layer: usize, direction: usize) -> &[f32] {
        &self.layers[layer].dirs[direction].gate
    }
    /// `h` after each processing step of direction-layer `s`, `[T, B, H]`.
    pub fn hidden(&self, layer: usize, direction: usize) -> &[f32] {
        let d = &self.layers[layer].dirs[direction];
        let n = d.h.len() / (self.t + 1);
        &d.h[n..]
    }
}

/// A stack of spiking recurrent layers.
#[derive(Clone, Debug)]
pub struct SpikingRnn {
    pub cfg: RnnConfig,
    dirs: Vec<DirParams>,
    fns: CellFns,
}

impl SpikingRnn {
    /// Registers the tensors under `prefix` (`""` or e.g. `"lstm."`) with SpikingJelly names.
    pub fn new(cfg: RnnConfig, layout: &mut ParamLayout, prefix: &str) -> Result<Self> {
        cfg.validate()?;
        let g = cfg.cell.gates();
        let gh = g * cfg.hidden_size;
        let mut dirs = Vec::new();
        for d in 0..cfg.directions() {
            let group = if d == 0 { "cells" } else { "cells_reverse" };
            for l in 0..cfg.num_layers {
                let input = if l == 0 {
                    cfg.input_size
                } else {
                    cfg.output_size()
                };
                let name = |t: &str| format!("{prefix}{group}.{l}.{t}");
                let w_ih = layout.add(name("linear_ih.weight"), vec![gh, input], true);
                let b_ih = cfg
                    .bias
                    .then(|| layout.add(name("linear_ih.bias"), vec![gh], false));
                let w_hh = layout.add(name("linear_hh.weight"), vec![gh, cfg.hidden_size], true);
                let b_hh = cfg
                    .bias
                    .then(|| layout.add(name("linear_hh.bias"), vec![gh], false));
                dirs.push(DirParams {
                    input,
                    w_ih,
                    b_ih,
                    w_hh,
                    b_hh,
                });
            }
        }
        let s1 = cfg.surrogate1;
        let fns = CellFns {
            s1,
            s2: cfg.surrogate2.unwrap_or(s1),
            clamp: cfg.clamp_cell,
        };
        Ok(Self { cfg, dirs, fns })
    }

    /// SpikingJelly's initialisation: every cell parameter uniform in `±1/√H`.
    pub fn init(&self, params: &mut [f32], rng: &mut impl Rng) {
        let k = 1.0 / (self.cfg.hidden_size as f32).sqrt();
        for d in &self.dirs {
            for r in [
                Some(&d.w_ih),
                d.b_ih.as_ref(),
                Some(&d.w_hh),
                d.b_hh.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                for p in &mut params[r.clone()] {
                    *p = rng.gen_range(-k..k);
                }
            }
        }
    }

    fn state_len(&self, b: usize) -> usize {
        self.cfg.num_layers * self.cfg.directions() * b * self.cfg.hidden_size
    }

    fn check_batch(&self, batch: &Batch, params: &[f32]) -> Result<()> {
        let (t, b) = (batch.t, batch.b);
        if t == 0 || b == 0 {
            return shape_err(format!("empty batch: T = {t}, B = {b}"));
        }
        if let Some(last) = self.dirs.last() {
            if params.len() < last.w_hh.end.max(last.b_hh.clone().map_or(0, |r| r.end)) {
                return shape_err("parameter buffer is smaller than the model");
            }
        }
        match batch.input {
            Input::Dense(x) if x.len() != t * b * self.cfg.input_size => {
                return shape_err(format!(
                    "input has {} values, expected T·B·I = {t}·{b}·{}",
                    x.len(),
                    self.cfg.input_size
                ))
            }
            Input::Tokens(x) => {
                if x.len() != t * b {
                    return shape_err(format!(
                        "token input has {} values, expected T·B = {}",
                        x.len(),
                        t * b
                    ));
                }
                if let Some(bad) = x.iter().find(|&&i| i as usize >= self.cfg.input_size) {
                    return shape_err(format!(
                        "token {bad} is out of range 0..{}",
                        self.cfg.input_size
                    ));
                }
            }
            _ => {}
        }
        if let Some(len) = batch.lengths {
            if len.len() != b {
                return shape_err(format!("{} lengths given for a batch of {b}", len.len()));
            }
            if let Some(bad) = len.iter().find(|&&n| n == 0 || n > t) {
                return shape_err(format!("sequence length {bad} is outside 1..={t}"));
            }
        }
        Ok(())
    }

    fn check_states(&self, s: &States, b: usize, what: &str) -> Result<()> {
        let n = self.state_len(b);
        let want_c = self.cfg.cell.states() == 2;
        if s.h.len() != n || (want_c && s.c.len() != n) || (!want_c && !s.c.is_empty()) {
            return shape_err(format!(
                "{what} must be {} tensor(s) of [L·D, B, H] = [{}, {b}, {}]",
                self.cfg.cell.states(),
                self.cfg.num_layers * self.cfg.directions(),
                self.cfg.hidden_size
            ));
        }
        Ok(())
    }

    /// Runs the stack. `init`: initial states (zeros if `None`). `dropout_rng`: `Some` in
    /// training mode (dropout between layers is applied only then).
    pub fn forward(
        &self,
        params: &[f32],
        batch: Batch,
        init: Option<&States>,
        mut dropout_rng: Option<&mut dyn RngCore>,
        cache: &mut RnnCache,
    ) -> Result<()> {
        self.check_batch(&batch, params)?;
        let (t, b) = (batch.t, batch.b);
        if let Some(s) = init {
            self.check_states(s, b, "initial states")?;
        }
        let cfg = &self.cfg;
        let (hs, nd, nl) = (cfg.hidden_size, cfg.directions(), cfg.num_layers);
        let dh = nd * hs;
        cache.t = t;
        cache.b = b;
        cache.lengths.clear();
        match batch.lengths {
            Some(l) => cache.lengths.extend_from_slice(l),
            None => cache.lengths.resize(b, t),
        }
        cache.dense_input.clear();
        cache.tokens.clear();
        match batch.input {
            Input::Dense(x) => cache.dense_input.extend_from_slice(x),
            Input::Tokens(x) => cache.tokens.extend_from_slice(x),
        }
        cache.layers.resize_with(nl, LayerCache::default);
        let sl = self.state_len(b);
        reset(&mut cache.final_states.h, sl);
        if cfg.cell.states() == 2 {
            reset(&mut cache.final_states.c, sl);
        } else {
            cache.final_states.c.clear();
        }

        let dropping = dropout_rng.is_some() && cfg.dropout > 0.0 && nl > 1;
        let keep_scale = if cfg.dropout < 1.0 {
            1.0 / (1.0 - cfg.dropout)
        } else {
            0.0
        };
        let layers = &mut cache.layers;
        for l in 0..nl {
            let (done, rest) = layers.split_at_mut(l);
            let lc = &mut rest[0];
            reset(&mut lc.out, t * b * dh);
            lc.dirs.resize_with(nd, DirCache::default);
            let x: LayerInput = if l == 0 {
                match batch.input {
                    Input::Dense(x) => LayerInput::Dense(x),
                    Input::Tokens(x) => LayerInput::Tokens(x),
                }
            } else {
                let prev = &done[l - 1];
                LayerInput::Dense(prev.next_input())
            };
            for d in 0..nd {
                let s = d * nl + l;
                let init_s = init.map(|st| {
                    let r = s * b * hs..(s + 1) * b * hs;
                    (
                        &st.h[r.clone()],
                        if st.c.is_empty() { &st.c[..] } else { &st.c[r] },
                    )
                });
                self.forward_direction(
                    params,
                    s,
                    d == 1,
                    x,
                    t,
                    b,
                    &cache.lengths,
                    init_s,
                    &mut lc.dirs[d],
                    &mut lc.out,
                );
                let dc = &lc.dirs[d];
                let r = s * b * hs..(s + 1) * b * hs;
                cache.final_states.h[r.clone()].copy_from_slice(&dc.h[t * b * hs..]);
                if cfg.cell.states() == 2 {
                    cache.final_states.c[r].copy_from_slice(&dc.c[t * b * hs..]);
                }
            }
            lc.mask.clear();
            lc.dropped.clear();
            if dropping && l + 1 < nl {
                let rng = dropout_rng.as_deref_mut().expect("dropping implies an rng");
                let n = if cfg.invariant_dropout_mask {
                    b * dh
                } else {
                    t * b * dh
                };
                lc.mask.extend((0..n).map(|_| {
                    if rng.gen::<f32>() < cfg.dropout {
                        0.0
                    } else {
                        keep_scale
                    }
                }));
                lc.dropped
                    .extend(lc.out.iter().enumerate().map(|(i, &y)| y * lc.mask[i % n]));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_direction(
        &self,
        params: &[f32],
        s: usize,
        reverse: bool,
        x: LayerInput,
        t: usize,
        b: usize,
        lengths: &[usize],
        init: Option<(&[f32], &[f32])>,
        dc: &mut DirCache,
        out: &mut [f32],
    ) {
        let p = &self.dirs[s];
        let cfg = &self.cfg;
        let hs = cfg.hidden_size;
        let gh = cfg.cell.gates() * hs;
        let dh = cfg.directions() * hs;
        let col = if reverse { hs } else { 0 };
        let two_states = cfg.cell.states() == 2;
        let w_ih = &params[p.w_ih.clone()];
        let w_hh = &params[p.w_hh.clone()];

        // u = x·W_ihᵀ + b_ih for all steps at once.
        size(&mut dc.u, t * b * gh);
        match x {
            LayerInput::Dense(x) => matmul(
                &mut dc.u,
                gh,
                false,
                Mat::new(x, t * b, p.input),
                Mat::new(w_ih, p.input, gh),
            ),
            LayerInput::Tokens(x) => {
                for (r, (row, &tok)) in dc.u.chunks_exact_mut(gh).zip(x).enumerate() {
                    if r / b >= lengths[r % b] {
                        continue; // padding: never read
                    }
                    let k = tok as usize;
                    let w_row = &w_ih[k * gh..(k + 1) * gh];
                    match &p.b_ih {
                        // one pass instead of a copy and an add: the same sums
                        Some(r) => {
                            for ((u, &w), &bias) in
                                row.iter_mut().zip(w_row).zip(&params[r.clone()])
                            {
                                *u = w + bias;
                            }
                        }
                        None => row.copy_from_slice(w_row),
                    }
                }
            }
        }
        if let (Some(r), LayerInput::Dense(_)) = (&p.b_ih, x) {
            for row in dc.u.chunks_exact_mut(gh) {
                axpy(row, 1.0, &params[r.clone()]);
            }
        }

        // pre/gate/vn entries past a sequence's end are never read; h and c rows are all written.
        size(&mut dc.pre, t * b * gh);
        size(&mut dc.gate, t * b * gh);
        size(&mut dc.h, (t + 1) * b * hs);
        if two_states {
            size(&mut dc.c, (t + 1) * b * hs);
        }
        if cfg.cell == CellKind::Gru {
            size(&mut dc.vn, t * b * hs);
        }
        match init {
            Some((h0, c0)) => {
                dc.h[..b * hs].copy_from_slice(h0);
                if two_states {
                    dc.c[..b * hs].copy_from_slice(c0);
                }
            }
            None => {
                dc.h[..b * hs].fill(0.0);
                if two_states {
                    dc.c[..b * hs].fill(0.0);
                }
            }
        }
        size(&mut dc.v, b * gh);
        let mut packed = false;

        for k in 0..t {
            // v = h·W_hhᵀ + b_hh for the rows still running. Rows past their sequence's end
            // only copy their state: they skip the product and their v is not read.
            let na = active_rows(lengths, k);
            match &p.b_hh {
                Some(r) => {
                    for row in dc.v[..na * gh].chunks_exact_mut(gh) {
                        row.copy_from_slice(&params[r.clone()]);
                    }
                }
                None => dc.v[..na * gh].fill(0.0),
            }
            let (h_done, h_next) = dc.h.split_at_mut((k + 1) * b * hs);
            let h_prev = &h_done[k * b * hs..];
            // Spikes select rows of W_hh: summing them skips the zeros. Packed in panels once
            // the rows still to sum make up for the packing (see PACK_MIN_ROWS_SUMMED),
            // judged from this step's spikes.
            if !packed {
                let spikes = h_prev[..na * hs].iter().filter(|&&x| x != 0.0).count();
                if spikes * (t - k) >= PACK_MIN_ROWS_SUMMED {
                    dc.w_hh_panels.pack(w_hh, gh);
                    packed = true;
                }
            }
            if packed {
                rows_matmul_panels(
                    &mut dc.v[..na * gh],
                    gh,
                    &h_prev[..na * hs],
                    hs,
                    &dc.w_hh_panels,
                );
            } else {
                rows_matmul(&mut dc.v[..na * gh], gh, &h_prev[..na * hs], hs, w_hh, gh);
            }
            let h_next = &mut h_next[..b * hs];
            for (bi, &len) in lengths.iter().enumerate() {
                let hr = bi * hs..(bi + 1) * hs;
                if k >= len {
                    h_next[hr.clone()].copy_from_slice(&h_prev[hr.clone()]);
                    if two_states {
                        let (c_done, c_next) = dc.c.split_at_mut((k + 1) * b * hs);
                        c_next[hr.clone()]
                            .copy_from_slice(&c_done[k * b * hs + hr.start..k * b * hs + hr.end]);
                    }
                    continue;
                }
                let ti = if reverse { len - 1 - k } else { k };
                let u = &dc.u[(ti * b + bi) * gh..(ti * b + bi + 1) * gh];
                let v = &dc.v[bi * gh..(bi + 1) * gh];
                let g = (k * b + bi) * gh..(k * b + bi + 1) * gh;
                let pre = &mut dc.pre[g.clone()];
                let gate = &mut dc.gate[g];
                let h = &mut h_next[hr.clone()];
                match cfg.cell {
                    CellKind::Lstm | CellKind::AnnLstm => {
                        let (c_done, c_next) = dc.c.split_at_mut((k + 1) * b * hs);
                        let c_prev = &c_done[k * b * hs + hr.start..k * b * hs + hr.end];
                        let c = &mut c_next[hr.clone()];
                        if cfg.cell == CellKind::Lstm {
                            cell::lstm_forward(&self.fns, u, v, c_prev, pre, gate, c, h);
                        } else {
                            cell::ann_lstm_forward(u, v, c_prev, pre, gate, c, h);
                        }
                    }
                    CellKind::Gru => {
                        let vn = &mut dc.vn[(k * b + bi) * hs..(k * b + bi + 1) * hs];
                        cell::gru_forward(&self.fns, u, v, &h_prev[hr.clone()], pre, gate, vn, h);
                    }
                    CellKind::Rnn => cell::rnn_forward(&self.fns, u, v, pre, h),
                }
                let o = (ti * b + bi) * dh + col;
                out[o..o + hs].copy_from_slice(h);
            }
        }
    }

    /// Backward through time. `d_output`: gradient w.r.t. the output sequence `[T, B, D·H]`;
    /// `d_final`: w.r.t. the final states (or `None` = 0). Parameter gradients are added to
    /// `grads` (same layout as `params`). If given, `d_input` (`[T, B, I]`, dense input only) and
    /// `d_init` receive the gradients w.r.t. the input and the initial states.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        params: &[f32],
        cache: &mut RnnCache,
        d_output: &[f32],
        d_final: Option<&States>,
        grads: &mut [f32],
        mut d_input: Option<&mut [f32]>,
        mut d_init: Option<&mut States>,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let (t, b) = (cache.t, cache.b);
        let (hs, nd, nl) = (cfg.hidden_size, cfg.directions(), cfg.num_layers);
        let gh = cfg.cell.gates() * hs;
        let dh = nd * hs;
        if cache.layers.len() != nl || t == 0 {
            return shape_err("backward called without a matching forward");
        }
        if d_output.len() != t * b * dh {
            return shape_err(format!(
                "output gradient has {} values, expected {}",
                d_output.len(),
                t * b * dh
            ));
        }
        if grads.len() != params.len() {
            return shape_err("gradient buffer and parameter buffer differ in size");
        }
        if let Some(s) = d_final {
            self.check_states(s, b, "final-state gradients")?;
        }
        if let Some(di) = d_input.as_deref() {
            if cache.dense_input.is_empty() || di.len() != t * b * cfg.input_size {
                return shape_err("input gradient needs a dense input of the same shape");
            }
        }
        let sl = self.state_len(b);
        if let Some(s) = d_init.as_deref_mut() {
            reset(&mut s.h, sl);
            if cfg.cell.states() == 2 {
                reset(&mut s.c, sl);
            } else {
                s.c.clear();
            }
        }
        let RnnCache {
            lengths,
            dense_input,
            tokens,
            layers,
            d_out,
            d_in,
            d_u,
            d_v,
            d_h,
            d_c,
            w_hh_rows,
            valid_rows: valid_buf,
            bias_sums,
            ..
        } = cache;
        let valid = valid_rows(valid_buf, t, lengths);
        d_out.clear();
        d_out.extend_from_slice(d_output);
        for l in (0..nl).rev() {
            let input_size = self.dirs[l].input;
            let need_d_in = l > 0 || d_input.is_some();
            reset(d_in, if need_d_in { t * b * input_size } else { 0 });
            let (below, rest) = layers.split_at_mut(l);
            let lc = &mut rest[0];
            let x: LayerInput = if l == 0 {
                if tokens.is_empty() {
                    LayerInput::Dense(dense_input)
                } else {
                    LayerInput::Tokens(tokens)
                }
            } else {
                let prev = &below[l - 1];
                LayerInput::Dense(prev.next_input())
            };
            for d in 0..nd {
                let s = d * nl + l;
                let p = &self.dirs[s];
                let dc = &lc.dirs[d];
                let sr = s * b * hs..(s + 1) * b * hs;
                reset(d_h, b * hs);
                reset(d_c, b * hs);
                if let Some(f) = d_final {
                    d_h.copy_from_slice(&f.h[sr.clone()]);
                    if cfg.cell.states() == 2 {
                        d_c.copy_from_slice(&f.c[sr.clone()]);
                    }
                }
                // LSTM and vanilla RNN: u and v enter the cell as one sum, so d_u = d_v up to the
                // time order; in the forward direction it is d_v itself and is not copied.
                let separate_d_u = cfg.cell == CellKind::Gru || d == 1;
                // Every row is written below, no reset. Rows past a sequence's end are zeros if
                // anything reads them: the backward product over the whole batch when the
                // lengths are not sorted longest first, and the input gradient; the weight and
                // bias gradients read the valid rows only.
                let zero_ended = !sorted_longest_first(lengths) || need_d_in;
                size(d_v, t * b * gh);
                if separate_d_u {
                    size(d_u, t * b * gh);
                }
                let w_hh = &params[p.w_hh.clone()];
                let col = d * hs;
                let mut w_hh_rows_ready = false;
                for k in (0..t).rev() {
                    for (bi, &len) in lengths.iter().enumerate() {
                        if k >= len {
                            // State was copied: gradients pass unchanged, and this step adds no
                            // weight gradient. (For the reverse direction, row k of d_u is a
                            // time step past the end too.)
                            if zero_ended {
                                let r = (k * b + bi) * gh..(k * b + bi + 1) * gh;
                                d_v[r.clone()].fill(0.0);
                                if separate_d_u {
                                    d_u[r].fill(0.0);
                                }
                            }
                            continue;
                        }
                        let ti = if d == 1 { len - 1 - k } else { k };
                        let hr = bi * hs..(bi + 1) * hs;
                        let o = (ti * b + bi) * dh + col;
                        axpy(&mut d_h[hr.clone()], 1.0, &d_out[o..o + hs]);
                        let g = (k * b + bi) * gh..(k * b + bi + 1) * gh;
                        let ur = (ti * b + bi) * gh..(ti * b + bi + 1) * gh;
                        let sk = k * b * hs + hr.start..k * b * hs + hr.end;
                        let sk1 = (k + 1) * b * hs + hr.start..(k + 1) * b * hs + hr.end;
                        match cfg.cell {
                            CellKind::Lstm => cell::lstm_backward(
                                &self.fns,
                                &dc.pre[g.clone()],
                                &dc.gate[g.clone()],
                                &dc.c[sk],
                                &dc.c[sk1],
                                &d_h[hr.clone()],
                                &mut d_c[hr.clone()],
                                &mut d_v[g.clone()],
                            ),
                            CellKind::AnnLstm => cell::ann_lstm_backward(
                                &dc.gate[g.clone()],
                                &dc.c[sk],
                                &dc.c[sk1],
                                &d_h[hr.clone()],
                                &mut d_c[hr.clone()],
                                &mut d_v[g.clone()],
                            ),
                            CellKind::Rnn => cell::rnn_backward(
                                &self.fns,
                                &dc.pre[g.clone()],
                                &d_h[hr.clone()],
                                &mut d_v[g.clone()],
                            ),
                            CellKind::Gru => {
                                let vr = (k * b + bi) * hs..(k * b + bi + 1) * hs;
                                cell::gru_backward(
                                    &self.fns,
                                    &dc.pre[g.clone()],
                                    &dc.gate[g.clone()],
                                    &dc.vn[vr],
                                    &dc.h[sk],
                                    &mut d_h[hr.clone()],
                                    &mut d_u[ur.clone()],
                                    &mut d_v[g.clone()],
                                );
                            }
                        }
                        if cfg.cell != CellKind::Gru {
                            // h has no direct path to the previous step.
                            d_h[hr].fill(0.0);
                            if separate_d_u {
                                d_u[ur].copy_from_slice(&d_v[g]);
                            }
                        }
                    }
                    // d_h_prev += d_v·W_hh (W_hh stored as [H, G·H]). Before step 0 it only
                    // feeds the initial-state gradient.
                    if k == 0 && d_init.is_none() {
                        continue;
                    }
                    let na = active_rows(lengths, k);
                    let dv_k = &d_v[k * b * gh..(k * b + na) * gh];
                    // gemm packs its operands, and packing the transposed view of W_hh costs
                    // more than the product; with many rows, transposing once per call wins.
                    // Its rows are also what the sums read when d_v is mostly zeros (gate
                    // gradients are zero wherever the spike or state that multiplies them is:
                    // 3–10 % are non-zero in a trained model).
                    let d_h_k = &mut d_h[..na * hs];
                    if t * b >= TRANSPOSE_MIN_ROWS {
                        if !w_hh_rows_ready {
                            size(w_hh_rows, w_hh.len());
                            transpose(w_hh_rows, w_hh, hs, gh);
                            w_hh_rows_ready = true;
                        }
                        add_a_b(d_h_k, hs, dv_k, gh, w_hh_rows);
                    } else {
                        let dv_k = Mat::new(dv_k, na, gh);
                        matmul(d_h_k, hs, true, dv_k, Mat::new(w_hh, hs, gh).t());
                    }
                }
                if let Some(st) = d_init.as_deref_mut() {
                    st.h[sr.clone()].copy_from_slice(d_h);
                    if cfg.cell.states() == 2 {
                        st.c[sr].copy_from_slice(d_c);
                    }
                }
                // Weight gradients for all steps in one product each, over the rows inside their
                // sequence only (the others have zero gradient; in batches of names they are
                // about a third of the rows).
                let d_u: &[f32] = if separate_d_u { d_u } else { d_v };
                let h_prev = &dc.h[..t * b * hs];
                add_at_b(&mut grads[p.w_hh.clone()], h_prev, hs, d_v, gh, valid);
                match (&p.b_hh, &p.b_ih) {
                    // d_u is d_v: both bias gradients are the same sums, computed once.
                    (Some(bh), Some(bi)) if !separate_d_u => {
                        reset(bias_sums, gh);
                        add_column_sums(bias_sums, d_v, gh, valid);
                        axpy(&mut grads[bh.clone()], 1.0, bias_sums);
                        axpy(&mut grads[bi.clone()], 1.0, bias_sums);
                    }
                    (bh, bi) => {
                        if let Some(r) = bh {
                            add_column_sums(&mut grads[r.clone()], d_v, gh, valid);
                        }
                        if let Some(r) = bi {
                            add_column_sums(&mut grads[r.clone()], d_u, gh, valid);
                        }
                    }
                }
                let w_ih = &params[p.w_ih.clone()];
                match x {
                    LayerInput::Dense(xd) => {
                        add_at_b(&mut grads[p.w_ih.clone()], xd, input_size, d_u, gh, valid);
                        if need_d_in {
                            matmul(
                                d_in,
                                input_size,
                                true,
                                Mat::new(d_u, t * b, gh),
                                Mat::new(w_ih, input_size, gh).t(),
                            );
                        }
                    }
                    LayerInput::Tokens(tk) => {
                        let g_w_ih = &mut grads[p.w_ih.clone()];
                        // The rows inside their sequence (the others are zero).
                        for r in row_indices(tk.len(), valid) {
                            let tok = tk[r] as usize;
                            let du_row = &d_u[r * gh..(r + 1) * gh];
                            axpy(&mut g_w_ih[tok * gh..(tok + 1) * gh], 1.0, du_row);
                        }
                    }
                }
            }
            // The gradient w.r.t. this layer's input is the previous layer's output gradient.
            if l > 0 {
                let prev = &below[l - 1];
                d_out.clear();
                if prev.mask.is_empty() {
                    d_out.extend_from_slice(d_in);
                } else {
                    let n = prev.mask.len();
                    d_out.extend(d_in.iter().enumerate().map(|(i, &g)| g * prev.mask[i % n]));
                }
            } else if let Some(di) = d_input.as_deref_mut() {
                di.copy_from_slice(d_in);
            }
        }
        Ok(())
    }
}

/// The rows of a step-major `[T·B, ·]` matrix whose step is inside its sequence
/// (`step < len`), listed in `buf`; `None` when every row is.
fn valid_rows<'a>(buf: &'a mut Vec<u32>, t: usize, lengths: &[usize]) -> Option<&'a [u32]> {
    let b = lengths.len();
    if lengths.iter().all(|&len| len >= t) {
        return None;
    }
    buf.clear();
    buf.extend((0..(t * b) as u32).filter(|&r| (r as usize / b) < lengths[r as usize % b]));
    Some(buf)
}

/// How many rows of `W_hh` the forward product must still be expected to sum (this step's
/// spikes × the steps left) before it packs `W_hh` in panels, whose rows it then reuses for
/// several names from L1. Measured with the 256 × 1,024 `W_hh` of the tutorial: packing costs
/// 50–100 µs, and each row summed from a packed panel saves ~20 ns (~120 GB/s of rows against
/// ~75), so packing pays from ~3,000 rows; twice that leaves a margin. The bench's batches of
/// 32 names per worker (a quarter of `h` firing) sum ~13,000 rows; a trained model in
/// `--preset fast` (16 names per worker, 8 % firing) ~2,000, and packing made it no faster.
const PACK_MIN_ROWS_SUMMED: usize = 6_000;

/// Batch rows × steps from which the backward pass transposes `W_hh` for its recurrent product.
const TRANSPOSE_MIN_ROWS: usize = 64;

/// Rows still running at processing step `k`. With lengths sorted longest first (as the
/// classifier and evaluation batches are) they are a prefix of the batch; otherwise all rows.
fn active_rows(lengths: &[usize], k: usize) -> usize {
    if sorted_longest_first(lengths) {
        lengths.partition_point(|&l| l > k)
    } else {
        lengths.len()
    }
}

fn sorted_longest_first(lengths: &[usize]) -> bool {
    lengths.windows(2).all(|w| w[0] >= w[1])
}

#[derive(Clone, Copy)]
enum LayerInput<'a> {
    Dense(&'a [f32]),
    Tokens(&'a [u32]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A batch large enough for the batched paths (`W_hh` packed in panels for the forward
    /// sums, spike-selected rows for the weight gradient, the transposed `W_hh` for the backward
    /// product, through gemm or summing the rows that sparse gate gradients select) gives what
    /// running each name alone gives: the same outputs bit for bit, the same gradients up to
    /// the order of the sums. Lengths sorted longest first (ended rows skipped) and in any
    /// order.
    #[test]
    fn large_batches_equal_one_by_one() {
        let (i, h, b) = (58, 128, 128);
        let mut layout = ParamLayout::new();
        let rnn = SpikingRnn::new(RnnConfig::new(CellKind::Lstm, i, h), &mut layout, "").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut lengths: Vec<usize> = (0..b).map(|k| 12 - k % 12).collect();
        lengths.sort_unstable_by(|x, y| y.cmp(x));
        let unsorted: Vec<usize> = (0..b).map(|k| lengths[(k * 7) % b]).collect();
        // Biases lowered so that h fires at ~0.17 as in the bench's batches (gate gradients
        // dense enough for gemm in the backward product), or at ~0.07 as in a trained model
        // (summed rows). W_hh is packed for the forward product in the first case.
        for (lower, sparse_d_v) in [(0.02, false), (0.03, true)] {
            let mut p = vec![0.0; layout.total];
            rnn.init(&mut p, &mut rng);
            for r in [&rnn.dirs[0].b_ih, &rnn.dirs[0].b_hh].into_iter().flatten() {
                p[r.clone()].iter_mut().for_each(|w| *w -= lower);
            }
            for lengths in [lengths.clone(), unsorted.clone()] {
                let t = lengths[..].iter().copied().max().unwrap();
                let tokens: Vec<u32> = (0..t * b).map(|_| rng.gen_range(0..i as u32)).collect();
                let d_out: Vec<f32> = (0..t * b * h).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let mut cache = RnnCache::default();
                let batch = Batch {
                    input: Input::Tokens(&tokens),
                    t,
                    b,
                    lengths: Some(&lengths),
                };
                rnn.forward(&p, batch, None, None, &mut cache).unwrap();
                let mut grads = vec![0.0; p.len()];
                rnn.backward(&p, &mut cache, &d_out, None, &mut grads, None, None)
                    .unwrap();
                // The batched paths were taken.
                assert!(
                    sparse_d_v || !cache.layers[0].dirs[0].w_hh_panels.is_empty(),
                    "W_hh packed"
                );
                let spikes = cache.hidden(0, 0).iter().filter(|&&x| x != 0.0).count();
                let valid: usize = lengths.iter().sum();
                let share = spikes as f64 / (valid * h) as f64;
                assert!(
                    share > 0.05 && share < 0.35,
                    "h fires at {share}: the sums' range"
                );
                // The steps whose backward product summed rows (the test `add_a_b` makes).
                let summed = (1..t)
                    .filter(|&k| {
                        let na = active_rows(&lengths, k);
                        let d_v = &cache.d_v[k * b * 4 * h..(k * b + na) * 4 * h];
                        let nonzero = d_v.iter().filter(|&&x| x != 0.0).count();
                        nonzero <= crate::linalg::max_summed_nonzero(d_v.len())
                    })
                    .count();
                let sorted = sorted_longest_first(&lengths);
                if sparse_d_v {
                    assert!(summed > 0, "no step summed rows");
                } else if sorted {
                    assert_eq!(summed, 0, "a step summed rows");
                }

                let mut sum = vec![0.0; p.len()];
                for (bi, &len) in lengths.iter().enumerate() {
                    let toks: Vec<u32> = (0..len).map(|ti| tokens[ti * b + bi]).collect();
                    let d: Vec<f32> = (0..len)
                        .flat_map(|ti| d_out[(ti * b + bi) * h..(ti * b + bi + 1) * h].to_vec())
                        .collect();
                    let mut one = RnnCache::default();
                    let batch = Batch {
                        input: Input::Tokens(&toks),
                        t: len,
                        b: 1,
                        lengths: None,
                    };
                    rnn.forward(&p, batch, None, None, &mut one).unwrap();
                    for ti in 0..len {
                        let got = &cache.output()[(ti * b + bi) * h..(ti * b + bi + 1) * h];
                        assert_eq!(got, &one.output()[ti * h..(ti + 1) * h], "b{bi} t{ti}");
                    }
                    rnn.backward(&p, &mut one, &d, None, &mut sum, None, None)
                        .unwrap();
                }
                for (k, (&g, &want)) in grads.iter().zip(&sum).enumerate() {
                    assert!(
                        (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "parameter {k}: {g} vs {want}"
                    );
                }
            }
        }
    }
}
