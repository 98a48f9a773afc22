//! The agent's images in the engine, apart from running them: the tags
//! (`amazon/amazon-ecs-agent:vVERSION` per build, `:latest` on the one
//! `current` names), loading a build's tarball (`ensure_loaded`, at a start
//! when the engine lacks it), the preload while an update stages, and the
//! housekeeping of old tags. Used by the Docker runtime, the update worker
//! and `pre-start`; it knows nothing of the main loop (no events), so the
//! update machine's workers can use it without a module cycle.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::Build;

/// The image ecs-init runs as the container `ecs-agent`.
pub const AGENT_IMAGE: &str = "amazon/amazon-ecs-agent:latest";
/// Bound of an ordinary engine call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of an image load (a ~90 MB tarball takes about a second).
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// The repository of the agent's images.
pub const AGENT_REPO: &str = "amazon/amazon-ecs-agent";

/// The tag of build `version`'s image.
pub fn version_tag(version: &str) -> String {
    format!("{AGENT_REPO}:v{version}")
}

/// The engine's socket from `DOCKER_HOST` (default `/var/run/docker.sock`).
pub fn socket(cfg: &Config) -> Result<PathBuf> {
    crate::engine::socket_from_docker_host(cfg.docker_host.as_deref())
        .map_err(|m| Error::Other(format!("DOCKER_HOST: {m}")))
}

fn connect(socket: &Path) -> Result<Engine> {
    Engine::connect(socket, CALL_TIMEOUT).map_err(Error::from)
}

/// The engine's image of `build`, loaded from its tarball when missing,
/// and tagged `vVERSION`. Returns its ID.
pub fn ensure_loaded(engine: &Engine, build: &Build) -> Result<String> {
    let Some(info) = &build.artifact.image else {
        return Err(Error::Other(format!(
            "build {} is an executable, not an image: the Docker runtime runs image builds (an image tarball); set ECS_WARDEN_RUNTIME=native, or update to an image build",
            build.version()
        )));
    };
    let have = engine.image_inspect(&info.id).map_err(Error::from)?;
    if have.is_none() {
        let tarball = build.tarball().expect("an image build has its tarball");
        let t = Instant::now();
        let loaded = engine
            .image_load(&tarball, LOAD_TIMEOUT)
            .map_err(Error::from)?;
        log::info!(
            "loaded {} into the engine in {} ms ({})",
            tarball.display(),
            t.elapsed().as_millis(),
            loaded.images.join(", ")
        );
        if engine
            .image_inspect(&info.id)
            .map_err(Error::from)?
            .is_none()
        {
            return Err(Error::Other(format!(
                "the engine loaded {} but has no image {} (it announced {:?})",
                tarball.display(),
                info.id,
                loaded.images
            )));
        }
    }
    engine
        .image_tag(&info.id, &version_tag(build.version()))
        .map_err(Error::from)?;
    Ok(info.id.clone())
}

/// While staging: load `build`'s image, and keep `:latest` on `current`'s
/// (a load moves it to the image loaded).
pub fn preload(
    socket: &Path,
    build: &Build,
    current: Option<&Build>,
) -> std::result::Result<(), String> {
    let engine = connect(socket).map_err(|e| e.to_string())?;
    if build.artifact.image.is_none() {
        return Err(format!(
            "build {} is an executable, not an image; the Docker runtime cannot run it",
            build.version()
        ));
    }
    ensure_loaded(&engine, build).map_err(|e| e.to_string())?;
    if let Some(cur) = current.and_then(|c| c.artifact.image.as_ref()) {
        engine
            .image_tag(&cur.id, AGENT_IMAGE)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Remove the `vVERSION` tags of builds not in `keep`, on a thread (the
/// engine deletes an image left with no name and no container).
pub fn housekeeping(socket: PathBuf, keep: Vec<String>) {
    let _ = std::thread::Builder::new()
        .name("docker-housekeeping".into())
        .spawn(move || {
            let engine = match connect(&socket) {
                Ok(e) => e,
                Err(e) => return log::warn!("housekeeping: {e}"),
            };
            let images = match engine.images(Some(AGENT_REPO)) {
                Ok(i) => i,
                Err(e) => return log::warn!("housekeeping: {e}"),
            };
            let kept: Vec<String> = keep.iter().map(|v| version_tag(v)).collect();
            for img in images {
                for tag in &img.repo_tags {
                    let ours = tag
                        .strip_prefix(AGENT_REPO)
                        .and_then(|t| t.strip_prefix(":v"))
                        .is_some();
                    if ours && !kept.contains(tag) {
                        match engine.image_remove(tag, false) {
                            Ok(_) => log::info!("housekeeping: removed the image {tag}"),
                            Err(e) => log::warn!("housekeeping: {e}"),
                        }
                    }
                }
            }
        });
}
