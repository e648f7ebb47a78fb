//! Backward-through-time against central finite differences, in primitive (smooth) mode where
//! the forward is differentiable, for every cell type, stacked and bidirectional, with
//! variable lengths and initial states.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spiking_rnn::rnn::{Batch, Input, RnnCache, States};
use spiking_rnn::{CellKind, ParamLayout, RnnConfig, SpikingRnn, Surrogate, SurrogateKind};

struct Setup {
    rnn: SpikingRnn,
    params: Vec<f32>,
    x: Vec<f32>,
    init: States,
    w_out: Vec<f32>,
    w_final: States,
    t: usize,
    b: usize,
    lengths: Vec<usize>,
}

fn setup(cell: CellKind, layers: usize, bidir: bool, surrogate: Surrogate, seed: u64) -> Setup {
    let (i, h, t, b) = (3, 4, 5, 3);
    let mut cfg = RnnConfig::new(cell, i, h);
    cfg.num_layers = layers;
    cfg.bidirectional = bidir;
    cfg.surrogate1 = surrogate;
    if matches!(cell, CellKind::Lstm | CellKind::Gru) {
        cfg.surrogate2 = Some(Surrogate::new(SurrogateKind::ATan).with_spiking(surrogate.spiking));
    }
    cfg.clamp_cell = false; // the cap is straight-through by design, not differentiable
    let mut layout = ParamLayout::new();
    let rnn = SpikingRnn::new(cfg, &mut layout, "").unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut params = vec![0.0; layout.total];
    rnn.init(&mut params, &mut rng);
    let mut gen = |n: usize| {
        (0..n)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect::<Vec<_>>()
    };
    let d = if bidir { 2 } else { 1 };
    let n_state = layers * d * b * h;
    let two = cell.states() == 2;
    Setup {
        x: gen(t * b * i),
        init: States {
            h: gen(n_state),
            c: if two { gen(n_state) } else { vec![] },
        },
        w_out: gen(t * b * d * h),
        w_final: States {
            h: gen(n_state),
            c: if two { gen(n_state) } else { vec![] },
        },
        rnn,
        params,
        t,
        b,
        lengths: vec![5, 2, 4],
    }
}

fn loss(s: &Setup, params: &[f32], x: &[f32], init: &States) -> f64 {
    let mut cache = RnnCache::default();
    let batch = Batch {
        input: Input::Dense(x),
        t: s.t,
        b: s.b,
        lengths: Some(&s.lengths),
    };
    s.rnn
        .forward(params, batch, Some(init), None, &mut cache)
        .unwrap();
    let dot = |a: &[f32], w: &[f32]| {
        a.iter()
            .zip(w)
            .map(|(a, w)| *a as f64 * *w as f64)
            .sum::<f64>()
    };
    dot(cache.output(), &s.w_out)
        + dot(&cache.final_states.h, &s.w_final.h)
        + dot(&cache.final_states.c, &s.w_final.c)
}

