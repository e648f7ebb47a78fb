//! `torch.nn.Linear`: `y = x·Wᵀ + b`, weight kept in PyTorch layout `[out, in]`.

use crate::linalg::{add_column_sums, matmul, Mat};
use crate::params::ParamLayout;
use rand::Rng;
use std::ops::Range;

#[derive(Clone, Debug)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    weight: Range<usize>,
    bias: Range<usize>,
}

impl Linear {
    /// Registers `{prefix}weight [out, in]` and `{prefix}bias [out]`.
    pub fn new(
        in_features: usize,
        out_features: usize,
        layout: &mut ParamLayout,
        prefix: &str,
    ) -> Self {
        let weight = layout.add(
            format!("{prefix}weight"),
            vec![out_features, in_features],
            false,
        );
        let bias = layout.add(format!("{prefix}bias"), vec![out_features], false);
        Self {
            in_features,
            out_features,
            weight,
            bias,
        }
    }

    /// PyTorch's default: weight and bias uniform in `±1/√in`.
    pub fn init(&self, params: &mut [f32], rng: &mut impl Rng) {
        let k = 1.0 / (self.in_features as f32).sqrt();
        for p in &mut params[self.weight.start..self.bias.end] {
            *p = rng.gen_range(-k..k);
        }
    }

    /// x: [B, in] -> y: [B, out]
    pub fn forward(&self, params: &[f32], x: &[f32], y: &mut [f32]) {
        let b = x.len() / self.in_features;
        let bias = &params[self.bias.clone()];
        for row in y.chunks_exact_mut(self.out_features) {
            row.copy_from_slice(bias);
        }
        let w = Mat::new(
            &params[self.weight.clone()],
            self.out_features,
            self.in_features,
        );
        matmul(
            y,
            self.out_features,
            true,
            Mat::new(x, b, self.in_features),
            w.t(),
        );
    }

    /// dy: [B, out], x: [B, in] -> grads += dW, db; dx: [B, in] (overwritten) if given.
    pub fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        dy: &[f32],
        grads: &mut [f32],
        dx: Option<&mut [f32]>,
    ) {
        let b = x.len() / self.in_features;
        let (o, i) = (self.out_features, self.in_features);
        matmul(
            &mut grads[self.weight.clone()],
            i,
            true,
            Mat::new(dy, b, o).t(),
            Mat::new(x, b, i),
        );
        add_column_sums(&mut grads[self.bias.clone()], dy, o, None);
        if let Some(dx) = dx {
            matmul(
                dx,
                i,
                false,
                Mat::new(dy, b, o),
                Mat::new(&params[self.weight.clone()], o, i),
            );
        }
    }
}
