//! Helpers shared by the `cli_*` integration tests: locating the data and golden files, running
//! the `surnames` binary in a sandboxed environment, checking one-line errors, and a tiny trained
//! run shared by the tests of one test binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The names data set (`SURNAMES_DATA`, else `../../../shared/data/names` from this crate).
pub fn data_dir() -> PathBuf {
    std::env::var_os("SURNAMES_DATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/names")
        })
}

/// The golden reference vectors (`SURNAMES_GOLDEN`, else `../../../shared/golden`).
pub fn golden_dir() -> PathBuf {
    std::env::var_os("SURNAMES_GOLDEN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"))
}

/// A scratch directory that lives as long as the test process (for fixtures shared between
/// tests). It sits under Cargo's target tmp dir; directories of dead test processes are removed.
pub fn process_scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let exe = std::env::current_exe().unwrap();
        let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let prefix = format!("{}-", stem.split('-').next().unwrap_or("cli"));
        // Clean up after earlier runs whose process is gone.
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix(&prefix) {
                    if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = base.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// A `surnames` command with HOME / XDG_CACHE_HOME pointing into a scratch directory (so nothing
/// is ever downloaded to or read from the real cache) and SURNAMES_DATA set to the test data.
pub fn surnames() -> Command {
    let home = process_scratch().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_surnames"));
    c.env("HOME", &home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("SURNAMES_DATA", data_dir())
        .env("RUST_BACKTRACE", "1")
        .env_remove("SURNAMES_GOLDEN")
        .stdin(Stdio::null());
    c
}

/// Runs `surnames ARGS` to completion.
pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    surnames()
        .args(args)
        .output()
        .expect("cannot start surnames")
}

/// Runs `surnames ARGS` feeding `input` on stdin.
pub fn run_stdin<S: AsRef<std::ffi::OsStr>>(args: &[S], input: &str) -> Output {
    use std::io::Write;
    let mut child = surnames()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start surnames");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Everything about an invocation, for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(o.status.success(), "command failed\n{}", describe(o));
    stdout(o)
}

/// Asserts the invocation failed cleanly: non-zero exit (not a signal), no panic or backtrace,
/// and stderr — apart from `warning: ` lines — is exactly one line starting with `error: `.
/// Returns that line.
#[track_caller]
pub fn one_line_error(o: &Output) -> String {
    let err = stderr(o);
    assert!(
        o.status.code().is_some_and(|c| c != 0),
        "expected a non-zero exit code\n{}",
        describe(o)
    );
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(
            !err.contains(bad),
            "stderr mentions {bad:?}\n{}",
            describe(o)
        );
    }
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("warning: "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one (non-warning) line on stderr\n{}",
        describe(o)
    );
    assert!(
        lines[0].starts_with("error: "),
        "stderr does not start with 'error: '\n{}",
        describe(o)
    );
    lines[0].to_string()
}

/// Flags of the tiny tutorial-preset model used throughout: 200 steps, 2 evaluations.
pub const TINY: &[&str] = &[
    "--episodes",
    "200",
    "--eval-every",
    "100",
    "--hidden",
    "16",
    "--threads",
    "1",
];

/// Trains a tiny tutorial-preset run into `out` (must not hold a run yet); returns stdout.
pub fn train_tiny(out: &Path, extra: &[&str]) -> String {
    let mut args: Vec<std::ffi::OsString> = vec!["train".into(), "--data".into()];
    args.push(data_dir().into());
    args.push("--out".into());
    args.push(out.into());
    args.extend(TINY.iter().map(Into::into));
    args.extend(extra.iter().map(Into::into));
    ok(&run(&args))
}

/// One tiny trained run per test process, shared (read-only!) by its tests.
pub fn shared_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = process_scratch().join("shared-run");
        train_tiny(&dir, &[]);
        dir
    })
}

/// Exports the weights of the run in `model` as a SpikingJelly state_dict to `out` (must
/// succeed); returns stdout.
pub fn export_state_dict(model: &Path, out: &Path) -> String {
    ok(&run(&[
        "export".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]))
}

/// Exports the shared run's weights as a SpikingJelly state_dict to `out` (must succeed).
pub fn export_shared_state_dict(out: &Path) {
    export_state_dict(shared_run(), out);
}

/// A private copy of the shared run's model (config.json + model.safetensors) to tamper with.
pub fn copy_of_shared_model(dest: &Path) -> PathBuf {
    let src = shared_run();
    std::fs::create_dir_all(dest).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dest.join(f)).unwrap();
    }
    dest.to_path_buf()
}

/// Reads a safetensors file as (name, shape, f32 data), in name order.
pub fn read_tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32);
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, v.shape().to_vec(), data)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes (name, shape, f32 data) tensors as a safetensors file.
pub fn write_tensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    write_tensors_with_metadata(path, tensors, None);
}

/// [`write_tensors`] with string metadata in the header.
pub fn write_tensors_with_metadata(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, &metadata).unwrap()).unwrap();
}

/// Parses a metrics.csv into a header and rows of fields.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

/// metrics.csv without the elapsed_s column (the only one allowed to differ between runs).
pub fn metrics_without_elapsed(run: &Path) -> Vec<Vec<String>> {
    let (header, rows) = read_csv(&run.join("metrics.csv"));
    let e = header
        .iter()
        .position(|h| h == "elapsed_s")
        .expect("metrics.csv has no elapsed_s column");
    let mut out = vec![header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != e)
        .map(|(_, h)| h.clone())
        .collect::<Vec<_>>()];
    for r in rows {
        out.push(
            r.into_iter()
                .enumerate()
                .filter(|(i, _)| *i != e)
                .map(|(_, v)| v)
                .collect(),
        );
    }
    out
}

/// Parses a JSON document printed by the tool.
#[track_caller]
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Language → probability of one `predict --json` object.
pub fn predicted_probabilities<M: FromIterator<(String, f64)>>(v: &serde_json::Value) -> M {
    v["predictions"]
        .as_array()
        .unwrap_or_else(|| panic!("no predictions: {v}"))
        .iter()
        .map(|p| {
            (
                p["category"].as_str().unwrap().to_string(),
                p["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}
