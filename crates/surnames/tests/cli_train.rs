//! `surnames train`: the files of a run directory, the tutorial's progress lines,
//! reproducibility, Ctrl-C + `--resume`, and a full disk while saving.
mod cli_common;
use cli_common::*;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `train --data DATA ARGS...` as an argument list.
fn train_args(args: &[&OsStr]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["train".into(), "--data".into(), data_dir().into()];
    v.extend(args.iter().map(|s| s.to_os_string()));
    v
}

/// True if `l` matches the tutorial's line
/// `^Epoch \d+ \d+% \(\d+m \d+s\); Avg_loss \d\.\d{4}; Train accuracy \d\.\d{4}; Test accuracy \d\.\d{4}$`.
fn is_tutorial_line(l: &str) -> bool {
    fn digits(s: &str) -> Option<&str> {
        let n = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        (n > 0).then(|| &s[n..])
    }
    fn fixed4(s: &str) -> Option<&str> {
        let b = s.as_bytes();
        (b.len() >= 6
            && b[0].is_ascii_digit()
            && b[1] == b'.'
            && b[2..6].iter().all(u8::is_ascii_digit))
        .then(|| &s[6..])
    }
    let parse = || -> Option<()> {
        let s = l.strip_prefix("Epoch ")?;
        let s = digits(s)?.strip_prefix(' ')?;
        let s = digits(s)?.strip_prefix("% (")?;
        let s = digits(s)?.strip_prefix("m ")?;
        let s = digits(s)?.strip_prefix("s); Avg_loss ")?;
        let s = fixed4(s)?.strip_prefix("; Train accuracy ")?;
        let s = fixed4(s)?.strip_prefix("; Test accuracy ")?;
        fixed4(s)?.is_empty().then_some(())
    };
    parse().is_some()
}

#[test]
fn tutorial_line_matcher_works() {
    assert!(is_tutorial_line(
        "Epoch 1000 0% (0m 3s); Avg_loss 0.0523; Train accuracy 0.0650; Test accuracy 0.1234"
    ));
    assert!(!is_tutorial_line(
        "Epoch 1000 0% (0m 3s); Avg_loss 0.052; Train accuracy 0.0650; Test accuracy 0.1234"
    ));
    assert!(!is_tutorial_line(
        "Epoch 1000 0% (0m 3s); Avg_loss 0.0523; Train accuracy 0.0650; Test accuracy 0.1234; x"
    ));
}

// ---------------------------------------------------------------------------------------------
// Outputs of a run
// ---------------------------------------------------------------------------------------------

