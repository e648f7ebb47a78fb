//! The wrapper plumbing checks of SpikingJelly's `test_rnn.py` (spec §5), variable-length
//! batches against one-by-one runs, and errors instead of panics.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spiking_rnn::rnn::{Batch, Input, RnnCache, States};
use spiking_rnn::{CellKind, ParamLayout, RnnConfig, SpikingRnn, Surrogate, SurrogateKind};

/// A vanilla RNN in primitive mode with the identity surrogate and weights that make it the
/// "accumulating cell" of SpikingJelly's tests: `h' = h + x[..., 0]`.
fn accumulating(
    layers: usize,
    bidir: bool,
    dropout: f32,
    invariant: bool,
) -> (SpikingRnn, Vec<f32>) {
    let mut cfg = RnnConfig::new(CellKind::Rnn, 1, 1);
    cfg.num_layers = layers;
    cfg.bidirectional = bidir;
    cfg.dropout = dropout;
    cfg.invariant_dropout_mask = invariant;
    cfg.surrogate1 = Surrogate::new(SurrogateKind::DeterministicPass).with_spiking(false);
    let mut layout = ParamLayout::new();
    let rnn = SpikingRnn::new(cfg, &mut layout, "").unwrap();
    let mut p = vec![0.0; layout.total];
    for spec in &layout.specs {
        let mut data = vec![0.0; spec.len()];
        if spec.name.ends_with("weight") {
            data[0] = 1.0; // first input feature, and the recurrent self-weight
        }
        layout
            .import(&mut p, &spec.name, &spec.shape, &data)
            .unwrap();
    }
    (rnn, p)
}

fn run(
    rnn: &SpikingRnn,
    p: &[f32],
    x: &[f32],
    t: usize,
    init: Option<&States>,
    train: bool,
) -> RnnCache {
    let mut cache = RnnCache::default();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let r: Option<&mut dyn rand::RngCore> = if train { Some(&mut rng) } else { None };
    let b = x.len() / t / rnn.cfg.input_size;
    rnn.forward(
        p,
        Batch {
            input: Input::Dense(x),
            t,
            b,
            lengths: None,
        },
        init,
        r,
        &mut cache,
    )
    .unwrap();
    cache
}

#[test]
fn initial_states_of_every_layer_are_used_and_returned() {
    let (uni, p) = accumulating(2, false, 0.0, false);
    let init = States {
        h: vec![1.0, 2.0],
        c: vec![],
    };
    let c = run(&uni, &p, &[0.0; 3], 3, Some(&init), false);
    assert_eq!(c.final_states.h, vec![1.0, 5.0]);

    let (bi, p) = accumulating(2, true, 0.0, false);
    let init = States {
        h: vec![1.0, 2.0, 3.0, 4.0],
        c: vec![],
    };
    let c = run(&bi, &p, &[0.0; 3], 3, Some(&init), false);
    assert_eq!(c.final_states.h, vec![1.0, 5.0, 3.0, 7.0]);
    // output = [layer-1 fwd, layer-1 rev] per step
    assert_eq!(c.output(), &[3.0, 7.0, 4.0, 6.0, 5.0, 5.0]);
}

#[test]
fn dropout_between_layers_in_both_mask_modes() {
    for invariant in [false, true] {
        let (rnn, p) = accumulating(2, false, 1.0, invariant);
        let c = run(&rnn, &p, &[1.0; 3], 3, None, true);
        assert!(c.output().iter().all(|&y| y == 0.0), "p=1 drops everything");
        assert_eq!(c.final_states.h[1], 0.0);
        assert_eq!(
            c.final_states.h[0], 3.0,
            "the data path is dropped, not the states"
        );
        // eval mode: no dropout
        let c = run(&rnn, &p, &[1.0; 3], 3, None, false);
        assert_eq!(c.output(), &[1.0, 3.0, 6.0]);
    }
    // p = 0.5: kept values are scaled by 2; the invariant mask is constant over time.
    let (rnn, p) = accumulating(2, false, 0.5, true);
    let c = run(&rnn, &p, &[1.0; 40 * 8], 40, None, true);
    let out = c.output();
    let masks: Vec<f32> = out[..8].to_vec(); // layer-1 output at t=0 is m·1
    assert!(
        masks.iter().all(|&m| m == 0.0 || m == 2.0) && masks.contains(&0.0) && masks.contains(&2.0)
    );
    for t in 0..40 {
        for b in 0..8 {
            // layer 0 outputs t+1; layer 1 sums m·(s+1) over s ≤ t
            assert_eq!(out[t * 8 + b], masks[b] * ((t + 1) * (t + 2) / 2) as f32);
        }
    }
    // one layer: silently no dropout
    let (rnn, p) = accumulating(1, false, 1.0, false);
    let c = run(&rnn, &p, &[1.0; 3], 3, None, true);
    assert_eq!(c.output(), &[1.0, 2.0, 3.0]);
}

