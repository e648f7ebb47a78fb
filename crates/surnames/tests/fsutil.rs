//! Atomic writes: content is replaced whole or not at all, errors name the path, and no
//! temporary files survive a failure.

use std::fs;
use std::io;
use std::path::Path;

use surnames::fsutil::{write_atomic, write_atomic_with};

/// Names of all entries in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The error a full disk produces, as the OS reports it where we can.
fn enospc() -> io::Error {
    #[cfg(target_os = "linux")]
    return io::Error::from_raw_os_error(28);
    #[cfg(not(target_os = "linux"))]
    return io::Error::other("No space left on device");
}

#[test]
fn creates_and_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.bin");
    write_atomic(&path, b"a much longer first version of the file").unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        b"a much longer first version of the file"
    );
    write_atomic(&path, b"short").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"short");
    write_atomic(&path, b"").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"");
    assert_eq!(entries(dir.path()), vec!["out.bin"]);
}

#[test]
fn streaming_writer_writes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    write_atomic_with(&path, |w| {
        for i in 0..100_000u32 {
            writeln!(w, "{i}")?;
        }
        Ok(())
    })
    .unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 100_000);
    assert_eq!(text.lines().last(), Some("99999"));
    assert_eq!(entries(dir.path()), vec!["big.txt"]);
}

#[test]
fn missing_directory_fails_with_path_in_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("f.npy");
    let e = write_atomic(&path, b"x").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.starts_with("cannot write "), "{msg}");
    assert!(!path.exists());
}

#[test]
fn path_without_file_name_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("..");
    let e = write_atomic(&path, b"x").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains(&path.display().to_string()));
}

#[test]
fn failing_writer_keeps_old_file_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("avg_losses.npy");
    write_atomic(&path, b"old content").unwrap();

    // Simulates the disk filling up halfway through a large write.
    let e = write_atomic_with(&path, |w| {
        w.write_all(&vec![7u8; 100_000])?;
        Err(enospc())
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    #[cfg(target_os = "linux")]
    assert!(msg.contains("No space left on device"), "{msg}");
    assert_eq!(e.kind(), enospc().kind());

    assert_eq!(fs::read(&path).unwrap(), b"old content");
    assert_eq!(entries(dir.path()), vec!["avg_losses.npy"]);
}

#[test]
fn failing_writer_without_previous_file_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.svg");
    let e = write_atomic_with(&path, |w| {
        w.write_all(b"<svg")?;
        Err(io::Error::other("renderer failed"))
    })
    .unwrap_err();
    assert!(e.to_string().contains("renderer failed"));
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn panicking_writer_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    write_atomic(&path, b"old").unwrap();
    let result = std::panic::catch_unwind(|| {
        let _ = write_atomic_with(&path, |w| {
            w.write_all(b"partial")?;
            panic!("writer bug");
        });
    });
    assert!(result.is_err());
    assert_eq!(fs::read(&path).unwrap(), b"old");
    assert_eq!(entries(dir.path()), vec!["f"]);
}

#[cfg(unix)]
#[test]
fn read_only_directory_fails_and_keeps_old_file() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("ro");
    fs::create_dir(&sub).unwrap();
    let path = sub.join("model.safetensors");
    write_atomic(&path, b"old").unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o555)).unwrap();

    // Root (e.g. in CI containers) ignores directory permissions; nothing to test then.
    let probe = sub.join("probe");
    if fs::write(&probe, b"").is_ok() {
        let _ = fs::remove_file(&probe);
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        println!("note: directory permissions are not enforced for this user; skipped");
        return;
    }

    let result = write_atomic(&path, b"new");
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
    let e = result.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert_eq!(fs::read(&path).unwrap(), b"old");
    assert_eq!(entries(&sub), vec!["model.safetensors"]);
}

#[cfg(unix)]
#[test]
fn keeps_permissions_of_replaced_file() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    write_atomic(&path, b"1").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    write_atomic(&path, b"2").unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn concurrent_writers_never_mix_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared");
    let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 50_000]).collect();
    std::thread::scope(|s| {
        for c in &contents {
            let path = &path;
            s.spawn(move || {
                for _ in 0..5 {
                    write_atomic(path, c).unwrap();
                }
            });
        }
    });
    let got = fs::read(&path).unwrap();
    assert!(contents.contains(&got), "final file is a mix of writes");
    assert_eq!(entries(dir.path()), vec!["shared"]);
}
