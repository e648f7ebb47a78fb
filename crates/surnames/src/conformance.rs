//! Checks the library against reference vectors made with the real SpikingJelly + PyTorch
//! (schema: `shared/golden/README.md`): `{"cases": [...]}` files of SpikingLSTM / SpikingGRU /
//! SpikingVanillaRNN cases, and `{"case": {...}}` files of the tutorial network.
//!
//! Spikes must match exactly; floats (non-spiking outputs, losses, gradients, the Adam step)
//! within [`TOLERANCE`] absolute.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use spiking_rnn::optim::Adam;
use spiking_rnn::rnn::{Batch, Input, RnnCache, States};
use spiking_rnn::{
    CellKind, ClassifierConfig, LossKind, ParamLayout, RnnConfig, SeqClassifier, SpikingRnn,
    Surrogate, SurrogateKind,
};

/// Largest absolute difference accepted for floating-point quantities.
pub const TOLERANCE: f32 = 1e-5;

/// Worst absolute error of one group of tensors; `exact` groups must be 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: &'static str,
    pub worst: f32,
    pub exact: bool,
}

impl Group {
    pub fn pass(&self) -> bool {
        if self.exact {
            self.worst == 0.0
        } else {
            self.worst <= TOLERANCE
        }
    }
}

#[derive(Clone, Debug)]
pub struct CaseReport {
    pub name: String,
    pub groups: Vec<Group>,
}

impl CaseReport {
    pub fn pass(&self) -> bool {
        self.groups.iter().all(Group::pass)
    }
    /// One line: name, worst error per group, PASS/FAIL.
    pub fn line(&self) -> String {
        let mut s = format!("{:<24}", self.name);
        for g in &self.groups {
            let mark = if g.pass() { "" } else { "!" };
            s.push_str(&format!(" {}={:.2e}{}", g.name, g.worst, mark));
        }
        s.push_str(if self.pass() { "  PASS" } else { "  FAIL" });
        s
    }
}

struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn tensor(v: &Value, what: &str) -> Result<Tensor> {
    let shape = v
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{what}: missing 'shape'"))?
        .iter()
        .map(|d| {
            d.as_u64()
                .map(|d| d as usize)
                .ok_or_else(|| anyhow!("{what}: bad shape entry"))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{what}: missing 'data'"))?
        .iter()
        // Shortest-repr f32 numbers: parse as f64 then round to f32 (README of the schema).
        .map(|x| {
            x.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| anyhow!("{what}: non-numeric data"))
        })
        .collect::<Result<Vec<_>>>()?;
    if data.len() != shape.iter().product::<usize>() {
        bail!("{what}: {} values for shape {:?}", data.len(), shape);
    }
    Ok(Tensor { shape, data })
}

fn field<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a Value> {
    v.get(key).ok_or_else(|| anyhow!("{what}: missing '{key}'"))
}

/// The case's `params` object as named tensors.
fn param_tensors(c: &Value, what: &str) -> Result<Vec<(String, Tensor)>> {
    field(c, "params", what)?
        .as_object()
        .ok_or_else(|| anyhow!("{what}: params"))?
        .iter()
        .map(|(k, v)| Ok((k.clone(), tensor(v, k)?)))
        .collect()
}

fn usize_field(v: &Value, key: &str, what: &str) -> Result<usize> {
    field(v, key, what)?
        .as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| anyhow!("{what}: '{key}' is not an integer"))
}

fn surrogate(v: &Value, what: &str) -> Result<Option<Surrogate>> {
    if v.is_null() {
        return Ok(None);
    }
    let name = field(v, "name", what)?
        .as_str()
        .ok_or_else(|| anyhow!("{what}: surrogate name"))?;
    let mut s = Surrogate::new(SurrogateKind::from_name(name)?);
    if let Some(a) = v.get("alpha").and_then(Value::as_f64) {
        s.alpha = a as f32;
    }
    if let Some(sp) = v.get("spiking").and_then(Value::as_bool) {
        s.spiking = sp;
    }
    Ok(Some(s))
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(
            0.0,
            |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) },
        )
}