#[test]
fn public_types_shapes_and_input_gradient() {
    for cell in [CellKind::Rnn, CellKind::Gru, CellKind::Lstm] {
        for bidir in [false, true] {
            let mut cfg = RnnConfig::new(cell, 3, 2);
            cfg.num_layers = 2;
            cfg.bidirectional = bidir;
            let mut layout = ParamLayout::new();
            let rnn = SpikingRnn::new(cfg, &mut layout, "").unwrap();
            let mut p = vec![0.0; layout.total];
            rnn.init(&mut p, &mut ChaCha8Rng::seed_from_u64(3));
            let d = if bidir { 2 } else { 1 };
            let x: Vec<f32> = (0..4 * 2 * 3)
                .map(|i| ((i * 37) % 11) as f32 / 5.0 - 1.0)
                .collect();
            let mut c = run(&rnn, &p, &x, 4, None, false);
            assert_eq!(c.output().len(), 4 * 2 * 2 * d);
            assert_eq!(c.final_states.h.len(), 2 * d * 2 * 2);
            assert_eq!(
                c.final_states.c.len(),
                if cell == CellKind::Lstm {
                    2 * d * 2 * 2
                } else {
                    0
                }
            );
            let ones_out = vec![1.0; c.output().len()];
            let ones_st = States {
                h: vec![1.0; c.final_states.h.len()],
                c: vec![1.0; c.final_states.c.len()],
            };
            let mut g = vec![0.0; p.len()];
            let mut dx = vec![f32::NAN; x.len()];
            rnn.backward(
                &p,
                &mut c,
                &ones_out,
                Some(&ones_st),
                &mut g,
                Some(&mut dx),
                None,
            )
            .unwrap();
            assert!(
                dx.iter().all(|v| v.is_finite()) && dx.iter().any(|&v| v != 0.0),
                "{cell:?} {bidir}"
            );
        }
    }
}

/// A padded batch with lengths gives exactly what running each sequence alone gives. The second
/// batch has enough rows (b·t ≥ 64) for the backward pass's transposed-weights product.
#[test]
fn variable_length_batch_equals_one_by_one() {
    let big: Vec<usize> = (0..16).map(|k| 1 + (k * 5) % 6).collect();
    for lengths in [&[6usize, 2, 4, 1][..], &big] {
        for cell in [
            CellKind::Lstm,
            CellKind::Gru,
            CellKind::Rnn,
            CellKind::AnnLstm,
        ] {
            check_batch_equals_one_by_one(cell, lengths);
        }
    }
}

/// A two-layer bidirectional model with weights 4× SpikingJelly's initialisation, so that the
/// spikes are non-trivial.
fn two_layer_bidirectional(
    cell: CellKind,
    i: usize,
    h: usize,
    rng: &mut ChaCha8Rng,
) -> (SpikingRnn, Vec<f32>) {
    let mut cfg = RnnConfig::new(cell, i, h);
    cfg.num_layers = 2;
    cfg.bidirectional = true;
    let mut layout = ParamLayout::new();
    let rnn = SpikingRnn::new(cfg, &mut layout, "").unwrap();
    let mut p = vec![0.0; layout.total];
    rnn.init(&mut p, rng);
    p.iter_mut().for_each(|w| *w *= 4.0);
    (rnn, p)
}

