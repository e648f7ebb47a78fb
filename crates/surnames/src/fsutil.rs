//! Atomic file writing.
//!
//! Every artefact the tool produces (checkpoints, `.npy` records, plots) is written through
//! [`write_atomic`] / [`write_atomic_with`]: the data goes to a temporary file in the target's
//! directory, is flushed to disk, and only then renamed over the target. A crash, a full disk or a
//! failing writer therefore leaves either the complete old file or the complete new one, never a
//! truncated mix, and no temporary file is left behind on an error we can observe.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Distinguishes temporary files created by concurrent calls within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Atomically replaces (or creates) `path` with `bytes`.
///
/// Errors carry the target path in their message (e.g. `cannot write /x/y: No space left on
/// device`) and keep the original [`io::ErrorKind`]. On error the previous file is left untouched.
/// If `path` is a symbolic link, the link itself is replaced by a regular file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Atomically replaces (or creates) `path` with whatever `write` produces.
///
/// `write` receives a buffered writer onto a temporary file next to `path`; if it (or flushing,
/// syncing or renaming) fails, the temporary file is removed and the previous content of `path`
/// stays in place. The error message names `path`.
pub fn write_atomic_with<F>(path: &Path, write: F) -> io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    write_atomic_inner(path, write).map_err(|e| with_path(path, &e))
}

fn write_atomic_inner<F>(path: &Path, write: F) -> io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path does not name a file"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (file, temp_path) = create_temp(dir, &file_name.to_string_lossy())?;
    // From here on the temporary file must disappear on every error path, including a panic
    // inside `write`.
    let mut guard = TempGuard(Some(temp_path.clone()));
    fill_and_commit(file, &temp_path, path, write)?;
    guard.0 = None;
    sync_dir(dir);
    Ok(())
}

/// Removes the temporary file when dropped, unless it was renamed into place (`None`).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Creates a fresh temporary file in `dir`, named after the target so leftovers from a crash
/// (e.g. a killed process) are recognisable.
fn create_temp(dir: &Path, target_name: &str) -> io::Result<(File, PathBuf)> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last_err = None;
    for _ in 0..16 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(".{target_name}.tmp.{}.{n}.{nanos:x}", std::process::id());
        let temp_path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
        {
            Ok(f) => return Ok((f, temp_path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("cannot create a temporary file")))
}

fn fill_and_commit<F>(file: File, temp_path: &Path, target: &Path, write: F) -> io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let mut buffered = BufWriter::new(file);
    write(&mut buffered)?;
    let file = buffered
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    // Keep the permissions of the file being replaced (best effort: a new file keeps the umask).
    if let Ok(meta) = fs::metadata(target) {
        let _ = file.set_permissions(meta.permissions());
    }
    // The data must be on disk before the rename makes it visible under the target name.
    file.sync_all()?;
    drop(file);
    fs::rename(temp_path, target)
}

/// Makes the rename durable. Not every platform/filesystem supports syncing a directory, and
/// the new content is already complete, so failures here are ignored.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn with_path(path: &Path, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
}

/// Removes the temporary files that [`write_atomic`] left in `dir` when a process was killed
/// between creating and renaming them: `.<name>.tmp.<pid>.<n>.<nanos>` where `<name>` has one
/// of `extensions` and process `<pid>` no longer runs (another process may be writing into the
/// same directory). Best effort.
pub fn remove_stale_temp_files(dir: &Path, extensions: &[&str]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some((target, rest)) = name.strip_prefix('.').and_then(|n| n.split_once(".tmp."))
        else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if extensions.iter().any(|x| target.ends_with(x))
            && !process_alive(pid)
            && e.path().is_file()
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Whether process `pid` exists (unknown platforms: assume it does, and keep its files).
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        if pid == std::process::id() {
            return true;
        }
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return true;
        };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Prints a line on stdout; a closed or failing stdout is ignored (`println!` would panic).
pub fn print_line(line: &str) {
    let _ = writeln!(io::stdout().lock(), "{line}");
}

/// Prints a line on stderr; a closed or failing stderr is ignored.
pub fn eprint_line(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// An exclusive lock on a directory (`.surnames.lock` in it), held until dropped or the process
/// ends, however it ends. `None` when another process holds it.
pub struct DirLock(#[allow(dead_code)] File);

/// On file systems without locks (some NFS, 9p or CIFS mounts) the directory is used unlocked,
/// with a warning on stderr.
pub fn lock_dir(dir: &Path) -> io::Result<Option<DirLock>> {
    let path = dir.join(".surnames.lock");
    let file = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    {
        // Another user's lock file: flock works on a read-only descriptor too.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && path.exists() => {
            File::open(&path)?
        }
        r => r?,
    };
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a file descriptor we own; non-blocking.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            let unsupported = [libc::ENOLCK, libc::EOPNOTSUPP, libc::ENOSYS, libc::EINVAL];
            return match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                Some(code) if unsupported.contains(&code) => {
                    eprint_line(&format!(
                        "warning: {} cannot be locked here ({e}); make sure no other training uses it",
                        dir.display()
                    ));
                    Ok(Some(DirLock(file)))
                }
                _ => Err(e),
            };
        }
    }
    Ok(Some(DirLock(file)))
}

/// Marks a run directory whose training has not saved a resume state yet; removed by the first
/// save of one. Such a directory (config, maybe a model from a save cut short) may be reused.
pub const UNSAVED_MARK: &str = ".surnames-unsaved";
