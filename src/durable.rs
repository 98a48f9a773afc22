//! Crash-safe file-system writes. Everything that must survive a crash goes
//! through here.
//!
//! A durable write:
//! 1. writes a temporary file in the same directory (same file system),
//! 2. fsyncs it,
//! 3. renames it over the target (atomic on POSIX),
//! 4. fsyncs the directory so the rename itself is on disk.
//!
//! A symlink switch does the same with a temporary symlink, so the link
//! always points somewhere: the old target until the rename, the new after.
//!
//! A process killed between steps 1 and 3 leaves its temporary sibling
//! (`.<name>.<tag>.<pid>.<8 hex>`) behind; `remove_stale_temps` removes
//! exactly those names, for recovery to call before anything writes again.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Temporary sibling of `path`, unique to this process and call.
pub fn temp_sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rnd = [0u8; 4];
    let _ = getrandom::getrandom(&mut rnd);
    let suffix = u32::from_le_bytes(rnd);
    path.with_file_name(format!(".{name}.{tag}.{}.{suffix:08x}", std::process::id()))
}

/// The tags `temp_sibling` is called with: `tmp` for files, `link` for
/// symlinks.
const TEMP_TAGS: &[&str] = &["tmp", "link"];

/// Whether `name` is one `temp_sibling` makes: `.<name>.<tag>.<pid>.<suffix>`
/// with a known tag, a decimal pid and eight lowercase hex digits, around a
/// non-empty original name.
fn is_temp_sibling_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let mut parts = rest.rsplitn(4, '.');
    let (Some(suffix), Some(pid), Some(tag), Some(orig)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    suffix.len() == 8
        && suffix
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        && !pid.is_empty()
        && pid.len() <= 10
        && pid.bytes().all(|c| c.is_ascii_digit())
        && TEMP_TAGS.contains(&tag)
        && !orig.is_empty()
}

/// Remove the temporary siblings that an interrupted `write`,
/// `write_volatile` or symlink switch left in `dir` (files and symlinks
/// named as `temp_sibling` names them; nothing else, and no directory).
/// Returns what was removed. Only for recovery: a write in progress in
/// `dir` would lose its temporary file.
pub fn remove_stale_temps(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_temp_sibling_name(name) {
            continue;
        }
        let path = e.path();
        let is_file_or_link = fs::symlink_metadata(&path)
            .map(|m| !m.is_dir())
            .unwrap_or(false);
        if !is_file_or_link {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(err) => log::warn!("remove stale temporary file {}: {err}", path.display()),
        }
    }
    removed.sort();
    removed
}

/// Write `bytes` to `path` atomically and durably with `mode`.
/// `what` names the file for error messages ("state journal").
pub fn write(what: &str, path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_sibling(path, "tmp");
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(Error::io(format!("create temporary {what}"), &tmp))?;
        f.write_all(bytes)
            .map_err(Error::io(format!("write {what}"), &tmp))?;
        // The umask may have narrowed the mode given to open(2).
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(Error::io(format!("set mode of {what}"), &tmp))?;
        f.sync_all()
            .map_err(Error::io(format!("fsync {what}"), &tmp))?;
        fs::rename(&tmp, path).map_err(Error::io(format!("rename {what} into place"), path))?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `write` for a JSON value, pretty-printed with a trailing newline.
pub fn write_json<T: serde::Serialize>(what: &str, path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Other(format!("serialize {what}: {e}")))?;
    bytes.push(b'\n');
    write(what, path, &bytes, 0o644)
}

/// fsync a directory, so renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// fsync the directory holding `path`.
pub fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Point the symlink `link` at `target` with one rename(2); never leaves
/// `link` missing. `target` is stored as given (relative targets keep a
/// build store relocatable).
pub fn switch_symlink(what: &str, link: &Path, target: &Path) -> Result<()> {
    let tmp = temp_sibling(link, "link");
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(Error::io(format!("create temporary {what} link"), &tmp))?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(format!("switch {what} link"), link)(e));
    }
    sync_parent(link)
}

