//! Removing what no update needs any more, once none is in flight: builds
//! other than `current` and `previous`, leftovers of interrupted installs
//! and downloads, and the update files the agent staged in `var/cache/ecs`.

use std::fs;

use crate::paths::Paths;
use crate::store::Store;

/// Clean the store and the cache (no update is in flight).
pub fn run(paths: &Paths) {
    let store = Store::new(paths);
    let keep: Vec<String> = [paths.current(), paths.previous()]
        .iter()
        .filter_map(|l| store.link_name(l))
        .collect();
    let Ok(rd) = fs::read_dir(&paths.agents_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "current" || name == "previous" {
            continue;
        }
        let path = e.path();
        // Hidden names are partial downloads, temporary build directories
        // and temporary symlinks: all leftovers now.
        if name.starts_with('.') || !keep.contains(&name) {
            let r = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match r {
                Ok(()) => log::info!("housekeeping: removed {}", paths.display_rel(&path)),
                Err(e) => log::warn!("housekeeping: remove {}: {e}", path.display()),
            }
        }
    }
    consume_desired_image(paths);
    // Update files the agent downloaded and nothing refers to.
    if let Ok(rd) = fs::read_dir(&paths.cache_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".ecs-update.") && fs::remove_file(e.path()).is_ok() {
                log::info!("housekeeping: removed {}", paths.display_rel(&e.path()));
            }
        }
    }
}

/// Remove `desired-image` and the file it names (in `var/cache/ecs`).
pub fn consume_desired_image(paths: &Paths) {
    let desired = paths.desired_image();
    if let Ok(name) = fs::read_to_string(&desired) {
        let name = name.trim();
        if !name.is_empty() && !name.contains('/') {
            let _ = fs::remove_file(paths.cache_dir.join(name));
        }
    }
    let _ = fs::remove_file(desired);
}
