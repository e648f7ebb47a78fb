//! Error cases of loading and verification: each must be a clear one-line error, not a panic.

mod common;

use std::fs;

use surnames_data::{load_dir, verify_dir, DataError};

#[test]
fn missing_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nope");
    let err = load_dir(&dir).unwrap_err();
    assert!(matches!(err, DataError::DirMissing { .. }), "{err:?}");
    let msg = err.to_string();
    common::assert_one_line(&msg);
    assert!(
        msg.contains("does not exist") && msg.contains("nope"),
        "{msg}"
    );
    assert!(matches!(
        verify_dir(&dir).unwrap_err(),
        DataError::DirMissing { .. }
    ));
}

#[test]
fn file_instead_of_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("Arabic.txt");
    fs::write(&file, "Khoury\n").unwrap();
    let msg = load_dir(&file).unwrap_err().to_string();
    assert!(
        msg.contains("not a directory") && msg.contains("Arabic.txt"),
        "{msg}"
    );
}

#[test]
fn empty_dir() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("README.md"), "not data").unwrap();
    fs::write(tmp.path().join(".hidden.txt"), "Hidden").unwrap();
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::NoTxtFiles { .. }), "{err:?}");
    let msg = err.to_string();
    common::assert_one_line(&msg);
    assert!(msg.contains("no *.txt files"), "{msg}");
}

#[test]
fn non_utf8_file() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("Czech.txt"), "Abl\n").unwrap();
    fs::write(tmp.path().join("German.txt"), b"Abel\nM\xfcller\n").unwrap(); // Latin-1 ü
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(err, DataError::NotUtf8 { offset: 6, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    common::assert_one_line(&msg);
    assert!(msg.contains("German.txt") && msg.contains("UTF-8"), "{msg}");
}

#[test]
fn empty_language_file() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("Czech.txt"), "Abl\n").unwrap();
    fs::write(tmp.path().join("Greek.txt"), " \n\n\t").unwrap();
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::EmptyLanguage { .. }), "{err:?}");
    let msg = err.to_string();
    common::assert_one_line(&msg);
    assert!(
        msg.contains("Greek.txt") && msg.contains("no names"),
        "{msg}"
    );
}

#[test]
fn name_empty_after_normalisation() {
    let tmp = tempfile::tempdir().unwrap();
    // Line numbers count the blank lines the whole-file trim removed.
    fs::write(tmp.path().join("Polish.txt"), "\n\nAdamczak\nŁ\nZ\n").unwrap();
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(err, DataError::EmptyName { line: 4, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    common::assert_one_line(&msg);
    assert!(
        msg.contains("Polish.txt:4") && msg.contains("empty"),
        "{msg}"
    );
}

/// A line of spaces is not a name; a name over 1,000 letters is refused (evaluation memory
/// grows with the length); a `.txt` that is a directory is an error, not a missing language.
#[test]
fn blank_overlong_and_non_file_entries() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("Polish.txt"), "Adamczak\n   \nZ\n").unwrap();
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(err, DataError::EmptyName { line: 2, .. }),
        "{err:?}"
    );

    fs::write(
        tmp.path().join("Polish.txt"),
        format!("Adamczak\n{}\n", "a".repeat(1001)),
    )
    .unwrap();
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::NameTooLong {
                line: 2,
                letters: 1001,
                ..
            }
        ),
        "{err:?}"
    );
    common::assert_one_line(&err.to_string());

    fs::write(tmp.path().join("Polish.txt"), "Adamczak\n").unwrap();
    fs::create_dir(tmp.path().join("Czech.txt")).unwrap();
    let err = load_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, DataError::NotAFile { .. }), "{err:?}");
    assert!(err.to_string().contains("Czech.txt"), "{err}");
}

#[test]
fn small_dir_loads_like_the_tutorial() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("Zulu.txt"), "Dlamini\r\nNdlovu\r\n").unwrap();
    fs::write(
        tmp.path().join("Korean.names.txt"),
        "\n Ahn\nBaik \nAhn\n\n",
    )
    .unwrap();
    fs::write(tmp.path().join("notes.md"), "ignored").unwrap();
    let ds = load_dir(tmp.path()).unwrap();
    assert_eq!(ds.categories, ["Korean", "Zulu"]);
    assert_eq!(
        ds.names[0],
        ["Ahn", "Baik ", "Ahn"],
        "whole-text trim only, no dedup"
    );
    assert_eq!(ds.names[1], ["Dlamini", "Ndlovu"], "CR vanishes");
}

#[test]
fn duplicate_category() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("Irish.txt"), "Aodh\n").unwrap();
    fs::write(tmp.path().join("Irish.old.txt"), "Brady\n").unwrap();
    let msg = load_dir(tmp.path()).unwrap_err().to_string();
    common::assert_one_line(&msg);
    assert!(msg.contains("Irish"), "{msg}");
}

#[test]
fn verify_reports_modified_missing_and_extra_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("names");
    common::copy_official(&dir, Some("Korean.txt"));
    let m = verify_dir(&dir).unwrap();
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].file, "Korean.txt");
    let official = surnames_data::OFFICIAL_SHA256
        .iter()
        .find(|(f, _)| *f == "Korean.txt")
        .unwrap()
        .1;
    assert_eq!(m[0].expected, official);
    let actual = m[0].actual.clone().unwrap();
    assert_ne!(actual, official);
    let msg = m[0].to_string();
    assert!(msg.contains("Korean.txt") && msg.contains(official) && msg.contains(&actual));

    fs::remove_file(dir.join("Greek.txt")).unwrap();
    fs::write(dir.join("Klingon.txt"), "Worf\n").unwrap();
    let m = verify_dir(&dir).unwrap();
    let files: Vec<&str> = m.iter().map(|m| m.file.as_str()).collect();
    assert_eq!(files, ["Greek.txt", "Klingon.txt", "Korean.txt"]);
    assert!(m[0].is_missing() && m[0].actual.is_none());
    assert!(m[1].is_unexpected());
    // The modified copy still loads: verification and loading are independent.
    assert!(load_dir(&dir).is_ok());
}
