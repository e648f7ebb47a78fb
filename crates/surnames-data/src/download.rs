//! Fetching PyTorch's `data.zip` and unpacking its `data/names/*.txt` files atomically.

use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zip::ZipArchive;

use crate::checksum::verify_dir;
use crate::error::{one_line, DataError};

/// Where the PyTorch tutorial (and SpikingJelly's example) get the names data.
pub const OFFICIAL_URL: &str = "https://download.pytorch.org/tutorial/data.zip";

/// The official archive is about 2.9 MB; anything far larger is not what we asked for.
const MAX_ARCHIVE_BYTES: u64 = 64 << 20;
/// The largest names file is 86 kB; the cap stops decompression bombs.
const MAX_ENTRY_BYTES: u64 = 16 << 20;

/// Downloads the zip at `url` and installs its `data/names/*.txt` files as `dest/names/`.
///
/// The files are first written to a temporary directory inside `dest`; with `verify` every
/// file must match [`crate::OFFICIAL_SHA256`] (no file missing, none extra). Only then is the
/// directory renamed to `dest/names` (replacing an existing one), so a failed or interrupted
/// run never leaves a partial or unverified `names` directory. Returns `dest/names`.
pub fn download_and_unpack(url: &str, dest: &Path, verify: bool) -> Result<PathBuf, DataError> {
    remove_stale_staging(dest);
    let bytes = fetch(url)?;
    unpack_archive(&bytes, url, dest, verify)
}

/// The proxy for `url` from the environment, as curl reads it: `https_proxy`/`HTTPS_PROXY` for
/// https (`http_proxy`/`HTTP_PROXY` for http), else `all_proxy`/`ALL_PROXY`; none for a host
/// listed in `no_proxy`/`NO_PROXY` (comma-separated names or domain suffixes, `*` = all) or a
/// loopback host. SOCKS proxies are not supported and are ignored. (ureq's own reading of the
/// environment ignores `NO_PROXY` and the scheme, so it is done here.)
fn proxy_for(url: &str, var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let get = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| var(n).filter(|v| !v.trim().is_empty()))
    };
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(h) = host_port.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    }
    .to_ascii_lowercase();
    if host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return None;
    }
    if let Some(no) = get(&["no_proxy", "NO_PROXY"]) {
        let listed = no
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .any(|e| {
                let e = e.trim_start_matches('.').to_ascii_lowercase();
                e == "*" || host == e || host.ends_with(&format!(".{e}"))
            });
        if listed {
            return None;
        }
    }
    let proxy = match scheme {
        "https" => get(&["https_proxy", "HTTPS_PROXY"]),
        _ => get(&["http_proxy", "HTTP_PROXY"]),
    }
    .or_else(|| get(&["all_proxy", "ALL_PROXY"]))?;
    (!proxy.to_ascii_lowercase().starts_with("socks")).then_some(proxy)
}

/// Removes the staging directories (`.names.partial-<pid>-…`, `.names.old-<pid>-…`) that a
/// killed download left in `dest`: older than an hour, and process `<pid>` no longer runs here.
/// (The age keeps a download of another machine or container sharing the cache safe.) Where
/// the process cannot be looked up (no `/proc`), nothing is removed.
fn remove_stale_staging(dest: &Path) {
    let proc = Path::new("/proc");
    let Ok(entries) = fs::read_dir(dest) else {
        return;
    };
    if !proc.join("self").exists() {
        return;
    }
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name
            .strip_prefix(".names.partial-")
            .or_else(|| name.strip_prefix(".names.old-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().filter(|p| p.parse::<u32>().is_ok()) else {
            continue;
        };
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old && !proc.join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// GETs `url` into memory, with timeouts so a stalled server cannot hang training start-up.
fn fetch(url: &str) -> Result<Vec<u8>, DataError> {
    let network = |message: String| DataError::Network {
        url: url.to_string(),
        message,
    };
    let mut builder = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("surnames-data/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = proxy_for(url, |k| std::env::var(k).ok()) {
        // ureq takes lowercase `http://` (or no scheme) only. Messages never show credentials.
        let (scheme, rest) = p.split_once("://").unwrap_or(("http", p.as_str()));
        let shown = format!("{scheme}://{}", rest.rsplit('@').next().unwrap_or(""));
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(network(format!(
                "proxy {shown}: only http:// proxies are supported"
            )));
        }
        let proxy = ureq::Proxy::new(format!("http://{rest}"))
            .map_err(|e| network(format!("proxy {shown}: {}", one_line(e))))?;
        builder = builder.proxy(proxy);
    }
    let agent = builder.build();
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Status(code, response) => {
            network(format!("HTTP {code} {}", one_line(response.status_text())))
        }
        ureq::Error::Transport(t) => network(one_line(t)),
    })?;
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_ARCHIVE_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| network(one_line(e)))?;
    if body.len() as u64 > MAX_ARCHIVE_BYTES {
        return Err(network(format!(
            "response is larger than {} MiB",
            MAX_ARCHIVE_BYTES >> 20
        )));
    }
    Ok(body)
}

