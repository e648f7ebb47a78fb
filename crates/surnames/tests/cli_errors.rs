//! Bad input of every kind gives exactly one line `error: …` on stderr, a non-zero exit code and
//! no panic or backtrace.
mod cli_common;
use cli_common::*;
use std::ffi::OsStr;
use std::path::Path;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `predict --model RUN Zou`, which must fail with a one-line error (returned).
fn predict_error(run_dir: &Path) -> String {
    one_line_error(&run(&[
        os("predict"),
        os("--model"),
        run_dir.as_os_str(),
        os("Zou"),
    ]))
}

// ---------------------------------------------------------------------------------------------
// Data directory problems
// ---------------------------------------------------------------------------------------------

/// `--data` naming a directory that does not exist; the message names it.
#[test]
fn missing_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir");
    let out = tmp.path().join("run");
    for cmd in ["data", "train"] {
        let mut args = vec![os(cmd), os("--data"), missing.as_os_str()];
        if cmd == "train" {
            args.extend([os("--out"), out.as_os_str()]);
        }
        let line = one_line_error(&run(&args));
        assert!(line.contains("no-such-dir"), "{line}");
        assert!(line.contains("does not exist"), "{line}");
    }
    assert!(!out.exists(), "train created its run dir anyway");
}

/// SURNAMES_DATA pointing nowhere is an error too (no silent fallback to a download).
#[test]
fn missing_data_dir_from_env() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("gone");
    let o = surnames()
        .args(["data"])
        .env("SURNAMES_DATA", &missing)
        .output()
        .unwrap();
    let line = one_line_error(&o);
    assert!(line.contains("gone"), "{line}");
}

/// An empty directory: no *.txt files.
#[test]
fn empty_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let line = one_line_error(&run(&[os("data"), os("--data"), tmp.path().as_os_str()]));
    assert!(line.contains("no *.txt"), "{line}");
}

/// A language file saved as Latin-1 (not UTF-8): the message names the file.
#[test]
fn data_file_not_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("English.txt"), "Smith\nJones\n").unwrap();
    std::fs::write(tmp.path().join("Czech.txt"), b"Nov\xe1k\nDvor\xe1k\n").unwrap();
    for verify in [true, false] {
        let mut args = vec![os("data"), os("--data"), tmp.path().as_os_str()];
        if !verify {
            args.push(os("--no-verify"));
        }
        let line = one_line_error(&run(&args));
        assert!(line.contains("Czech.txt"), "{line}");
        assert!(line.contains("UTF-8"), "{line}");
    }
}

/// A language file with no names (whitespace only).
#[test]
fn language_file_without_names() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("English.txt"), "Smith\nJones\n").unwrap();
    std::fs::write(tmp.path().join("Irish.txt"), "\n  \n").unwrap();
    let line = one_line_error(&run(&[
        os("data"),
        os("--data"),
        tmp.path().as_os_str(),
        os("--no-verify"),
    ]));
    assert!(line.contains("Irish.txt"), "{line}");
    assert!(line.contains("no names"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Run directories and checkpoints
// ---------------------------------------------------------------------------------------------

/// eval / predict / confusion / export on a run directory that does not exist.
#[test]
fn unknown_run_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-run");
    let m = missing.as_os_str();
    let out = tmp.path().join("x.safetensors");
    for args in [
        vec![os("eval"), os("--model"), m],
        vec![os("predict"), os("--model"), m, os("Zou")],
        vec![os("confusion"), os("--model"), m],
        vec![os("export"), os("--model"), m, os("--out"), out.as_os_str()],
    ] {
        let line = one_line_error(&run(&args));
        assert!(line.contains("no-such-run"), "{line}");
    }
    assert!(!missing.exists());
}

/// Rewrites the model.safetensors of a copy of the shared run with `edit`, then checks that
/// predict (and eval) refuse it with a one-line error containing `expect`.
fn tampered_checkpoint(
    tag: &str,
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>),
    expect: &str,
) {
    let tmp = tempfile::tempdir().unwrap();
    let runp = copy_of_shared_model(&tmp.path().join(tag));
    let file = runp.join("model.safetensors");
    let mut t = read_tensors(&file);
    edit(&mut t);
    write_tensors(&file, &t);
    for cmd in ["predict", "eval"] {
        let mut args = vec![os(cmd), os("--model"), runp.as_os_str()];
        if cmd == "predict" {
            args.push(os("Zou"));
        }
        let line = one_line_error(&run(&args));
        assert!(line.contains(expect), "{tag}/{cmd}: {line}");
    }
}