/// A tiny tutorial-preset run writes every file of the tutorial (and ours), consistently.
#[test]
fn tiny_run_writes_all_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("run");
    let out = train_tiny(&runp, &["--seed", "5"]);

    // stdout: one tutorial line per evaluation (steps 100 and 200 of 200).
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        assert!(is_tutorial_line(l), "not the tutorial's format: {l:?}");
    }
    assert!(lines[0].starts_with("Epoch 100 50% ("), "{out}");
    assert!(lines[1].starts_with("Epoch 200 100% ("), "{out}");

    for f in [
        "model.safetensors",
        "config.json",
        "metrics.csv",
        "avg_losses.npy",
        "accuracy_rec.npy",
        "test_accu_rec.npy",
        "category_lines_train.json",
        "category_lines_test.json",
        "TrainingProcess.svg",
    ] {
        assert!(runp.join(f).is_file(), "{f} is missing");
    }

    // config.json: categories, alphabet, seed, training section, model.
    let cfg = json(&std::fs::read_to_string(runp.join("config.json")).unwrap());
    let mut langs: Vec<String> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".txt").map(String::from))
        .collect();
    langs.sort();
    assert_eq!(cfg["categories"], serde_json::json!(langs));
    assert_eq!(
        cfg["alphabet"],
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;'-"
    );
    assert_eq!(cfg["model"]["hidden_size"], 16);
    assert_eq!(cfg["model"]["cell"], "lstm");
    let t = &cfg["training"];
    assert!(t.is_object(), "no training section: {cfg}");
    assert_eq!(t["seed"], 5);
    assert_eq!(t["steps"], 200);
    assert_eq!(t["eval_every"], 100);
    assert_eq!(t["batch_size"], 1);
    assert_eq!(t["preset"], "tutorial");
    assert_eq!(t["loss"], "mse");
    assert!((t["lr"].as_f64().unwrap() - 1e-4).abs() < 1e-9, "{t}");

    // metrics.csv: one row per evaluation.
    let (header, rows) = read_csv(&runp.join("metrics.csv"));
    assert_eq!(
        header,
        [
            "step",
            "epoch",
            "lr",
            "avg_loss",
            "train_accuracy",
            "test_accuracy",
            "test_macro_f1",
            "val_accuracy",
            "val_macro_f1",
            "elapsed_s"
        ]
    );
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], "100");
    assert_eq!(rows[1][0], "200");
    let col = |name: &str| -> Vec<f64> {
        let i = header.iter().position(|h| h == name).unwrap();
        rows.iter().map(|r| r[i].parse().unwrap()).collect()
    };

    // The tutorial's arrays: one value per evaluation, equal to the CSV columns.
    for (file, column) in [
        ("avg_losses.npy", "avg_loss"),
        ("accuracy_rec.npy", "train_accuracy"),
        ("test_accu_rec.npy", "test_accuracy"),
    ] {
        let bytes = std::fs::read(runp.join(file)).unwrap();
        let (shape, v) = surnames::npy::read_npy_f64(&bytes).unwrap();
        assert_eq!(shape, [2], "{file}");
        assert_eq!(v.len(), 2, "{file}");
        for (a, b) in v.iter().zip(col(column)) {
            assert!((a - b).abs() <= 1e-6, "{file}: {a} vs metrics.csv {b}");
        }
        assert!(
            v.iter().all(|x| x.is_finite() && *x >= 0.0),
            "{file}: {v:?}"
        );
    }

    // Split lists: 18 languages, 16053 training and 4021 test names.
    for (file, n) in [
        ("category_lines_train.json", 16053),
        ("category_lines_test.json", 4021),
    ] {
        let v = json(&std::fs::read_to_string(runp.join(file)).unwrap());
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 18, "{file}");
        let total: usize = obj.values().map(|l| l.as_array().unwrap().len()).sum();
        assert_eq!(total, n, "{file}");
    }

    // TrainingProcess.svg: valid XML with the three panel titles.
    let svg = std::fs::read_to_string(runp.join("TrainingProcess.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("TrainingProcess.svg is not valid XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect();
    for title in ["Average loss", "Train accuracy", "Test accuracy"] {
        assert!(
            texts.iter().any(|t| t == title),
            "no {title:?} in TrainingProcess.svg: {texts:?}"
        );
    }
}

/// A second `train --out` into a finished run is refused with a one-line error, and the run is
/// left alone.
#[test]
fn out_into_existing_run_is_refused() {
    let runp = shared_run();
    let before = std::fs::read(runp.join("model.safetensors")).unwrap();
    // (another seed than the shared run's, so that retrained weights would differ)
    let mut args = train_args(&[os("--out"), runp.as_os_str(), os("--seed"), os("9")]);
    args.extend(TINY.iter().map(OsString::from));
    let line = one_line_error(&run(&args));
    assert!(
        line.contains("finished") && line.contains("another --out"),
        "{line}"
    );
    assert_eq!(
        before,
        std::fs::read(runp.join("model.safetensors")).unwrap()
    );
}

/// `train --out` into a directory holding an imported model (no training state) must not
/// silently replace that model.
#[test]
fn out_into_imported_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sd = tmp.path().join("sd.safetensors");
    export_shared_state_dict(&sd);
    let imported = tmp.path().join("imported");
    ok(&run(&[
        os("import"),
        os("--state-dict"),
        sd.as_os_str(),
        os("--out"),
        imported.as_os_str(),
    ]));
    let before = std::fs::read(imported.join("model.safetensors")).unwrap();
    // (another seed than the shared run's, so that retrained weights would differ)
    let mut args = train_args(&[os("--out"), imported.as_os_str(), os("--seed"), os("9")]);
    args.extend(TINY.iter().map(OsString::from));
    let o = run(&args);
    assert_eq!(
        before,
        std::fs::read(imported.join("model.safetensors")).unwrap(),
        "train --out replaced the imported model\n{}",
        describe(&o)
    );
    one_line_error(&o);
}

