//! Batched, parallel inference and the metrics reported by `eval` and during training.

use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::Serialize;
use spiking_rnn::classifier::FiringStats;
use spiking_rnn::loss::argmax;
use spiking_rnn::SeqClassifier;
use std::slice::ChunksExact;

/// Most names per forward pass when evaluating (fewer for long names, [`EVAL_LETTERS`]).
const EVAL_BATCH: usize = 128;
/// Most letter steps in one evaluation batch (names × longest name): 128 names of 32 letters.
const EVAL_LETTERS: usize = 4096;

/// The parameters of each network of an ensemble: `params` holds `members × model.num_params()`
/// values, one network after the other (one network is an ensemble of one).
pub fn members<'a>(model: &SeqClassifier, params: &'a [f32]) -> Result<ChunksExact<'a, f32>> {
    let n = model.num_params();
    if params.is_empty() || !params.len().is_multiple_of(n) {
        bail!(
            "{} parameters are not a whole number of networks of {n}",
            params.len()
        );
    }
    Ok(params.chunks_exact(n))
}

/// The mean of the members' softmax outputs, each computed by `one`; summed in member order,
/// so the result does not depend on threads.
fn average_members(
    model: &SeqClassifier,
    params: &[f32],
    mut one: impl FnMut(&[f32]) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    let networks = members(model, params)?;
    let count = networks.len();
    let mut sum: Option<Vec<f32>> = None;
    for p in networks {
        let probs = one(p)?;
        match &mut sum {
            None => sum = Some(probs),
            Some(s) => s.iter_mut().zip(&probs).for_each(|(s, p)| *s += p),
        }
    }
    let mut mean = sum.unwrap_or_default();
    if count > 1 {
        let inv = 1.0 / count as f32;
        mean.iter_mut().for_each(|p| *p *= inv);
    }
    Ok(mean)
}

/// Softmax outputs `[N, C]` in input order (of an ensemble: the mean of its members'). Sequences
/// are sorted by length into batches (little padding) that run in parallel on the current rayon
/// pool. With `firing`, spike rates of every gate are accumulated too (over all members).
pub fn predict(
    model: &SeqClassifier,
    params: &[f32],
    seqs: &[Vec<u32>],
    mut firing: Option<&mut FiringStats>,
) -> Result<Vec<f32>> {
    let probs = average_members(model, params, |p| {
        predict_one(model, p, seqs, firing.as_deref_mut())
    })?;
    check_finite_outputs(&probs)?;
    Ok(probs)
}

/// [`predict`] for one network; adds its firing to `firing`.
fn predict_one(
    model: &SeqClassifier,
    params: &[f32],
    seqs: &[Vec<u32>],
    firing: Option<&mut FiringStats>,
) -> Result<Vec<f32>> {
    let c = model.cfg.num_classes;
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
    let want_firing = firing.is_some();
    // Batches of up to EVAL_BATCH names, fewer when the names are long: a batch is padded to its
    // longest name, and its memory grows with names × that length.
    let mut chunks: Vec<&[usize]> = Vec::new();
    let mut rest = order.as_slice();
    while !rest.is_empty() {
        let longest = seqs[rest[0]].len().max(1);
        let n = (EVAL_LETTERS / longest)
            .clamp(1, EVAL_BATCH)
            .min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        chunks.push(chunk);
        rest = tail;
    }
    let parts: Vec<Result<(Vec<f32>, Option<FiringStats>)>> = chunks
        .par_iter()
        .map_init(
            || model.inference_workspace(),
            |ws, &idx| {
                let batch: Vec<&[u32]> = idx.iter().map(|&i| seqs[i].as_slice()).collect();
                model.forward(params, &batch, ws, false)?;
                let stats = want_firing.then(|| {
                    let mut s = FiringStats::default();
                    model.accumulate_firing(ws, &mut s);
                    s
                });
                Ok((ws.probs().to_vec(), stats))
            },
        )
        .collect();
    let mut probs = vec![0.0; seqs.len() * c];
    let mut total = firing;
    for (chunk, part) in chunks.iter().zip(parts) {
        let (p, stats) = part?;
        for (k, &i) in chunk.iter().enumerate() {
            probs[i * c..(i + 1) * c].copy_from_slice(&p[k * c..(k + 1) * c]);
        }
        if let (Some(total), Some(s)) = (total.as_deref_mut(), stats) {
            if total.names.is_empty() {
                *total = s;
            } else {
                for (t, (a, b)) in total
                    .sums
                    .iter_mut()
                    .zip(&mut total.counts)
                    .zip(s.sums.iter().zip(&s.counts))
                {
                    *t.0 += a;
                    *t.1 += b;
                }
            }
        }
    }
    Ok(probs)
}

/// Weights that are finite but huge (an edited or foreign file) can overflow the logits.
fn check_finite_outputs(probs: &[f32]) -> Result<()> {
    if probs.iter().any(|p| !p.is_finite()) {
        anyhow::bail!(
            "the model's outputs are not finite numbers (its weights are too large to evaluate)"
        );
    }
    Ok(())
}

/// Softmax outputs `[N, C]` (of an ensemble: the mean of its members'), computing every distinct
/// prefix once (see [`SeqClassifier::predict_prefix_shared`]); used for the frequent evaluations
/// during training.
pub fn predict_shared(
    model: &SeqClassifier,
    params: &[f32],
    seqs: &[Vec<u32>],
) -> Result<Vec<f32>> {
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    // (No finiteness check: during training a diverging model is caught by its loss, and a
    // test evaluation must not end the run before it saves.)
    average_members(
        model,
        params,
        |p| Ok(model.predict_prefix_shared(p, &refs)?),
    )
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CategoryMetrics {
    pub accuracy: f64,
    pub precision: f64,
    pub f1: f64,
    pub n: usize,
}

/// Accuracy, macro-F1 and per-category numbers of predictions against labels.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Scores {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub n: usize,
    pub per_category: Vec<CategoryMetrics>,
}

