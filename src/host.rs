//! Host preparation and the ecs-init housekeeping verbs: the directory
//! layout with its modes, the bundled agent on first start, the cleanup
//! after the warden has exited.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::durable;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::paths::Paths;
use crate::store::{self, Store};

/// Create the directory layout with tight modes (idempotent). The private
/// directories are tightened to 0700 even when they already exist (left by
/// an earlier install or made by hand).
pub fn prepare_layout(paths: &Paths) -> Result<()> {
    durable::create_dir("agent data", &paths.data_dir, 0o700)?;
    durable::create_dir("warden state", &paths.warden_dir, 0o700)?;
    durable::create_dir("agent store", &paths.agents_dir, 0o755)?;
    durable::create_dir("cache", &paths.cache_dir, 0o755)?;
    durable::create_dir("runtime", &paths.run_dir, 0o700)?;
    for (what, dir) in [
        ("agent data", &paths.data_dir),
        ("warden state", &paths.warden_dir),
        ("runtime", &paths.run_dir),
    ] {
        make_private(what, dir)?;
    }
    Ok(())
}

/// Take group and other permissions off an existing directory.
fn make_private(what: &str, dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).map_err(Error::io(format!("stat {what} directory"), dir))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        log::warn!(
            "{what} directory {} had mode {mode:o}; setting 0700",
            dir.display()
        );
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("set mode of {what} directory"), dir))?;
    }
    Ok(())
}

/// `pre-start`: layout, and the bundled agent when no build is installed.
pub fn pre_start(paths: &Paths) -> Result<String> {
    prepare_layout(paths)?;
    let build = Store::new(paths).ensure_current()?;
    Ok(format!(
        "ready: agent {} at {}",
        build.version(),
        paths.display_rel(&paths.current_agent())
    ))
}

/// `post-stop`: remove what a warden that is gone left in `run/`.
pub fn post_stop(paths: &Paths) -> Result<String> {
    if Lock::is_held(&paths.lock()) {
        return Ok("a warden is still running for this root; nothing to clean".into());
    }
    let mut removed = Vec::new();
    for p in [paths.control_socket()] {
        if p.exists() {
            std::fs::remove_file(&p).map_err(Error::io("remove stale", &p))?;
            removed.push(paths.display_rel(&p));
        }
    }
    Ok(if removed.is_empty() {
        "nothing to clean".into()
    } else {
        format!("removed {}", removed.join(", "))
    })
}

/// `reload-cache`: install the bundled agent into the store when it is
/// newer than the current build. It becomes current only when no warden
/// runs (the next start picks it up); a running agent is changed only by an
/// update, with its health gate.
pub fn reload_cache(paths: &Paths) -> Result<String> {
    prepare_layout(paths)?;
    let store = Store::new(paths);
    let bundled = paths.bundled_agent();
    if !bundled.is_file() {
        return Err(Error::NoAgent {
            current: None,
            bundled,
        });
    }
    let (bundled_version, _) = store::probe_version(&bundled)?;
    if let Some(cur) = store.current() {
        let newer = match (
            store::parse_version(&bundled_version),
            store::parse_version(cur.version()),
        ) {
            // SemVer precedence: build metadata (`+x`) never makes a build
            // newer (semver's `Ord` would order it).
            (Ok(b), Ok(c)) => b.cmp_precedence(&c) == std::cmp::Ordering::Greater,
            _ => false,
        };
        if !newer {
            return Ok(format!(
                "the bundled agent {bundled_version} is not newer than the current build {}; nothing to do",
                cur.version()
            ));
        }
        if Lock::is_held(&paths.lock()) {
            let build = store.install_bundled()?;
            return Ok(format!(
                "installed the bundled agent {} in the store; a warden is running, so switch with `ecs-warden update --source file://{}`",
                build.version(),
                build.executable().display()
            ));
        }
    }
    let build = store.install_bundled()?;
    store.switch_current(build.version())?;
    Ok(format!(
        "agent {} is now the current build",
        build.version()
    ))
}