/// Installs the `data/names/*.txt` entries of an in-memory zip as `dest/names/`, exactly as
/// [`download_and_unpack`] does after downloading; `origin` (URL or file name) only appears in
/// error messages. Useful when the archive was fetched by other means.
pub fn unpack_archive(
    zip_bytes: &[u8],
    origin: &str,
    dest: &Path,
    verify: bool,
) -> Result<PathBuf, DataError> {
    let files = names_entries(zip_bytes, origin)?;

    fs::create_dir_all(dest).map_err(|source| DataError::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    let staging = TempDir::create(dest, "partial")?;
    for (file, content) in &files {
        let path = staging.path().join(file);
        fs::write(&path, content).map_err(|source| DataError::Io { path, source })?;
    }
    if verify {
        let mismatches = verify_dir(staging.path())?;
        if !mismatches.is_empty() {
            return Err(DataError::Verification {
                context: format!("data from {origin}"),
                mismatches,
                hint: String::new(),
            });
        }
    }
    let target = dest.join("names");
    install(staging, &target)?;
    Ok(target)
}

/// Reads the `data/names/*.txt` entries of the zip as `(file name, content)` pairs.
///
/// Every entry name is checked for path traversal, even the ones not extracted: an archive
/// containing such an entry is not the official one.
fn names_entries(zip_bytes: &[u8], origin: &str) -> Result<Vec<(String, Vec<u8>)>, DataError> {
    let bad = |message: String| DataError::BadArchive {
        url: origin.to_string(),
        message,
    };
    let mut archive = ZipArchive::new(Cursor::new(zip_bytes)).map_err(|e| bad(one_line(e)))?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..archive.len() {
        let entry = archive.by_index(i).map_err(|e| bad(one_line(e)))?;
        let name = entry.name().to_string();
        let components = match safe_components(&name) {
            Some(c) if entry.enclosed_name().is_some() => c,
            _ => {
                return Err(DataError::UnsafeArchivePath {
                    url: origin.to_string(),
                    entry: name,
                })
            }
        };
        let file = match components.as_slice() {
            ["data", "names", file]
                if !entry.is_dir() && file.ends_with(".txt") && !file.starts_with('.') =>
            {
                (*file).to_string()
            }
            _ => continue,
        };
        if files.iter().any(|(f, _)| *f == file) {
            return Err(bad(format!("duplicate entry {name:?}")));
        }
        let mut content = Vec::new();
        entry
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_end(&mut content)
            .map_err(|e| bad(format!("cannot extract {name:?}: {}", one_line(e))))?;
        if content.len() as u64 > MAX_ENTRY_BYTES {
            return Err(bad(format!(
                "entry {name:?} is larger than {} MiB",
                MAX_ENTRY_BYTES >> 20
            )));
        }
        files.push((file, content));
    }
    if files.is_empty() {
        return Err(bad("no data/names/*.txt entries".to_string()));
    }
    Ok(files)
}

/// Splits a zip entry name into components, or `None` if it could escape the destination:
/// absolute paths, `..`, drive prefixes, NUL bytes. Backslashes count as separators because
/// some Windows tools write them.
fn safe_components(name: &str) -> Option<Vec<&str>> {
    if name.contains('\0') || name.starts_with('/') || name.starts_with('\\') {
        return None;
    }
    let parts: Vec<&str> = name
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.iter().any(|p| *p == ".." || p.contains(':')) {
        return None;
    }
    Some(parts)
}

/// Moves `staging` to `target`, replacing an existing `target` as a unit: the old directory is
/// first renamed aside, and put back if the final rename fails.
fn install(staging: TempDir, target: &Path) -> Result<(), DataError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    let parent = target.parent().unwrap_or(Path::new("."));
    let old = match fs::symlink_metadata(target) {
        Ok(_) => {
            let aside = unique_name(parent, "old");
            fs::rename(target, &aside).map_err(io_err(target))?;
            Some(aside)
        }
        Err(_) => None,
    };
    if let Err(source) = fs::rename(staging.path(), target) {
        if let Some(aside) = &old {
            let _ = fs::rename(aside, target);
        }
        return Err(DataError::Io {
            path: target.to_path_buf(),
            source,
        });
    }
    staging.keep();
    if let Some(aside) = old {
        // The old copy is only a leftover now; failing to delete it is harmless.
        if fs::remove_dir_all(&aside).is_err() {
            let _ = fs::remove_file(&aside);
        }
    }
    Ok(())
}

