//! Reading `*.txt` name files into a [`Dataset`] (spec §4.2).

use std::io;
use std::path::{Path, PathBuf};

use crate::alphabet::normalise;
use crate::error::DataError;

/// All names, grouped by language.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dataset {
    /// Language names, sorted alphabetically so that label indices do not depend on the
    /// file system's directory order (the Python tutorial's latent bug).
    pub categories: Vec<String>,
    /// `names[i]`: normalised names of `categories[i]`, in file order, duplicates kept.
    pub names: Vec<Vec<String>>,
}

impl Dataset {
    /// SHA-256 (hex) of the normalised data: every language and its names in order. Two data
    /// directories with the same fingerprint give the same splits; a run records it to notice
    /// being resumed or evaluated on other data.
    pub fn fingerprint(&self) -> String {
        let mut text = String::new();
        for (category, names) in self.categories.iter().zip(&self.names) {
            text.push_str(category);
            text.push('\n');
            for n in names {
                text.push_str(n);
                text.push('\n');
            }
            text.push('\n');
        }
        crate::sha256_hex(text.as_bytes())
    }

    /// Total number of names over all categories.
    pub fn len(&self) -> usize {
        self.names.iter().map(Vec::len).sum()
    }

    /// True when there are no names at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length in characters of the longest name (the longest input sequence).
    pub fn max_name_len(&self) -> usize {
        self.names
            .iter()
            .flatten()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0)
    }

    /// Label index of a category name.
    pub fn category_index(&self, category: &str) -> Option<usize> {
        self.categories.iter().position(|c| c == category)
    }
}

/// A character removed by normalisation while loading, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedChar {
    /// Category (file stem) the name belongs to.
    pub category: String,
    /// 1-based line number in the file.
    pub line: usize,
    /// The removed character.
    pub ch: char,
}

/// Loads every `*.txt` file of `dir` (see [`load_dir_with_report`]).
pub fn load_dir(dir: &Path) -> Result<Dataset, DataError> {
    load_dir_with_report(dir).map(|(ds, _)| ds)
}

/// Loads every `*.txt` file of `dir` like the tutorial does, and also reports the characters
/// normalisation removed.
///
/// Category = file name up to its first `.`. Each file is read as UTF-8, trimmed as a whole,
/// split on `\n`, and every line normalised (no per-line trim, no de-duplication; a trailing
/// `\r` is not in the alphabet and disappears). Hidden files are skipped, as Python's glob does.
pub fn load_dir_with_report(dir: &Path) -> Result<(Dataset, Vec<DroppedChar>), DataError> {
    check_dir(dir)?;
    let files = txt_files(dir)?;
    if files.is_empty() {
        return Err(DataError::NoTxtFiles {
            path: dir.to_path_buf(),
        });
    }

    let mut by_category: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|path| (category_of(&path), path))
        .collect();
    by_category.sort();
    if let Some(w) = by_category.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(DataError::DuplicateCategory {
            category: w[0].0.clone(),
            first: w[0].1.clone(),
            second: w[1].1.clone(),
        });
    }

    let mut ds = Dataset::default();
    let mut dropped = Vec::new();
    for (category, path) in by_category {
        let names = read_names(&path, &category, &mut dropped)?;
        ds.categories.push(category);
        ds.names.push(names);
    }
    Ok((ds, dropped))
}

/// Longest name accepted (the official data's longest has 20 letters; evaluation memory grows
/// with the length).
pub const MAX_NAME_LETTERS: usize = 1000;

/// Reads and normalises one language file.
fn read_names(
    path: &Path,
    category: &str,
    dropped: &mut Vec<DroppedChar>,
) -> Result<Vec<String>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;

    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DataError::EmptyLanguage {
            path: path.to_path_buf(),
        });
    }
    // Line numbers refer to the file, so count the lines the trim removed in front.
    let leading = text[..text.len() - text.trim_start().len()]
        .matches('\n')
        .count();

    let mut names = Vec::new();
    for (i, raw) in trimmed.split('\n').enumerate() {
        let line = leading + i + 1;
        let n = normalise(raw);
        // Spaces are letters of the alphabet, but a line of spaces is not a name.
        if n.text.trim().is_empty() {
            return Err(DataError::EmptyName {
                path: path.to_path_buf(),
                line,
            });
        }
        let letters = n.text.chars().count();
        if letters > MAX_NAME_LETTERS {
            return Err(DataError::NameTooLong {
                path: path.to_path_buf(),
                line,
                letters,
            });
        }
        dropped.extend(n.dropped.into_iter().map(|ch| DroppedChar {
            category: category.to_string(),
            line,
            ch,
        }));
        names.push(n.text);
    }
    Ok(names)
}

/// Category of a data file: its name up to the first `.` (tutorial convention).
fn category_of(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.split_once('.') {
        Some((stem, _)) => stem.to_string(),
        None => name,
    }
}

/// Fails unless `dir` exists and is a directory.
pub(crate) fn check_dir(dir: &Path) -> Result<(), DataError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DataError::NotADir {
            path: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DataError::DirMissing {
            path: dir.to_path_buf(),
        }),
        Err(source) => Err(DataError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Regular (non-hidden) files of `dir` whose name ends in `.txt`, sorted by path.
pub(crate) fn txt_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io_err = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".txt") {
            continue;
        }
        let path = entry.path();
        // Follows symlinks, so a linked data file still counts; a `.txt` that is a directory or
        // a broken link is an error, not a language that silently goes missing.
        if !path.is_file() {
            return Err(DataError::NotAFile { path });
        }
        out.push(path);
    }
    out.sort();
    Ok(out)
}
