//! Durable, atomic file writes: the only way this program writes a file that
//! must survive a crash.
//!
//! 1. create a temporary file next to the target (same directory, so the
//!    rename cannot cross file systems), with the final mode;
//! 2. write all bytes and fsync the file;
//! 3. rename it over the target;
//! 4. fsync the directory, so the rename itself is durable.
//!
//! A reader sees either the old file or the new one, never a torn one.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids;

/// Atomically replaces `path` with `bytes`, file mode `mode`.
///
/// `what` names the file in error messages ("state file", "stamped binary").
pub fn write(path: &Path, what: &str, mode: u32, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| {
            Error::io(
                format!("write {what}"),
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
            )
        })?
        .to_string_lossy();
    let temp = dir.join(format!(".{name}.tmp-{}", ids::random_hex(8)));

    let result = write_temp(&temp, what, mode, bytes)
        .and_then(|()| {
            fs::rename(&temp, path).map_err(|e| Error::io(format!("rename {what} to"), path, e))
        })
        .and_then(|()| sync_dir(&dir));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_temp(temp: &Path, what: &str, mode: u32, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temp)
        .map_err(|e| Error::io(format!("create temporary {what}"), temp, e))?;
    // The umask may have narrowed the mode given to open.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("set the mode of temporary {what}"), temp, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(format!("write temporary {what}"), temp, e))?;
    file.sync_all()
        .map_err(|e| Error::io(format!("fsync temporary {what}"), temp, e))
}

/// Fsyncs a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Creates `dir` and its parents, and makes the new entries durable.
pub fn create_dir_all(dir: &Path, what: &str) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {what}"), dir, e))?;
    sync_dir(&parent_dir(dir))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_atomically_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, "test file", 0o755, b"one").unwrap();
        write(&path, "test file", 0o755, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }
}
