//! Checks the library against reference vectors made with the real SpikingJelly + PyTorch
//! (schema: `shared/golden/README.md`): `{"cases": [...]}` files of SpikingLSTM / SpikingGRU /
//! SpikingVanillaRNN cases, and `{"case": {...}}` files of the tutorial network.
//!
//! Spikes must match exactly; floats (non-spiking outputs, losses, gradients, the Adam step)
//! within [`TOLERANCE`] absolute.

use crate::config::{check_model_size, MAX_DIM, MAX_LAYERS};
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

/// Worst absolute error of one group of tensors; `exact` groups must be 0. A group whose
/// reference data the file lacks fails: a case must not pass on what it did not check.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: &'static str,
    pub worst: f32,
    pub exact: bool,
    pub missing: bool,
}

impl Group {
    fn new(name: &'static str, worst: f32, exact: bool) -> Self {
        Self {
            name,
            worst,
            exact,
            missing: false,
        }
    }

    /// A floating-point group (tolerance, not exact): `None` when the file has no reference
    /// data for it.
    fn float(name: &'static str, worst: Option<f32>) -> Self {
        Self {
            name,
            worst: worst.unwrap_or(0.0),
            exact: false,
            missing: worst.is_none(),
        }
    }

    pub fn pass(&self) -> bool {
        if self.missing {
            false
        } else if self.exact {
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
    /// Why the case could not be checked (malformed), if so.
    pub error: Option<String>,
}

impl CaseReport {
    pub fn pass(&self) -> bool {
        self.error.is_none() && self.groups.iter().all(Group::pass)
    }
    /// One line: name, worst error per group, PASS/FAIL (ERROR for a malformed case).
    pub fn line(&self) -> String {
        let mut s = format!("{:<24}", self.name);
        if let Some(e) = &self.error {
            s.push_str(&format!("  ERROR: {e}"));
            return s;
        }
        for g in &self.groups {
            if g.missing {
                s.push_str(&format!(" {}=missing!", g.name));
                continue;
            }
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

/// A size field of a case: a positive integer no larger than `max`.
fn size_field(v: &Value, key: &str, what: &str, max: usize) -> Result<usize> {
    let n = usize_field(v, key, what)?;
    if n == 0 || n > max {
        bail!("{what}: '{key}' is {n}; expected 1 to {max}");
    }
    Ok(n)
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
        // A malformed case is reported and the others are still checked.
        Ok(cases
            .iter()
            .enumerate()
            .map(|(i, c)| {
                check_rnn_case(c).unwrap_or_else(|e| CaseReport {
                    name: format!("case #{i}"),
                    groups: Vec::new(),
                    error: Some(format!("{e:#}").replace('\n', " ")),
                })
            })
            .collect())
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
        size_field(c, "input_size", what, MAX_DIM)?,
        size_field(c, "hidden_size", what, MAX_DIM)?,
    );
    cfg.num_layers = size_field(c, "num_layers", what, MAX_LAYERS)?;
    cfg.bidirectional = field(c, "bidirectional", what)?.as_bool().unwrap_or(false);
    check_model_size(
        cell,
        cfg.input_size,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.bidirectional,
        0,
    )
    .with_context(|| what.to_string())?;
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
    let (t, b) = (
        size_field(c, "T", what, MAX_DIM)?,
        size_field(c, "batch", what, MAX_DIM)?,
    );

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
        Group::new("outputs", worst(cache.output(), &out_ref.data), spiking),
        // The LSTM cell state is a sum of products of spikes: exact too in spiking mode.
        Group::new("states", states_err, spiking),
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
    let mut loss_err = None::<f32>;
    for (key, ours) in [("loss_out", loss_out), ("loss_full", loss_full)] {
        if let Some(r) = c.get(key).and_then(Value::as_f64) {
            loss_err = Some(loss_err.unwrap_or(0.0).max((ours - r as f32).abs()));
        }
    }
    groups.push(Group::float("losses", loss_err));

    let (mut in_err, mut param_err) = (None::<f32>, None::<f32>);
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
            let group = if matches!(k.as_str(), "input" | "h0" | "c0") {
                &mut in_err
            } else {
                &mut param_err
            };
            *group = Some(group.unwrap_or(0.0).max(e));
        }
    }
    groups.push(Group::float("input_grads", in_err));
    groups.push(Group::float("param_grads", param_err));
    Ok(CaseReport {
        name,
        groups,
        error: None,
    })
}

/// One-hot `[T, 1, C]` → letter indices.
fn one_hot_tokens(x: &Tensor) -> Result<Vec<u32>> {
    if x.shape.len() != 3 || x.shape[0] == 0 || x.shape[1] != 1 || x.shape[2] == 0 {
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
    let (gh, input, classes) = match (w_ih.shape.as_slice(), fc.shape.as_slice()) {
        (&[gh, i], &[c, _]) if gh % 4 == 0 && gh > 0 && i > 0 && c > 0 => (gh, i, c),
        _ => bail!(
            "{what}: lstm.cells.0.linear_ih.weight must be [4H, I] and fc.weight [C, H], got {:?} and {:?}",
            w_ih.shape,
            fc.shape
        ),
    };
    check_model_size(CellKind::Lstm, input, gh / 4, 1, false, classes)
        .with_context(|| what.to_string())?;
    let mut rnn = RnnConfig::new(CellKind::Lstm, input, gh / 4);
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
    let mut adam_err = None::<f32>;
    if let Some(after) = c.get("params_after_adam").and_then(Value::as_object) {
        let mut err = 0.0f32;
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
            err = err.max(worst(
                &model.layout.export(&params, spec),
                &tensor(v, k)?.data,
            ));
        }
        if let Some(sref) = c.get("softmax_after_adam") {
            model.forward(&params, &[&tokens], &mut ws, false)?;
            err = err.max(worst(ws.probs(), &tensor(sref, "softmax_after_adam")?.data));
        }
        adam_err = Some(err);
    }
    Ok(CaseReport {
        name,
        error: None,
        groups: vec![
            Group::new("outputs", out_err, true),
            Group::new("states", states_err, true),
            Group::new("logits_loss", float_err, false),
            Group::float("param_grads", (!gref.is_empty()).then_some(grad_err)),
            Group::float("adam_step", adam_err),
        ],
    })
}
