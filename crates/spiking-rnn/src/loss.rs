//! Softmax and the two losses of the tutorial family. Each returns the loss and writes the
//! gradient w.r.t. the logits, already divided by the normaliser the caller passes (so a batch
//! split over threads sums to the gradient of the whole-batch mean).

/// Row-wise softmax of `[B, C]` logits (max-subtracted).
pub fn softmax(logits: &[f32], c: usize, probs: &mut [f32]) {
    for (z, p) in logits.chunks_exact(c).zip(probs.chunks_exact_mut(c)) {
        let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0.0;
        for (p, &z) in p.iter_mut().zip(z) {
            *p = (z - m).exp();
            s += *p;
        }
        for p in p.iter_mut() {
            *p /= s;
        }
    }
}

/// The tutorial's loss: `Σ (softmax − one_hot)²`, divided by `norm` (`B·C` for PyTorch's
/// `MSELoss` mean). Returns the (normalised) loss; `d_logits` gets its gradient.
pub fn mse_onehot(
    probs: &[f32],
    labels: &[usize],
    c: usize,
    norm: f32,
    d_logits: &mut [f32],
) -> f32 {
    let mut loss = 0.0f32;
    for ((p, &y), dz) in probs
        .chunks_exact(c)
        .zip(labels)
        .zip(d_logits.chunks_exact_mut(c))
    {
        // dL/dp_j = 2(p_j − y_j)/norm, then through softmax: dz = p ⊙ (dp − Σ p·dp).
        let mut dot = 0.0f32;
        for j in 0..c {
            let e = p[j] - if j == y { 1.0 } else { 0.0 };
            loss += e * e;
            dz[j] = 2.0 * e / norm;
            dot += p[j] * dz[j];
        }
        for j in 0..c {
            dz[j] = p[j] * (dz[j] - dot);
        }
    }
    loss / norm
}

/// Cross-entropy `−w_y · log softmax(z)_y`, divided by `norm` (`Σ w_y` over the whole batch for
/// PyTorch's weighted mean). `weights`: per-class weights or `None` (all 1).
pub fn cross_entropy(
    probs: &[f32],
    labels: &[usize],
    c: usize,
    weights: Option<&[f32]>,
    norm: f32,
    d_logits: &mut [f32],
) -> f32 {
    let mut loss = 0.0f64;
    for ((p, &y), dz) in probs
        .chunks_exact(c)
        .zip(labels)
        .zip(d_logits.chunks_exact_mut(c))
    {
        let w = weights.map_or(1.0, |w| w[y]);
        loss += -(w as f64) * (p[y].max(1e-30) as f64).ln();
        for j in 0..c {
            dz[j] = w * (p[j] - if j == y { 1.0 } else { 0.0 }) / norm;
        }
    }
    (loss / norm as f64) as f32
}

/// Index of the largest entry (first one on ties, like `torch.argmax`/`topk`).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_check(f: impl Fn(&[f32], &mut [f32]) -> f32, z: &[f32]) {
        let mut g = vec![0.0; z.len()];
        f(z, &mut g);
        let mut scratch = vec![0.0; z.len()];
        for i in 0..z.len() {
            let eps = 1e-2;
            let mut zp = z.to_vec();
            zp[i] += eps;
            let mut zm = z.to_vec();
            zm[i] -= eps;
            let fd = (f(&zp, &mut scratch) - f(&zm, &mut scratch)) / (2.0 * eps);
            assert!((fd - g[i]).abs() < 1e-3, "{i}: fd {fd} vs {}", g[i]);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let z = [0.3, -1.2, 2.0, 0.1, 0.5, -0.5, 1.5, 0.0];
        let labels = [2, 1];
        let mse = |z: &[f32], g: &mut [f32]| {
            let mut p = vec![0.0; z.len()];
            softmax(z, 4, &mut p);
            mse_onehot(&p, &labels, 4, 8.0, g)
        };
        fd_check(mse, &z);
        let w = [1.0, 2.0, 0.5, 1.0];
        let ce = |z: &[f32], g: &mut [f32]| {
            let mut p = vec![0.0; z.len()];
            softmax(z, 4, &mut p);
            cross_entropy(&p, &labels, 4, Some(&w), 2.5, g)
        };
        fd_check(ce, &z);
    }

    #[test]
    fn uniform_output_mse_is_tutorial_value() {
        // Spec §4.6: a uniform output over 18 classes gives ≈ 0.05247.
        let p = vec![1.0 / 18.0; 18];
        let mut g = vec![0.0; 18];
        let l = mse_onehot(&p, &[3], 18, 18.0, &mut g);
        assert!((l - 0.052_469).abs() < 1e-5, "{l}");
        assert_eq!(argmax(&[0.1, 0.5, 0.5]), 1);
    }
}
