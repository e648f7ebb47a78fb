//! SHA-256 checksums of the official names files, compiled in so that a copy can be checked
//! without trusting anything on disk.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::DataError;
use crate::load::{check_dir, txt_files};

/// `(file name, lowercase hex SHA-256)` of the 18 files in PyTorch's `data.zip` (`data/names/`).
pub const OFFICIAL_SHA256: &[(&str, &str)] = &[
    (
        "Arabic.txt",
        "6f424a8dbe51cbbbabab7a57d38b617210125e4e3991f3c657cb79b8f104bafc",
    ),
    (
        "Chinese.txt",
        "49263ef55a8cb1740e841d65cad8214b2f9b5b869bc534c811746422496fa91e",
    ),
    (
        "Czech.txt",
        "145bbbd6d0816578f03388e92c264d39ef1c60df920b081d371fa5c5cc055a8e",
    ),
    (
        "Dutch.txt",
        "924f32b635170eae561f84538632138fc07d4c8bbd70ba3fb980de1ecc4d2af3",
    ),
    (
        "English.txt",
        "9cca037066d3d5989e24bc01801416162de506b5e28e15b7c092a47905d29bf2",
    ),
    (
        "French.txt",
        "81e65b36c60ed5b89a17422f6edcadbb89546f38ad69e960e64e7ba682012a95",
    ),
    (
        "German.txt",
        "7449cd590b97a733e18d613a4155decd77ec35dc5f8aadd7a82204dce4f051db",
    ),
    (
        "Greek.txt",
        "3555b5186de7f401e6d991b088e9e644ca3099116477818c25ab5793801389e6",
    ),
    (
        "Irish.txt",
        "cf8c7013256252a88d2503127b87282a11f21b2ff6db1bded68834c19a1ec058",
    ),
    (
        "Italian.txt",
        "f88414c27d0606a11a678b4859277828c2565d6cc4d9ee932deef6e94f3b35e4",
    ),
    (
        "Japanese.txt",
        "e0e717e114fec3e7eade4d9dabe0067c475f43147e36a22b47902ee76ad9e67f",
    ),
    (
        "Korean.txt",
        "cd54221ccb362a6cba4c78828838cf3268a0e59744767a37cf6ec4b74036b136",
    ),
    (
        "Polish.txt",
        "45bab898af2f60ed3a728bbf6980e28821011a7caa53227553b5785903a40826",
    ),
    (
        "Portuguese.txt",
        "50a8735f41f4f73757c8ce5b16cb0275cd86b2b214bcbc8c9805f508cb131c53",
    ),
    (
        "Russian.txt",
        "43b3e64ce351f77f1ac9e0cdf7566012d127f4371875fd25208845b5c9d6f7c3",
    ),
    (
        "Scottish.txt",
        "78d0252711d87d948ea86fe34826c51d2d794a8e52d15b5d6f7b6244d45d62dd",
    ),
    (
        "Spanish.txt",
        "1bcb462ed3316756a85781d68232bddae04498fdddd5d9219c53fd1fbdeba7a7",
    ),
    (
        "Vietnamese.txt",
        "f3f9e4164ab47601178a6e45b216464a64122f49d05541f24bf18a757253281d",
    ),
];

/// One file whose content differs from the official copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumMismatch {
    /// File name (no directory), e.g. `Arabic.txt`.
    pub file: String,
    /// Official checksum; empty when the file is not part of the official set.
    pub expected: String,
    /// Checksum found; `None` when the file is missing.
    pub actual: Option<String>,
}

impl ChecksumMismatch {
    /// True for a `*.txt` file that the official data set does not have.
    pub fn is_unexpected(&self) -> bool {
        self.expected.is_empty()
    }

    /// True for an official file that is absent.
    pub fn is_missing(&self) -> bool {
        self.actual.is_none()
    }
}

impl fmt::Display for ChecksumMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.actual {
            None => write!(
                f,
                "{}: missing (expected sha256 {})",
                self.file, self.expected
            ),
            Some(actual) if self.is_unexpected() => {
                write!(f, "{}: unexpected file (sha256 {actual})", self.file)
            }
            Some(actual) => write!(
                f,
                "{}: expected sha256 {}, got {actual}",
                self.file, self.expected
            ),
        }
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    hex
}

/// Official checksum of `file`, if it is one of the official files.
pub(crate) fn official_sha256(file: &str) -> Option<&'static str> {
    OFFICIAL_SHA256
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, hex)| *hex)
}

/// Compares a set of `(file name, actual checksum)` pairs with [`OFFICIAL_SHA256`]; missing
/// official files and extra files are both reported. Sorted by file name.
pub(crate) fn compare(found: &[(String, String)]) -> Vec<ChecksumMismatch> {
    let mut out = Vec::new();
    for (file, expected) in OFFICIAL_SHA256 {
        let actual = found.iter().find(|(f, _)| f == file).map(|(_, h)| h);
        if actual.map(String::as_str) != Some(*expected) {
            out.push(ChecksumMismatch {
                file: (*file).to_string(),
                expected: (*expected).to_string(),
                actual: actual.cloned(),
            });
        }
    }
    for (file, actual) in found {
        if official_sha256(file).is_none() {
            out.push(ChecksumMismatch {
                file: file.clone(),
                expected: String::new(),
                actual: Some(actual.clone()),
            });
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// Checks the `*.txt` files of `dir` against [`OFFICIAL_SHA256`].
///
/// Returns the mismatches (empty = identical to the official copy); an error only when the
/// directory itself cannot be read. Other files (README etc.) are ignored because
/// [`crate::load_dir`] ignores them too.
pub fn verify_dir(dir: &Path) -> Result<Vec<ChecksumMismatch>, DataError> {
    check_dir(dir)?;
    let mut found = Vec::new();
    for path in txt_files(dir)? {
        let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.push((file, sha256_hex(&bytes)));
    }
    Ok(compare(&found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_well_formed() {
        assert_eq!(OFFICIAL_SHA256.len(), 18);
        for (file, hex) in OFFICIAL_SHA256 {
            assert!(file.ends_with(".txt"));
            assert_eq!(hex.len(), 64);
            assert!(hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