#[test]
fn checkpoint_missing_key() {
    tampered_checkpoint(
        "missing",
        |t| t.retain(|(n, _, _)| n != "fc.bias"),
        "fc.bias",
    );
}

#[test]
fn checkpoint_extra_key() {
    tampered_checkpoint(
        "extra",
        |t| t.push(("decoder.weight".into(), vec![2], vec![1.0, 2.0])),
        "decoder.weight",
    );
}

#[test]
fn checkpoint_wrong_shape() {
    tampered_checkpoint(
        "shape",
        |t| {
            let b = t.iter_mut().find(|(n, _, _)| n == "fc.bias").unwrap();
            b.1 = vec![17];
            b.2.truncate(17);
        },
        "fc.bias",
    );
}

#[test]
fn checkpoint_nan_value() {
    tampered_checkpoint(
        "nan",
        |t| {
            let w = t.iter_mut().find(|(n, _, _)| n == "fc.weight").unwrap();
            w.2[5] = f32::NAN;
        },
        "fc.weight",
    );
}

/// config.json says hidden 32 while the weights are hidden 16.
#[test]
fn config_and_weights_disagree() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = copy_of_shared_model(&tmp.path().join("run"));
    let cfg_path = runp.join("config.json");
    let mut cfg = json(&std::fs::read_to_string(&cfg_path).unwrap());
    assert_eq!(cfg["model"]["hidden_size"], 16);
    cfg["model"]["hidden_size"] = 32.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let line = predict_error(&runp);
    assert!(line.contains("shape"), "{line}");
}

/// config.json that is not JSON, and one that lists the wrong number of categories.
#[test]
fn corrupt_config_json() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = copy_of_shared_model(&tmp.path().join("run"));
    let cfg_path = runp.join("config.json");
    let good = std::fs::read_to_string(&cfg_path).unwrap();

    std::fs::write(&cfg_path, &good[..good.len() / 2]).unwrap();
    let line = one_line_error(&run(&[os("eval"), os("--model"), runp.as_os_str()]));
    assert!(line.contains("config.json"), "{line}");

    let mut cfg = json(&good);
    cfg["categories"].as_array_mut().unwrap().pop();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let line = predict_error(&runp);
    assert!(line.contains("config.json"), "{line}");

    std::fs::remove_file(&cfg_path).unwrap();
    let line = predict_error(&runp);
    assert!(line.contains("config.json"), "{line}");
}

