//! Conformance against the vectors made with the real SpikingJelly 2.0.0 + PyTorch.
use std::path::PathBuf;
use surnames::conformance::check_file;

fn golden(name: &str) -> String {
    let dir = std::env::var_os("SURNAMES_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden")
        });
    let path = dir.join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn all_rnn_cases_match_spikingjelly() {
    let reports = check_file(&golden("rnn_cases.json")).unwrap();
    assert_eq!(reports.len(), 41);
    for r in &reports {
        println!("{}", r.line());
    }
    let failed: Vec<_> = reports
        .iter()
        .filter(|r| !r.pass())
        .map(|r| r.line())
        .collect();
    assert!(failed.is_empty(), "failing cases:\n{}", failed.join("\n"));
}

#[test]
fn tutorial_net_matches_spikingjelly_including_adam() {
    let reports = check_file(&golden("tutorial_net_zou.json")).unwrap();
    assert_eq!(reports.len(), 1);
    println!("{}", reports[0].line());
    assert!(reports[0].pass(), "{}", reports[0].line());
}

#[test]
fn a_perturbed_case_fails() {
    // The checker must be able to fail: flip one output spike of a real case.
    let text = golden("rnn_cases.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = &mut v["cases"][0];
    let out = case["output"]["data"].as_array_mut().unwrap();
    out[0] = serde_json::json!(1.0 - out[0].as_f64().unwrap());
    let one = serde_json::json!({"cases": [case.clone()]});
    let reports = check_file(&one.to_string()).unwrap();
    assert!(!reports[0].pass());
    // a malformed case is reported as an error (the file's other cases are still checked),
    // and a malformed file is an error; neither panics
    let r = check_file("{\"cases\": [{\"name\": \"x\"}]}").unwrap();
    assert!(!r[0].pass() && r[0].error.is_some(), "{}", r[0].line());
    assert!(check_file("[1,2]").is_err());
}