/// `train --resume` of a finished run is refused with a one-line error, without first
/// announcing a training.
#[test]
fn resume_of_finished_run_is_refused() {
    let runp = shared_run();
    let before = std::fs::read(runp.join("model.safetensors")).unwrap();
    let line = one_line_error(&run(&train_args(&[os("--resume"), runp.as_os_str()])));
    assert!(line.contains("finished"), "{line}");
    assert_eq!(
        before,
        std::fs::read(runp.join("model.safetensors")).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// Reproducibility and resume
// ---------------------------------------------------------------------------------------------

/// Same seed and threads → the same metrics.csv (apart from elapsed_s) and the same weights;
/// another seed → different ones. Batched `fast` preset on 2 threads.
#[test]
fn same_seed_same_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let go = |name: &str, seed: &str| -> PathBuf {
        let runp = tmp.path().join(name);
        let args = train_args(&[
            os("--out"),
            runp.as_os_str(),
            os("--preset"),
            os("fast"),
            os("--epochs"),
            os("0.05"),
            os("--hidden"),
            os("32"),
            os("--eval-every"),
            os("10"),
            os("--threads"),
            os("2"),
            os("--seed"),
            os(seed),
        ]);
        ok(&run(&args));
        runp
    };
    let a = go("a", "3");
    let b = go("b", "3");
    let c = go("c", "4");
    let ma = metrics_without_elapsed(&a);
    assert!(ma.len() >= 3, "too few evaluations: {ma:?}");
    assert_eq!(
        ma,
        metrics_without_elapsed(&b),
        "same seed, different metrics"
    );
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap(),
        "same seed, different weights"
    );
    assert_ne!(ma, metrics_without_elapsed(&c), "the seed has no effect");
}

/// How an interrupted `train` ended.
struct Interrupted {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: String,
}

/// `train` (tutorial preset, hidden 16, eval every 100, then `extra`) for `episodes` steps into
/// `out`.
fn small_run_args(out: &Path, episodes: u64, threads: &str, extra: &[&str]) -> Vec<OsString> {
    let ep = episodes.to_string();
    let mut args = train_args(&[
        os("--out"),
        out.as_os_str(),
        os("--episodes"),
        os(&ep),
        os("--eval-every"),
        os("100"),
        os("--hidden"),
        os("16"),
        os("--threads"),
        os(threads),
    ]);
    args.extend(extra.iter().map(OsString::from));
    args
}

/// Starts `train` (tutorial preset, hidden 16, eval every 100, then `extra`) for `episodes`
/// steps into `runp` and sends `signal` (`INT`, `TERM`, ...) once it has printed its second
/// "Epoch" line.
fn train_and_interrupt(
    runp: &Path,
    episodes: u64,
    threads: &str,
    signal: &str,
    extra: &[&str],
) -> Interrupted {
    let mut child = surnames()
        .args(small_run_args(runp, episodes, threads, extra))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        err_pipe.read_to_string(&mut s).unwrap();
        s
    });
    let mut lines = Vec::new();
    let mut epochs = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("Epoch ") {
            epochs += 1;
            if epochs == 2 {
                let st = Command::new("kill")
                    .args([&format!("-{signal}"), &child.id().to_string()])
                    .status()
                    .unwrap();
                assert!(st.success(), "kill -{signal} failed");
            }
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    Interrupted {
        status,
        stdout: lines,
        stderr: err_thread.join().unwrap(),
    }
}