/// model.safetensors that is not a safetensors file at all.
#[test]
fn garbage_model_file() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = copy_of_shared_model(&tmp.path().join("run"));
    std::fs::write(runp.join("model.safetensors"), b"\x10\x00\x00\x00garbage").unwrap();
    let line = predict_error(&runp);
    assert!(line.contains("model.safetensors"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Outputs that cannot be written
// ---------------------------------------------------------------------------------------------

/// `--out` below a regular file, for every command that writes somewhere.
#[test]
fn output_dir_not_writable() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad_dir = file.join("run");
    let run_dir = shared_run();
    let data = data_dir();

    // train
    let mut args = vec![
        os("train"),
        os("--data"),
        data.as_os_str(),
        os("--out"),
        bad_dir.as_os_str(),
    ];
    args.extend(TINY.iter().map(|s| os(s)));
    let line = one_line_error(&run(&args));
    assert!(line.contains("a-file"), "train: {line}");

    // confusion --out
    let line = one_line_error(&run(&[
        os("confusion"),
        os("--model"),
        run_dir.as_os_str(),
        os("--data"),
        data.as_os_str(),
        os("--samples"),
        os("100"),
        os("--out"),
        bad_dir.as_os_str(),
    ]));
    assert!(line.contains("a-file"), "confusion: {line}");

    // export --out
    let bad_file = file.join("model.safetensors");
    let line = one_line_error(&run(&[
        os("export"),
        os("--model"),
        run_dir.as_os_str(),
        os("--out"),
        bad_file.as_os_str(),
    ]));
    assert!(line.contains("a-file"), "export: {line}");

    // import --out (state_dict from an export of the shared run)
    let sd = tmp.path().join("sd.safetensors");
    export_shared_state_dict(&sd);
    let line = one_line_error(&run(&[
        os("import"),
        os("--state-dict"),
        sd.as_os_str(),
        os("--out"),
        bad_dir.as_os_str(),
    ]));
    assert!(line.contains("a-file"), "import: {line}");
}

// ---------------------------------------------------------------------------------------------
// Bad flag values
// ---------------------------------------------------------------------------------------------

/// predict --top 0 (and more than the 18 languages).
#[test]
fn predict_top_out_of_range() {
    let m = shared_run().as_os_str();
    for top in ["0", "19"] {
        let o = run(&[
            os("predict"),
            os("--model"),
            m,
            os("--top"),
            os(top),
            os("Zou"),
        ]);
        let line = one_line_error(&o);
        assert!(line.contains("--top"), "{line}");
        assert!(stdout(&o).is_empty(), "answered anyway:\n{}", describe(&o));
    }
}

/// `train` with one bad flag value: one-line error naming the problem, before any file is
/// written.
fn bad_train_flag(flag: &[&str], expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let data = data_dir();
    let mut args = vec![
        os("train"),
        os("--data"),
        data.as_os_str(),
        os("--out"),
        out.as_os_str(),
    ];
    // Small defaults, unless the flags under test set them.
    for (k, v) in [("--episodes", "10"), ("--hidden", "8"), ("--threads", "1")] {
        if !flag.contains(&k) {
            args.extend([os(k), os(v)]);
        }
    }
    args.extend(flag.iter().map(|s| os(s)));
    let line = one_line_error(&run(&args));
    assert!(line.contains(expect), "{flag:?}: {line}");
    assert!(
        !out.exists(),
        "{flag:?}: the run directory was created although the flag was rejected"
    );
}

#[test]
fn bad_flag_lr_negative() {
    bad_train_flag(&["--lr", "-1"], "-1");
}

#[test]
fn bad_flag_lr_negative_equals_form() {
    bad_train_flag(&["--lr=-1"], "learning rate");
}

#[test]
fn bad_flag_cell() {
    bad_train_flag(&["--cell", "foo"], "foo");
}

#[test]
fn bad_flag_surrogate() {
    bad_train_flag(&["--surrogate", "nope"], "nope");
}

#[test]
fn bad_flag_split() {
    bad_train_flag(&["--split", "nope"], "nope");
}

/// Sizes that would exhaust memory or threads are refused before anything is allocated.
#[test]
fn bad_flag_sizes() {
    bad_train_flag(&["--hidden", "1000000"], "too large");
    bad_train_flag(&["--hidden", "18446744073709551615"], "too large");
    bad_train_flag(&["--layers", "10000"], "too large");
    bad_train_flag(&["--hidden", "20000", "--layers", "60"], "parameters");
    bad_train_flag(&["--threads", "5000"], "--threads");
    bad_train_flag(&["--batch-size", "1000000000"], "batch size");
    bad_train_flag(&["--batch-size", "18446744073709551615"], "batch size");
}

/// Options that would be accepted and then have no effect, and a preset whose implied setting
/// conflicts with an explicit one (the message names the implied setting).
#[test]
fn bad_flag_combinations() {
    bad_train_flag(&["--patience", "3"], "--val-fraction");
    bad_train_flag(&["--readout", "final"], "--bidirectional");
    bad_train_flag(&["--surrogate", "Erf:0"], "must be > 0");
    bad_train_flag(&["--surrogate", "Erf:-5"], "must be > 0");
    bad_train_flag(
        &["--preset", "fast", "--loss", "mse"],
        "--class-weights none",
    );
    bad_train_flag(&["--val-fraction", "-0.5"], "validation fraction");
    bad_train_flag(&["--checkpoint-minutes", "-1"], "--checkpoint-minutes");
    bad_train_flag(&["--dropout", "0.5"], "--layers 2");
}

/// `--resume` takes every setting from the run; other settings are refused, not ignored.
#[test]
fn resume_with_other_settings_is_refused() {
    for flag in [
        &["--lr", "5"][..],
        &["--episodes", "10"],
        &["--preset", "fast"],
    ] {
        let mut args = vec![os("train"), os("--resume"), shared_run().as_os_str()];
        args.extend(flag.iter().map(|s| os(s)));
        let line = one_line_error(&run(&args));
        assert!(line.contains("cannot be used with"), "{line}");
        assert!(line.contains(flag[0]), "{line}");
    }
}

/// A missing argument is named; a missing subcommand prints the help (exit 2).
#[test]
fn missing_arguments_are_named() {
    let line = one_line_error(&run(&[os("eval")]));
    assert!(line.contains("--model"), "{line}");
    assert!(!line.contains("For more information"), "{line}");
    let line = one_line_error(&run(&[os("import"), os("--out"), os("x")]));
    assert!(line.contains("--state-dict"), "{line}");
    let o = run::<&str>(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Commands:"), "{}", describe(&o));
}

/// bench: a key filter that matches nothing and absurd durations are errors.
#[test]
fn bad_bench_flags() {
    let line = one_line_error(&run(&[os("bench"), os("--only"), os("nomatch")]));
    assert!(line.contains("train_b1_steps_per_s"), "{line}");
    let line = one_line_error(&run(&[os("bench"), os("--seconds"), os("1e300")]));
    assert!(line.contains("--seconds"), "{line}");
    // A key that needs the names data, without it.
    let o = surnames()
        .args([
            "bench",
            "--only",
            "eval_test",
            "--rounds",
            "1",
            "--seconds",
            "0.01",
        ])
        .env_remove("SURNAMES_DATA")
        .output()
        .unwrap();
    let line = one_line_error(&o);
    assert!(line.contains("--data"), "{line}");
    // Data with fewer training names than one batch of the measurement.
    let tmp = tempfile::tempdir().unwrap();
    for lang in ["Czech", "Polish"] {
        std::fs::write(tmp.path().join(format!("{lang}.txt")), "Adam\nBeck\nCech\n").unwrap();
    }
    let line = one_line_error(&run(&[
        os("bench"),
        os("--only"),
        os("train_batched"),
        os("--data"),
        tmp.path().as_os_str(),
        os("--rounds"),
        os("1"),
        os("--seconds"),
        os("0.01"),
    ]));
    assert!(line.contains("at least 64"), "{line}");
}

/// `export` never writes over a file of a run directory, such as the run's own config.
#[test]
fn export_over_a_run_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = copy_of_shared_model(&tmp.path().join("m"));
    let before = std::fs::read(m.join("config.json")).unwrap();
    std::fs::write(m.join("metrics.csv"), "step\n").unwrap();
    for f in ["config.json", "model.safetensors", "metrics.csv"] {
        let line = one_line_error(&run(&[
            os("export"),
            os("--model"),
            m.as_os_str(),
            os("--out"),
            m.join(f).as_os_str(),
        ]));
        assert!(line.contains("would overwrite"), "{line}");
    }
    assert_eq!(before, std::fs::read(m.join("config.json")).unwrap());
}

/// A file where a run directory is expected.
#[test]
fn file_instead_of_run_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("afile");
    std::fs::write(&f, "x").unwrap();
    assert!(predict_error(&f).contains("is a file"));
    let line = one_line_error(&run(&[
        os("train"),
        os("--data"),
        data_dir().as_os_str(),
        os("--out"),
        f.as_os_str(),
    ]));
    assert!(line.contains("is a file"), "{line}");
}