/// Checks every case of a file in the golden schema.
pub fn check_file(text: &str) -> Result<Vec<CaseReport>> {
    let root: Value = serde_json::from_str(text).context("not valid JSON")?;
    if let Some(cases) = root.get("cases") {
        let cases = cases
            .as_array()
            .ok_or_else(|| anyhow!("'cases' is not a list"))?;
        if cases.is_empty() {
            bail!("'cases' is empty");
        }
        cases
            .iter()
            .enumerate()
            .map(|(i, c)| check_rnn_case(c).with_context(|| format!("case #{i}")))
            .collect()
    } else if let Some(case) = root.get("case") {
        Ok(vec![check_tutorial_case(case)?])
    } else {
        bail!("neither 'cases' nor 'case' at the top level: not a reference-vector file")
    }
}

fn check_rnn_case(c: &Value) -> Result<CaseReport> {
    let name = c
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    let what = name.as_str();
    let cell = match field(c, "model", what)?.as_str() {
        Some("SpikingLSTM") => CellKind::Lstm,
        Some("SpikingGRU") => CellKind::Gru,
        Some("SpikingVanillaRNN") => CellKind::Rnn,
        other => bail!("{what}: unknown model {other:?}"),
    };
    let mut cfg = RnnConfig::new(
        cell,
        usize_field(c, "input_size", what)?,
        usize_field(c, "hidden_size", what)?,
    );
    cfg.num_layers = usize_field(c, "num_layers", what)?;
    cfg.bidirectional = field(c, "bidirectional", what)?.as_bool().unwrap_or(false);
    cfg.bias = c.get("bias").and_then(Value::as_bool).unwrap_or(true);
    let s1_key = if cell == CellKind::Rnn {
        "surrogate_function"
    } else {
        "surrogate_function1"
    };
    cfg.surrogate1 = surrogate(c.get(s1_key).unwrap_or(&Value::Null), what)?.unwrap_or_default();
    cfg.surrogate2 = surrogate(c.get("surrogate_function2").unwrap_or(&Value::Null), what)?;
    cfg.clamp_cell = c.get("clamp_cell").and_then(Value::as_bool).unwrap_or(true);
    let spiking = cfg.surrogate1.spiking;
    let (t, b) = (usize_field(c, "T", what)?, usize_field(c, "batch", what)?);

    let mut layout = ParamLayout::new();
    let rnn = SpikingRnn::new(cfg.clone(), &mut layout, "")?;
    let mut params = vec![0.0; layout.total];
    let tensors = param_tensors(c, what)?;
    layout.import_all(
        &mut params,
        tensors
            .iter()
            .map(|(k, t)| (k.as_str(), t.shape.as_slice(), t.data.as_slice())),
    )?;

    let x = tensor(field(c, "input", what)?, "input")?;
    let init = match c.get("initial_states") {
        Some(v) if !v.is_null() => Some(States {
            h: tensor(field(v, "h0", what)?, "h0")?.data,
            c: match v.get("c0") {
                Some(c0) => tensor(c0, "c0")?.data,
                None => Vec::new(),
            },
        }),
        _ => None,
    };
    let mut cache = RnnCache::default();
    let batch = Batch {
        input: Input::Dense(&x.data),
        t,
        b,
        lengths: None,
    };
    rnn.forward(&params, batch, init.as_ref(), None, &mut cache)?;

    let fs = field(c, "final_states", what)?;
    let out_ref = tensor(field(c, "output", what)?, "output")?;
    let mut states_err = worst(
        &cache.final_states.h,
        &tensor(field(fs, "h_n", what)?, "h_n")?.data,
    );
    if cell == CellKind::Lstm {
        states_err = states_err.max(worst(
            &cache.final_states.c,
            &tensor(field(fs, "c_n", what)?, "c_n")?.data,
        ));
    }
    let mut groups = vec![
        Group {
            name: "outputs",
            worst: worst(cache.output(), &out_ref.data),
            exact: spiking,
        },
        // The LSTM cell state is a sum of products of spikes: exact too in spiking mode.
        Group {
            name: "states",
            worst: states_err,
            exact: spiking,
        },
    ];

    let lw = field(c, "loss_weights", what)?;
    let w_out = tensor(field(lw, "w_out", what)?, "w_out")?.data;
    let w_final = States {
        h: tensor(field(lw, "w_h_n", what)?, "w_h_n")?.data,
        c: match lw.get("w_c_n") {
            Some(v) if cell == CellKind::Lstm => tensor(v, "w_c_n")?.data,
            _ => Vec::new(),
        },
    };
    let loss_out: f32 = cache.output().iter().zip(&w_out).map(|(y, w)| y * w).sum();
    let loss_full = loss_out
        + cache
            .final_states
            .h
            .iter()
            .zip(&w_final.h)
            .map(|(y, w)| y * w)
            .sum::<f32>()
        + cache
            .final_states
            .c
            .iter()
            .zip(&w_final.c)
            .map(|(y, w)| y * w)
            .sum::<f32>();
    let mut loss_err = 0.0f32;
    for (key, ours) in [("loss_out", loss_out), ("loss_full", loss_full)] {
        if let Some(r) = c.get(key).and_then(Value::as_f64) {
            loss_err = loss_err.max((ours - r as f32).abs());
        }
    }
    groups.push(Group {
        name: "losses",
        worst: loss_err,
        exact: false,
    });

    let (mut in_err, mut param_err) = (0.0f32, 0.0f32);
    for (key, d_final) in [
        ("grads_loss_out", None),
        ("grads_loss_full", Some(&w_final)),
    ] {
        let Some(gref) = c.get(key) else { continue };
        let mut grads = vec![0.0; params.len()];
        let mut d_x = vec![0.0; x.data.len()];
        let mut d_init = States::default();
        rnn.backward(
            &params,
            &mut cache,
            &w_out,
            d_final,
            &mut grads,
            Some(&mut d_x),
            Some(&mut d_init),
        )?;
        let gobj = gref.as_object().ok_or_else(|| anyhow!("{what}: {key}"))?;
        for (k, v) in gobj {
            let r = tensor(v, k)?;
            let e = match k.as_str() {
                "input" => worst(&d_x, &r.data),
                "h0" => worst(&d_init.h, &r.data),
                "c0" => worst(&d_init.c, &r.data),
                _ => {
                    let spec = layout
                        .get(k)
                        .ok_or_else(|| anyhow!("{what}: gradient for unknown tensor {k}"))?;
                    worst(&layout.export(&grads, spec), &r.data)
                }
            };
            if matches!(k.as_str(), "input" | "h0" | "c0") {
                in_err = in_err.max(e);
            } else {
                param_err = param_err.max(e);
            }
        }
    }
    groups.push(Group {
        name: "input_grads",
        worst: in_err,
        exact: false,
    });
    groups.push(Group {
        name: "param_grads",
        worst: param_err,
        exact: false,
    });
    Ok(CaseReport { name, groups })
}