/// Interrupts a run with `signal` (retrying with 10× more steps while the run finishes before
/// the signal lands) and checks exit code 130 and the --resume hint. Returns the step count
/// used.
fn interrupted_run(runp: &Path, threads: &str, signal: &str, extra: &[&str]) -> (u64, Interrupted) {
    let mut episodes = 400;
    loop {
        let r = train_and_interrupt(runp, episodes, threads, signal, extra);
        if r.status.success() && episodes < 400_000 {
            // Finished before SIGINT arrived: try again with a longer run.
            std::fs::remove_dir_all(runp).unwrap();
            episodes *= 10;
            continue;
        }
        assert_eq!(
            r.status.code(),
            Some(130),
            "interrupted train should exit with 130\nstdout:\n{}\nstderr:\n{}",
            r.stdout.join("\n"),
            r.stderr
        );
        assert!(
            r.stderr.contains("--resume"),
            "no --resume hint:\n{}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert!(runp.join("model.safetensors").is_file());
        println!("interrupted a run of {episodes} steps");
        return (episodes, r);
    }
}

/// Drops the "(Xm Ys)" elapsed time from a tutorial line.
fn without_time(l: &str) -> String {
    match (l.find(" ("), l.find(");")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &l[..a], &l[b + 1..]),
        _ => l.to_string(),
    }
}

/// SIGINT then `train --resume` gives exactly the uninterrupted run: metrics.csv (except
/// elapsed_s), printed lines and final weights.
#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    resumed_equals_uninterrupted(&[]);
}

/// The same for an ensemble, whose networks have each their own weights, optimiser state and
/// random streams to save and restore.
#[test]
fn interrupted_and_resumed_ensemble_equals_uninterrupted() {
    resumed_equals_uninterrupted(&["--members", "2"]);
}

fn resumed_equals_uninterrupted(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("interrupted");
    let (episodes, first) = interrupted_run(&runp, "2", "INT", extra);
    let metrics_at_stop = read_csv(&runp.join("metrics.csv")).1.len();
    assert!(
        metrics_at_stop >= 2,
        "saved metrics lost the first evaluations"
    );

    let resumed = run(&train_args(&[os("--resume"), runp.as_os_str()]));
    let resumed_out = ok(&resumed);

    let reference = tmp.path().join("reference");
    let ref_out = ok(&run(&small_run_args(&reference, episodes, "2", extra)));

    let m = metrics_without_elapsed(&runp);
    assert_eq!(m.len() as u64, 1 + episodes / 100);
    assert_eq!(
        m,
        metrics_without_elapsed(&reference),
        "resumed run differs"
    );
    assert_same_outputs(&runp, &reference);
    let printed: Vec<String> = first
        .stdout
        .iter()
        .map(String::as_str)
        .chain(resumed_out.lines())
        .map(without_time)
        .collect();
    let want: Vec<String> = ref_out.lines().map(without_time).collect();
    assert_eq!(printed, want, "printed lines differ");
}