/// confusion --split nope and data --split nope.
#[test]
fn bad_split_for_confusion_and_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir();
    let line = one_line_error(&run(&[
        os("confusion"),
        os("--model"),
        shared_run().as_os_str(),
        os("--data"),
        data.as_os_str(),
        os("--split"),
        os("nope"),
        os("--out"),
        tmp.path().as_os_str(),
    ]));
    assert!(line.contains("nope"), "{line}");
    let line = one_line_error(&run(&[
        os("data"),
        os("--data"),
        data.as_os_str(),
        os("--split"),
        os("nope"),
    ]));
    assert!(line.contains("nope"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Closed stdout (e.g. `surnames data | head -1`)
// ---------------------------------------------------------------------------------------------

/// Runs `surnames ARGS` with its stdout pipe closed by the reader before anything is written
/// (stdin, if any, is sent after the close); returns (status, stderr).
fn with_closed_stdout(args: &[&OsStr], stdin: Option<&str>) -> (std::process::ExitStatus, String) {
    use std::io::{Read, Write};
    use std::process::Stdio;
    let mut child = surnames()
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away at once
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}

/// Writing to a closed pipe must not panic: stop quietly or with one `error: ` line.
#[track_caller]
fn no_panic_on_closed_stdout(what: &str, status: std::process::ExitStatus, err: &str) {
    assert!(
        !err.contains("panicked"),
        "{what}: panics when stdout is closed ({status:?}):\n{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() <= 1 && lines.iter().all(|l| l.starts_with("error: ")),
        "{what}: {err}"
    );
}

#[test]
fn closed_stdout_data() {
    let data = data_dir();
    let (status, err) = with_closed_stdout(&[os("data"), os("--data"), data.as_os_str()], None);
    no_panic_on_closed_stdout("data", status, &err);
}

#[test]
fn closed_stdout_predict() {
    let m = shared_run();
    let names = "Zou\nSmith\nNakamura\n".repeat(200);
    let (status, err) = with_closed_stdout(
        &[os("predict"), os("--model"), m.as_os_str(), os("--json")],
        Some(&names),
    );
    no_panic_on_closed_stdout("predict", status, &err);
}