fn check_batch_equals_one_by_one(cell: CellKind, lengths: &[usize]) {
    {
        let (i, h) = (3, 4);
        let t = *lengths.iter().max().unwrap();
        let b = lengths.len();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (rnn, p) = two_layer_bidirectional(cell, i, h, &mut rng);
        let x: Vec<f32> = (0..t * b * i).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let n_st = 4 * b * h;
        let two = cell.states() == 2;
        let init = States {
            h: (0..n_st).map(|_| rng.gen_range(0.0..1.0)).collect(),
            c: if two {
                (0..n_st).map(|_| rng.gen_range(0.0..1.0)).collect()
            } else {
                vec![]
            },
        };
        let w_out: Vec<f32> = (0..t * b * 2 * h)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();
        let w_fin = States {
            h: (0..n_st).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            c: if two {
                (0..n_st).map(|_| rng.gen_range(-1.0..1.0)).collect()
            } else {
                vec![]
            },
        };
        let mut batch_cache = RnnCache::default();
        let batch = Batch {
            input: Input::Dense(&x),
            t,
            b,
            lengths: Some(lengths),
        };
        rnn.forward(&p, batch, Some(&init), None, &mut batch_cache)
            .unwrap();
        let mut g_batch = vec![0.0; p.len()];
        let mut dx_batch = vec![0.0; x.len()];
        let mut dinit_batch = States::default();
        rnn.backward(
            &p,
            &mut batch_cache,
            &w_out,
            Some(&w_fin),
            &mut g_batch,
            Some(&mut dx_batch),
            Some(&mut dinit_batch),
        )
        .unwrap();

        let mut g_sum = vec![0.0; p.len()];
        let pick_state = |s: &States, bi: usize| States {
            h: (0..4)
                .flat_map(|sl| s.h[(sl * b + bi) * h..(sl * b + bi + 1) * h].to_vec())
                .collect(),
            c: if two {
                (0..4)
                    .flat_map(|sl| s.c[(sl * b + bi) * h..(sl * b + bi + 1) * h].to_vec())
                    .collect()
            } else {
                vec![]
            },
        };
        for (bi, &len) in lengths.iter().enumerate() {
            let xs: Vec<f32> = (0..len)
                .flat_map(|ti| x[(ti * b + bi) * i..(ti * b + bi + 1) * i].to_vec())
                .collect();
            let ws: Vec<f32> = (0..len)
                .flat_map(|ti| w_out[(ti * b + bi) * 2 * h..(ti * b + bi + 1) * 2 * h].to_vec())
                .collect();
            let init1 = pick_state(&init, bi);
            let mut c = RnnCache::default();
            rnn.forward(
                &p,
                Batch {
                    input: Input::Dense(&xs),
                    t: len,
                    b: 1,
                    lengths: None,
                },
                Some(&init1),
                None,
                &mut c,
            )
            .unwrap();
            for ti in 0..t {
                let got = &batch_cache.output()[(ti * b + bi) * 2 * h..(ti * b + bi + 1) * 2 * h];
                if ti < len {
                    assert_eq!(
                        got,
                        &c.output()[ti * 2 * h..(ti + 1) * 2 * h],
                        "{cell:?} b{bi} t{ti}"
                    );
                } else {
                    assert!(got.iter().all(|&v| v == 0.0), "padding outputs are zero");
                }
            }
            let fin = pick_state(&batch_cache.final_states, bi);
            assert_eq!(fin, c.final_states, "{cell:?} final states of b{bi}");
            let mut g = vec![0.0; p.len()];
            let mut dx = vec![0.0; xs.len()];
            let mut di = States::default();
            rnn.backward(
                &p,
                &mut c,
                &ws,
                Some(&pick_state(&w_fin, bi)),
                &mut g,
                Some(&mut dx),
                Some(&mut di),
            )
            .unwrap();
            g_sum.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
            for ti in 0..t {
                let got = &dx_batch[(ti * b + bi) * i..(ti * b + bi + 1) * i];
                for k in 0..i {
                    let want = if ti < len { dx[ti * i + k] } else { 0.0 };
                    assert!(
                        (got[k] - want).abs() < 1e-5,
                        "{cell:?} dx b{bi} t{ti}: {} vs {want}",
                        got[k]
                    );
                }
            }
            let dib = pick_state(&dinit_batch, bi);
            for (a, b2) in dib.h.iter().chain(&dib.c).zip(di.h.iter().chain(&di.c)) {
                assert!((a - b2).abs() < 1e-5, "{cell:?} d_init b{bi}");
            }
        }
        for (k, (a, b2)) in g_batch.iter().zip(&g_sum).enumerate() {
            assert!(
                (a - b2).abs() < 1e-4 * (1.0 + b2.abs()),
                "{cell:?} param grad {k}: {a} vs {b2}"
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let mut layout = ParamLayout::new();
    let rnn = SpikingRnn::new(RnnConfig::new(CellKind::Lstm, 3, 2), &mut layout, "").unwrap();
    let p = vec![0.0; layout.total];
    let mut c = RnnCache::default();
    let x = vec![0.0; 2 * 3];
    let f = |batch: Batch, init: Option<&States>, c: &mut RnnCache| {
        rnn.forward(&p, batch, init, None, c)
    };
    // (input, T, B, lengths): no steps, too few values, a length past T, a zero length, lengths
    // for the wrong batch size, a letter index outside the input size.
    let bad: [(Input, usize, usize, Option<&[usize]>); 6] = [
        (Input::Dense(&[]), 0, 1, None),
        (Input::Dense(&x), 2, 2, None),
        (Input::Dense(&x), 2, 1, Some(&[3])),
        (Input::Dense(&x), 2, 1, Some(&[0])),
        (Input::Dense(&x), 2, 1, Some(&[1, 1])),
        (Input::Tokens(&[0, 3]), 2, 1, None),
    ];
    for (input, t, b, lengths) in bad {
        let batch = Batch {
            input,
            t,
            b,
            lengths,
        };
        assert!(f(batch, None, &mut c).is_err(), "{batch:?}");
    }
    let only_h = States {
        h: vec![0.0; 2],
        c: vec![],
    };
    assert!(f(
        Batch {
            input: Input::Dense(&x),
            t: 2,
            b: 1,
            lengths: None
        },
        Some(&only_h),
        &mut c
    )
    .is_err());
    // backward before any forward, or with a wrong gradient shape
    let mut g = vec![0.0; p.len()];
    assert!(rnn
        .backward(
            &p,
            &mut RnnCache::default(),
            &[0.0; 4],
            None,
            &mut g,
            None,
            None
        )
        .is_err());
    f(
        Batch {
            input: Input::Dense(&x),
            t: 2,
            b: 1,
            lengths: None,
        },
        None,
        &mut c,
    )
    .unwrap();
    assert!(rnn
        .backward(&p, &mut c, &[0.0; 3], None, &mut g, None, None)
        .is_err());
    // configurations SpikingJelly rejects
    let mut cfg = RnnConfig::new(CellKind::Lstm, 3, 2);
    cfg.surrogate2 = Some(Surrogate::default().with_spiking(false));
    assert!(SpikingRnn::new(cfg, &mut ParamLayout::new(), "").is_err());
    let mut cfg = RnnConfig::new(CellKind::Gru, 3, 2);
    cfg.num_layers = 0;
    assert!(SpikingRnn::new(cfg, &mut ParamLayout::new(), "").is_err());
}

#[test]
fn state_dict_names_and_shapes() {
    let mut cfg = RnnConfig::new(CellKind::Lstm, 58, 256);
    cfg.num_layers = 2;
    cfg.bidirectional = true;
    let mut layout = ParamLayout::new();
    SpikingRnn::new(cfg, &mut layout, "lstm.").unwrap();
    let names: Vec<String> = layout
        .specs
        .iter()
        .map(|s| format!("{} {:?}", s.name, s.shape))
        .collect();
    assert_eq!(names[0], "lstm.cells.0.linear_ih.weight [1024, 58]");
    assert_eq!(names[4], "lstm.cells.1.linear_ih.weight [1024, 512]");
    assert_eq!(names[8], "lstm.cells_reverse.0.linear_ih.weight [1024, 58]");
    assert_eq!(names[15], "lstm.cells_reverse.1.linear_hh.bias [1024]");
    assert_eq!(names.len(), 16);
}

/// Prefix-shared prediction equals plain batched prediction, for stacked LSTM and GRU models.
#[test]
fn prefix_shared_prediction_equals_plain() {
    use spiking_rnn::{ClassifierConfig, Readout, SeqClassifier};
    for (cell, readout) in [
        (CellKind::Lstm, Readout::Last),
        (CellKind::Gru, Readout::Last),
        (CellKind::AnnLstm, Readout::Last),
        (CellKind::Lstm, Readout::Mean),
        (CellKind::Gru, Readout::Mean),
        (CellKind::Lstm, Readout::Cell),
        (CellKind::AnnLstm, Readout::Cell),
    ] {
        let mut rnn = RnnConfig::new(cell, 5, 8);
        rnn.num_layers = 2;
        let mut cfg = ClassifierConfig::new(rnn, 4);
        cfg.readout = readout;
        let model = SeqClassifier::new(cfg).unwrap();
        let mut params = model.init_params(5);
        params.iter_mut().for_each(|p| *p *= 3.0);
        let seqs: Vec<Vec<u32>> = vec![
            vec![1, 2, 3],
            vec![1, 2],
            vec![1, 2, 4, 0],
            vec![3],
            vec![1, 2, 3],
            vec![0, 0, 0, 0, 0],
        ];
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let shared = model.predict_prefix_shared(&params, &refs).unwrap();
        let mut ws = model.inference_workspace();
        model.forward(&params, &refs, &mut ws, false).unwrap();
        for (a, b) in shared.iter().zip(ws.probs()) {
            assert!((a - b).abs() < 1e-6, "{cell:?}: {a} vs {b}");
        }
        assert!(model
            .predict_prefix_shared(&params, &[&[1u32][..], &[][..]])
            .is_err());
    }
}

/// `Readout::Final` reads the forward direction at the last letter and the reverse direction at
/// the first (after it has read the whole name); with one direction it is `Last`.
#[test]
fn final_readout_reads_each_direction_at_its_end() {
    use spiking_rnn::{ClassifierConfig, Readout, SeqClassifier};
    let hs = 4;
    let f = 2 * hs;
    // Real-valued outputs, so that a value read at the wrong step cannot coincide.
    let mut rnn = RnnConfig::new(CellKind::AnnLstm, 5, hs);
    rnn.bidirectional = true;
    let mut cfg = ClassifierConfig::new(rnn.clone(), f);
    cfg.readout = Readout::Final;
    let model = SeqClassifier::new(cfg).unwrap();
    let mut params = model.init_params(2);
    // An identity head: the logits are the features.
    let w = model.layout.get("fc.weight").unwrap().range();
    params[w.clone()].fill(0.0);
    for j in 0..f {
        params[w.start + j * f + j] = 1.0;
    }
    params[model.layout.get("fc.bias").unwrap().range()].fill(0.0);
    let seqs: [&[u32]; 3] = [&[1, 2, 3], &[4], &[0, 3]];
    let b = seqs.len();
    let mut ws = model.inference_workspace();
    model.forward(&params, &seqs, &mut ws, false).unwrap();
    let out = ws.rnn.output();
    for (bi, s) in seqs.iter().enumerate() {
        let logits = &ws.logits()[bi * f..(bi + 1) * f];
        let last = ((s.len() - 1) * b + bi) * f;
        let first = bi * f;
        assert_eq!(&logits[..hs], &out[last..last + hs], "forward half of {bi}");
        assert_eq!(
            &logits[hs..],
            &out[first + hs..first + f],
            "reverse half of {bi}"
        );
        if s.len() > 1 {
            assert_ne!(&logits[hs..], &out[last + hs..last + f]);
        }
    }
    // One direction: the same numbers as `Last`.
    rnn.bidirectional = false;
    let probs = |readout| {
        let mut cfg = ClassifierConfig::new(rnn.clone(), 3);
        cfg.readout = readout;
        let model = SeqClassifier::new(cfg).unwrap();
        let mut ws = model.inference_workspace();
        model
            .forward(&model.init_params(4), &seqs, &mut ws, false)
            .unwrap();
        ws.probs().to_vec()
    };
    assert_eq!(probs(Readout::Final), probs(Readout::Last));
}

/// `Readout::Cell` reads the top layer's cell state where `Final` reads the output: each
/// sequence's own last letter in a batch of different lengths, and the reverse direction after
/// the whole name. Checked against each sequence run alone through the network (no lengths, no
/// batch), and only LSTM cells are accepted.
#[test]
fn cell_readout_reads_the_top_layer_cell_state_at_each_end() {
    use spiking_rnn::{ClassifierConfig, Readout, SeqClassifier};
    let hs = 4;
    let f = 2 * hs;
    for cell in [CellKind::AnnLstm, CellKind::Lstm] {
        let mut rnn = RnnConfig::new(cell, 5, hs);
        rnn.bidirectional = true;
        rnn.num_layers = 2;
        rnn.clamp_cell = false;
        let mut cfg = ClassifierConfig::new(rnn, f);
        cfg.readout = Readout::Cell;
        let model = SeqClassifier::new(cfg).unwrap();
        let mut params = model.init_params(2);
        // Larger weights, so that the spiking cell fires and its cell states differ by unit.
        params.iter_mut().for_each(|p| *p *= 4.0);
        // An identity head: the logits are the features.
        let w = model.layout.get("fc.weight").unwrap().range();
        params[w.clone()].fill(0.0);
        for j in 0..f {
            params[w.start + j * f + j] = 1.0;
        }
        params[model.layout.get("fc.bias").unwrap().range()].fill(0.0);
        if cell == CellKind::Lstm {
            // Top layer: i and g always fire, o never: c ≥ 1 and h = c·o = 0, so a readout of
            // the output cannot pass for one of the cell state.
            for name in [
                "lstm.cells.1.linear_ih.bias",
                "lstm.cells_reverse.1.linear_ih.bias",
            ] {
                let b = model.layout.get(name).unwrap().range();
                let gates = &mut params[b];
                gates[..hs].fill(100.0);
                gates[2 * hs..3 * hs].fill(100.0);
                gates[3 * hs..].fill(-100.0);
            }
        }
        let seqs: [&[u32]; 3] = [&[1, 2, 3, 0], &[4], &[0, 3]];
        let mut ws = model.inference_workspace();
        model.forward(&params, &seqs, &mut ws, false).unwrap();
        let mut distinct = 0;
        for (bi, s) in seqs.iter().enumerate() {
            let mut alone = RnnCache::default();
            let batch = Batch {
                input: Input::Tokens(s),
                t: s.len(),
                b: 1,
                lengths: None,
            };
            model
                .rnn
                .forward(&params, batch, None, None, &mut alone)
                .unwrap();
            // States [D·L, 1, H], direction-major: the top layer is rows 1 (forward) and 3.
            let c = &alone.final_states.c;
            let logits = &ws.logits()[bi * f..(bi + 1) * f];
            assert_eq!(
                &logits[..hs],
                &c[hs..2 * hs],
                "{cell:?} forward half of {bi}"
            );
            assert_eq!(&logits[hs..], &c[3 * hs..], "{cell:?} reverse half of {bi}");
            if logits[..hs] != alone.final_states.h[hs..2 * hs] {
                distinct += 1;
            }
        }
        // The cell state is not the output the other readouts read.
        assert_eq!(distinct, seqs.len(), "{cell:?}: c equals h");
    }
    for cell in [CellKind::Gru, CellKind::Rnn] {
        let mut cfg = ClassifierConfig::new(RnnConfig::new(cell, 5, hs), 3);
        cfg.readout = Readout::Cell;
        assert!(SeqClassifier::new(cfg).is_err(), "{cell:?}");
    }
}

/// A cache reused from a larger batch gives exactly what a fresh cache gives: the backward pass
/// does not clear its buffers between calls, so every entry it reads must be written first.
/// All cells, two layers, both directions, dense and letter-index input, unsorted lengths.
#[test]
fn reused_cache_equals_fresh_cache() {
    let (i, h) = (5, 4);
    for cell in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::Rnn,
        CellKind::AnnLstm,
    ] {
        for tokens in [false, true] {
            let (rnn, p) = two_layer_bidirectional(cell, i, h, &mut ChaCha8Rng::seed_from_u64(21));
            // (output, parameter gradients) of one forward + backward
            let run = |cache: &mut RnnCache, lengths: &[usize], seed: u64| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let (t, b) = (*lengths.iter().max().unwrap(), lengths.len());
                let dense: Vec<f32> = (0..t * b * i).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let letters: Vec<u32> = (0..t * b).map(|_| rng.gen_range(0..i as u32)).collect();
                let input = if tokens {
                    Input::Tokens(&letters)
                } else {
                    Input::Dense(&dense)
                };
                let batch = Batch {
                    input,
                    t,
                    b,
                    lengths: Some(lengths),
                };
                rnn.forward(&p, batch, None, None, cache).unwrap();
                let d_out: Vec<f32> = (0..t * b * 2 * h)
                    .map(|_| rng.gen_range(-1.0..1.0))
                    .collect();
                let mut g = vec![0.0; p.len()];
                rnn.backward(&p, cache, &d_out, None, &mut g, None, None)
                    .unwrap();
                (cache.output().to_vec(), g)
            };
            let big: Vec<usize> = (0..20).map(|k| 1 + (k * 7) % 9).collect();
            let small = [3, 5, 1, 4];
            let mut reused = RnnCache::default();
            run(&mut reused, &big, 1);
            let again = run(&mut reused, &small, 2);
            let fresh = run(&mut RnnCache::default(), &small, 2);
            assert_eq!(again, fresh, "{cell:?}, letter input {tokens}");
        }
    }
}

/// `batch_grad` splits a batch over workers (sorted longest first, dealt round-robin): any
/// number of workers gives the gradient of one pass over the whole batch, calling it twice gives
/// the same result (the workers' buffers are cleared or known clean), and `apply_adam` clips.
#[test]
fn batch_grad_over_workers_and_clipped_adam_step() {
    use spiking_rnn::optim::{grad_norm, Adam};
    use spiking_rnn::{ClassifierConfig, LossKind, SeqClassifier};
    let model = SeqClassifier::new(ClassifierConfig::new(
        RnnConfig::new(CellKind::Lstm, 6, 8),
        3,
    ))
    .unwrap();
    let mut params = model.init_params(2);
    params.iter_mut().for_each(|p| *p *= 3.0);
    let seqs: Vec<Vec<u32>> = vec![
        vec![1, 2],
        vec![5, 4, 3, 2, 1],
        vec![0],
        vec![3, 3, 3],
        vec![2, 5, 0, 1],
        vec![4, 4],
        vec![1, 0, 5, 5, 2, 3],
    ];
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let labels = [0, 2, 1, 1, 0, 2, 1];
    let kind = LossKind::CrossEntropy {
        class_weights: Some(vec![1.0, 0.5, 2.0]),
    };
    let mut one = model.workspace(0);
    let norm = model.loss_norm(&kind, &labels);
    let (want_loss, want_correct) = model
        .loss_and_grad(&params, &refs, &labels, &kind, norm, &mut one)
        .unwrap();
    for workers in 1..=3 {
        let mut ws: Vec<_> = (0..workers).map(|k| model.workspace(k as u64)).collect();
        // a worker whose buffer was written outside batch_grad must be cleared, not trusted
        if workers > 1 {
            model
                .loss_and_grad(&params, &refs, &labels, &kind, norm, &mut ws[1])
                .unwrap();
        }
        for call in 0..2 {
            let (loss, correct) = model
                .batch_grad(&params, &refs, &labels, &kind, &mut ws)
                .unwrap();
            assert!(
                (loss - want_loss).abs() < 1e-5,
                "{workers} workers: loss {loss}"
            );
            assert_eq!(correct, want_correct);
            for (k, (a, b)) in ws[0].grads().iter().zip(one.grads()).enumerate() {
                assert!(
                    (a - b).abs() < 1e-6 * (1.0 + b.abs()),
                    "{workers} workers, call {call}, param {k}: {a} vs {b}"
                );
            }
            assert!(ws[1..].iter().all(|w| w.grads().iter().all(|&g| g == 0.0)));
        }
    }

    // clipping to half the norm is an Adam step on the halved gradients
    let g = one.grads().to_vec();
    let n = grad_norm(&g, 1);
    let (mut adam, mut want_adam) = (Adam::new(params.len(), 1e-2), Adam::new(params.len(), 1e-2));
    let mut p = params.clone();
    let reported = one.apply_adam(&mut adam, &mut p, 2, Some(n / 2.0)).unwrap();
    assert_eq!(reported, Some(n));
    let half: Vec<f32> = g.iter().map(|x| x * ((n / 2.0) / n)).collect();
    let mut want = params.clone();
    want_adam.step(&mut want, &half);
    assert_eq!(p, want);
    assert!(one.grads().iter().all(|&x| x == 0.0));

    // bad arguments are errors
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(one.apply_adam(&mut adam, &mut p, 1, Some(bad)).is_err());
    }
    let mut ws = vec![model.workspace(0)];
    assert!(model
        .batch_grad(&params, &refs, &labels[..3], &kind, &mut ws)
        .is_err());
    assert!(model
        .batch_grad(&params, &refs, &labels, &kind, &mut [])
        .is_err());
    let bad_labels = [0, 2, 1, 1, 0, 2, 3];
    assert!(model
        .batch_grad(&params, &refs, &bad_labels, &kind, &mut ws)
        .is_err());
    let short_weights = LossKind::CrossEntropy {
        class_weights: Some(vec![1.0, 1.0]),
    };
    assert!(model
        .batch_grad(&params, &refs, &labels, &short_weights, &mut ws)
        .is_err());
    let mut inference = vec![model.workspace(0), model.inference_workspace()];
    assert!(model
        .batch_grad(&params, &refs, &labels, &kind, &mut inference)
        .is_err());
}