/// Create `dir` (and parents) with `mode` on the last component, and fsync
/// the parent so the directory entry survives a crash.
pub fn create_dir(what: &str, dir: &Path, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(Error::io(format!("create {what} directory"), dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(Error::io(format!("set mode of {what} directory"), dir))?;
    sync_parent(dir)
}

/// Append one line to a log file. Not fsynced: the history is for people
/// (recovery reads only the journal), and an fsync here would sit in the
/// update's downtime; a torn or lost last line after a power cut is
/// tolerated by the reader.
pub fn append_line(what: &str, path: &Path, line: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .map_err(Error::io(format!("open {what}"), path))?;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    f.write_all(&buf)
        .map_err(Error::io(format!("append to {what}"), path))
}

/// Atomic but not durable: temporary file, rename. For the volatile files
/// under `run/` (a tmpfs on real hosts), which need never survive a reboot.
pub fn write_volatile(what: &str, path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_sibling(path, "tmp");
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(Error::io(format!("write {what}"), &tmp))
        .and_then(|_| fs::rename(&tmp, path).map_err(Error::io(format!("rename {what}"), path)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `switch_symlink` without the directory fsync, for the update's downtime
/// window: the caller fsyncs the directory (`sync_parent`) once the new
/// agent has started, before anything depends on the switch being durable.
/// (The journal names the step, and recovery re-checks where the link
/// points, so a switch lost to a power cut is simply done again.)
pub fn switch_symlink_unsynced(what: &str, link: &Path, target: &Path) -> Result<()> {
    let tmp = temp_sibling(link, "link");
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(Error::io(format!("create temporary {what} link"), &tmp))?;
    fs::rename(&tmp, link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("switch {what} link"), link)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write("state", &p, b"one", 0o600).unwrap();
        write("state", &p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");
    }

    #[test]
    fn stale_temps_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // What interrupted writes leave: the exact names `temp_sibling` makes.
        let state = temp_sibling(&d.join("state.json"), "tmp");
        let quarantine = temp_sibling(&d.join("quarantine.json"), "tmp");
        let link = temp_sibling(&d.join("current"), "link");
        fs::write(&state, b"{").unwrap();
        fs::write(&quarantine, b"{").unwrap();
        std::os::unix::fs::symlink("1.0.0", &link).unwrap();
        // What must stay: real files, look-alikes, a directory of the form.
        let keep = [
            "state.json",
            "quarantine.json",
            ".state.json",
            ".state.json.tmp",
            ".state.json.tmp.123",
            ".state.json.tmp.123.0000000",
            ".state.json.tmp.123.0000000g",
            ".state.json.tmp.123.ABCDEF01",
            ".state.json.bak.123.abcdef01",
            ".state.json.tmp.12a.abcdef01",
            "..tmp.123.abcdef01",
            "state.json.tmp.123.abcdef01",
            ".1.2.3.tmp-77",
            "1.0.0.partial",
        ];
        for k in keep {
            fs::write(d.join(k), b"x").unwrap();
        }
        fs::create_dir(d.join(".agents.tmp.42.abcdef01")).unwrap();
        let removed = remove_stale_temps(d);
        let mut want = vec![state.clone(), quarantine.clone(), link.clone()];
        want.sort();
        assert_eq!(removed, want);
        for p in [&state, &quarantine, &link] {
            assert!(fs::symlink_metadata(p).is_err(), "{} left", p.display());
        }
        for k in keep {
            assert!(d.join(k).exists(), "{k} was removed");
        }
        assert!(d.join(".agents.tmp.42.abcdef01").is_dir());
        // Nothing left to do the second time; a missing directory is no error.
        assert!(remove_stale_temps(d).is_empty());
        assert!(remove_stale_temps(&d.join("missing")).is_empty());
    }

    #[test]
    fn switch_symlink_replaces_target() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        switch_symlink("current", &link, Path::new("1.0.0")).unwrap();
        switch_symlink("current", &link, Path::new("2.0.0")).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("2.0.0"));
    }
}
