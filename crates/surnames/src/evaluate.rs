//! Batched, parallel inference and the metrics reported by `eval` and during training.

use anyhow::Result;
use rayon::prelude::*;
use serde::Serialize;
use spiking_rnn::classifier::FiringStats;
use spiking_rnn::loss::argmax;
use spiking_rnn::SeqClassifier;

/// Most names per forward pass when evaluating (fewer for long names, [`EVAL_LETTERS`]).
const EVAL_BATCH: usize = 128;
/// Most letter steps in one evaluation batch (names × longest name): 128 names of 32 letters.
const EVAL_LETTERS: usize = 4096;

/// Softmax outputs `[N, C]` in input order. Sequences are sorted by length into batches (little
/// padding) that run in parallel on the current rayon pool. With `firing`, spike rates of every
/// gate are accumulated too.
pub fn predict(
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
    let mut total = FiringStats::default();
    for (chunk, part) in chunks.iter().zip(parts) {
        let (p, stats) = part?;
        for (k, &i) in chunk.iter().enumerate() {
            probs[i * c..(i + 1) * c].copy_from_slice(&p[k * c..(k + 1) * c]);
        }
        if let Some(s) = stats {
            if total.names.is_empty() {
                total = s;
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
    if let Some(f) = firing {
        *f = total;
    }
    check_finite_outputs(&probs)?;
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

/// Softmax outputs `[N, C]`, computing every distinct prefix once (see
/// [`SeqClassifier::predict_prefix_shared`]); used for the frequent evaluations during training.
pub fn predict_shared(
    model: &SeqClassifier,
    params: &[f32],
    seqs: &[Vec<u32>],
) -> Result<Vec<f32>> {
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    // (No finiteness check: during training a diverging model is caught by its loss, and a
    // test evaluation must not end the run before it saves.)
    Ok(model.predict_prefix_shared(params, &refs)?)
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
}
