//! Run directories: `model.safetensors` (SpikingJelly/PyTorch key names and layouts) next to
//! `config.json`, written atomically; strict loading with one-line errors; import of a
//! `state_dict` saved from the Python tutorial.

use crate::config::{ModelSpec, RunConfig, SplitSpec};
use crate::fsutil::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use spiking_rnn::SeqClassifier;
use std::collections::BTreeMap;
use std::path::Path;

pub const MODEL_FILE: &str = "model.safetensors";

/// Named tensors in file order: (name, PyTorch shape, row-major values).
pub type TensorList = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Named tensors: name → (PyTorch shape, row-major values).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;
pub const CONFIG_FILE: &str = "config.json";

/// A model ready to use.
pub struct LoadedModel {
    pub config: RunConfig,
    pub model: SeqClassifier,
    pub params: Vec<f32>,
}

/// Named f32 tensors in PyTorch layout → safetensors bytes.
pub fn tensors_to_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>> {
    tensors_to_bytes_with_metadata(tensors, None)
}

/// [`tensors_to_bytes`] with string metadata in the header (`__metadata__`).
pub fn tensors_to_bytes_with_metadata(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(safetensors::serialize(views, &metadata)?)
}

/// The string metadata of a safetensors file (empty when it has none).
pub fn read_metadata(
    bytes: &[u8],
    what: &str,
) -> Result<std::collections::HashMap<String, String>> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("{what} is not a valid safetensors file ({e})"))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// safetensors bytes → named f32 tensors (F64/F16/BF16 are converted), in file order.
pub fn bytes_to_tensors(bytes: &[u8], what: &str) -> Result<Tensors> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{what} is not a valid safetensors file ({e})"))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => bail!("{what}: tensor '{name}' has dtype {other:?}; only F32, F64, F16 and BF16 tensors can be loaded"),
        };
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

/// The model's tensors with SpikingJelly names, PyTorch shapes and layouts. The networks of an
/// ensemble are numbered as in a `torch.nn.ModuleList` of them: `0.lstm.cells.0.…`, `1.…`.
pub fn state_dict(model: &SeqClassifier, params: &[f32]) -> Result<TensorList> {
    let members = crate::evaluate::members(model, params)?;
    let many = members.len() > 1;
    let mut out = Vec::new();
    for (k, p) in members.enumerate() {
        for s in &model.layout.specs {
            let name = if many {
                format!("{k}.{}", s.name)
            } else {
                s.name.clone()
            };
            out.push((name, s.shape.clone(), model.layout.export(p, s)));
        }
    }
    Ok(out)
}

/// Writes `model.safetensors` (with the metadata of [`export_bytes`], so that the file alone
/// can be imported) then `config.json`, each atomically.
pub fn save_run(
    dir: &Path,
    config: &RunConfig,
    model: &SeqClassifier,
    params: &[f32],
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create run directory {}", dir.display()))?;
    write_atomic(&dir.join(MODEL_FILE), &export_bytes(config, model, params)?)?;
    write_atomic(
        &dir.join(CONFIG_FILE),
        serde_json::to_string_pretty(config)?.as_bytes(),
    )?;
    Ok(())
}

pub fn load_config(dir: &Path) -> Result<RunConfig> {
    if dir.exists() && !dir.is_dir() {
        bail!("{} is a file, not a run directory", dir.display());
    }
    if !dir.is_dir() {
        bail!("run directory {} does not exist", dir.display());
    }
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let config: RunConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid run configuration", path.display()))?;
    config
        .validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok(config)
}