/// One-hot `[T, 1, C]` → letter indices.
fn one_hot_tokens(x: &Tensor) -> Result<Vec<u32>> {
    if x.shape.len() != 3 || x.shape[1] != 1 {
        bail!("tutorial input must be [T, 1, letters], got {:?}", x.shape);
    }
    x.data
        .chunks_exact(x.shape[2])
        .map(|row| {
            let ones: Vec<usize> = row
                .iter()
                .enumerate()
                .filter(|(_, &v)| v != 0.0)
                .map(|(i, _)| i)
                .collect();
            match ones.as_slice() {
                [i] if row[*i] == 1.0 => Ok(*i as u32),
                _ => bail!("tutorial input is not one-hot"),
            }
        })
        .collect()
}

fn check_tutorial_case(c: &Value) -> Result<CaseReport> {
    let name = c
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("tutorial")
        .to_string();
    let what = name.as_str();
    let tensors = param_tensors(c, what)?;
    let get = |k: &str| tensors.iter().find(|(n, _)| n == k).map(|(_, t)| t);
    let w_ih = get("lstm.cells.0.linear_ih.weight")
        .ok_or_else(|| anyhow!("{what}: no lstm.cells.0.linear_ih.weight"))?;
    let fc = get("fc.weight").ok_or_else(|| anyhow!("{what}: no fc.weight"))?;
    let mut rnn = RnnConfig::new(CellKind::Lstm, w_ih.shape[1], w_ih.shape[0] / 4);
    rnn.clamp_cell = c.get("clamp_cell").and_then(Value::as_bool).unwrap_or(true);
    let model = SeqClassifier::new(ClassifierConfig::new(rnn, fc.shape[0]))?;
    let mut params = vec![0.0; model.num_params()];
    model.layout.import_all(
        &mut params,
        tensors
            .iter()
            .map(|(k, t)| (k.as_str(), t.shape.as_slice(), t.data.as_slice())),
    )?;
    let tokens = one_hot_tokens(&tensor(field(c, "input", what)?, "input")?)?;
    let label = usize_field(c, "label_index", what)?;
    let mut ws = model.workspace(0);
    let kind = LossKind::Mse;
    let norm = model.loss_norm(&kind, &[label]);
    let (loss, _) = model.loss_and_grad(&params, &[&tokens], &[label], &kind, norm, &mut ws)?;

    let t = tokens.len();
    let hs = model.cfg.rnn.hidden_size;
    let out_ref = tensor(field(c, "lstm_output", what)?, "lstm_output")?;
    let fs = field(c, "final_states", what)?;
    let states_err = worst(
        &ws.rnn.final_states.h,
        &tensor(field(fs, "h_n", what)?, "h_n")?.data,
    )
    .max(worst(
        &ws.rnn.final_states.c,
        &tensor(field(fs, "c_n", what)?, "c_n")?.data,
    ));
    let mut out_err = worst(&ws.rnn.output()[..t * hs], &out_ref.data);
    let float_err = worst(
        ws.logits(),
        &tensor(field(c, "logits", what)?, "logits")?.data,
    )
    .max(worst(
        ws.probs(),
        &tensor(field(c, "softmax", what)?, "softmax")?.data,
    ))
    .max((loss - field(c, "mse_loss", what)?.as_f64().unwrap_or(f64::NAN) as f32).abs());
    if float_err.is_nan() {
        out_err = f32::INFINITY;
    }
    let mut grad_err = 0.0f32;
    let gref = field(c, "grads", what)?
        .as_object()
        .ok_or_else(|| anyhow!("{what}: grads"))?;
    for (k, v) in gref {
        let spec = model
            .layout
            .get(k)
            .ok_or_else(|| anyhow!("{what}: gradient for unknown tensor {k}"))?;
        grad_err = grad_err.max(worst(
            &model.layout.export(ws.grads(), spec),
            &tensor(v, k)?.data,
        ));
    }
    let mut adam_err = 0.0f32;
    if let Some(after) = c.get("params_after_adam").and_then(Value::as_object) {
        let a = field(c, "adam", what)?;
        let mut opt = Adam::new(
            params.len(),
            a.get("lr").and_then(Value::as_f64).unwrap_or(1e-3) as f32,
        );
        if let Some(b) = a.get("betas").and_then(Value::as_array) {
            opt.beta1 = b.first().and_then(Value::as_f64).unwrap_or(0.9) as f32;
            opt.beta2 = b.get(1).and_then(Value::as_f64).unwrap_or(0.999) as f32;
        }
        opt.eps = a.get("eps").and_then(Value::as_f64).unwrap_or(1e-8) as f32;
        let grads = ws.grads().to_vec();
        opt.step(&mut params, &grads);
        for (k, v) in after {
            let spec = model
                .layout
                .get(k)
                .ok_or_else(|| anyhow!("{what}: unknown tensor {k}"))?;
            adam_err = adam_err.max(worst(
                &model.layout.export(&params, spec),
                &tensor(v, k)?.data,
            ));
        }
        if let Some(sref) = c.get("softmax_after_adam") {
            model.forward(&params, &[&tokens], &mut ws, false)?;
            adam_err = adam_err.max(worst(ws.probs(), &tensor(sref, "softmax_after_adam")?.data));
        }
    }
    Ok(CaseReport {
        name,
        groups: vec![
            Group {
                name: "outputs",
                worst: out_err,
                exact: true,
            },
            Group {
                name: "states",
                worst: states_err,
                exact: true,
            },
            Group {
                name: "logits_loss",
                worst: float_err,
                exact: false,
            },
            Group {
                name: "param_grads",
                worst: grad_err,
                exact: false,
            },
            Group {
                name: "adam_step",
                worst: adam_err,
                exact: false,
            },
        ],
    })
}
