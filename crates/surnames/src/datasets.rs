//! The names data as the tool uses it: located (local copy, cache or download), split as the
//! run's config says, and encoded as letter indices with labels.

use crate::config::SplitSpec;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use surnames_data::{Dataset, Split};

/// Finds the data (`--data`, then `SURNAMES_DATA`, then the cache, downloading on first use),
/// loads it and prints checksum warnings to stderr.
pub fn open(data: Option<&Path>, verify: bool) -> Result<(PathBuf, Dataset)> {
    let cache =
        surnames_data::default_cache_dir().unwrap_or_else(|| PathBuf::from(".surnames-cache"));
    let env = std::env::var_os(surnames_data::ENV_VAR);
    let (dir, warnings) =
        surnames_data::resolve(data, env, &cache, surnames_data::OFFICIAL_URL, verify)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let ds = surnames_data::load_dir(&dir)?;
    Ok((dir, ds))
}

/// Train / validation / test lists per category.
pub struct Lists {
    pub train: Vec<Vec<String>>,
    pub val: Vec<Vec<String>>,
    pub test: Vec<Vec<String>>,
}

pub fn split(ds: &Dataset, spec: &SplitSpec) -> Result<Lists> {
    let Split { train, test } = match spec.kind.as_str() {
        "tutorial" => surnames_data::tutorial_split(ds),
        "dedup" => surnames_data::dedup_split(ds, spec.seed),
        other => bail!("unknown split '{other}' (expected tutorial or dedup)"),
    };
    if !(0.0..1.0).contains(&spec.val_fraction) {
        bail!(
            "validation fraction must be in [0, 1), got {}",
            spec.val_fraction
        );
    }
    let (train, val) = if spec.val_fraction > 0.0 {
        surnames_data::carve_validation(&train, spec.val_fraction, spec.validation_pick()?)
    } else {
        let n = train.len();
        (train, vec![Vec::new(); n])
    };
    Ok(Lists { train, val, test })
}

/// Letter-index sequences with labels, flattened over categories (category order, list order).
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    pub seqs: Vec<Vec<u32>>,
    pub labels: Vec<usize>,
    /// Names per category.
    pub per_class: Vec<usize>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.seqs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Reads every capital as its small letter.
    pub fn ignore_case(mut self) -> Self {
        for seq in &mut self.seqs {
            for i in seq.iter_mut() {
                *i = surnames_data::lowercase_index(*i as usize) as u32;
            }
        }
        self
    }
}

pub fn encode(lists: &[Vec<String>]) -> Result<Encoded> {
    let mut e = Encoded {
        per_class: vec![0; lists.len()],
        ..Default::default()
    };
    for (c, names) in lists.iter().enumerate() {
        for n in names {
            let Some(seq) = surnames_data::encode(n) else {
                bail!("name {n:?} has letters outside the alphabet")
            };
            if seq.is_empty() {
                bail!("empty name in category {c}");
            }
            e.seqs.push(seq);
            e.labels.push(c);
            e.per_class[c] += 1;
        }
    }
    Ok(e)
}

/// Checks that the data's languages are the ones the model was trained on, and warns when the
/// names differ from the training data (the split's test names may then include names the
/// model was trained on).
pub fn check_data(ds: &Dataset, cfg: &crate::config::RunConfig, dir: &Path) -> Result<()> {
    check_categories(ds, &cfg.categories, dir)?;
    if !same_data(ds, cfg) {
        eprintln!(
            "warning: the names in {} are not the ones the model was trained on; its test split may hold training names",
            dir.display()
        );
    }
    Ok(())
}

/// False when `cfg` records a fingerprint of its training data and `ds` has another one (runs of
/// earlier versions and imported models record none).
pub fn same_data(ds: &Dataset, cfg: &crate::config::RunConfig) -> bool {
    cfg.data_fingerprint
        .as_ref()
        .is_none_or(|f| *f == ds.fingerprint())
}

/// Checks that the data's languages are the ones the model was trained on.
pub fn check_categories(ds: &Dataset, expected: &[String], dir: &Path) -> Result<()> {
    if ds.categories != expected {
        let mut sorted = expected.to_vec();
        sorted.sort();
        if sorted == ds.categories {
            bail!(
                "the model's outputs are the languages of {} in another order ([{}]); data languages are matched in alphabetical order",
                dir.display(),
                expected.join(", ")
            );
        }
        let missing: Vec<&str> = expected
            .iter()
            .filter(|c| !ds.categories.contains(c))
            .map(String::as_str)
            .collect();
        let extra: Vec<&str> = ds
            .categories
            .iter()
            .filter(|c| !expected.contains(c))
            .map(String::as_str)
            .collect();
        let mut diff = Vec::new();
        if !missing.is_empty() {
            diff.push(format!("it lacks {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            diff.push(format!("it has {} in addition", extra.join(", ")));
        }
        if diff.is_empty() {
            // The same set with a repetition (a hand-edited config.json).
            bail!(
                "the data in {} has languages [{}] but the model was trained on [{}]",
                dir.display(),
                ds.categories.join(", "),
                expected.join(", ")
            );
        }
        bail!(
            "the data in {} does not have the {} languages the model was trained on: {}",
            dir.display(),
            expected.len(),
            diff.join(", and ")
        );
    }
    Ok(())
}

/// `{"Arabic": [...], ...}` for the split lists of a run directory.
pub fn lists_json(categories: &[String], lists: &[Vec<String>]) -> Result<String> {
    let map: serde_json::Map<String, serde_json::Value> = categories
        .iter()
        .zip(lists)
        .map(|(c, l)| (c.clone(), serde_json::json!(l)))
        .collect();
    serde_json::to_string_pretty(&map).context("serialising split lists")
}
