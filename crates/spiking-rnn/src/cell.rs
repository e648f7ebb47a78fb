//! One time step of one batch row of each cell, forward and backward side by side.
//!
//! The matrix products are done by the caller ([`crate::rnn`]) for the whole batch:
//! `u = x·W_ihᵀ + b_ih` and `v = h·W_hhᵀ + b_hh` (each `[G·H]`, gate blocks of width `H`).
//! These functions do the fused element-wise part and keep what backward needs:
//! `pre` (the argument of each spike function) and `gate` (its output).

use crate::surrogate::{sigmoid, Surrogate};

/// Which recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// SpikingLSTMCell: gates i, f, g, o; `c' = min(f⊙c + i⊙g, 1)` (cap optional); `h' = o⊙c'`.
    Lstm,
    /// SpikingGRUCell: gates r, z, n; `n = S(u_n + r⊙v_n)`; `h' = (1-z)⊙n + z⊙h`.
    Gru,
    /// SpikingVanillaRNNCell: `h' = S(u + v)`.
    Rnn,
    /// Conventional (non-spiking) LSTM, for baselines: σ gates, tanh candidate, `h' = o⊙tanh(c')`.
    AnnLstm,
}

impl CellKind {
    /// Number of gate blocks `G` (rows of the weights are `G·H`).
    pub fn gates(self) -> usize {
        match self {
            Self::Lstm | Self::AnnLstm => 4,
            Self::Gru => 3,
            Self::Rnn => 1,
        }
    }
    /// SpikingJelly's `states_num()`.
    pub fn states(self) -> usize {
        match self {
            Self::Lstm | Self::AnnLstm => 2,
            Self::Gru | Self::Rnn => 1,
        }
    }
    pub fn gate_names(self) -> &'static [&'static str] {
        match self {
            Self::Lstm | Self::AnnLstm => &["i", "f", "g", "o"],
            Self::Gru => &["r", "z", "n"],
            Self::Rnn => &["h"],
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Lstm => "lstm",
            Self::Gru => "gru",
            Self::Rnn => "rnn",
            Self::AnnLstm => "ann-lstm",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Lstm, Self::Gru, Self::Rnn, Self::AnnLstm]
            .into_iter()
            .find(|k| k.name() == s)
    }
    /// SpikingJelly model class name.
    pub fn model_class(self) -> &'static str {
        match self {
            Self::Lstm => "SpikingLSTM",
            Self::Gru => "SpikingGRU",
            Self::Rnn => "SpikingVanillaRNN",
            Self::AnnLstm => "LSTM",
        }
    }
}

/// The element-wise functions of a cell: `s1` for every gate but the candidate, `s2` for the
/// candidate (`g` of the LSTM, `n` of the GRU); `clamp` = the LSTM cell-state cap at 1.
#[derive(Clone, Copy, Debug)]
pub struct CellFns {
    pub s1: Surrogate,
    pub s2: Surrogate,
    pub clamp: bool,
}

// ---------------------------------------------------------------------------------------------
// SpikingLSTMCell
// ---------------------------------------------------------------------------------------------

/// u, v, pre, gate: [4H]; c_prev, c, h: [H]. `c` receives the capped state.
#[allow(clippy::too_many_arguments)]
pub fn lstm_forward(
    f: &CellFns,
    u: &[f32],
    v: &[f32],
    c_prev: &[f32],
    pre: &mut [f32],
    gate: &mut [f32],
    c: &mut [f32],
    h: &mut [f32],
) {
    let hs = c.len();
    for ((p, &u), &v) in pre.iter_mut().zip(u).zip(v) {
        *p = u + v;
    }
    f.s1.forward_slice(&pre[..2 * hs], &mut gate[..2 * hs]);
    f.s2.forward_slice(&pre[2 * hs..3 * hs], &mut gate[2 * hs..3 * hs]);
    f.s1.forward_slice(&pre[3 * hs..], &mut gate[3 * hs..]);
    let (i, rest) = gate.split_at(hs);
    let (fg, rest) = rest.split_at(hs);
    let (g, o) = rest.split_at(hs);
    for j in 0..hs {
        let mut cj = c_prev[j] * fg[j] + i[j] * g[j];
        if f.clamp {
            cj = cj.min(1.0);
        }
        c[j] = cj;
        h[j] = cj * o[j];
    }
}

