//! Snapshot and restore of the agent's data directory.
//!
//! Take (the old agent is stopped, so the copy is consistent):
//! 1. remove the marker `<dest>.json` and any older snapshot, so a failed
//!    snapshot never leaves an old one to be restored in its place;
//! 2. copy `var/lib/ecs/data` into `<dest>.tmp`, each file fsynced (not
//!    `syncfs(2)`: on a busy host that would flush everyone's dirty data
//!    inside the agent's downtime); on failure remove it (it may be what
//!    fills the disk);
//! 3. rename `<dest>.tmp` to `<dest>`, fsync the parent;
//! 4. write the marker `<dest>.json` naming the update that took it.
//!
//! A snapshot counts only with its marker: restore checks whose it is.
//!
//! Restore (idempotent; redone whole after a crash):
//! 1. copy the snapshot into `data.restore`;
//! 2. move the live `data` aside to `data.replaced`;
//! 3. rename `data.restore` to `data`, fsync the parent;
//! 4. remove `data.replaced`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::durable;
use crate::error::{Error, Result};

/// Directory name of a build's data snapshot, beside its executable.
pub const SNAPSHOT_DIR: &str = "data-snapshot";

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copy a tree: directories, regular files (fsynced), symlinks; modes kept.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    fs::create_dir(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to)?;
            fs::File::open(&to)?.sync_all()?;
        }
        // Sockets, FIFOs and devices are runtime artefacts: not copied.
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.permissions().mode()))?;
    fs::File::open(dst)?.sync_all()
}

/// The marker of a snapshot at `dest`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    /// The update that took it.
    pub update_id: String,
    pub taken_at: String,
}

fn marker_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".json")
}

/// Whose snapshot is at `dest`, if there is a complete one.
pub fn marker(dest: &Path) -> Option<Marker> {
    let m: Marker = serde_json::from_slice(&fs::read(marker_path(dest)).ok()?).ok()?;
    dest.is_dir().then_some(m)
}

/// Snapshot `data` into `dest` for update `update_id` (replacing an older
/// snapshot there).
pub fn take(data: &Path, dest: &Path, update_id: &str) -> Result<()> {
    let marker = marker_path(dest);
    remove_any(&marker).map_err(Error::io("remove old snapshot marker", &marker))?;
    remove_any(dest).map_err(Error::io("remove old snapshot", dest))?;
    let tmp = with_suffix(dest, ".tmp");
    remove_any(&tmp).map_err(Error::io("remove stale snapshot", &tmp))?;
    if !data.exists() {
        fs::create_dir_all(data).map_err(Error::io("create agent data directory", data))?;
    }
    if let Err(e) = copy_tree(data, &tmp) {
        let _ = remove_any(&tmp);
        return Err(Error::io("snapshot agent data into", &tmp)(e));
    }
    fs::rename(&tmp, dest).map_err(Error::io("rename snapshot into", dest))?;
    durable::sync_parent(dest)?;
    durable::write_json(
        "snapshot marker",
        &marker,
        &Marker {
            update_id: update_id.to_string(),
            taken_at: crate::store::now_rfc3339(),
        },
    )
}

/// State in the data directory that is not the agent's: the volume
/// plugin's (ecs-init's `ecs_volume_plugin.json`). A restore keeps the
/// live copy, as ecs-init would.
pub const NOT_THE_AGENTS: &[&str] = &["ecs_volume_plugin.json"];

/// Put the snapshot at `snap` back as `data` (but for `NOT_THE_AGENTS`).
pub fn restore(snap: &Path, data: &Path) -> Result<()> {
    let incoming = with_suffix(data, ".restore");
    let aside = with_suffix(data, ".replaced");
    remove_any(&incoming).map_err(Error::io("remove stale restore copy", &incoming))?;
    copy_tree(snap, &incoming).map_err(Error::io("copy snapshot into", &incoming))?;
    for name in NOT_THE_AGENTS {
        let live = data.join(name);
        let into = incoming.join(name);
        remove_any(&into).map_err(Error::io("remove", &into))?;
        if live.is_file() {
            fs::copy(&live, &into)
                .and_then(|_| fs::File::open(&into)?.sync_all())
                .map_err(Error::io("keep the live", &live))?;
        }
    }
    if data.exists() {
        remove_any(&aside).map_err(Error::io("remove stale replaced data", &aside))?;
        fs::rename(data, &aside).map_err(Error::io("move agent data aside to", &aside))?;
    }
    fs::rename(&incoming, data).map_err(Error::io("rename restored data into", data))?;
    durable::sync_parent(data)?;
    remove_any(&aside).map_err(Error::io("remove replaced data", &aside))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_and_restore_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::write(data.join("state.json"), "old").unwrap();
        fs::write(data.join("sub/x"), "x").unwrap();
        let snap = dir.path().join("snap");
        take(&data, &snap, "u1").unwrap();
        assert_eq!(marker(&snap).unwrap().update_id, "u1");
        fs::write(data.join("state.json"), "new").unwrap();
        fs::write(data.join("added"), "y").unwrap();
        restore(&snap, &data).unwrap();
        assert_eq!(fs::read_to_string(data.join("state.json")).unwrap(), "old");
        assert_eq!(fs::read_to_string(data.join("sub/x")).unwrap(), "x");
        assert!(!data.join("added").exists());
        // Restoring again (as after a crash) is harmless.
        restore(&snap, &data).unwrap();
        assert_eq!(fs::read_to_string(data.join("state.json")).unwrap(), "old");
    }

    #[test]
    fn a_restore_keeps_the_volume_plugins_state() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("agent.db"), "old").unwrap();
        fs::write(data.join("ecs_volume_plugin.json"), "plugin-old").unwrap();
        let snap = dir.path().join("snap");
        take(&data, &snap, "u1").unwrap();
        fs::write(data.join("agent.db"), "new").unwrap();
        fs::write(data.join("ecs_volume_plugin.json"), "plugin-new").unwrap();
        restore(&snap, &data).unwrap();
        assert_eq!(fs::read_to_string(data.join("agent.db")).unwrap(), "old");
        assert_eq!(
            fs::read_to_string(data.join("ecs_volume_plugin.json")).unwrap(),
            "plugin-new"
        );
    }

    #[test]
    fn a_failed_snapshot_leaves_neither_the_old_one_nor_its_copy() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("state.json"), "v1").unwrap();
        let snap = dir.path().join("snap");
        take(&data, &snap, "u1").unwrap();
        // A data directory that cannot be copied (a file without read
        // permission is still readable by root: use a dangling path).
        let missing = dir.path().join("not-a-dir-file");
        fs::write(&missing, "x").unwrap();
        assert!(take(&missing, &snap, "u2").is_err());
        assert!(marker(&snap).is_none(), "no marker: nothing to restore");
        assert!(!snap.exists(), "the old snapshot is gone");
        assert!(
            !dir.path().join("snap.tmp").exists(),
            "no partial copy left"
        );
    }
}
