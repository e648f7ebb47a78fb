//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The official names directory: `$SURNAMES_DATA` if set, else the workspace's shared copy
/// (relative to this crate, so no machine-specific path is baked in).
pub fn data_dir() -> PathBuf {
    match std::env::var_os("SURNAMES_DATA") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/names"),
    }
}

/// `(file name, bytes)` of every `*.txt` file of the official directory, sorted.
pub fn official_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(data_dir())
        .expect("official data directory (set SURNAMES_DATA)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Writes the official files (optionally one of them altered) into `dir`.
pub fn copy_official(dir: &Path, modify: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, mut bytes) in official_files() {
        if modify == Some(name.as_str()) {
            flip_a_byte(&mut bytes);
        }
        std::fs::write(dir.join(&name), bytes).unwrap();
    }
}

/// Changes one letter so the file still loads but its checksum differs.
pub fn flip_a_byte(bytes: &mut [u8]) {
    bytes[0] ^= 0x20; // toggles ASCII case
}

/// Asserts the usual properties of a user-facing error message.
pub fn assert_one_line(msg: &str) {
    assert!(!msg.is_empty());
    assert!(!msg.contains('\n'), "multi-line message: {msg:?}");
}
