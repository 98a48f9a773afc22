//! Host preparation and the ecs-init housekeeping verbs: the directory
//! layout with its modes, the host network for tasks (`hostnet.rs`), the
//! EBS task-attach mount point, the bundled agent on first start, the
//! cleanup after the warden has exited.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::config::Config;
use crate::durable;
use crate::error::{Error, Result};
use crate::hostnet;
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

/// `pre-start`: layout, the host network and the EBS mount point as
/// ecs-init makes them, and the bundled agent when no build is installed.
pub fn pre_start(paths: &Paths, cfg: &Config) -> Result<String> {
    prepare_layout(paths)?;
    let net = hostnet::setup(paths, &cfg.host_net)?;
    make_ebs_mount_dir(paths);
    let store = Store::new(paths);
    if store.current().is_none()
        && store.bundled().is_none()
        && crate::runtime::choose(cfg, paths) == crate::config::RuntimeKind::Docker
    {
        adopt_engine_image(paths, cfg)?;
    }
    let build = store.ensure_current()?;
    Ok(format!(
        "{net}\nready: agent {} at {}",
        build.version(),
        paths.display_rel(&paths.current_agent())
    ))
}

/// A host swapped from ecs-init may have no tarball left (`dnf swap`
/// erased ecs-init's package and its tarball with it), only the image
/// ecs-init loaded: save `amazon/amazon-ecs-agent:latest` from the engine
/// and install it as the current build.
fn adopt_engine_image(paths: &Paths, cfg: &Config) -> Result<()> {
    use crate::agent_image::AGENT_IMAGE;
    let socket = crate::agent_image::socket(cfg)?;
    let engine = crate::engine::Engine::connect(socket, std::time::Duration::from_secs(10))?;
    if engine.image_inspect(AGENT_IMAGE)?.is_none() {
        return Ok(()); // ensure_current says what is missing
    }
    durable::create_dir("agent store", &paths.agents_dir, 0o755)?;
    let tar = paths.agents_dir.join(".adopted-image.tar");
    engine.image_save(AGENT_IMAGE, &tar, std::time::Duration::from_secs(600))?;
    let store = Store::new(paths);
    let result = store.install_file(&tar, &format!("docker-engine://{AGENT_IMAGE}"));
    let _ = std::fs::remove_file(&tar);
    let build = result?;
    store.point_current(build.version(), true)?;
    log::info!(
        "adopted the engine's {AGENT_IMAGE} (agent {}) as the current build",
        build.version()
    );
    Ok(())
}

/// ecs-init creates `/mnt/ecs/ebs` (0755) and, when it cannot, only logs
/// it: the agent is then told that EBS task attach is unsupported
/// (`agent_env_overrides`).
fn make_ebs_mount_dir(paths: &Paths) {
    let dir = paths.ebs_mount_dir();
    if let Err(e) = durable::create_dir("EBS task-attach mount", &dir, 0o755) {
        log::error!("{e}; EBS task attach will be off (ECS_EBSTA_SUPPORTED=false)");
    }
}

/// What ecs-init sets in the agent's environment from the host's state,
/// over the config: `ECS_EBSTA_SUPPORTED` is `true` unless the config says
/// otherwise, and `false` whatever the config says when the mount point
/// is not a directory. `runtime::agent_environment` applies them.
pub fn agent_env_overrides(paths: &Paths, cfg: &Config) -> Vec<(String, String)> {
    const EBSTA: &str = "ECS_EBSTA_SUPPORTED";
    let value = if !paths.ebs_mount_dir().is_dir() {
        "false".to_string()
    } else {
        cfg.env
            .get(EBSTA)
            .map(|e| e.value.clone())
            .unwrap_or_else(|| "true".into())
    };
    vec![(EBSTA.to_string(), value)]
}

/// `post-stop`: undo the host network set-up, and remove what a warden
/// that is gone left in `run/`. Needs no Docker and no config.
pub fn post_stop(paths: &Paths) -> Result<String> {
    if Lock::is_held(&paths.lock()) {
        return Ok("a warden is still running for this root; nothing to clean".into());
    }
    let net = hostnet::teardown(paths)?;
    let mut removed = Vec::new();
    for p in [paths.control_socket()] {
        if p.exists() {
            std::fs::remove_file(&p).map_err(Error::io("remove stale", &p))?;
            removed.push(paths.display_rel(&p));
        }
    }
    Ok(if removed.is_empty() {
        format!("{net}\nnothing to clean in run/")
    } else {
        format!("{net}\nremoved {}", removed.join(", "))
    })
}

/// `reload-cache`: install the bundled agent into the store when it is
/// newer than the current build. It becomes current only when no warden
/// runs (the next start picks it up); a running agent is changed only by an
/// update, with its health gate.
pub fn reload_cache(paths: &Paths) -> Result<String> {
    prepare_layout(paths)?;
    let store = Store::new(paths);
    let Some(bundled) = store.bundled() else {
        return Err(Error::NoAgent {
            current: None,
            bundled: paths.bundled_agent(),
        });
    };
    let image = store::identify(&bundled)?;
    let (bundled_version, _) = store::probe_artifact(&bundled, image.as_ref(), &paths.agents_dir)?;
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
                build.artifact_file().display()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebs_task_attach_as_ecs_init_decides() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let cfg = |text: &str| {
            fs::create_dir_all(paths.etc_config.parent().unwrap()).unwrap();
            fs::write(&paths.etc_config, text).unwrap();
            Config::load(&paths).unwrap()
        };
        let ebsta = |c: &Config| agent_env_overrides(&paths, c)[0].1.clone();
        let forced_on = cfg("ECS_EBSTA_SUPPORTED=true\n");
        assert_eq!(
            ebsta(&forced_on),
            "false",
            "no mount point: off, whatever the config says"
        );
        make_ebs_mount_dir(&paths);
        assert!(paths.ebs_mount_dir().is_dir());
        assert_eq!(ebsta(&cfg("")), "true", "ecs-init's default");
        assert_eq!(ebsta(&cfg("ECS_EBSTA_SUPPORTED=false\n")), "false");
    }
}