fn check(cell: CellKind, layers: usize, bidir: bool) {
    let s = setup(
        cell,
        layers,
        bidir,
        Surrogate::new(SurrogateKind::Sigmoid)
            .with_alpha(1.0)
            .with_spiking(false),
        7,
    );
    let mut cache = RnnCache::default();
    let batch = Batch {
        input: Input::Dense(&s.x),
        t: s.t,
        b: s.b,
        lengths: Some(&s.lengths),
    };
    s.rnn
        .forward(&s.params, batch, Some(&s.init), None, &mut cache)
        .unwrap();
    let mut grads = vec![0.0; s.params.len()];
    let mut dx = vec![0.0; s.x.len()];
    let mut dinit = States::default();
    s.rnn
        .backward(
            &s.params,
            &mut cache,
            &s.w_out,
            Some(&s.w_final),
            &mut grads,
            Some(&mut dx),
            Some(&mut dinit),
        )
        .unwrap();

    let eps = 1e-2f32;
    let tol = |g: f32| 2e-3 + 2e-2 * g.abs();
    let what = format!("{cell:?} L{layers} bidir={bidir}");
    // every 3rd parameter (all tensors are covered), every input, every initial state
    for k in (0..s.params.len()).step_by(3) {
        let mut p = s.params.clone();
        p[k] += eps;
        let lp = loss(&s, &p, &s.x, &s.init);
        p[k] -= 2.0 * eps;
        let lm = loss(&s, &p, &s.x, &s.init);
        let fd = ((lp - lm) / (2.0 * eps as f64)) as f32;
        assert!(
            (fd - grads[k]).abs() < tol(fd),
            "{what}: param {k}: fd {fd} vs {}",
            grads[k]
        );
    }
    for k in 0..s.x.len() {
        let mut x = s.x.clone();
        x[k] += eps;
        let lp = loss(&s, &s.params, &x, &s.init);
        x[k] -= 2.0 * eps;
        let lm = loss(&s, &s.params, &x, &s.init);
        let fd = ((lp - lm) / (2.0 * eps as f64)) as f32;
        assert!(
            (fd - dx[k]).abs() < tol(fd),
            "{what}: input {k}: fd {fd} vs {}",
            dx[k]
        );
    }
    for which in 0..cell.states() {
        for k in 0..s.init.h.len() {
            let mut st = s.init.clone();
            let v = if which == 0 { &mut st.h } else { &mut st.c };
            v[k] += eps;
            let lp = loss(&s, &s.params, &s.x, &st);
            let v = if which == 0 { &mut st.h } else { &mut st.c };
            v[k] -= 2.0 * eps;
            let lm = loss(&s, &s.params, &s.x, &st);
            let fd = ((lp - lm) / (2.0 * eps as f64)) as f32;
            let an = if which == 0 { dinit.h[k] } else { dinit.c[k] };
            assert!(
                (fd - an).abs() < tol(fd),
                "{what}: state {which}/{k}: fd {fd} vs {an}"
            );
        }
    }
}

#[test]
fn lstm_gradients() {
    for (l, bi) in [(1, false), (2, false), (1, true), (2, true)] {
        check(CellKind::Lstm, l, bi);
    }
}

#[test]
fn gru_gradients() {
    for (l, bi) in [(1, false), (2, false), (1, true), (2, true)] {
        check(CellKind::Gru, l, bi);
    }
}

#[test]
fn rnn_gradients() {
    for (l, bi) in [(1, false), (2, false), (1, true), (2, true)] {
        check(CellKind::Rnn, l, bi);
    }
}

#[test]
fn ann_lstm_gradients() {
    for (l, bi) in [(1, false), (2, true)] {
        check(CellKind::AnnLstm, l, bi);
    }
}