/// Loads a run directory, checking that every tensor is present exactly once with the shape the
/// config implies and finite values.
pub fn load_run(dir: &Path) -> Result<LoadedModel> {
    let config = load_config(dir)?;
    let model = config.model.build()?;
    let path = dir.join(MODEL_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let tensors = bytes_to_tensors(&bytes, &path.display().to_string())?;
    let params =
        params_from_tensors(&model, config.model.members, &tensors, &[]).with_context(|| {
            format!(
                "{} does not match {} (config and weights disagree)",
                path.display(),
                dir.join(CONFIG_FILE).display()
            )
        })?;
    Ok(LoadedModel {
        config,
        model,
        params,
    })
}

/// Fills a parameter buffer from named tensors (for an ensemble, each network's under its
/// number, see [`state_dict`]). Keys matching `ignore` suffixes are skipped; any other unknown
/// key, a missing key, a wrong shape or a non-finite value is an error.
pub fn params_from_tensors(
    model: &SeqClassifier,
    members: usize,
    tensors: &Tensors,
    ignore: &[&str],
) -> Result<Vec<f32>> {
    // Each key goes to its network under its one-network name (`1.fc.bias` → network 1,
    // `fc.bias`), or is unexpected.
    let mut per_member = vec![Vec::new(); members];
    let mut extra: Vec<&str> = Vec::new();
    for (key, (shape, data)) in tensors {
        let (k, name) = if members == 1 {
            (Some(0), key.as_str())
        } else {
            match key.split_once('.') {
                // (Only the canonical number: `01.` would alias `1.`.)
                Some((n, rest)) => {
                    let k = n.parse::<usize>().ok();
                    let k = k.filter(|&k| k < members && k.to_string() == n);
                    (k, rest)
                }
                None => (None, key.as_str()),
            }
        };
        match k {
            Some(k) if model.layout.get(name).is_some() => {
                per_member[k].push((name.to_string(), shape.as_slice(), data.as_slice()))
            }
            _ if ignore.iter().any(|s| key.ends_with(s)) => {}
            _ => extra.push(key),
        }
    }
    if !extra.is_empty() {
        bail!("unexpected tensors: {}", extra.join(", "));
    }
    let n = model.num_params();
    let mut params = vec![0.0; n * members];
    for (k, (p, mine)) in params.chunks_exact_mut(n).zip(&per_member).enumerate() {
        model
            .layout
            .import_all(p, mine.iter().map(|(name, s, d)| (name.as_str(), *s, *d)))
            .map_err(|e| {
                if members > 1 {
                    anyhow!("network {k}: {e}")
                } else {
                    e.into()
                }
            })?;
    }
    Ok(params)
}

/// The metadata key of an exported state_dict: [`ExportMeta`] as JSON. PyTorch ignores it;
/// `import` reads it back so that a round trip keeps the model. (One key: safetensors writes
/// its metadata map in no fixed order, and identical runs must give identical files.)
pub const EXPORT_META: &str = "surnames";

/// What the tensors of an exported state_dict do not say.
#[derive(serde::Serialize, serde::Deserialize)]
struct ExportMeta {
    model: ModelSpec,
    /// Output index → language.
    categories: Vec<String>,
}

/// The bytes of an exported state_dict: the tensors with SpikingJelly names plus metadata.
pub fn export_bytes(config: &RunConfig, model: &SeqClassifier, params: &[f32]) -> Result<Vec<u8>> {
    let meta = ExportMeta {
        model: config.model.clone(),
        categories: config.categories.clone(),
    };
    let metadata = [(EXPORT_META.to_string(), serde_json::to_string(&meta)?)].into();
    tensors_to_bytes_with_metadata(&state_dict(model, params)?, Some(metadata))
}

/// Turns a `state_dict` into a model: one exported by this tool (its metadata gives the model
/// and languages), or one of the tutorial's `Net` saved from Python (keys
/// `lstm.cells.0.linear_ih.weight`, …, `fc.weight`, `fc.bias`, saved with
/// `safetensors.torch.save_file`; sizes, layer count and directions are read off the tensors).
///
/// `categories` is the output order of the file (default: its metadata, else `default_categories`).
/// The outputs are reordered to the alphabetical order that data directories are read in.
/// `clamp_cell`: the cell-state cap (default: the metadata, else on).
pub fn import_state_dict(
    bytes: &[u8],
    what: &str,
    categories: Option<Vec<String>>,
    clamp_cell: Option<bool>,
    default_categories: Vec<String>,
) -> Result<LoadedModel> {
    let mut tensors = bytes_to_tensors(bytes, what)?;
    let metadata = read_metadata(bytes, what)?;
    if !metadata.contains_key(EXPORT_META) && metadata.keys().any(|k| k.starts_with("surnames.")) {
        bail!("{what} was exported by a development build of this tool; export it again");
    }
    let meta: Option<ExportMeta> = match metadata.get(EXPORT_META) {
        Some(json) => Some(serde_json::from_str(json).with_context(|| {
            format!("{what}: the model description in its metadata is corrupt")
        })?),
        None => None,
    };
    let (spec, recorded) = meta.map(|m| (m.model, m.categories)).unzip();
    let spec = match spec {
        Some(mut spec) => {
            if let Some(c) = clamp_cell {
                if c != spec.clamp_cell {
                    bail!(
                        "{what} was exported from a model with the cell-state cap {}; {} contradicts it",
                        if spec.clamp_cell { "on" } else { "off" },
                        if c { "the default (cap on)" } else { "--no-clamp" }
                    );
                }
                spec.clamp_cell = c;
            }
            spec
        }
        None => tutorial_spec_from_shapes(&tensors, what, clamp_cell.unwrap_or(true))?,
    };
    let categories = match (categories, recorded) {
        (Some(given), Some(rec)) => {
            let given = check_categories(given)?;
            if given != rec {
                bail!(
                    "{what} records its output languages as {}; --categories says {}",
                    rec.join(","),
                    given.join(",")
                );
            }
            given
        }
        (Some(c), None) | (None, Some(c)) => c,
        (None, None) => default_categories,
    };
    let categories = check_categories(categories)?;
    if categories.len() != spec.num_classes {
        bail!(
            "{what} has {} outputs but {} categories were given",
            spec.num_classes,
            categories.len()
        );
    }
    // Output k of the file is categories[k]; store them alphabetically.
    let mut order: Vec<usize> = (0..categories.len()).collect();
    order.sort_by(|&x, &y| categories[x].cmp(&categories[y]));
    // (An ensemble has one head per network: `0.fc.weight`, ….)
    let head = |k: &str| {
        ["fc.weight", "fc.bias"]
            .iter()
            .any(|h| k == *h || k.ends_with(&format!(".{h}")))
    };
    for (key, (shape, data)) in tensors.iter_mut() {
        if head(key) && shape.first() == Some(&order.len()) {
            let row = data.len() / order.len();
            *data = order
                .iter()
                .flat_map(|&k| data[k * row..(k + 1) * row].to_vec())
                .collect();
        }
    }
    let sorted: Vec<String> = order.iter().map(|&k| categories[k].clone()).collect();
    let config = RunConfig::new(
        sorted,
        spec,
        SplitSpec::default(),
        None,
        &format!("imported from {what}"),
    );
    config.validate()?;
    let model = config.model.build()?;
    // 2020-era SpikingJelly stored surrogate α as buffers: `…surrogate_function1.alpha`.
    let params = params_from_tensors(&model, config.model.members, &tensors, &[".alpha"])
        .with_context(|| what.to_string())?;
    Ok(LoadedModel {
        config,
        model,
        params,
    })
}

/// Language names as given by a user: trimmed, non-empty, distinct.
fn check_categories(categories: Vec<String>) -> Result<Vec<String>> {
    let categories: Vec<String> = categories.iter().map(|c| c.trim().to_string()).collect();
    if categories.is_empty() {
        bail!("no languages given");
    }
    if categories.iter().any(String::is_empty) {
        bail!("a language name is empty");
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &categories {
        if !seen.insert(c) {
            bail!("language {c} is listed twice");
        }
    }
    Ok(categories)
}

/// The tutorial `Net`'s spec, read off the shapes of a state_dict saved from Python.
fn tutorial_spec_from_shapes(tensors: &Tensors, what: &str, clamp_cell: bool) -> Result<ModelSpec> {
    let shape = |k: &str| {
        tensors
            .get(k)
            .map(|(s, _)| s.clone())
            .ok_or_else(|| anyhow!("{what} has no tensor '{k}' (a state_dict of the tutorial's Net, or a file exported by this tool, is expected)"))
    };
    let w_ih = shape("lstm.cells.0.linear_ih.weight")?;
    let fc = shape("fc.weight")?;
    if w_ih.len() != 2 || fc.len() != 2 || w_ih[0] % 4 != 0 {
        bail!("{what}: lstm.cells.0.linear_ih.weight must be [4H, I] and fc.weight [C, H]");
    }
    let num_layers = (0..)
        .take_while(|l| tensors.contains_key(&format!("lstm.cells.{l}.linear_ih.weight")))
        .count();
    let mut spec = ModelSpec::tutorial(fc[0]);
    spec.input_size = w_ih[1];
    spec.hidden_size = w_ih[0] / 4;
    spec.num_layers = num_layers;
    spec.bidirectional = tensors.contains_key("lstm.cells_reverse.0.linear_ih.weight");
    spec.clamp_cell = clamp_cell;
    Ok(spec)
}