/// dh: [H] gradient w.r.t. h'; dc: [H] in: gradient w.r.t. c', out: gradient w.r.t. c_prev.
/// du = dv = gradient w.r.t. the pre-activation [4H]. The cap is straight-through (spec §1.2).
#[allow(clippy::too_many_arguments)]
pub fn lstm_backward(
    f: &CellFns,
    pre: &[f32],
    gate: &[f32],
    c_prev: &[f32],
    c: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    du: &mut [f32],
) {
    let hs = c.len();
    for j in 0..hs {
        let (i, fg, g, o) = (gate[j], gate[hs + j], gate[2 * hs + j], gate[3 * hs + j]);
        let dct = dc[j] + dh[j] * o;
        du[j] = dct * g;
        du[hs + j] = dct * c_prev[j];
        du[2 * hs + j] = dct * i;
        du[3 * hs + j] = dh[j] * c[j];
        dc[j] = dct * fg;
    }
    f.s1.mul_grad_slice(&pre[..2 * hs], &mut du[..2 * hs]);
    f.s2.mul_grad_slice(&pre[2 * hs..3 * hs], &mut du[2 * hs..3 * hs]);
    f.s1.mul_grad_slice(&pre[3 * hs..], &mut du[3 * hs..]);
}

// ---------------------------------------------------------------------------------------------
// Conventional LSTM (baseline, non-spiking)
// ---------------------------------------------------------------------------------------------

/// Same buffers as [`lstm_forward`]; gates hold σ/tanh values.
pub fn ann_lstm_forward(
    u: &[f32],
    v: &[f32],
    c_prev: &[f32],
    pre: &mut [f32],
    gate: &mut [f32],
    c: &mut [f32],
    h: &mut [f32],
) {
    let hs = c.len();
    for k in 0..4 * hs {
        let a = u[k] + v[k];
        pre[k] = a;
        gate[k] = if k / hs == 2 { a.tanh() } else { sigmoid(a) };
    }
    for j in 0..hs {
        let cj = c_prev[j] * gate[hs + j] + gate[j] * gate[2 * hs + j];
        c[j] = cj;
        h[j] = gate[3 * hs + j] * cj.tanh();
    }
}

pub fn ann_lstm_backward(
    gate: &[f32],
    c_prev: &[f32],
    c: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    du: &mut [f32],
) {
    let hs = c.len();
    for j in 0..hs {
        let (i, fg, g, o) = (gate[j], gate[hs + j], gate[2 * hs + j], gate[3 * hs + j]);
        let tc = c[j].tanh();
        let dct = dc[j] + dh[j] * o * (1.0 - tc * tc);
        du[j] = dct * g * i * (1.0 - i);
        du[hs + j] = dct * c_prev[j] * fg * (1.0 - fg);
        du[2 * hs + j] = dct * i * (1.0 - g * g);
        du[3 * hs + j] = dh[j] * tc * o * (1.0 - o);
        dc[j] = dct * fg;
    }
}

// ---------------------------------------------------------------------------------------------
// SpikingGRUCell
// ---------------------------------------------------------------------------------------------

/// u, v, pre, gate: [3H]; h_prev, vn, h: [H]. `vn` keeps `v_n` (incl. b_hn) for backward.
#[allow(clippy::too_many_arguments)]
pub fn gru_forward(
    f: &CellFns,
    u: &[f32],
    v: &[f32],
    h_prev: &[f32],
    pre: &mut [f32],
    gate: &mut [f32],
    vn: &mut [f32],
    h: &mut [f32],
) {
    let hs = h.len();
    for k in 0..2 * hs {
        pre[k] = u[k] + v[k];
        gate[k] = f.s1.forward(pre[k]);
    }
    for j in 0..hs {
        let r = gate[j];
        let z = gate[hs + j];
        vn[j] = v[2 * hs + j];
        let a = u[2 * hs + j] + r * vn[j];
        pre[2 * hs + j] = a;
        let n = f.s2.forward(a);
        gate[2 * hs + j] = n;
        h[j] = (1.0 - z) * n + z * h_prev[j];
    }
}

