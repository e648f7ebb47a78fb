//! `surnames eval`, `confusion` and `data`: JSON reports, the confusion matrix files and the
//! tutorial split's numbers.
mod cli_common;
use cli_common::*;
use std::ffi::OsStr;
use std::path::Path;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Names in the tutorial split's test set, and of its largest language (Russian).
const N_TEST: u64 = 4021;
const N_MAJORITY: f64 = 1882.0;

/// eval --json: keys, baselines, per-language entries and spike rates.
#[test]
fn eval_json_report() {
    let m = shared_run();
    let data = data_dir();
    let v = json(&ok(&run(&[
        os("eval"),
        os("--model"),
        m.as_os_str(),
        os("--data"),
        data.as_os_str(),
        os("--json"),
    ])));
    for k in [
        "accuracy",
        "macro_f1",
        "random_guess",
        "majority_baseline",
        "n_test",
        "per_category",
        "firing_rates",
    ] {
        assert!(v.get(k).is_some(), "no {k:?} in {v}");
    }
    let acc = v["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{v}");
    assert!(
        (0.0..=1.0).contains(&v["macro_f1"].as_f64().unwrap()),
        "{v}"
    );
    assert!((v["random_guess"].as_f64().unwrap() - 1.0 / 18.0).abs() < 1e-9);
    let maj = v["majority_baseline"].as_f64().unwrap();
    assert!(
        (maj - N_MAJORITY / N_TEST as f64).abs() < 1e-9,
        "majority {maj}"
    );
    assert!((maj - 0.468).abs() < 5e-4);
    assert_eq!(v["n_test"], N_TEST);

    // 18 languages with accuracy, f1 and n; the n add up and the accuracies to the total.
    let per = v["per_category"].as_object().unwrap();
    assert_eq!(per.len(), 18, "{v}");
    let mut n_sum = 0u64;
    let mut correct = 0.0;
    for (name, p) in per {
        for k in ["accuracy", "f1", "n"] {
            assert!(p.get(k).is_some(), "{name} has no {k:?}: {p}");
        }
        let a = p["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{name}: {p}");
        assert!(
            (0.0..=1.0).contains(&p["f1"].as_f64().unwrap()),
            "{name}: {p}"
        );
        let n = p["n"].as_u64().unwrap();
        n_sum += n;
        correct += a * n as f64;
    }
    assert_eq!(n_sum, N_TEST);
    assert!((correct / N_TEST as f64 - acc).abs() < 1e-9);
    assert_eq!(per["Russian"]["n"], 1882);

    // Spike rates of the spiking LSTM: present and in [0, 1].
    let fr = v["firing_rates"].as_object().unwrap();
    assert!(!fr.is_empty(), "no firing rates: {v}");
    for (k, r) in fr {
        let r = r.as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r), "firing rate {k} = {r}");
    }
}

/// Reads a confusion run's outputs: (normalised 18×18 f32, counts 18×18 from the i64 .npy).
fn read_confusion(dir: &Path) -> (Vec<f32>, Vec<f64>) {
    let (shape, norm) =
        surnames::npy::read_npy_f32(&std::fs::read(dir.join("confusion.npy")).unwrap()).unwrap();
    assert_eq!(shape, [18, 18], "confusion.npy shape");
    let (shape, counts) =
        surnames::npy::read_npy_i64(&std::fs::read(dir.join("confusion_counts.npy")).unwrap())
            .unwrap();
    assert_eq!(shape, [18, 18], "confusion_counts.npy shape");
    assert!(counts.iter().all(|&c| c >= 0));
    (norm, counts.iter().map(|&c| c as f64).collect())
}

/// `confusion --model RUN --out DIR EXTRA...`.
fn confusion(out: &Path, extra: &[&str]) -> String {
    let data = data_dir();
    let mut args = vec![
        os("confusion"),
        os("--model"),
        shared_run().as_os_str(),
        os("--data"),
        data.as_os_str(),
        os("--out"),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(|s| os(s)));
    ok(&run(&args))
}

/// Sum of row `i` of an 18×18 matrix.
fn row_sum(m: &[f64], i: usize) -> f64 {
    m[i * 18..(i + 1) * 18].iter().sum()
}

