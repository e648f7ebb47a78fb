//! `surnames predict` (arguments, stdin, JSON and text output, normalisation, unreadable names)
//! and `import` / `export` (the real SpikingJelly tutorial net on 'Zou', round trip).
mod cli_common;
use cli_common::*;
use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `surnames predict --model RUN EXTRA...`.
fn predict(model: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![os("predict"), os("--model"), model.as_os_str()];
    args.extend(extra.iter().map(|s| os(s)));
    run(&args)
}

/// JSON lines of a predict --json output.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .collect()
}

/// Sorted key names of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// Checks one predict --json object: exact schema, `top` entries, best first, valid languages.
fn check_prediction(v: &Value, name: &str, normalised: &str, top: usize) {
    assert_eq!(keys(v), ["name", "normalised", "predictions"], "{v}");
    assert_eq!(v["name"], name, "{v}");
    assert_eq!(v["normalised"], normalised, "{v}");
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), top, "{v}");
    let cats = json(&std::fs::read_to_string(shared_run().join("config.json")).unwrap())
        ["categories"]
        .clone();
    let mut seen = std::collections::HashSet::new();
    let mut prev = f64::INFINITY;
    for p in preds {
        assert_eq!(keys(p), ["category", "probability"], "{v}");
        let c = p["category"].as_str().unwrap();
        assert!(cats.as_array().unwrap().iter().any(|x| x == c), "{c}");
        assert!(seen.insert(c.to_string()), "{c} listed twice: {v}");
        let prob = p["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&prob), "{v}");
        assert!(prob <= prev, "not sorted best first: {v}");
        prev = prob;
    }
}

// ---------------------------------------------------------------------------------------------
// predict
// ---------------------------------------------------------------------------------------------

/// Names as arguments with --json: schema, --top K, sorted, one object per name in order.
#[test]
fn json_schema_and_top_k() {
    let m = shared_run();
    for top in [1usize, 3, 5] {
        let out = ok(&predict(
            m,
            &["--json", "--top", &top.to_string(), "Zou", "Smith"],
        ));
        let v = json_lines(&out);
        assert_eq!(v.len(), 2, "{out}");
        check_prediction(&v[0], "Zou", "Zou", top);
        check_prediction(&v[1], "Smith", "Smith", top);
    }
}

/// --top 18: all languages, probabilities sum to 1.
#[test]
fn top_18_sums_to_one() {
    let out = ok(&predict(
        shared_run(),
        &["--json", "--top", "18", "Nakamura"],
    ));
    let v = json_lines(&out);
    assert_eq!(v.len(), 1);
    check_prediction(&v[0], "Nakamura", "Nakamura", 18);
    let sum: f64 = v[0]["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["probability"].as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() <= 1e-4, "sum = {sum}");
}

/// Names on stdin, one per line (blank lines skipped, CRLF accepted), same answers as arguments.
#[test]
fn names_on_stdin() {
    let m = shared_run();
    let o = run_stdin(
        &[os("predict"), os("--model"), m.as_os_str(), os("--json")],
        "Zou\n\nSmith\r\nDvořák\n",
    );
    let out = ok(&o);
    assert!(
        !stderr(&o).contains("warning"),
        "CRLF or blank lines produced a warning:\n{}",
        describe(&o)
    );
    let v = json_lines(&out);
    assert_eq!(v.len(), 3, "{out}");
    check_prediction(&v[0], "Zou", "Zou", 3);
    check_prediction(&v[1], "Smith", "Smith", 3);
    check_prediction(&v[2], "Dvořák", "Dvorak", 3);
    let args_out = ok(&predict(m, &["--json", "Zou", "Smith", "Dvořák"]));
    assert_eq!(out, args_out, "stdin and arguments disagree");
}

/// Accents are stripped without a warning: Dvořák → Dvorak, and predicts like "Dvorak".
#[test]
fn accents_are_normalised() {
    let m = shared_run();
    let o = predict(m, &["--json", "--top", "18", "Dvořák"]);
    let out = ok(&o);
    assert!(!stderr(&o).contains("warning"), "{}", describe(&o));
    let v = json_lines(&out);
    check_prediction(&v[0], "Dvořák", "Dvorak", 18);
    let plain = json_lines(&ok(&predict(m, &["--json", "--top", "18", "Dvorak"])));
    assert_eq!(v[0]["predictions"], plain[0]["predictions"]);
}

/// Characters outside the alphabet are dropped with a warning on stderr; the name is answered.
#[test]
fn dropped_characters_warn() {
    let o = predict(shared_run(), &["--json", "Smith2", "Zou"]);
    let out = ok(&o);
    let err = stderr(&o);
    let warn: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warn.len(), 1, "{}", describe(&o));
    assert!(
        warn[0].contains("Smith2") && warn[0].contains('2'),
        "{}",
        warn[0]
    );
    let v = json_lines(&out);
    assert_eq!(v.len(), 2);
    check_prediction(&v[0], "Smith2", "Smith", 3);
    check_prediction(&v[1], "Zou", "Zou", 3);
}