/// dh: [H] in: gradient w.r.t. h', out: the part of the gradient w.r.t. h_prev that does not go
/// through `v` (the `z⊙h` path). du: gradient w.r.t. u [3H]; dv: w.r.t. v [3H].
#[allow(clippy::too_many_arguments)]
pub fn gru_backward(
    f: &CellFns,
    pre: &[f32],
    gate: &[f32],
    vn: &[f32],
    h_prev: &[f32],
    dh: &mut [f32],
    du: &mut [f32],
    dv: &mut [f32],
) {
    let hs = h_prev.len();
    for j in 0..hs {
        let (r, z, n) = (gate[j], gate[hs + j], gate[2 * hs + j]);
        let d = dh[j];
        let dan = d * (1.0 - z) * f.s2.grad(pre[2 * hs + j]);
        let dr = dan * vn[j];
        let dz = d * (h_prev[j] - n);
        let dar = dr * f.s1.grad(pre[j]);
        let daz = dz * f.s1.grad(pre[hs + j]);
        du[j] = dar;
        du[hs + j] = daz;
        du[2 * hs + j] = dan;
        dv[j] = dar;
        dv[hs + j] = daz;
        dv[2 * hs + j] = dan * r;
        dh[j] = d * z;
    }
}

// ---------------------------------------------------------------------------------------------
// SpikingVanillaRNNCell
// ---------------------------------------------------------------------------------------------

/// u, v, pre, h: [H].
pub fn rnn_forward(f: &CellFns, u: &[f32], v: &[f32], pre: &mut [f32], h: &mut [f32]) {
    for ((p, &u), &v) in pre.iter_mut().zip(u).zip(v) {
        *p = u + v;
    }
    f.s1.forward_slice(pre, h);
}

/// dh: [H] gradient w.r.t. h'; du: gradient w.r.t. the pre-activation [H].
pub fn rnn_backward(f: &CellFns, pre: &[f32], dh: &[f32], du: &mut [f32]) {
    du.copy_from_slice(dh);
    f.s1.mul_grad_slice(pre, du);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fns(clamp: bool) -> CellFns {
        CellFns {
            s1: Surrogate::default(),
            s2: Surrogate::default(),
            clamp,
        }
    }

    /// Hand-computed: all gates fire on zero pre-activation (Θ(0) = 1), c = 1·1 + 1·1 = 2.
    #[test]
    fn lstm_cap_and_heaviside_at_zero() {
        // One step from zero pre-activations and c_prev = 1: (pre, gate, c', h').
        let step = |clamp: bool| {
            let (mut pre, mut gate, mut c, mut h) = ([0.0; 4], [0.0; 4], [0.0], [0.0]);
            let zero = [0.0; 4];
            lstm_forward(
                &fns(clamp),
                &zero,
                &zero,
                &[1.0],
                &mut pre,
                &mut gate,
                &mut c,
                &mut h,
            );
            (pre, gate, c, h)
        };
        let (_, gate, c, h) = step(true);
        assert_eq!((gate, c[0], h[0]), ([1.0; 4], 1.0, 1.0));
        let (_, _, c, h) = step(false);
        assert_eq!((c[0], h[0]), (2.0, 2.0));
        // Straight-through cap: dc_prev = dc·f = 1 even though the cap was active.
        let (pre, gate, c, _) = step(true);
        let mut dc = [1.0];
        let mut du = [0.0; 4];
        lstm_backward(
            &fns(true),
            &pre,
            &gate,
            &[1.0],
            &c,
            &[0.0],
            &mut dc,
            &mut du,
        );
        assert_eq!(dc[0], 1.0);
        let g0 = Surrogate::default().grad(0.0);
        assert_eq!(du, [g0, g0, g0, 0.0]);
    }

    #[test]
    fn gru_and_rnn_hand_computed() {
        // r = Θ(0)=1, z = Θ(-1)=0, n = Θ(-0.5 + 1·1) = 1 → h' = 1.
        let u = [0.0, -1.0, -0.5];
        let v = [0.0, 0.0, 1.0];
        let (mut pre, mut gate, mut vn, mut h) = ([0.0; 3], [0.0; 3], [0.0], [0.0]);
        gru_forward(
            &fns(true),
            &u,
            &v,
            &[0.0],
            &mut pre,
            &mut gate,
            &mut vn,
            &mut h,
        );
        assert_eq!((gate, pre[2], h[0]), ([1.0, 0.0, 1.0], 0.5, 1.0));
        let (mut pre1, mut h1) = ([0.0], [0.0]);
        rnn_forward(&fns(true), &[-0.25], &[0.25], &mut pre1, &mut h1);
        assert_eq!(h1[0], 1.0);
    }
}
