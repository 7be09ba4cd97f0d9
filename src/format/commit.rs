//! Where a written package goes and how it gets there. The destination is checked against the
//! inputs before anything is written; the package is built in a marked work directory beside the
//! destination; the commit exchanges it with the destination in one step, so the destination
//! always holds the old package or the complete new one; and work directories a killed process
//! left beside a destination are removed by the next write there.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The file that marks a directory as one of this project's work directories. Nothing without it
/// is ever removed (an empty directory is only removed with `rmdir`, which cannot lose data).
pub const MARKER: &str = ".coreml-compress-tmp";

/// Inside a work directory: the package being built, and where the fallback commit parks the
/// package it replaces.
const NEW: &str = "new";
const PARKED: &str = "old";

/// Kinds of work directories, the middle of their names `.<dest name>.<kind>-<pid>-<n>`.
const KINDS: [&str; 2] = ["tmp", "scratch"];

/// Refuses an output path that would destroy an input or something that is not a package: one
/// that is an input, lies inside one or contains one (after resolving symlinks), or that exists
/// and is neither a package (a directory with a Manifest.json) nor an empty directory.
pub fn check_destination(dest: &Path, inputs: &[&Path]) -> Result<()> {
    let target = resolve(dest)?;
    for input in inputs {
        let source = fs::canonicalize(input).map_err(|e| Error::io(input, e))?;
        let relation = if target == source {
            "is"
        } else if target.starts_with(&source) {
            "is inside"
        } else if source.starts_with(&target) {
            "contains"
        } else {
            continue;
        };
        return Err(Error::Output(format!(
            "output path {} {relation} the input package {}; writing there would destroy the \
             input, choose an output outside it",
            dest.display(),
            input.display()
        )));
    }
    existing(dest).map(|_| ())
}

/// What is at a destination, when it may be replaced.
#[derive(Debug, PartialEq)]
enum Existing {
    Nothing,
    EmptyDir,
    Package,
}

fn existing(dest: &Path) -> Result<Existing> {
    let meta = match fs::symlink_metadata(dest) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(Error::io(dest, e)),
    };
    let refuse = |what: &str| {
        Err(Error::Output(format!(
            "output path {} exists and {what}; only a package (a directory with a \
             Manifest.json) is replaced",
            dest.display()
        )))
    };
    if meta.file_type().is_symlink() {
        return refuse("is a symbolic link");
    }
    if !meta.is_dir() {
        return refuse("is not a directory");
    }
    if dest.join("Manifest.json").is_file() {
        return Ok(Existing::Package);
    }
    let mut entries = fs::read_dir(dest).map_err(|e| Error::io(dest, e))?;
    if entries.next().is_none() {
        return Ok(Existing::EmptyDir);
    }
    refuse("is a non-empty directory without a Manifest.json")
}

/// `path` made absolute with every symlink of its existing part resolved; the part that does not
/// exist yet is appended with `.` and `..` applied (those directories would be created fresh).
fn resolve(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let components: Vec<Component<'_>> = absolute.components().collect();
    for known in (1..=components.len()).rev() {
        let head: PathBuf = components[..known].iter().collect();
        match fs::canonicalize(&head) {
            Ok(mut real) => {
                for c in &components[known..] {
                    match c {
                        Component::ParentDir => {
                            real.pop();
                        }
                        Component::Normal(name) => real.push(name),
                        _ => {}
                    }
                }
                return Ok(real);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&head, e)),
        }
    }
    Ok(absolute)
}