/// SIGTERM (a shutdown, `kill`) saves like Ctrl-C. The --resume hint repeats `--data`;
/// resuming on other names is refused, on the same names it finishes.
#[test]
fn sigterm_saves_and_resume_checks_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("terminated");
    let (_, first) = interrupted_run(&runp, "1", "TERM", &[]);
    assert!(runp.join("resume.safetensors").is_file());
    let data = data_dir();
    assert!(
        first.stderr.contains(&format!("--data {}", data.display())),
        "the hint does not repeat --data:\n{}",
        first.stderr
    );

    // The same languages with one more English name.
    let other = tmp.path().join("other-data");
    std::fs::create_dir(&other).unwrap();
    for e in std::fs::read_dir(&data).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), other.join(e.file_name())).unwrap();
    }
    let mut english = std::fs::read_to_string(other.join("English.txt"))
        .unwrap()
        .trim_end()
        .to_string();
    english.push_str("\nNewname\n");
    std::fs::write(other.join("English.txt"), english).unwrap();
    let line = one_line_error(&run(&[
        os("train"),
        os("--resume"),
        runp.as_os_str(),
        os("--data"),
        other.as_os_str(),
        os("--no-verify"),
    ]));
    assert!(line.contains("not the ones"), "{line}");
    // eval on other names works, with a warning.
    let o = run(&[
        os("eval"),
        os("--model"),
        runp.as_os_str(),
        os("--data"),
        other.as_os_str(),
        os("--no-verify"),
        os("--json"),
    ]);
    ok(&o);
    assert!(
        stderr(&o).contains("warning: the names in"),
        "{}",
        describe(&o)
    );

    ok(&run(&train_args(&[os("--resume"), runp.as_os_str()])));
    assert!(run(&train_args(&[os("--resume"), runp.as_os_str()]))
        .status
        .code()
        .is_some_and(|c| c == 1));
}

/// The files of two runs that must be identical: weights and the tutorial's float64 arrays
/// (exact, where metrics.csv is rounded), and metrics.csv without the elapsed times.
fn assert_same_outputs(a: &Path, b: &Path) {
    for f in [
        "model.safetensors",
        "avg_losses.npy",
        "accuracy_rec.npy",
        "test_accu_rec.npy",
    ] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    assert_eq!(metrics_without_elapsed(a), metrics_without_elapsed(b));
}

