//! Optimisers over the flat parameter buffer.

/// How weight decay enters Adam.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightDecay {
    /// `torch.optim.Adam(weight_decay=λ)`: `g ← g + λ·p` (L2 penalty).
    L2(f32),
    /// `torch.optim.AdamW(weight_decay=λ)`: `p ← p·(1 − lr·λ)` before the step.
    Decoupled(f32),
}

/// `torch.optim.Adam` (single-tensor path), step for step.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: Option<WeightDecay>,
    /// Number of steps taken (torch's `state['step']`).
    pub step: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl Adam {
    /// PyTorch defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn new(n_params: usize, lr: f32) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: None,
            step: 0,
            m: vec![0.0; n_params],
            v: vec![0.0; n_params],
        }
    }

    /// One update. Mirrors torch: `m.lerp_(g, 1−β1)`, `v = β2·v + (1−β2)·g²`,
    /// `denom = √v / √(1−β2ᵗ) + eps`, `p −= lr/(1−β1ᵗ) · m/denom`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        let h = self.hyper();
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            update_one(&h, p, g, m, v);
        }
    }

    /// [`Self::step`], then sets the gradients to zero in the same pass over memory (the
    /// optimiser state is larger than the L2 cache, so every pass costs).
    pub fn step_and_zero_grads(&mut self, params: &mut [f32], grads: &mut [f32]) {
        self.scaled_step_and_zero_grads(params, grads, 1.0, 1);
    }

    /// The update for the gradients multiplied by `grad_scale` (what gradient clipping does to
    /// them in place in PyTorch; here in the same pass), split into `parts` blocks updated in
    /// parallel (rayon): each core streams its own share of the state.
    pub fn scaled_step_and_zero_grads(
        &mut self,
        params: &mut [f32],
        grads: &mut [f32],
        grad_scale: f32,
        parts: usize,
    ) {
        use rayon::prelude::*;
        assert!(
            params.len() == grads.len() && params.len() == self.m.len(),
            "Adam state does not match the parameters"
        );
        let mut h = self.hyper();
        h.grad_scale = grad_scale;
        if parts <= 1 {
            update_and_zero(&h, params, grads, &mut self.m, &mut self.v);
            return;
        }
        let chunk = params.len().div_ceil(parts).max(1);
        params
            .par_chunks_mut(chunk)
            .zip(grads.par_chunks_mut(chunk))
            .zip(
                self.m
                    .par_chunks_mut(chunk)
                    .zip(self.v.par_chunks_mut(chunk)),
            )
            .for_each(|((p, g), (m, v))| update_and_zero(&h, p, g, m, v));
    }

    /// Advances the step counter and returns the scalars of this step.
    fn hyper(&mut self) -> Hyper {
        assert_eq!(self.m.len(), self.v.len());
        self.step += 1;
        let t = self.step as i32;
        // Bias corrections in f64 like Python floats, applied as f32 scalars.
        let bc1 = 1.0 - (self.beta1 as f64).powi(t);
        let bc2_sqrt = (1.0 - (self.beta2 as f64).powi(t)).sqrt();
        let step_size = (self.lr as f64 / bc1) as f32;
        let inv_bc2_sqrt = (1.0 / bc2_sqrt) as f32;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let w1 = 1.0 - b1;
        let w2 = 1.0 - b2;
        let (l2, decoupled) = match self.weight_decay {
            Some(WeightDecay::L2(l)) => (l, 0.0),
            Some(WeightDecay::Decoupled(l)) => (0.0, l * self.lr),
            None => (0.0, 0.0),
        };
        Hyper {
            grad_scale: 1.0,
            step_size,
            inv_bc2_sqrt,
            b2,
            eps,
            w1,
            w2,
            l2,
            decoupled,
        }
    }
}

#[inline(always)]
fn flush_subnormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        x
    }
}

struct Hyper {
    grad_scale: f32,
    step_size: f32,
    inv_bc2_sqrt: f32,
    b2: f32,
    eps: f32,
    w1: f32,
    w2: f32,
    l2: f32,
    decoupled: f32,
}

/// One block of [`Adam::scaled_step_and_zero_grads`] (lengths checked there).
fn update_and_zero(h: &Hyper, params: &mut [f32], grads: &mut [f32], m: &mut [f32], v: &mut [f32]) {
    let state = params.iter_mut().zip(grads).zip(m).zip(v);
    // Two loops so that the common unscaled update has no extra multiply.
    if h.grad_scale == 1.0 {
        for (((p, g), m), v) in state {
            update_one(h, p, *g, m, v);
            *g = 0.0;
        }
    } else {
        for (((p, g), m), v) in state {
            update_one(h, p, *g * h.grad_scale, m, v);
            *g = 0.0;
        }
    }
}

#[inline(always)]
fn update_one(h: &Hyper, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
    let g = g + h.l2 * *p;
    *p -= h.decoupled * *p;
    *m += h.w1 * (g - *m);
    *v = *v * h.b2 + h.w2 * g * g;
    // Moments of parameters that stop getting gradient decay geometrically into the subnormal
    // range, where x86 arithmetic is ~100× slower. Flushing them to 0 changes a parameter by
    // less than lr·1e-38/eps ≈ 1e-34; PyTorch keeps them (and pays for it).
    *m = flush_subnormal(*m);
    *v = flush_subnormal(*v);
    let denom = v.sqrt() * h.inv_bc2_sqrt + h.eps;
    *p -= h.step_size * (*m / denom);
}

