//! The crate's error type. Every message is one line and names the path or URL involved; an
//! I/O failure's cause is its `source()`, so print the chain (anyhow's `{:#}`), not only `{}`.

use std::path::PathBuf;

use crate::checksum::ChecksumMismatch;

/// Everything that can go wrong while locating, fetching, verifying or reading the data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data directory is absent.
    #[error("data directory {} does not exist", .path.display())]
    DirMissing { path: PathBuf },

    /// The data path names something other than a directory.
    #[error("data path {} is not a directory", .path.display())]
    NotADir { path: PathBuf },

    /// Nothing to load: no `*.txt` files.
    #[error("data directory {} contains no *.txt files", .path.display())]
    NoTxtFiles { path: PathBuf },

    /// Any other file-system failure (the cause follows in the error's source chain).
    #[error("cannot read {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A names file is not UTF-8 (e.g. saved as Latin-1).
    #[error("{} is not valid UTF-8 (first invalid byte at offset {offset})", .path.display())]
    NotUtf8 { path: PathBuf, offset: usize },

    /// A names file is empty or whitespace only.
    #[error("{} contains no names", .path.display())]
    EmptyLanguage { path: PathBuf },

    /// A line has no alphabet character left after normalisation.
    #[error("{}:{line}: name is empty after normalisation", .path.display())]
    EmptyName { path: PathBuf, line: usize },

    /// A name longer than [`crate::MAX_NAME_LETTERS`].
    #[error("{}:{line}: name of {letters} letters (at most {} are accepted)", .path.display(), crate::MAX_NAME_LETTERS)]
    NameTooLong {
        path: PathBuf,
        line: usize,
        letters: usize,
    },

    /// A `*.txt` entry that is not a readable file (a directory, a broken link).
    #[error("{} is not a readable file", .path.display())]
    NotAFile { path: PathBuf },

    /// Two files give the same category (e.g. `Irish.txt` and `Irish.old.txt`).
    #[error("{} and {} both map to category {category:?}", .first.display(), .second.display())]
    DuplicateCategory {
        category: String,
        first: PathBuf,
        second: PathBuf,
    },

    /// Files differ from [`crate::OFFICIAL_SHA256`] where that is fatal.
    #[error(
        "{context} does not match the official checksums: {}{}",
        summarise(.mismatches),
        if .hint.is_empty() { String::new() } else { format!(" ({})", .hint) }
    )]
    Verification {
        context: String,
        mismatches: Vec<ChecksumMismatch>,
        /// What the user can do about it; may be empty.
        hint: String,
    },

    /// The cache's data directory is not a usable directory (a file, a broken link).
    #[error("the cached data {} is unusable ({reason}); delete it to download the data again", .path.display())]
    CacheUnusable { path: PathBuf, reason: String },

    /// HTTP status or transport failure.
    #[error("download of {url} failed: {message} (without network access, pass a local copy with --data DIR or SURNAMES_DATA)")]
    Network { url: String, message: String },

    /// The download is not a usable zip (or lacks `data/names/*.txt`).
    #[error("archive from {url} is unusable: {message}")]
    BadArchive { url: String, message: String },

    /// A zip entry would escape the destination (`..`, absolute path).
    #[error("archive from {url} has an entry with an unsafe path: {entry:?}")]
    UnsafeArchivePath { url: String, entry: String },
}

/// Lists the first few mismatches; 18 pairs of full checksums would drown the message.
pub(crate) fn summarise(mismatches: &[ChecksumMismatch]) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = mismatches
        .iter()
        .take(SHOWN)
        .map(|m| m.to_string())
        .collect();
    if mismatches.len() > SHOWN {
        parts.push(format!("and {} more", mismatches.len() - SHOWN));
    }
    parts.join("; ")
}

/// Collapses a foreign error message onto one line.
pub(crate) fn one_line(message: impl std::fmt::Display) -> String {
    message
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
