//! `surnames conformance`: the reference vectors pass, a perturbed copy fails, a malformed file
//! is a one-line error.
mod cli_common;
use cli_common::*;

/// All 41 golden RNN cases print PASS and the summary line; exit code 0.
#[test]
fn golden_rnn_cases_all_pass() {
    let file = golden_dir().join("rnn_cases.json");
    let out = ok(&run(&["conformance".as_ref(), file.as_os_str()]));
    let pass = out
        .lines()
        .filter(|l| l.trim_end().ends_with("PASS"))
        .count();
    let fail = out
        .lines()
        .filter(|l| l.trim_end().ends_with("FAIL"))
        .count();
    assert_eq!(pass, 41, "{out}");
    assert_eq!(fail, 0, "{out}");
    assert!(
        out.lines().any(|l| l.trim() == "41 passed, 0 failed"),
        "no summary line:\n{out}"
    );
}

/// A copy with one output spike flipped: non-zero exit and a FAIL line for that case.
#[test]
fn flipped_output_value_fails() {
    let text = std::fs::read_to_string(golden_dir().join("rnn_cases.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = &mut v["cases"][0];
    let name = case["name"].as_str().unwrap().to_string();
    let out = case["output"]["data"].as_array_mut().unwrap();
    out[0] = serde_json::json!(1.0 - out[0].as_f64().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flipped.json");
    std::fs::write(&file, v.to_string()).unwrap();

    let o = run(&["conformance".as_ref(), file.as_os_str()]);
    assert!(!o.status.success(), "{}", describe(&o));
    let s = stdout(&o);
    let fails: Vec<&str> = s
        .lines()
        .filter(|l| l.trim_end().ends_with("FAIL"))
        .collect();
    assert_eq!(fails.len(), 1, "{}", describe(&o));
    assert!(fails[0].starts_with(&name), "{}", describe(&o));
    assert!(s.contains("40 passed, 1 failed"), "{}", describe(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", describe(&o));
}

/// Malformed input (not JSON, wrong schema, missing fields): non-zero exit, one-line error.
#[test]
fn malformed_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    for (i, text) in [
        "{not json",
        "[1, 2]",
        r#"{"cases": []}"#,
        r#"{"cases": [{"name": "x"}]}"#,
        r#"{"cases": [{"name": "x", "model": "SpikingLSTM", "input_size": 5}]}"#,
    ]
    .iter()
    .enumerate()
    {
        let file = dir.path().join(format!("bad{i}.json"));
        std::fs::write(&file, text).unwrap();
        let o = run(&["conformance".as_ref(), file.as_os_str()]);
        one_line_error(&o);
    }
    // and a file that does not exist
    let o = run(&["conformance", "/nonexistent/cases.json"]);
    one_line_error(&o);
}

/// An unusable file or a malformed case is reported, and everything else is still checked:
/// the summary counts the good cases and the exit code is non-zero.
#[test]
fn bad_file_or_case_does_not_hide_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"x": 1}"#).unwrap();
    let zou = golden_dir().join("tutorial_net_zou.json");
    let o = run(&["conformance".as_ref(), bad.as_os_str(), zou.as_os_str()]);
    assert!(!o.status.success(), "{}", describe(&o));
    let s = stdout(&o);
    assert!(s.contains("ERROR"), "{s}");
    assert!(s.contains("1 passed, 0 failed, 1 file(s) unusable"), "{s}");
    one_line_error(&o);

    let text = std::fs::read_to_string(golden_dir().join("rnn_cases.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cases"][5].as_object_mut().unwrap().remove("model");
    let file = dir.path().join("one_bad_case.json");
    std::fs::write(&file, v.to_string()).unwrap();
    let o = run(&["conformance".as_ref(), file.as_os_str()]);
    let s = stdout(&o);
    assert!(s.contains("40 passed, 1 failed"), "{s}");
    assert!(s.lines().any(|l| l.contains("ERROR")), "{s}");
    one_line_error(&o);
}

/// A case without the reference data of a group fails and names the group: a case must not
/// pass on what it did not check.
#[test]
fn missing_reference_group_fails() {
    let text = std::fs::read_to_string(golden_dir().join("rnn_cases.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = v["cases"][0].as_object_mut().unwrap();
    for key in ["loss_out", "loss_full", "grads_loss_out", "grads_loss_full"] {
        case.remove(key);
    }
    v["cases"] = serde_json::json!([v["cases"][0].clone()]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nograds.json");
    std::fs::write(&file, v.to_string()).unwrap();
    let o = run(&["conformance".as_ref(), file.as_os_str()]);
    assert!(!o.status.success(), "{}", describe(&o));
    let s = stdout(&o);
    assert!(s.contains("param_grads=missing!"), "{s}");
    assert!(s.contains("0 passed, 1 failed"), "{s}");
}

/// Crafted shapes and sizes are one-line errors, not panics or allocation failures.
#[test]
fn crafted_shapes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(golden_dir().join("tutorial_net_zou.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut empty_input = v.clone();
    empty_input["case"]["input"] = serde_json::json!({"shape": [0, 1, 0], "data": []});
    let mut flat_weight = v.clone();
    let w = &mut flat_weight["case"]["params"]["lstm.cells.0.linear_ih.weight"];
    let n = w["data"].as_array().unwrap().len();
    w["shape"] = serde_json::json!([n]);
    let rnn = std::fs::read_to_string(golden_dir().join("rnn_cases.json")).unwrap();
    let mut huge: serde_json::Value = serde_json::from_str(&rnn).unwrap();
    huge["cases"][0]["hidden_size"] = serde_json::json!(1_000_000_000_000u64);
    for (i, case) in [empty_input, flat_weight, huge].iter().enumerate() {
        let file = dir.path().join(format!("crafted{i}.json"));
        std::fs::write(&file, case.to_string()).unwrap();
        one_line_error(&run(&["conformance".as_ref(), file.as_os_str()]));
    }
}