/// A fresh, unused sibling name: pid, time and a counter keep concurrent runs apart.
fn unique_name(parent: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent.join(format!(".names.{tag}-{}-{nanos}-{n}", std::process::id()))
}

/// A staging directory that is deleted on drop unless [`TempDir::keep`] is called, so every
/// error path cleans up.
struct TempDir(Option<PathBuf>);

impl TempDir {
    fn create(parent: &Path, tag: &str) -> Result<Self, DataError> {
        let path = unique_name(parent, tag);
        fs::create_dir(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self(Some(path)))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_dir_all(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{proxy_for, safe_components};

    #[test]
    fn traversal_is_rejected() {
        assert_eq!(
            safe_components("data/names/Arabic.txt"),
            Some(vec!["data", "names", "Arabic.txt"])
        );
        assert_eq!(
            safe_components("./data//names/"),
            Some(vec!["data", "names"])
        );
        for bad in [
            "../x.txt",
            "data/../../x.txt",
            "/etc/passwd",
            "\\x",
            "C:\\x.txt",
            "data\\..\\..\\x",
            "a\0b",
        ] {
            assert_eq!(safe_components(bad), None, "{bad:?}");
        }
    }

    /// Scheme-specific variables first, then ALL_PROXY; NO_PROXY suffixes and loopback hosts
    /// bypass; SOCKS is ignored.
    #[test]
    fn proxy_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let url = "https://download.pytorch.org/tutorial/data.zip";
        let p = |pairs: &'static [(&'static str, &'static str)], u: &str| proxy_for(u, env(pairs));
        assert_eq!(p(&[], url), None);
        assert_eq!(
            p(&[("HTTPS_PROXY", "http://p:3128")], url).as_deref(),
            Some("http://p:3128")
        );
        assert_eq!(p(&[("HTTP_PROXY", "http://p:1")], url), None);
        assert_eq!(
            p(&[("ALL_PROXY", "http://a:1")], url).as_deref(),
            Some("http://a:1")
        );
        assert_eq!(
            p(
                &[("https_proxy", "http://s:1"), ("ALL_PROXY", "http://a:1")],
                url
            )
            .as_deref(),
            Some("http://s:1")
        );
        assert_eq!(
            p(
                &[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "pytorch.org")],
                url
            ),
            None
        );
        assert_eq!(
            p(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "*")], url),
            None
        );
        assert_eq!(p(&[("ALL_PROXY", "socks5://s:1080")], url), None);
        assert_eq!(
            p(
                &[("ALL_PROXY", "http://a:1")],
                "http://127.0.0.1:8080/x.zip"
            ),
            None
        );
        assert_eq!(
            p(&[("ALL_PROXY", "http://a:1")], "http://localhost/x.zip"),
            None
        );
    }
}