/// A name with nothing left ("ßł") is an error for that name only: the others are answered,
/// and the exit code is non-zero.
#[test]
fn unreadable_name_fails_alone() {
    for json_flag in [true, false] {
        let mut args = vec!["Zou", "ßł", "Smith"];
        if json_flag {
            args.insert(0, "--json");
        }
        let o = predict(shared_run(), &args);
        assert!(o.status.code().is_some_and(|c| c != 0), "{}", describe(&o));
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{}", describe(&o));
        assert!(
            err.lines()
                .any(|l| l.starts_with("error: ") && l.contains("ßł")),
            "no error naming ßł:\n{}",
            describe(&o)
        );
        let out = stdout(&o);
        if json_flag {
            let v = json_lines(&out);
            assert_eq!(v.len(), 2, "{out}");
            check_prediction(&v[0], "Zou", "Zou", 3);
            check_prediction(&v[1], "Smith", "Smith", 3);
        } else {
            assert!(out.contains("> Zou") && out.contains("> Smith"), "{out}");
            assert!(!out.contains("ßł"), "{out}");
        }
    }
}

/// Spaces around a name are not part of it; a name of spaces is unreadable; a name longer than
/// 1,000 letters is refused alone (memory grows with the length).
#[test]
fn spaces_and_overlong_names() {
    let plain = ok(&predict(
        shared_run(),
        &["--json", "--top", "18", "Nakamura"],
    ));
    let padded = ok(&predict(
        shared_run(),
        &["--json", "--top", "18", "  Nakamura "],
    ));
    let (p, q) = (&json_lines(&plain)[0], &json_lines(&padded)[0]);
    assert_eq!(p["predictions"], q["predictions"]);
    assert_eq!(q["normalised"], "Nakamura");

    let long = "a".repeat(2000);
    let o = predict(shared_run(), &["--json", " ", &long, "Zou"]);
    assert!(o.status.code().is_some_and(|c| c != 0), "{}", describe(&o));
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("2000 letters"), "{err}");
    let v = json_lines(&stdout(&o));
    assert_eq!(v.len(), 1, "{}", describe(&o));
    check_prediction(&v[0], "Zou", "Zou", 3);
}

/// `predict --json` on the shared run with stdin and stdout piped.
fn spawn_predict_json(stderr: std::process::Stdio) -> std::process::Child {
    surnames()
        .args(["predict", "--json", "--model"])
        .arg(shared_run())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// A stdin line that is not UTF-8 fails alone; the other names are answered.
#[test]
fn non_utf8_stdin_line_fails_alone() {
    use std::io::Write;
    let mut child = spawn_predict_json(std::process::Stdio::piped());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Zou\nNov\xe1k\nSmith\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.code().is_some_and(|c| c != 0), "{}", describe(&o));
    assert!(stderr(&o).contains("line 2"), "{}", describe(&o));
    let v = json_lines(&stdout(&o));
    assert_eq!(v.len(), 2, "{}", describe(&o));
    check_prediction(&v[0], "Zou", "Zou", 3);
    check_prediction(&v[1], "Smith", "Smith", 3);
}

/// From a pipe, each name is answered as it arrives, before stdin ends (`tail -f … | predict`).
#[test]
fn names_from_a_pipe_are_answered_as_they_arrive() {
    use std::io::{BufRead, Write};
    let mut child = spawn_predict_json(std::process::Stdio::null());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Zou\n").unwrap();
    stdin.flush().unwrap();
    // Read the answer while stdin is still open (a reader thread, so a hang fails the test).
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        tx.send(line).unwrap();
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(30));
    drop(stdin);
    child.wait().unwrap();
    let line = line.expect("no answer before the end of stdin");
    check_prediction(&json(&line), "Zou", "Zou", 3);
}

