//! Download, unpack and resolve against a tiny local HTTP server (never the internet).

mod common;

use std::ffi::OsString;
use std::io::{Cursor, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use surnames_data::{
    download_and_unpack, load_dir, resolve, resolve_source, verify_dir, DataError, DataSource,
};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// Serves `body` for `GET /data.zip` and 404 for anything else, on 127.0.0.1, for at most
/// `max_requests` connections; returns the base URL (`http://127.0.0.1:port`).
fn serve(body: Vec<u8>, max_requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for _ in 0..max_requests {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 << 10 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let first_line = String::from_utf8_lossy(&request)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let (status, payload): (&str, &[u8]) = if first_line.starts_with("GET /data.zip ") {
                ("200 OK", &body)
            } else {
                ("404 Not Found", b"not here")
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/zip\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(payload);
            let _ = stream.flush();
        }
    });
    base
}

/// A `data.zip` like PyTorch's: `data/names/*.txt` plus an unrelated file, optionally with
/// one names file altered and extra raw entries.
fn names_zip(modify: Option<&str>, extra: &[&str]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    zip.add_directory("data/", opts).unwrap();
    zip.add_directory("data/names/", opts).unwrap();
    zip.start_file("data/eng-fra.txt", opts).unwrap();
    zip.write_all(b"Go.\tVa !\n").unwrap();
    for (name, mut bytes) in common::official_files() {
        if modify == Some(name.as_str()) {
            common::flip_a_byte(&mut bytes);
        }
        zip.start_file(format!("data/names/{name}"), opts).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    for name in extra {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(b"Evil\n").unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Names of the entries of `dir` (to check nothing was left behind).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn download_unpacks_and_verifies() {
    let base = serve(names_zip(None, &[]), 4);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("{base}/data.zip");
    let names = download_and_unpack(&url, tmp.path(), true).unwrap();
    assert_eq!(names, tmp.path().join("names"));
    assert_eq!(
        listing(tmp.path()),
        ["names"],
        "no temp dirs, no eng-fra.txt"
    );
    assert!(verify_dir(&names).unwrap().is_empty());
    assert_eq!(load_dir(&names).unwrap().len(), 20074);

    // A second download replaces the directory in place.
    let again = download_and_unpack(&url, tmp.path(), true).unwrap();
    assert_eq!(again, names);
    assert_eq!(listing(tmp.path()), ["names"]);
    assert_eq!(listing(&names).len(), 18);
}

#[test]
fn modified_archive_fails_verification_and_leaves_nothing() {
    let base = serve(names_zip(Some("Scottish.txt"), &[]), 4);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("{base}/data.zip");
    let err = download_and_unpack(&url, tmp.path(), true).unwrap_err();
    let DataError::Verification { mismatches, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(mismatches.len(), 1);
    assert_eq!(mismatches[0].file, "Scottish.txt");
    let msg = err.to_string();
    common::assert_one_line(&msg);
    assert!(msg.contains("Scottish.txt"), "{msg}");
    assert!(msg.contains(&mismatches[0].expected), "{msg}");
    assert!(
        msg.contains(mismatches[0].actual.as_deref().unwrap()),
        "{msg}"
    );
    assert!(msg.contains(&base), "{msg}");
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));

    // Without verification the same archive is accepted.
    let names = download_and_unpack(&url, tmp.path(), false).unwrap();
    assert_eq!(verify_dir(&names).unwrap().len(), 1);
}

#[test]
fn failed_download_keeps_the_existing_copy() {
    let base = serve(names_zip(Some("Dutch.txt"), &[]), 2);
    let tmp = tempfile::tempdir().unwrap();
    common::copy_official(&tmp.path().join("names"), None);
    assert!(download_and_unpack(&format!("{base}/data.zip"), tmp.path(), true).is_err());
    assert_eq!(listing(tmp.path()), ["names"]);
    assert!(verify_dir(&tmp.path().join("names")).unwrap().is_empty());
}

#[test]
fn http_404_is_a_network_error() {
    let base = serve(Vec::new(), 2);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("{base}/missing.zip");
    let err = download_and_unpack(&url, tmp.path(), true).unwrap_err();
    assert!(matches!(err, DataError::Network { .. }), "{err:?}");
    let msg = err.to_string();
    common::assert_one_line(&msg);
    assert!(msg.contains(&url) && msg.contains("404"), "{msg}");
    assert!(!tmp.path().join("names").exists());
}

#[test]
fn connection_refused_is_a_network_error() {
    // Bind then drop, so nothing listens on the port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/data.zip");
    let tmp = tempfile::tempdir().unwrap();
    let err = download_and_unpack(&url, tmp.path(), true).unwrap_err();
    assert!(matches!(err, DataError::Network { .. }), "{err:?}");
    let msg = err.to_string();
    common::assert_one_line(&msg);
    assert!(msg.contains(&url), "{msg}");
}

#[test]
fn not_a_zip() {
    let base = serve(b"<html>surprise</html>".to_vec(), 2);
    let tmp = tempfile::tempdir().unwrap();
    let err = download_and_unpack(&format!("{base}/data.zip"), tmp.path(), true).unwrap_err();
    assert!(matches!(err, DataError::BadArchive { .. }), "{err:?}");
    common::assert_one_line(&err.to_string());
    assert!(listing(tmp.path()).is_empty());
}

#[test]
fn path_traversal_is_rejected() {
    let base = serve(names_zip(None, &["data/names/../../../evil.txt"]), 2);
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("a").join("b");
    let err = download_and_unpack(&format!("{base}/data.zip"), &dest, false).unwrap_err();
    assert!(
        matches!(err, DataError::UnsafeArchivePath { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    common::assert_one_line(&msg);
    assert!(msg.contains("evil.txt"), "{msg}");
    assert!(!outer.path().join("evil.txt").exists());
    assert!(!dest.join("names").exists());
}

#[test]
fn resolve_prefers_explicit_then_env_then_cache_then_download() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let local = tmp.path().join("local");
    common::copy_official(&local, Some("Irish.txt"));
    let unreachable = "http://127.0.0.1:9/data.zip";

    // Explicit path wins; a modified local copy is only a warning.
    let r = resolve_source(Some(&local), None, &cache, unreachable, true).unwrap();
    assert_eq!(r.source, DataSource::Local(local.clone()));
    assert_eq!(r.warnings.len(), 1);
    assert!(r.warnings[0].contains("Irish.txt"), "{:?}", r.warnings);
    let official = common::data_dir();
    let env = Some(OsString::from(&local));
    let (p, w) = resolve(Some(&official), env.clone(), &cache, unreachable, true).unwrap();
    assert_eq!((p, w.len()), (official.clone(), 0));

    // Then the environment variable; an empty one counts as unset.
    let (p, w) = resolve(None, env, &cache, unreachable, false).unwrap();
    assert_eq!((p, w.len()), (local.clone(), 0), "verify=false: no warning");

    // A missing explicit directory is an error, not a silent fallback.
    let err = resolve(
        Some(&tmp.path().join("nope")),
        None,
        &cache,
        unreachable,
        true,
    );
    assert!(matches!(err, Err(DataError::DirMissing { .. })));

    // No cache yet: download into it.
    let base = serve(names_zip(None, &[]), 2);
    let url = format!("{base}/data.zip");
    let r = resolve_source(None, Some(OsString::new()), &cache, &url, true).unwrap();
    assert_eq!(r.source, DataSource::Cached(cache.join("names")));
    assert!(r.downloaded && r.warnings.is_empty());

    // Now the cache is used without the network.
    let r = resolve_source(None, None, &cache, unreachable, true).unwrap();
    assert_eq!(r.source, DataSource::Cached(cache.join("names")));
    assert!(!r.downloaded);

    // A tampered cache is an error unless verification is off.
    let irish = cache.join("names").join("Irish.txt");
    let mut bytes = std::fs::read(&irish).unwrap();
    common::flip_a_byte(&mut bytes);
    std::fs::write(&irish, bytes).unwrap();
    let err = resolve(None, None, &cache, unreachable, true).unwrap_err();
    let msg = err.to_string();
    common::assert_one_line(&msg);
    assert!(msg.contains("Irish.txt") && msg.contains("delete"), "{msg}");
    let (p, _) = resolve(None, None, &cache, unreachable, false).unwrap();
    assert_eq!(p, cache.join("names"));
}

#[test]
fn default_cache_dir_ends_in_surnames() {
    if let Some(dir) = surnames_data::default_cache_dir() {
        assert!(dir.ends_with("surnames"));
    }
}

/// A cached `names` that is not a directory (a file, a broken link) is an error that says to
/// delete it; staging directories of a killed download are removed by the next one; a `--data`
/// directory holding `names/` (the unzipped archive's top) gets a hint.
#[test]
fn damaged_cache_and_leftovers() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("names"), "not a directory").unwrap();
    let Err(err) = resolve_source(None, None, tmp.path(), "http://127.0.0.1:9/x.zip", true) else {
        panic!("a file as the cached data must be an error");
    };
    assert!(matches!(err, DataError::CacheUnusable { .. }), "{err:?}");
    assert!(err.to_string().contains("delete it"), "{err}");

    // No process has pid 999999999 (Linux caps pids far lower); one stale directory is two
    // hours old, the other as fresh as a download of another machine sharing the cache.
    let stale = tmp.path().join(".names.partial-999999999-1-0");
    std::fs::create_dir(&stale).unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let fresh = tmp.path().join(".names.old-999999999-2-0");
    std::fs::create_dir(&fresh).unwrap();
    let live = tmp
        .path()
        .join(format!(".names.partial-{}-1-0", std::process::id()));
    std::fs::create_dir(&live).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _ = download_and_unpack(&format!("http://127.0.0.1:{port}/x.zip"), tmp.path(), true);
    if Path::new("/proc/self").exists() {
        assert!(
            !stale.exists(),
            "the dead download's staging directory is still there"
        );
    }
    assert!(
        live.exists(),
        "a running download's staging directory was removed"
    );
    assert!(fresh.exists(), "a recent staging directory was removed");

    let top = tmp.path().join("data");
    std::fs::create_dir_all(top.join("names")).unwrap();
    let r = resolve_source(
        Some(&top),
        None,
        tmp.path(),
        "http://127.0.0.1:9/x.zip",
        false,
    )
    .unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("names/ directory")),
        "{:?}",
        r.warnings
    );
}