/// Default confusion (10,000 random draws): CSV, .npy (rows sum to 1) and SVG, consistent.
#[test]
fn confusion_files() {
    let tmp = tempfile::tempdir().unwrap();
    confusion(tmp.path(), &[]);
    let (norm, counts) = read_confusion(tmp.path());
    assert_eq!(counts.iter().sum::<f64>(), 10_000.0);
    let norm64: Vec<f64> = norm.iter().map(|&x| x as f64).collect();
    for i in 0..18 {
        let s = row_sum(&norm64, i);
        if row_sum(&counts, i) > 0.0 {
            assert!((s - 1.0).abs() <= 1e-4, "row {i} sums to {s}");
        } else {
            assert_eq!(s, 0.0);
        }
    }
    assert!(norm
        .iter()
        .all(|x| x.is_finite() && (0.0..=1.0).contains(x)));

    // confusion.csv: header of 18 languages, 18 rows equal to the .npy.
    let csv = std::fs::read_to_string(tmp.path().join("confusion.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 19, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(header.len(), 19);
    assert_eq!(header[1], "Arabic");
    assert_eq!(header[18], "Vietnamese");
    for (i, l) in lines[1..].iter().enumerate() {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(
            f[0],
            header[i + 1],
            "row {i} is not the language of column {i}"
        );
        for j in 0..18 {
            let x: f32 = f[j + 1].parse().unwrap();
            assert!((x - norm[i * 18 + j]).abs() <= 1e-6, "csv ({i},{j})");
        }
    }

    // ConfusionMatrix.svg: valid XML naming the languages.
    let svg = std::fs::read_to_string(tmp.path().join("ConfusionMatrix.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("ConfusionMatrix.svg is not valid XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let text: String = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    assert!(
        text.contains("Vietnamese") && text.contains("Arabic"),
        "{text}"
    );
}

/// --split test uses each of the 4021 test names exactly once, per language as the split says.
#[test]
fn confusion_test_split_counts() {
    let tmp = tempfile::tempdir().unwrap();
    confusion(tmp.path(), &["--split", "test"]);
    let (_, counts) = read_confusion(tmp.path());
    assert_eq!(counts.iter().sum::<f64>(), N_TEST as f64);
    let d = json(&ok(&run(&[
        os("data"),
        os("--data"),
        data_dir().as_os_str(),
        os("--json"),
    ])));
    for (i, c) in d["categories"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            row_sum(&counts, i),
            c["test"].as_f64().unwrap(),
            "row {i} ({})",
            c["name"]
        );
    }
}

/// --python-normalisation divides entry (i, j) by the sum of row j (the tutorial's bug).
#[test]
fn confusion_python_normalisation_quirk() {
    let tmp = tempfile::tempdir().unwrap();
    confusion(tmp.path(), &["--split", "test", "--python-normalisation"]);
    let (norm, counts) = read_confusion(tmp.path());
    // An off-diagonal entry where row i and row j have different totals, so the quirk shows.
    let (i, j) = (0..18)
        .flat_map(|i| (0..18).map(move |j| (i, j)))
        .filter(|&(i, j)| i != j && counts[i * 18 + j] > 0.0)
        .find(|&(i, j)| row_sum(&counts, i) != row_sum(&counts, j) && row_sum(&counts, j) > 0.0)
        .expect("no off-diagonal entry to check");
    let want = (counts[i * 18 + j] / row_sum(&counts, j)) as f32;
    let correct = (counts[i * 18 + j] / row_sum(&counts, i)) as f32;
    assert!(
        (norm[i * 18 + j] - want).abs() <= 1e-6,
        "({i},{j}) = {}, quirk says {want}, correct normalisation {correct}",
        norm[i * 18 + j]
    );
    // and all other entries follow the same rule
    for i in 0..18 {
        for j in 0..18 {
            let s = row_sum(&counts, j);
            let want = if s > 0.0 { counts[i * 18 + j] / s } else { 0.0 };
            assert!((norm[i * 18 + j] as f64 - want).abs() <= 1e-6, "({i},{j})");
        }
    }
}

/// data --json: the tutorial split's sizes.
#[test]
fn data_json_counts() {
    let v = json(&ok(&run(&[
        os("data"),
        os("--data"),
        data_dir().as_os_str(),
        os("--json"),
    ])));
    assert_eq!(v["n_names"], 20074);
    assert_eq!(v["n_train"], 16053);
    assert_eq!(v["n_test"], N_TEST);
    let cats = v["categories"].as_array().unwrap();
    assert_eq!(cats.len(), 18);
    let n: u64 = cats.iter().map(|c| c["n"].as_u64().unwrap()).sum();
    assert_eq!(n, 20074);
}

/// bench --json: every key, each with a positive median of its rounds (a smoke test of the
/// benchmark code paths with tiny rounds; it asserts no speed).
#[test]
fn bench_json_reports_every_key() {
    let data = data_dir();
    let v = json(&ok(&run(&[
        os("bench"),
        os("--json"),
        os("--rounds"),
        os("1"),
        os("--seconds"),
        os("0.02"),
        os("--data"),
        data.as_os_str(),
    ])));
    for k in [
        "train_b1_steps_per_s",
        "adam_steps_per_s",
        "adam_in_cache_steps_per_s",
        "infer_b1_seqs_per_s",
        "train_b64_seqs_per_s",
        "train_batched_names_per_s",
        "eval_test_names_per_s",
        "eval_test_names_per_s_no_prefix_sharing",
    ] {
        let x = v[k].as_f64().unwrap_or(0.0);
        assert!(x > 0.0 && x.is_finite(), "{k}: {x} in {v}");
    }
    assert!(v["machine"].is_string(), "{v}");
}
