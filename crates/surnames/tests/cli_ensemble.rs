//! `--members N`: an ensemble's first network is the one-network run with the same seed, its
//! output is the mean of its networks' outputs (checked against each network imported alone),
//! and its weights survive export / import and are checked network by network on loading.
mod cli_common;
use cli_common::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

const NAMES: [&str; 4] = ["Nguyen", "Smith", "Dvorak", "Rossi"];

/// Probability of every language for each of [`NAMES`], by `predict --json --top 18`.
fn probabilities(model: &Path) -> Vec<BTreeMap<String, f64>> {
    let mut args = vec![
        os("predict"),
        os("--model"),
        model.as_os_str(),
        os("--json"),
        os("--top"),
        os("18"),
    ];
    args.extend(NAMES.iter().map(|n| os(n)));
    ok(&run(&args))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| predicted_probabilities(&json(l)))
        .collect()
}

/// Network `k`'s tensors of an ensemble's model file, under their one-network names.
fn network(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    k: usize,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let prefix = format!("{k}.");
    tensors
        .iter()
        .filter_map(|(n, s, d)| Some((n.strip_prefix(&prefix)?.to_string(), s.clone(), d.clone())))
        .collect()
}

#[test]
fn an_ensemble_is_the_mean_of_its_networks() {
    let tmp = tempfile::tempdir().unwrap();
    let single = tmp.path().join("single");
    let ensemble = tmp.path().join("ensemble");
    train_tiny(&single, &[]);
    let printed = train_tiny(&ensemble, &["--members", "2"]);
    assert!(printed.contains("Epoch 200"), "{printed}");
    let config = json(&std::fs::read_to_string(ensemble.join("config.json")).unwrap());
    assert_eq!(config["model"]["members"], 2);

    // Network 0 is the one-network run with the same seed, bit for bit; network 1 differs.
    let one = read_tensors(&single.join("model.safetensors"));
    let both = read_tensors(&ensemble.join("model.safetensors"));
    assert_eq!(both.len(), 2 * one.len());
    assert_eq!(network(&both, 0), one);
    let second = network(&both, 1);
    assert_eq!(second.len(), one.len());
    assert_ne!(second, one, "the networks start from the same weights");

    // Network 1 alone, imported as a state_dict of the tutorial's Net.
    let sd = tmp.path().join("network1.safetensors");
    write_tensors(&sd, &second);
    let alone = tmp.path().join("network1");
    ok(&run(&[
        os("import"),
        os("--state-dict"),
        sd.as_os_str(),
        os("--out"),
        alone.as_os_str(),
    ]));
    let (p0, p1, mean) = (
        probabilities(&single),
        probabilities(&alone),
        probabilities(&ensemble),
    );
    for k in 0..NAMES.len() {
        assert_eq!(mean[k].len(), 18);
        for (lang, &p) in &mean[k] {
            let want = (p0[k][lang] + p1[k][lang]) / 2.0;
            assert!(
                (p - want).abs() < 1e-6,
                "{}: {lang} {p} vs mean {want}",
                NAMES[k]
            );
        }
    }

    // Export then import keeps both networks and the output.
    let exported = tmp.path().join("ensemble.safetensors");
    let said = export_state_dict(&ensemble, &exported);
    assert!(said.contains("ModuleList"), "{said}");
    let back = tmp.path().join("back");
    let said = ok(&run(&[
        os("import"),
        os("--state-dict"),
        exported.as_os_str(),
        os("--out"),
        back.as_os_str(),
    ]));
    assert!(said.contains("2 networks"), "{said}");
    assert_eq!(read_tensors(&back.join("model.safetensors")), both);
    assert_eq!(probabilities(&back), mean);
}

/// A network's tensor missing, or one numbered beyond the ensemble, is a one-line error that
/// names it.
#[test]
fn damaged_ensemble_weights_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ensemble = tmp.path().join("ensemble");
    train_tiny(&ensemble, &["--members", "2"]);
    let file = ensemble.join("model.safetensors");
    let good = read_tensors(&file);
    let cases: [(&str, Tensors, &str); 3] = [
        (
            "missing",
            good.iter()
                .filter(|t| t.0 != "1.fc.bias")
                .cloned()
                .collect(),
            "network 1",
        ),
        (
            "beyond",
            good.iter()
                .cloned()
                .chain([("2.fc.bias".to_string(), vec![18], vec![0.0; 18])])
                .collect(),
            "2.fc.bias",
        ),
        (
            "aliased",
            good.iter()
                .map(|t| match t.0.as_str() {
                    "1.fc.bias" => ("01.fc.bias".to_string(), t.1.clone(), t.2.clone()),
                    _ => t.clone(),
                })
                .collect(),
            "01.fc.bias",
        ),
    ];
    for (what, tensors, named) in cases {
        write_tensors(&file, &tensors);
        let err = one_line_error(&run(&[
            os("predict"),
            os("--model"),
            ensemble.as_os_str(),
            os("Smith"),
        ]));
        assert!(err.contains(named), "{what}: {err}");
    }
}
