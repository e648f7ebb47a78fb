//! `--ignore-case` trains on names with capitals read as small letters, and the saved model
//! gives every capital its small letter's input weights: it then reads both cases alike with no
//! setting to carry along (`predict`, `eval`, `export`).
mod cli_common;
use cli_common::*;
use std::collections::BTreeMap;
use std::path::Path;

const SPELLINGS: [&str; 3] = ["Nguyen", "NGUYEN", "nguyen"];

/// Probability of every language for each of [`SPELLINGS`].
fn probabilities(model: &Path) -> Vec<BTreeMap<String, f64>> {
    let mut args = vec!["predict", "--json", "--top", "18", "--model"];
    args.push(model.to_str().unwrap());
    args.extend(SPELLINGS);
    ok(&run(&args))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| predicted_probabilities(&json(l)))
        .collect()
}

/// The last row's test accuracy and macro-F1 in `metrics.csv`.
fn last_evaluation(run: &Path) -> (f64, f64) {
    let (header, rows) = read_csv(&run.join("metrics.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let last = rows.last().unwrap();
    let value = |name: &str| last[col(name)].parse::<f64>().unwrap();
    (value("test_accuracy"), value("test_macro_f1"))
}

#[test]
fn a_model_trained_ignoring_case_reads_both_cases_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("run");
    // Two bidirectional networks: the capitals are tied in each network and direction.
    train_tiny(
        &runp,
        &[
            "--ignore-case",
            "--members",
            "2",
            "--bidirectional",
            "--seed",
            "4",
        ],
    );
    let cfg = json(&std::fs::read_to_string(runp.join("config.json")).unwrap());
    assert_eq!(cfg["training"]["ignore_case"], true);

    let p = probabilities(&runp);
    assert_eq!(p[0], p[1]);
    assert_eq!(p[0], p[2]);

    // The run evaluated lower-cased test names; `eval` reads them as written, with the same
    // result.
    let ev = json(&ok(&run(&[
        "eval",
        "--json",
        "--model",
        runp.to_str().unwrap(),
        "--data",
        data_dir().to_str().unwrap(),
    ])));
    let (accuracy, macro_f1) = last_evaluation(&runp);
    assert!(
        (ev["accuracy"].as_f64().unwrap() - accuracy).abs() < 1e-6,
        "{ev}"
    );
    assert!(
        (ev["macro_f1"].as_f64().unwrap() - macro_f1).abs() < 1e-6,
        "{ev}"
    );

    // The exported state_dict holds the tied weights: capital columns equal small ones.
    let exported = tmp.path().join("net.safetensors");
    export_state_dict(&runp, &exported);
    let tensors = read_tensors(&exported);
    let inputs: Vec<_> = tensors
        .iter()
        .filter(|(name, _, _)| name.ends_with(".0.linear_ih.weight"))
        .collect();
    assert_eq!(inputs.len(), 4, "2 networks × 2 directions");
    for (name, shape, w) in inputs {
        assert_eq!(shape[1], 58, "{name}");
        for row in w.chunks(58) {
            assert_eq!(row[..26], row[26..52], "{name}");
        }
    }
}

/// Without `--ignore-case` capitals are letters of their own (so the test above can fail).
#[test]
fn a_model_trained_on_names_as_written_tells_the_cases_apart() {
    let p = probabilities(shared_run());
    assert_ne!(p[0], p[2]);
    assert_ne!(p[1], p[2]);
}