static WORK_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A marked directory beside a destination (`.<name>.<kind>-<pid>-<n>` holding [`MARKER`]),
/// removed when dropped: on success, on error and on unwinding.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Removes stale work directories of this project beside `dest`, then makes a new one (and
    /// `dest`'s parent if needed).
    pub fn beside(dest: &Path, kind: &str) -> Result<Self> {
        debug_assert!(KINDS.contains(&kind));
        let name = dest
            .file_name()
            .ok_or_else(|| Error::Output(format!("{}: output has no file name", dest.display())))?;
        let parent = parent_of(dest);
        clean_stale(&parent, name);
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let path = parent.join(format!(
            ".{}.{kind}-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            WORK_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        let work = WorkDir { path };
        crash_point("work-created");
        let marker = work.path.join(MARKER);
        fs::write(
            &marker,
            "a work directory of coreml-compress: removed by the process named in its name, or \
             by the next write beside it once that process has ended\n",
        )
        .map_err(|e| Error::io(&marker, e))?;
        crash_point("marked");
        Ok(work)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a package is built before [`WorkDir::put_in_place`] moves it.
    pub fn new_package(&self) -> PathBuf {
        self.path.join(NEW)
    }

    /// Moves the package built at [`WorkDir::new_package`] to `dest`: a rename when nothing (or
    /// an empty directory) is there, else an atomic exchange with the package there, whose old
    /// content then sits in this directory until it is removed.
    pub fn put_in_place(&self, dest: &Path) -> Result<()> {
        let new = self.new_package();
        if existing(dest)? == Existing::Package {
            if !exchange(&new, dest).map_err(|e| Error::io(dest, e))? {
                // The two-rename fallback: between them nothing is at `dest`; the old package is
                // in this marked directory, and the next write there puts it back.
                fs::rename(dest, self.path.join(PARKED)).map_err(|e| Error::io(dest, e))?;
                crash_point("parked");
                fs::rename(&new, dest).map_err(|e| Error::io(dest, e))?;
            }
        } else {
            fs::rename(&new, dest).map_err(|e| Error::io(dest, e))?;
        }
        crash_point("in-place");
        Ok(())
    }

    /// Removes everything but the marker, then the marker, then the directory: a crash on the way
    /// leaves a marked directory or an empty one, both of which the next write removes.
    fn remove(&self) -> io::Result<()> {
        remove_work_dir(&self.path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn remove_work_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == MARKER {
            continue;
        }
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    crash_point("emptied");
    match fs::remove_file(dir.join(MARKER)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    crash_point("unmarked");
    fs::remove_dir(dir)
}

/// Removes the work directories of ended processes beside a destination named `name` in
/// `parent`. A marked one is removed (after putting a parked package back when the destination
/// is missing: a fallback commit was interrupted between its renames); an unmarked one only if
/// empty. Failures are ignored: this is housekeeping, and the write itself reports real problems.
fn clean_stale(parent: &Path, name: &OsStr) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(work_dir_pid)
        else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let dir = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if dir.join(MARKER).is_file() {
            let parked = dir.join(PARKED);
            let dest = parent.join(name);
            if parked.join("Manifest.json").is_file() && fs::symlink_metadata(&dest).is_err() {
                let _ = fs::rename(&parked, &dest);
            }
            let _ = remove_work_dir(&dir);
        } else {
            let _ = fs::remove_dir(&dir);
        }
    }
}

/// The process id in the tail `<kind>-<pid>-<n>` of a work directory's name.
fn work_dir_pid(tail: &str) -> Option<u32> {
    let mut parts = tail.split('-');
    let (kind, pid, n) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !KINDS.contains(&kind) || n.parse::<u64>().is_err() {
        return None;
    }
    pid.parse().ok()
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Without a way to ask, every process counts as alive: stale work directories stay.
#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// Swaps two paths in one step. `Ok(false)` when the platform or the file system cannot (the
/// caller falls back to two renames).
fn exchange(a: &Path, b: &Path) -> io::Result<bool> {
    if exchange_disabled() {
        return Ok(false);
    }
    match exchange_paths(a, b) {
        Ok(()) => Ok(true),
        Err(e) if exchange_unsupported(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(any(linux_syscalls, target_os = "macos"))]
fn c_path(p: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// renameat2(RENAME_EXCHANGE), as a raw system call so that no particular C library is needed.
#[cfg(linux_syscalls)]
fn exchange_paths(a: &Path, b: &Path) -> io::Result<()> {
    let (a, b) = (c_path(a)?, c_path(b)?);
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let status = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// renamex_np(RENAME_SWAP) (APFS; other file systems answer ENOTSUP).
#[cfg(target_os = "macos")]
fn exchange_paths(a: &Path, b: &Path) -> io::Result<()> {
    let (a, b) = (c_path(a)?, c_path(b)?);
    // SAFETY: both paths are NUL-terminated and outlive the call.
    let status = unsafe { libc::renamex_np(a.as_ptr(), b.as_ptr(), libc::RENAME_SWAP) };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere (and in `portable` builds on Linux) there is no exchange call: the two-rename
/// fallback runs.
#[cfg(not(any(linux_syscalls, target_os = "macos")))]
fn exchange_paths(_a: &Path, _b: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The answers that mean "no exchange here" (kernel or file system), not a failed exchange.
fn exchange_unsupported(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::Unsupported {
        return true;
    }
    #[cfg(unix)]
    {
        // (ENOTSUP and EOPNOTSUPP are one number on Linux, two on macOS.)
        e.raw_os_error().is_some_and(|code| {
            [libc::EINVAL, libc::ENOSYS, libc::ENOTSUP, libc::EOPNOTSUPP].contains(&code)
        })
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Test builds with the `crash-points` feature abort the process at the step named by
/// `COREML_COMPRESS_CRASH_AT`, to prove that a write killed there loses nothing.
#[cfg(feature = "crash-points")]
pub fn crash_point(step: &str) {
    if std::env::var("COREML_COMPRESS_CRASH_AT").is_ok_and(|s| s == step) {
        std::process::abort();
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn crash_point(_step: &str) {}

/// With the `crash-points` feature, `COREML_COMPRESS_NO_EXCHANGE=1` runs the two-rename fallback
/// (what platforms and file systems without an exchange call do).
#[cfg(feature = "crash-points")]
fn exchange_disabled() -> bool {
    std::env::var_os("COREML_COMPRESS_NO_EXCHANGE").is_some()
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
fn exchange_disabled() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package_at(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("Manifest.json"), "{}").unwrap();
    }

    fn refusal(dest: &Path, inputs: &[&Path]) -> String {
        match check_destination(dest, inputs) {
            Err(Error::Output(message)) => message,
            other => panic!("{} was not refused: {other:?}", dest.display()),
        }
    }

    /// The pid of a process that has ended (and been reaped).
    fn ended_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn outputs_that_would_destroy_an_input_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.mlpackage");
        package_at(&input);
        let inputs = [input.as_path()];
        let message = refusal(&input, &inputs);
        assert!(message.contains(" is the input package "), "{message}");
        assert!(message.contains(&input.display().to_string()), "{message}");
        let inside = input.join("Data/out.mlpackage");
        assert!(refusal(&inside, &inputs).contains(" is inside the input package "));
        assert!(refusal(dir.path(), &inputs).contains(" contains the input package "));
        // Through `..` in a part that does not exist yet, and through a symlink.
        let around = dir.path().join("new/../in.mlpackage/x");
        assert!(refusal(&around, &inputs).contains(" is inside "));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        assert!(refusal(&link.join("out.mlpackage"), &inputs).contains(" is inside "));
        assert!(refusal(&input, &[link.as_path()]).contains(" is the input "));
        // Nothing was written.
        assert!(!dir.path().join("new").exists() && !input.join("Data").exists());
        // Beside the input is fine.
        check_destination(&dir.path().join("out.mlpackage"), &inputs).unwrap();
        check_destination(&dir.path().join("new/../in2.mlpackage"), &inputs).unwrap();
    }

    #[test]
    fn only_packages_and_empty_directories_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.mlpackage");
        fs::write(&file, "x").unwrap();
        assert!(refusal(&file, &[]).contains("is not a directory"));
        let full = dir.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("notes.txt"), "x").unwrap();
        assert!(refusal(&full, &[]).contains("non-empty directory without a Manifest.json"));
        let link = dir.path().join("link.mlpackage");
        let package = dir.path().join("p.mlpackage");
        package_at(&package);
        std::os::unix::fs::symlink(&package, &link).unwrap();
        assert!(refusal(&link, &[]).contains("symbolic link"));
        assert_eq!(existing(&package).unwrap(), Existing::Package);
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(existing(&empty).unwrap(), Existing::EmptyDir);
        assert_eq!(
            existing(&dir.path().join("none")).unwrap(),
            Existing::Nothing
        );
    }

    #[test]
    fn a_work_directory_is_marked_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/m.mlpackage");
        let work = WorkDir::beside(&dest, "tmp").unwrap();
        let name = work
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            work_dir_pid(name.strip_prefix(".m.mlpackage.").unwrap()),
            Some(std::process::id())
        );
        assert!(work.path().join(MARKER).is_file());
        fs::create_dir_all(work.new_package().join("Data")).unwrap();
        drop(work);
        assert_eq!(fs::read_dir(dir.path().join("sub")).unwrap().count(), 0);
    }

    #[test]
    fn put_in_place_exchanges_an_old_package_and_renames_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.mlpackage");
        for (round, old) in [(0, false), (1, true)] {
            if old {
                assert_eq!(fs::read(dest.join("Manifest.json")).unwrap(), b"0");
            }
            let work = WorkDir::beside(&dest, "tmp").unwrap();
            fs::create_dir(work.new_package()).unwrap();
            fs::write(work.new_package().join("Manifest.json"), round.to_string()).unwrap();
            work.put_in_place(&dest).unwrap();
            if old {
                // The replaced package waits in the work directory until it is removed: where
                // `new/` was after an exchange, parked in `old/` after two renames (platforms
                // and `portable` builds without an exchange call).
                let waiting = if cfg!(any(linux_syscalls, target_os = "macos")) {
                    work.new_package()
                } else {
                    work.path().join(PARKED)
                };
                assert_eq!(fs::read(waiting.join("Manifest.json")).unwrap(), b"0");
            }
            drop(work);
            assert_eq!(
                fs::read(dest.join("Manifest.json")).unwrap(),
                round.to_string().as_bytes()
            );
            assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        }
        // Something that is not a package appeared meanwhile: refused, and left alone.
        fs::remove_dir_all(&dest).unwrap();
        fs::write(&dest, "mine").unwrap();
        let work = WorkDir::beside(&dest, "tmp").unwrap();
        fs::create_dir(work.new_package()).unwrap();
        assert!(matches!(work.put_in_place(&dest), Err(Error::Output(_))));
        drop(work);
        assert_eq!(fs::read(&dest).unwrap(), b"mine");
    }

    #[test]
    fn stale_work_directories_of_ended_processes_are_cleaned_up_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.mlpackage");
        let dead = ended_pid();
        let stale = |kind: &str, pid: u32, n: u32| {
            dir.path().join(format!(".m.mlpackage.{kind}-{pid}-{n}"))
        };
        // Marked, with a half-written package: removed.
        let marked = stale("tmp", dead, 0);
        fs::create_dir_all(marked.join(NEW).join("Data")).unwrap();
        fs::write(marked.join(MARKER), "").unwrap();
        // An interrupted fallback commit: the parked package goes back to the destination.
        let parked = stale("tmp", dead, 1);
        package_at(&parked.join(PARKED));
        fs::write(parked.join(PARKED).join("weights"), "old").unwrap();
        fs::write(parked.join(MARKER), "").unwrap();
        // Unmarked: removed when empty, kept otherwise.
        let empty = stale("scratch", dead, 2);
        fs::create_dir(&empty).unwrap();
        let unmarked = stale("tmp", dead, 3);
        fs::create_dir(&unmarked).unwrap();
        fs::write(unmarked.join("data"), "someone's").unwrap();
        // A living process's (pid 1), and names that are not ours.
        let alive = stale("tmp", 1, 4);
        fs::create_dir(&alive).unwrap();
        fs::write(alive.join(MARKER), "").unwrap();
        let other_name = dir.path().join(format!(".m.mlpackage.old-{dead}-5"));
        fs::create_dir(&other_name).unwrap();
        fs::write(other_name.join(MARKER), "").unwrap();

        drop(WorkDir::beside(&dest, "tmp").unwrap());
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        let mut want = vec![
            name(&alive),
            name(&unmarked),
            name(&other_name),
            name(&dest),
        ];
        want.sort();
        assert_eq!(left, want);
        assert_eq!(fs::read(dest.join("weights")).unwrap(), b"old");
    }
}