pub fn score(predicted: &[usize], labels: &[usize], classes: usize) -> Scores {
    let mut tp = vec![0usize; classes];
    let mut pred_n = vec![0usize; classes];
    let mut true_n = vec![0usize; classes];
    for (&p, &y) in predicted.iter().zip(labels) {
        pred_n[p] += 1;
        true_n[y] += 1;
        if p == y {
            tp[y] += 1;
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_category: Vec<CategoryMetrics> = (0..classes)
        .map(|k| {
            let recall = ratio(tp[k], true_n[k]);
            let precision = ratio(tp[k], pred_n[k]);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            CategoryMetrics {
                accuracy: recall,
                precision,
                f1,
                n: true_n[k],
            }
        })
        .collect();
    let present: Vec<&CategoryMetrics> = per_category.iter().filter(|m| m.n > 0).collect();
    let macro_f1 = if present.is_empty() {
        0.0
    } else {
        present.iter().map(|m| m.f1).sum::<f64>() / present.len() as f64
    };
    Scores {
        accuracy: ratio(tp.iter().sum(), labels.len()),
        macro_f1,
        n: labels.len(),
        per_category,
    }
}

/// Predicted class of every row of `[N, C]` probabilities.
pub fn argmaxes(probs: &[f32], classes: usize) -> Vec<usize> {
    probs.chunks_exact(classes).map(argmax).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_scores() {
        // class 0: 1 true, predicted twice → P=1/2, R=1; class 1: 2 true, predicted once → P=1, R=1/2.
        let s = score(&[0, 0, 1], &[0, 1, 1], 2);
        assert!((s.accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!(
            (s.per_category[0].f1 - 2.0 / 3.0).abs() < 1e-12,
            "P=1/2, R=1 → 2/3"
        );
        assert!(
            (s.per_category[1].f1 - 2.0 / 3.0).abs() < 1e-12,
            "P=1, R=1/2 → 2/3"
        );
        assert!((s.macro_f1 - 2.0 / 3.0).abs() < 1e-12);
        // a class that never occurs is left out of the macro average
        let s = score(&[0, 1], &[0, 1], 3);
        assert_eq!(s.macro_f1, 1.0);
    }

    /// Names of very different lengths go into batches of different sizes (the letter budget):
    /// every name's probabilities land at its own index and equal its batch-1 result, and the
    /// firing statistics cover every batch.
    #[test]
    fn long_and_short_names_in_budgeted_batches() {
        let model = crate::bench::tutorial_model(8).unwrap();
        let params = model.init_params(3);
        let lens = [1000usize, 3, 500, 7, 4096, 1, 40, 33];
        let seqs: Vec<Vec<u32>> = lens
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| ((i * 7 + k) % 58) as u32).collect())
            .collect();
        let mut firing = FiringStats::default();
        let all = predict(&model, &params, &seqs, Some(&mut firing)).unwrap();
        let c = model.cfg.num_classes;
        let mut letters = 0.0;
        for (k, s) in seqs.iter().enumerate() {
            let one = predict(&model, &params, std::slice::from_ref(s), None).unwrap();
            assert_eq!(&all[k * c..(k + 1) * c], &one[..], "name {k}");
            letters += s.len() as f64;
        }
        // Every gate and h counted once per letter of every name.
        assert!(!firing.counts.is_empty());
        for &n in &firing.counts {
            assert_eq!(n, letters * 8.0);
        }
    }

    /// An ensemble's output is the mean of its networks' outputs, in both inference paths;
    /// its firing statistics count every network; a buffer that is not a whole number of
    /// networks is refused.
    #[test]
    fn ensemble_outputs_are_the_mean_of_the_networks() {
        let model = crate::bench::tutorial_model(8).unwrap();
        let (a, b) = (model.init_params(1), model.init_params(2));
        let both: Vec<f32> = a.iter().chain(&b).copied().collect();
        let seqs: Vec<Vec<u32>> = vec![vec![3, 1, 4], vec![1, 5], vec![9, 2, 6, 5, 3]];
        let (pa, pb) = (
            predict(&model, &a, &seqs, None).unwrap(),
            predict(&model, &b, &seqs, None).unwrap(),
        );
        let mut firing = FiringStats::default();
        let mean = predict(&model, &both, &seqs, Some(&mut firing)).unwrap();
        let shared = predict_shared(&model, &both, &seqs).unwrap();
        for k in 0..pa.len() {
            let want = (pa[k] + pb[k]) / 2.0;
            assert!((mean[k] - want).abs() < 1e-6, "{k}: {} vs {want}", mean[k]);
            assert!(
                (shared[k] - want).abs() < 1e-6,
                "{k}: {} vs {want}",
                shared[k]
            );
        }
        assert_ne!(pa, pb);
        for &n in &firing.counts {
            assert_eq!(n, 2.0 * 10.0 * 8.0, "two networks × 10 letters × 8 units");
        }
        let err = predict(&model, &both[1..], &seqs, None).unwrap_err();
        assert!(
            err.to_string().contains("whole number of networks"),
            "{err}"
        );
        assert!(predict_shared(&model, &[], &seqs).is_err());
    }
}