/// The whole classifier (every readout, Linear, softmax, both losses) against finite differences.
#[test]
fn classifier_gradients_both_readouts_and_losses() {
    use spiking_rnn::{ClassifierConfig, LossKind, Readout, SeqClassifier};
    for (readout, kind, bidirectional, layers) in [
        (Readout::Last, LossKind::Mse, false, 1),
        (
            Readout::Mean,
            LossKind::CrossEntropy {
                class_weights: Some(vec![1.0, 2.0, 0.5]),
            },
            false,
            1,
        ),
        (
            Readout::Final,
            LossKind::CrossEntropy {
                class_weights: None,
            },
            true,
            1,
        ),
        // The cell state of the top layer, both directions: its gradient enters the backward
        // as the final-state gradient of the right layer and direction.
        (
            Readout::Cell,
            LossKind::CrossEntropy {
                class_weights: Some(vec![1.0, 2.0, 0.5]),
            },
            true,
            2,
        ),
        (Readout::Cell, LossKind::Mse, false, 1),
    ] {
        let mut rnn = RnnConfig::new(CellKind::Lstm, 5, 4);
        rnn.bidirectional = bidirectional;
        rnn.num_layers = layers;
        rnn.surrogate1 = Surrogate::new(SurrogateKind::Sigmoid)
            .with_alpha(1.0)
            .with_spiking(false);
        rnn.clamp_cell = false;
        let mut cfg = ClassifierConfig::new(rnn, 3);
        cfg.readout = readout;
        let model = SeqClassifier::new(cfg).unwrap();
        let params = model.init_params(3);
        let seqs: [&[u32]; 3] = [&[1, 2, 3, 4], &[0, 4], &[3]];
        let labels = [2, 0, 1];
        let norm = model.loss_norm(&kind, &labels);
        let loss_at = |p: &[f32]| {
            let mut ws = model.workspace(0);
            model
                .loss_and_grad(p, &seqs, &labels, &kind, norm, &mut ws)
                .unwrap()
                .0 as f64
        };
        let mut ws = model.workspace(0);
        model
            .loss_and_grad(&params, &seqs, &labels, &kind, norm, &mut ws)
            .unwrap();
        let eps = 1e-2f32;
        for k in (0..params.len()).step_by(2) {
            let mut p = params.clone();
            p[k] += eps;
            let lp = loss_at(&p);
            p[k] -= 2.0 * eps;
            let lm = loss_at(&p);
            let fd = ((lp - lm) / (2.0 * eps as f64)) as f32;
            assert!(
                (fd - ws.grads()[k]).abs() < 1e-3 + 2e-2 * fd.abs(),
                "{readout:?} param {k}: fd {fd} vs {}",
                ws.grads()[k]
            );
        }
    }
}

/// Dropout between layers (both mask kinds): with the same seeded mask on every forward, the
/// loss is a smooth function of the parameters and BPTT must match finite differences.
#[test]
fn dropout_gradients_match_finite_differences() {
    for invariant in [false, true] {
        let mut cfg = RnnConfig::new(CellKind::Gru, 3, 4);
        cfg.num_layers = 3;
        cfg.bidirectional = true;
        cfg.dropout = 0.5;
        cfg.invariant_dropout_mask = invariant;
        cfg.surrogate1 = Surrogate::new(SurrogateKind::Sigmoid)
            .with_alpha(1.0)
            .with_spiking(false);
        let mut layout = ParamLayout::new();
        let rnn = SpikingRnn::new(cfg, &mut layout, "").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut params = vec![0.0; layout.total];
        rnn.init(&mut params, &mut rng);
        let (t, b) = (4, 2);
        let x: Vec<f32> = (0..t * b * 3).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..t * b * 8).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let run = |p: &[f32], cache: &mut RnnCache| {
            let mut mask_rng = ChaCha8Rng::seed_from_u64(99);
            let batch = Batch {
                input: Input::Dense(&x),
                t,
                b,
                lengths: None,
            };
            rnn.forward(p, batch, None, Some(&mut mask_rng), cache)
                .unwrap();
            cache
                .output()
                .iter()
                .zip(&w)
                .map(|(y, w)| *y as f64 * *w as f64)
                .sum::<f64>()
        };
        let mut cache = RnnCache::default();
        run(&params, &mut cache);
        let mut grads = vec![0.0; params.len()];
        rnn.backward(&params, &mut cache, &w, None, &mut grads, None, None)
            .unwrap();
        let eps = 1e-2f32;
        for k in (0..params.len()).step_by(5) {
            let mut p = params.clone();
            p[k] += eps;
            let lp = run(&p, &mut RnnCache::default());
            p[k] -= 2.0 * eps;
            let lm = run(&p, &mut RnnCache::default());
            let fd = ((lp - lm) / (2.0 * eps as f64)) as f32;
            assert!(
                (fd - grads[k]).abs() < 2e-3 + 2e-2 * fd.abs(),
                "invariant={invariant} param {k}: fd {fd} vs {}",
                grads[k]
            );
        }
    }
}