/// Weights so large that the outputs overflow: an error, not `null` probabilities.
#[test]
fn overflowing_weights_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = tmp.path().join("sd.safetensors");
    export_shared_state_dict(&sd);
    let mut tensors = read_tensors(&sd);
    for (name, _, data) in tensors.iter_mut() {
        if name == "fc.weight" {
            data.iter_mut().for_each(|w| *w = 3e38);
        }
    }
    let huge = tmp.path().join("huge.safetensors");
    write_tensors(&huge, &tensors);
    let back = tmp.path().join("back");
    ok(&import(&huge, &back, &[]));
    let line = one_line_error(&predict(&back, &["--json", "Nakamura"]));
    assert!(line.contains("not finite"), "{line}");
}

/// Only unreadable names: non-zero exit, nothing on stdout, no panic.
#[test]
fn only_unreadable_names() {
    let o = predict(shared_run(), &["--json", "ßł", "123"]);
    assert!(o.status.code().is_some_and(|c| c != 0), "{}", describe(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", describe(&o));
    assert!(stdout(&o).trim().is_empty(), "{}", describe(&o));
}

/// Text format: a blank line, `> NAME`, then K lines `(0.63) Chinese`.
#[test]
fn text_format() {
    let out = ok(&predict(shared_run(), &["--top", "3", "Zou", "Dvořák"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2 * 5, "{out}");
    for (k, name) in ["Zou", "Dvořák"].iter().enumerate() {
        let block = &lines[k * 5..(k + 1) * 5];
        assert_eq!(block[0], "", "{out}");
        assert_eq!(block[1], format!("> {name}"), "{out}");
        for l in &block[2..] {
            let (p, cat) = l
                .strip_prefix('(')
                .and_then(|r| r.split_once(") "))
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            assert!(
                p.len() == 4 && p.as_bytes()[1] == b'.' && p.parse::<f64>().is_ok(),
                "bad probability in {l:?}"
            );
            assert!(
                !cat.is_empty() && cat.chars().all(|c| c.is_ascii_alphabetic()),
                "bad category in {l:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// import / export
// ---------------------------------------------------------------------------------------------

/// The golden tutorial case (the real SpikingJelly `Net` and its output on 'Zou').
fn golden_case() -> Value {
    let path = golden_dir().join("tutorial_net_zou.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["case"].take()
}

/// A golden tensor's (shape, f32 data); numbers are parsed as f64 then cast to f32.
fn golden_tensor(t: &Value) -> (Vec<usize>, Vec<f32>) {
    let shape: Vec<usize> = t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = t["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(shape.iter().product::<usize>(), data.len());
    (shape, data)
}

/// The golden `case.params` as a state_dict (safetensors) in `dir`, minus `skip` keys.
fn golden_state_dict(case: &Value, dir: &Path, skip: &[&str]) -> std::path::PathBuf {
    let mut tensors = Vec::new();
    for (k, t) in case["params"].as_object().unwrap() {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let (shape, data) = golden_tensor(t);
        tensors.push((k.clone(), shape, data));
    }
    let path = dir.join("net.safetensors");
    write_tensors(&path, &tensors);
    path
}

/// The shared run's languages, in output order.
fn shared_categories() -> Vec<String> {
    json(&std::fs::read_to_string(shared_run().join("config.json")).unwrap())["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// `surnames import --state-dict SD --out OUT EXTRA...`.
fn import(sd: &Path, out: &Path, extra: &[&OsStr]) -> std::process::Output {
    let mut args = vec![
        os("import"),
        os("--state-dict"),
        sd.as_os_str(),
        os("--out"),
        out.as_os_str(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// predict --json --top 18 → probability per category.
fn probabilities(model: &Path, name: &str) -> std::collections::HashMap<String, f64> {
    let out = ok(&predict(model, &["--json", "--top", "18", name]));
    let v = json_lines(&out);
    assert_eq!(v.len(), 1, "{out}");
    predicted_probabilities(&v[0])
}

/// Importing the real SpikingJelly tutorial net reproduces its softmax on 'Zou' (1e-5).
#[test]
fn import_golden_tutorial_net() {
    let case = golden_case();
    let tmp = tempfile::tempdir().unwrap();
    let sd = golden_state_dict(&case, tmp.path(), &[]);
    let runp = tmp.path().join("imported");
    ok(&import(&sd, &runp, &[]));
    let name = case["name"].as_str().unwrap();
    assert_eq!(name, "Zou");
    let probs = probabilities(&runp, name);
    let (_, softmax) = golden_tensor(&case["softmax"]);
    let cats = case["categories"].as_array().unwrap();
    assert_eq!(cats.len(), 18);
    assert_eq!(probs.len(), 18);
    for (c, want) in cats.iter().zip(&softmax) {
        let c = c.as_str().unwrap();
        let got = probs[c];
        assert!(
            (got - *want as f64).abs() <= 1e-5,
            "{c}: predict says {got}, SpikingJelly {want}"
        );
    }
}

/// A state_dict without fc.bias is refused with a one-line error naming it; no run is written.
#[test]
fn import_missing_fc_bias() {
    let case = golden_case();
    let tmp = tempfile::tempdir().unwrap();
    let sd = golden_state_dict(&case, tmp.path(), &["fc.bias"]);
    let runp = tmp.path().join("imported");
    let line = one_line_error(&import(&sd, &runp, &[]));
    assert!(line.contains("fc.bias"), "{line}");
    assert!(!runp.join("model.safetensors").exists());
}

/// A file that is not a safetensors file: one-line error.
#[test]
fn import_garbage_file() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = tmp.path().join("x.safetensors");
    std::fs::write(&sd, "not a safetensors file").unwrap();
    let line = one_line_error(&import(&sd, &tmp.path().join("r"), &[]));
    assert!(line.contains("x.safetensors"), "{line}");
}

/// export → import gives a run with identical predictions (and identical tensors).
#[test]
fn export_import_round_trip() {
    let m = shared_run();
    let tmp = tempfile::tempdir().unwrap();
    let sd = tmp.path().join("exported.safetensors");
    export_shared_state_dict(&sd);
    let back = tmp.path().join("back");
    ok(&import(&sd, &back, &[]));
    assert_eq!(
        read_tensors(&m.join("model.safetensors")),
        read_tensors(&back.join("model.safetensors"))
    );
    let names = [
        "--json", "--top", "18", "Zou", "Smith", "Dvořák", "Nakamura", "O'Neil",
    ];
    let a = ok(&predict(m, &names));
    let b = ok(&predict(&back, &names));
    assert_eq!(a, b);
}

/// Trains a tiny run with `extra` flags into `dir`.
fn tiny_run(dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    train_tiny(dir, extra);
    dir.to_path_buf()
}

/// export → import keeps what the tensors do not say (the 2020 cell, the readout, another cell
/// type): the file's metadata carries the model; `--no-clamp` against it is refused.
#[test]
fn export_import_round_trip_keeps_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, flags) in [
        ("noclamp-mean", &["--no-clamp", "--readout", "mean"][..]),
        ("gru", &["--cell", "gru"]),
        ("ann", &["--cell", "ann-lstm"]),
    ] {
        let m = tiny_run(&tmp.path().join(name), flags);
        let sd = tmp.path().join(format!("{name}.safetensors"));
        export_state_dict(&m, &sd);
        let back = tmp.path().join(format!("{name}-back"));
        ok(&import(&sd, &back, &[]));
        let cfg = |d: &Path| {
            json(&std::fs::read_to_string(d.join("config.json")).unwrap())["model"].clone()
        };
        assert_eq!(cfg(&m), cfg(&back), "{name}");
        let names = ["--json", "--top", "18", "Zou", "Nakamura", "O'Neil"];
        assert_eq!(
            ok(&predict(&m, &names)),
            ok(&predict(&back, &names)),
            "{name}"
        );
        // A run's own model.safetensors carries the same description.
        let again = tmp.path().join(format!("{name}-again"));
        ok(&import(&m.join("model.safetensors"), &again, &[]));
        assert_eq!(cfg(&m), cfg(&again), "{name}");
    }
    // The shared run has the cap on: its export contradicts --no-clamp.
    let sd = tmp.path().join("capped.safetensors");
    export_shared_state_dict(&sd);
    let line = one_line_error(&import(&sd, &tmp.path().join("x"), &[os("--no-clamp")]));
    assert!(line.contains("contradicts"), "{line}");
    // ... and so does another output order than the one recorded.
    let mut cats: Vec<String> = shared_categories();
    cats.swap(0, 1);
    let line = one_line_error(&import(
        &sd,
        &tmp.path().join("y"),
        &[os("--categories"), os(&cats.join(","))],
    ));
    assert!(line.contains("records its output languages"), "{line}");
}

/// A file with the metadata keys of a short-lived development build is refused, not read as a
/// Python state_dict with default settings.
#[test]
fn import_of_a_development_build_export_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = tmp.path().join("sd.safetensors");
    export_shared_state_dict(&sd);
    let old = tmp.path().join("old.safetensors");
    let meta = [("surnames.model".to_string(), "{}".to_string())].into();
    write_tensors_with_metadata(&old, &read_tensors(&sd), Some(meta));
    let line = one_line_error(&import(&old, &tmp.path().join("x"), &[]));
    assert!(line.contains("export it again"), "{line}");
}

/// A state_dict whose outputs follow another language order (the Python script's directory
/// listing) is stored in alphabetical order: predictions per language are unchanged and `eval`
/// works. Duplicate or empty language names are refused, and so is an `--out` holding a run.
#[test]
fn import_with_another_category_order() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = tmp.path().join("sd.safetensors");
    export_shared_state_dict(&sd);
    // Rotate the outputs in the file (output k is language k + 5), and say so with
    // --categories. (A rotation, unlike a reversal, is not its own inverse.)
    let mut tensors = read_tensors(&sd);
    for (name, shape, data) in tensors.iter_mut() {
        if name.starts_with("fc.") {
            let row = data.len() / shape[0];
            data.rotate_left(5 * row);
        }
    }
    let reversed = tmp.path().join("rotated.safetensors");
    write_tensors(&reversed, &tensors);
    let mut cats: Vec<String> = shared_categories();
    cats.rotate_left(5);
    let back = tmp.path().join("back");
    ok(&import(
        &reversed,
        &back,
        &[os("--categories"), os(&cats.join(", "))],
    ));
    for name in ["Zou", "Nakamura", "Dvořák"] {
        let (a, b) = (
            probabilities(shared_run(), name),
            probabilities(&back, name),
        );
        for (c, p) in &a {
            assert!((p - b[c]).abs() < 1e-6, "{name} {c}: {p} vs {}", b[c]);
        }
    }
    let data = data_dir();
    let eval = |m: &Path| {
        json(&ok(&run(&[
            os("eval"),
            os("--model"),
            m.as_os_str(),
            os("--data"),
            data.as_os_str(),
            os("--json"),
        ])))["test_accuracy"]
            .clone()
    };
    assert_eq!(eval(shared_run()), eval(&back));

    let mut dup = cats.clone();
    dup[1] = dup[0].clone();
    let mut empty = cats.clone();
    empty[3] = " ".into();
    for bad in [dup, empty] {
        one_line_error(&import(
            &reversed,
            &tmp.path().join("bad"),
            &[os("--categories"), os(&bad.join(","))],
        ));
    }
    let line = one_line_error(&import(&sd, &back, &[]));
    assert!(line.contains("already holds"), "{line}");
}

/// f32 → IEEE half bits (truncating; values below the half normal range become ±0).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        return sign;
    }
    assert!(exp < 31, "{x} is too large for f16");
    sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

/// IEEE half bits → f32 (exact).
fn f16_value(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let mant = (h & 0x3ff) as f32;
    sign * if exp == 0 {
        mant * 2f32.powi(-24)
    } else {
        (1.0 + mant / 1024.0) * 2f32.powi(exp - 15)
    }
}

/// A state_dict saved in float16 (`model.half()`) imports like the same values in float32
/// (checkpoint.rs promises F16 conversion).
#[test]
fn import_f16_state_dict() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = tmp.path().join("f32.safetensors");
    export_shared_state_dict(&sd);
    let tensors = read_tensors(&sd);
    // The same half-precision values, once as F16 and once as F32.
    let halves: Vec<(String, Vec<usize>, Vec<u16>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                s.clone(),
                d.iter().map(|&x| f16_bits(x)).collect(),
            )
        })
        .collect();
    let as_f32: Vec<(String, Vec<usize>, Vec<f32>)> = halves
        .iter()
        .map(|(n, s, h)| {
            (
                n.clone(),
                s.clone(),
                h.iter().map(|&x| f16_value(x)).collect(),
            )
        })
        .collect();
    let f32_file = tmp.path().join("rounded.safetensors");
    write_tensors(&f32_file, &as_f32);
    let bytes: Vec<Vec<u8>> = halves
        .iter()
        .map(|(_, _, h)| h.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = halves
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b);
            (n.clone(), v.unwrap())
        })
        .collect();
    let f16_file = tmp.path().join("half.safetensors");
    std::fs::write(&f16_file, safetensors::serialize(views, &None).unwrap()).unwrap();

    let import = |file: &Path, name: &str| {
        let out = tmp.path().join(name);
        ok(&import(file, &out, &[]));
        out
    };
    let a = import(&f32_file, "from-f32");
    let b = import(&f16_file, "from-f16");
    assert_eq!(
        read_tensors(&a.join("model.safetensors")),
        read_tensors(&b.join("model.safetensors"))
    );
}