/// Turns the resume state of `run` into the format of earlier versions: the training state in
/// `train_state.json` beside a `resume.safetensors` without metadata.
fn to_old_format(run: &Path) {
    let path = run.join("resume.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let state = header.metadata().as_ref().unwrap()["train_state"].clone();
    std::fs::write(run.join("train_state.json"), state).unwrap();
    write_tensors(&path, &read_tensors(&path));
}

/// With `--checkpoint-minutes 0` the resume state is saved at every evaluation: after
/// `kill -9`, `--resume` finishes the run with the outputs of an uninterrupted one, also from
/// the resume format of earlier versions (`train_state.json`).

#[test]
fn periodic_checkpoint_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("killed");
    let args = |out: &Path, extra: &[&str]| {
        let mut a = tiny_args(out, "3000");
        a.extend(extra.iter().map(OsString::from));
        a
    };
    let mut child = surnames()
        .args(args(&runp, &["--checkpoint-minutes", "0"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = runp.join("resume.safetensors");
    wait_for_file(&state);
    child.kill().unwrap(); // SIGKILL: no chance to save
    let status = child.wait().unwrap();
    assert!(state.exists(), "no checkpoint was saved");
    if status.success() {
        println!("note: the run finished before it was killed");
    }
    if !status.success() {
        to_old_format(&runp);
        ok(&run(&train_args(&[os("--resume"), runp.as_os_str()])));
        assert!(
            !runp.join("train_state.json").exists(),
            "the old state file was left beside the new one"
        );
    }
    let reference = tmp.path().join("reference");
    ok(&run(&args(&reference, &[])));
    assert_same_outputs(&runp, &reference);
}

/// A run that failed before its first save leaves only config.json; the directory can be used
/// again (it was refused as "already holds a model").
#[test]
fn dir_of_a_run_that_never_saved_is_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("failed");
    std::fs::create_dir(&runp).unwrap();
    std::fs::write(runp.join("config.json"), "{}").unwrap();
    train_tiny(&runp, &[]);
    assert!(runp.join("model.safetensors").is_file());
}

/// Waits until `path` exists (at most a minute).
fn wait_for_file(path: &Path) {
    let start = std::time::Instant::now();
    while !path.exists() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The tiny tutorial run of `train_args` into `out` for `episodes` steps.
fn tiny_args(out: &Path, episodes: &str) -> Vec<OsString> {
    train_args(&[
        os("--out"),
        out.as_os_str(),
        os("--episodes"),
        os(episodes),
        os("--eval-every"),
        os("100"),
        os("--hidden"),
        os("16"),
        os("--threads"),
        os("1"),
    ])
}

/// Starts the tiny run of [`tiny_args`] in the background (stderr discarded).
fn spawn_tiny(out: &Path, episodes: &str, stdout: Stdio) -> std::process::Child {
    surnames()
        .args(tiny_args(out, episodes))
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `train … | head -1`: the closed stdout does not end the training, which finishes and saves.
#[test]
fn closed_stdout_does_not_stop_training() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("piped");
    let mut child = spawn_tiny(&runp, "2000", Stdio::piped());
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // the reader is dropped here: the pipe closes
    assert!(first.starts_with("Epoch "), "{first}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(read_csv(&runp.join("metrics.csv")).1.len(), 20);
}

/// A second training into a directory in use is refused, even before the first one saved.
#[test]
fn run_dir_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("busy");
    let mut first = spawn_tiny(&runp, "1000000", Stdio::null());
    wait_for_file(&runp.join("config.json"));
    let second = run(&tiny_args(&runp, "200"));
    first.kill().unwrap();
    first.wait().unwrap();
    let line = one_line_error(&second);
    assert!(line.contains("another `surnames train`"), "{line}");
}

/// The files of the resume state of `run`, rewritten by `edit` (training state as JSON, tensors).
fn edit_resume_state(
    run: &Path,
    edit: impl FnOnce(&mut serde_json::Value, &mut Vec<(String, Vec<usize>, Vec<f32>)>),
) {
    let path = run.join("resume.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut state: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["train_state"]).unwrap();
    let mut tensors = read_tensors(&path);
    edit(&mut state, &mut tensors);
    let meta = [("train_state".to_string(), state.to_string())].into();
    write_tensors_with_metadata(&path, &tensors, Some(meta));
}

/// A damaged or edited resume state is refused with a clear error: a step past the end (it
/// would mark the run finished without training), an out-of-range shuffled index (it would
/// index out of bounds) and a non-finite weight (it would look like divergence).
#[test]
fn corrupt_resume_state_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("interrupted");
    interrupted_run(&runp, "1", "INT", &[]);
    let pristine = std::fs::read(runp.join("resume.safetensors")).unwrap();
    type Edit = fn(&mut serde_json::Value, &mut Vec<(String, Vec<usize>, Vec<f32>)>);
    let edits: [(Edit, &str); 4] = [
        (
            |s, _| s["step"] = serde_json::json!(1_000_000_000u64),
            "corrupt",
        ),
        (
            |s, _| s["adam_step"] = serde_json::json!(u64::MAX),
            "corrupt",
        ),
        (
            |s, _| s["shuffle_order"] = serde_json::json!([99_999_999u32]),
            "corrupt",
        ),
        (|_, t| t[0].2[0] = f32::NAN, "non-finite"),
    ];
    for (edit, want) in edits {
        std::fs::write(runp.join("resume.safetensors"), &pristine).unwrap();
        edit_resume_state(&runp, edit);
        let o = run(&train_args(&[os("--resume"), runp.as_os_str()]));
        assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{err}");
        let last = err.trim_end().lines().last().unwrap_or("");
        assert!(last.starts_with("error: ") && last.contains(want), "{err}");
    }
}

/// A run whose first save was cut short (config.json, a model and the training's "unsaved"
/// mark, no resume state) cannot be resumed, and its directory takes a new run. Without the
/// mark (a finished run whose resume file was deleted) the model is kept.
#[test]
fn run_cut_short_before_its_state_is_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = copy_of_shared_model(&tmp.path().join("cut"));
    let line = one_line_error(&run(&train_args(&[os("--resume"), runp.as_os_str()])));
    assert!(line.contains("start it again with --out"), "{line}");
    let mut args = train_args(&[os("--out"), runp.as_os_str()]);
    args.extend(TINY.iter().map(OsString::from));
    let line = one_line_error(&run(&args));
    assert!(line.contains("already holds a model"), "{line}");
    std::fs::write(runp.join(".surnames-unsaved"), "").unwrap();
    train_tiny(&runp, &[]);
    assert!(runp.join("resume.safetensors").is_file());
    assert!(!runp.join(".surnames-unsaved").exists());
}

/// Weights that overflow end the run with a one-line error instead of a "done" and a model
/// that cannot be loaded.
#[test]
fn divergence_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("diverged");
    let o = run(&train_args(&[
        os("--out"),
        runp.as_os_str(),
        os("--preset"),
        os("fast"),
        os("--cell"),
        os("ann-lstm"),
        os("--hidden"),
        os("8"),
        os("--episodes"),
        os("20"),
        os("--eval-every"),
        os("10"),
        os("--lr"),
        os("1e38"),
        os("--warmup"),
        os("0"),
        os("--clip"),
        os("0"),
    ]));
    // After the line announcing the training, the error is the last line.
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("error: training diverged"), "{err}");
    assert!(!runp.join("model.safetensors").exists());
}