/// The Euclidean norm of `grads` (for clipping). Squares are summed in f64 over fixed blocks,
/// eight running sums per block so that the loop vectorises; the blocks are added in order, so
/// the result does not depend on `threads`.
pub fn grad_norm(grads: &[f32], threads: usize) -> f32 {
    use rayon::prelude::*;
    const BLOCK: usize = 8192;
    fn block_sum(g: &[f32]) -> f64 {
        let mut acc = [0.0f64; 8];
        let mut lanes = g.chunks_exact(8);
        for x in &mut lanes {
            for (a, &x) in acc.iter_mut().zip(x) {
                *a += x as f64 * x as f64;
            }
        }
        for (a, &x) in acc.iter_mut().zip(lanes.remainder()) {
            *a += x as f64 * x as f64;
        }
        acc.iter().sum()
    }
    let sums: Vec<f64> = if threads > 1 {
        grads.par_chunks(BLOCK).map(block_sum).collect()
    } else {
        grads.chunks(BLOCK).map(block_sum).collect()
    };
    sums.iter().sum::<f64>().sqrt() as f32
}

/// Plain SGD: `p −= lr·(g + λ·p)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sgd {
    pub lr: f32,
    pub weight_decay: f32,
}

impl Sgd {
    pub fn step(&self, params: &mut [f32], grads: &[f32]) {
        for (p, &g) in params.iter_mut().zip(grads) {
            *p -= self.lr * (g + self.weight_decay * *p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: at step 1, m̂ = g and v̂ = g², so p moves by lr·g/(|g| + eps).
    #[test]
    fn first_adam_step_is_signed_lr() {
        let mut p = vec![1.0f32, -2.0, 0.5];
        let g = [0.5f32, -4.0, 0.0];
        let mut adam = Adam::new(3, 0.1);
        adam.step(&mut p, &g);
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6 && p[2] == 0.5,
            "{p:?}"
        );
        // Second step with zero grad still moves (momentum): m = 0.9·0.05 = 0.045, …
        let mut q = p.clone();
        adam.step(&mut q, &[0.0; 3]);
        let m = 0.9 * 0.05f64;
        let v = 0.999 * 0.001 * 0.25f64;
        let want =
            p[0] as f64 - 0.1 / (1.0 - 0.81) * m / ((v / (1.0 - 0.999f64.powi(2))).sqrt() + 1e-8);
        assert!((q[0] as f64 - want).abs() < 1e-6, "{} vs {want}", q[0]);
    }

    #[test]
    fn grad_norm_matches_f64_sum_for_any_thread_count() {
        let g: Vec<f32> = (0..20_001)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-2)
            .collect();
        let want = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let one = grad_norm(&g, 1);
        assert!((one as f64 - want).abs() <= want * 1e-7, "{one} vs {want}");
        assert_eq!(one, grad_norm(&g, 2));
        assert_eq!(grad_norm(&[3.0, 4.0], 1), 5.0);
        assert_eq!(grad_norm(&[], 2), 0.0);
    }

    #[test]
    fn weight_decay_variants() {
        let mut p = vec![1.0f32];
        let mut a = Adam::new(1, 0.1);
        a.weight_decay = Some(WeightDecay::L2(1.0));
        a.step(&mut p, &[0.0]); // g = p = 1 → moves by lr
        assert!((p[0] - 0.9).abs() < 1e-6);
        let mut q = vec![1.0f32];
        let mut w = Adam::new(1, 0.1);
        w.weight_decay = Some(WeightDecay::Decoupled(0.5));
        w.step(&mut q, &[1.0]); // p·(1−0.05) then −0.1
        assert!((q[0] - 0.85).abs() < 1e-6, "{}", q[0]);
        // the fused, scaled and parallel variants equal a plain step on the scaled gradients,
        // bit for bit, and clear the gradients
        let g: Vec<f32> = (0..1001).map(|i| (i as f32 - 500.0) * 1e-3).collect();
        for (scale, parts) in [(1.0, 1), (1.0, 3), (0.5, 2)] {
            let scaled: Vec<f32> = g.iter().map(|x| x * scale).collect();
            let (mut a1, mut a2) = (Adam::new(1001, 0.01), Adam::new(1001, 0.01));
            let (mut p1, mut p2) = (vec![0.5f32; 1001], vec![0.5f32; 1001]);
            for _ in 0..3 {
                a1.step(&mut p1, &scaled);
                let mut g2 = g.clone();
                a2.scaled_step_and_zero_grads(&mut p2, &mut g2, scale, parts);
                assert!(g2.iter().all(|&x| x == 0.0));
            }
            assert_eq!(p1, p2, "scale {scale}, {parts} parts");
        }
        let mut s = vec![1.0f32, 2.0];
        Sgd {
            lr: 0.5,
            weight_decay: 0.0,
        }
        .step(&mut s, &[1.0, -2.0]);
        assert_eq!(s, vec![0.5, 3.0]);
    }
}
