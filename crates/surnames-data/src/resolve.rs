//! Deciding which copy of the data to use: explicit path, environment variable, cache, or a
//! fresh download into the cache.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::checksum::verify_dir;
use crate::download::download_and_unpack;
use crate::error::{summarise, DataError};
use crate::load::check_dir;

/// Environment variable naming a local data directory (used when no explicit path is given).
pub const ENV_VAR: &str = "SURNAMES_DATA";

/// Per-user cache directory for the downloaded data: `<cache dir>/surnames`
/// (e.g. `~/.cache/surnames` on Linux). `None` if the platform has no cache directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("surnames"))
}

/// Where the data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A directory the user pointed to (explicit path or [`ENV_VAR`]).
    Local(PathBuf),
    /// The cache's `names` directory (possibly just downloaded).
    Cached(PathBuf),
}

impl DataSource {
    /// The names directory.
    pub fn path(&self) -> &Path {
        match self {
            DataSource::Local(p) | DataSource::Cached(p) => p,
        }
    }
}

/// Outcome of [`resolve_source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub source: DataSource,
    /// Problems worth telling the user that did not stop us (a modified local copy).
    pub warnings: Vec<String>,
    /// True when the data was downloaded during this call.
    pub downloaded: bool,
}

/// Finds the names directory; see [`resolve_source`]. Returns the directory and the warnings.
pub fn resolve(
    data: Option<&Path>,
    env_var: Option<OsString>,
    cache_dir: &Path,
    url: &str,
    verify: bool,
) -> Result<(PathBuf, Vec<String>), DataError> {
    let r = resolve_source(data, env_var, cache_dir, url, verify)?;
    Ok((r.source.path().to_path_buf(), r.warnings))
}

/// Finds the names directory, in this order:
///
/// 1. `data` (an explicit `--data` path), else
/// 2. `env_var` (the value of [`ENV_VAR`]; an empty value counts as unset), else
/// 3. `cache_dir/names` if it exists, else
/// 4. download `url` into `cache_dir/names`.
///
/// With `verify`, a local directory is checked against the official checksums, but a mismatch
/// is only a warning: the user chose that data deliberately. The cache is ours, so a mismatch
/// there is an error (the message says to delete it to download again); downloads are
/// verified before they are installed. `verify = false` skips all checks.
/// A local path that does not exist is an error; there is no fallback to the cache.
pub fn resolve_source(
    data: Option<&Path>,
    env_var: Option<OsString>,
    cache_dir: &Path,
    url: &str,
    verify: bool,
) -> Result<Resolved, DataError> {
    let local = data
        .map(Path::to_path_buf)
        .or_else(|| env_var.filter(|v| !v.is_empty()).map(PathBuf::from));
    if let Some(dir) = local {
        check_dir(&dir)?;
        let mut warnings = Vec::new();
        // The archive unpacks to data/names/*.txt (and data/eng-fra.txt).
        if dir.join("names").is_dir() {
            warnings.push(format!(
                "{} holds a names/ directory: the language files are probably in {}",
                dir.display(),
                dir.join("names").display()
            ));
        }
        if verify {
            let mismatches = verify_dir(&dir)?;
            if !mismatches.is_empty() {
                warnings.push(format!(
                    "{} differs from the official data, using it anyway: {}",
                    dir.display(),
                    summarise(&mismatches)
                ));
            }
        }
        return Ok(Resolved {
            source: DataSource::Local(dir),
            warnings,
            downloaded: false,
        });
    }

    let cached = cache_dir.join("names");
    if std::fs::symlink_metadata(&cached).is_ok() {
        check_dir(&cached).map_err(|e| {
            // The reason with its causes (an I/O error's is in the source chain).
            let mut reason = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                reason.push_str(&format!(": {c}"));
                cause = c.source();
            }
            DataError::CacheUnusable {
                path: cached.clone(),
                reason,
            }
        })?;
        if verify {
            let mismatches = verify_dir(&cached)?;
            if !mismatches.is_empty() {
                return Err(DataError::Verification {
                    context: format!("cached data in {}", cached.display()),
                    mismatches,
                    hint: "delete that directory to download it again".to_string(),
                });
            }
        }
        return Ok(Resolved {
            source: DataSource::Cached(cached),
            warnings: Vec::new(),
            downloaded: false,
        });
    }

    let names = download_and_unpack(url, cache_dir, verify)?;
    Ok(Resolved {
        source: DataSource::Cached(names),
        warnings: Vec::new(),
        downloaded: true,
    })
}