// ---------------------------------------------------------------------------------------------
// Full disk
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a filler file, then frees `keep` bytes again.
fn fill_disk(dir: &Path, keep: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut len = 0u64;
    for chunk in [1 << 16, 4096usize] {
        let buf = vec![0xA5u8; chunk];
        while f.write_all(&buf).is_ok() {
            len += chunk as u64;
        }
    }
    f.set_len(len.saturating_sub(keep)).unwrap();
    path
}

/// When the disk fills up while a resumed run saves, the earlier resume checkpoint stays intact,
/// the model left in the run loads, the error is one line about space, and resuming again after
/// freeing space works.
#[test]
fn full_disk_keeps_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("note: cannot mount a tmpfs here (needs root); skipping the full-disk test");
        return;
    }
    let _guard = Tmpfs(mnt.clone());
    let runp = mnt.join("run");
    interrupted_run(&runp, "1", "INT", &[]);
    let snapshot = |f: &str| std::fs::read(runp.join(f)).unwrap();
    let state_before = snapshot("resume.safetensors");

    // Leave 32 KiB: config.json still fits, the ~62 KB resume.safetensors does not.
    let filler = fill_disk(&mnt, 32 * 1024);
    let o = run(&train_args(&[os("--resume"), runp.as_os_str()]));
    let err = stderr(&o);
    assert!(o.status.code().is_some_and(|c| c != 0), "{}", describe(&o));
    assert!(!err.contains("panicked"), "{}", describe(&o));
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{}", describe(&o));
    assert!(
        err.trim_end().ends_with(errors[0]),
        "the error is not the last thing on stderr\n{}",
        describe(&o)
    );
    let lower = errors[0].to_lowercase();
    assert!(
        lower.contains("space") || lower.contains("disk"),
        "error does not mention the disk/space: {}",
        errors[0]
    );

    println!("full disk: {}", errors[0]);

    // The earlier resume checkpoint is untouched, no temporary files are left, and the model
    // (the earlier one, or the newer one if it still fitted) loads.
    assert_eq!(state_before, snapshot("resume.safetensors"));
    let leftovers: Vec<String> = std::fs::read_dir(&runp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let out = ok(&run(&[
        os("predict"),
        os("--model"),
        runp.as_os_str(),
        os("--json"),
        os("Zou"),
    ]));
    assert_eq!(json(&out)["normalised"], "Zou");

    // With space again: eval works and the run can be resumed to the end.
    std::fs::remove_file(filler).unwrap();
    let ev = json(&ok(&run(&[
        os("eval"),
        os("--model"),
        runp.as_os_str(),
        os("--json"),
    ])));
    assert_eq!(ev["n_test"], 4021);
    ok(&run(&train_args(&[os("--resume"), runp.as_os_str()])));
}
