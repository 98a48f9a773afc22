//! The agent build store under `var/lib/ecs-warden/agents/`.
//!
//! Layout: `<version>/ecs-agent` (0755) and `<version>/artifact.json` (the
//! completion marker), `current` and `previous` as relative symlinks to a
//! version directory. A build is installed as:
//! 1. the executable is written into a hidden `.<version>.tmp-*` directory
//!    and fsynced;
//! 2. `artifact.json` is written last, durably;
//! 3. the directory is renamed to `<version>` and the store fsynced.
//!
//! So a `<version>` directory is always complete, and a crash leaves only
//! hidden leftovers that housekeeping removes. `current` is switched with
//! one rename(2) (`durable::switch_symlink`) and never points nowhere.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::version::{hex, parse_version, parse_version_banner};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::durable;
use crate::error::{Error, Result};
use crate::paths::{Paths, AGENT_FILE, AGENT_TARBALL, ARTIFACT_FILE};

/// `artifact.json`: what a build is and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_hash: Option<String>,
    pub sha256: String,
    pub size: u64,
    pub source: String,
    pub installed_at: String,
    /// Set when the build came as an image tarball (`ecs-agent.tar`, with
    /// its program extracted as `ecs-agent`); `sha256` and `size` are the
    /// tarball's then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageInfo>,
}

/// What the store knows of an image build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    /// `sha256:<hex>` of the image config: its ID in the engine.
    pub id: String,
    /// The program the image runs (`/agent`), extracted as `ecs-agent`.
    pub program: String,
    /// The names `docker load` gives it.
    #[serde(default)]
    pub repo_tags: Vec<String>,
}

/// An installed, complete build.
#[derive(Debug, Clone)]
pub struct Build {
    pub dir: PathBuf,
    pub artifact: Artifact,
}

impl Build {
    pub fn version(&self) -> &str {
        &self.artifact.version
    }
    pub fn executable(&self) -> PathBuf {
        self.dir.join(AGENT_FILE)
    }

    /// The image tarball of an image build.
    pub fn tarball(&self) -> Option<PathBuf> {
        self.artifact
            .image
            .as_ref()
            .map(|_| self.dir.join(AGENT_TARBALL))
    }

    /// The file `artifact.sha256` is the digest of.
    pub fn artifact_file(&self) -> PathBuf {
        self.tarball().unwrap_or_else(|| self.executable())
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

pub struct Store<'a> {
    paths: &'a Paths,
}

impl<'a> Store<'a> {
    pub fn new(paths: &'a Paths) -> Store<'a> {
        Store { paths }
    }

    /// A complete build of `version`, if installed.
    pub fn build(&self, version: &str) -> Option<Build> {
        let dir = self.paths.build_dir(version);
        read_build(&dir).ok()
    }

    fn link_target(&self, link: &Path) -> Option<Build> {
        let target = fs::read_link(link).ok()?;
        let dir = self.paths.agents_dir.join(target);
        read_build(&dir).ok()
    }

    /// The build `agents/current` points at.
    pub fn current(&self) -> Option<Build> {
        self.link_target(&self.paths.current())
    }

    /// The build `agents/previous` points at.
    pub fn previous(&self) -> Option<Build> {
        self.link_target(&self.paths.previous())
    }

    /// Name of the directory a link points at (even if incomplete).
    pub fn link_name(&self, link: &Path) -> Option<String> {
        fs::read_link(link)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// Every complete build, for housekeeping and status.
    pub fn builds(&self) -> Vec<Build> {
        let Ok(rd) = fs::read_dir(&self.paths.agents_dir) else {
            return Vec::new();
        };
        let mut out: Vec<Build> = rd
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| read_build(&e.path()).ok())
            .collect();
        out.sort_by(|a, b| a.dir.cmp(&b.dir));
        out
    }

    /// Install a verified executable at `src` (moved when `move_src`,
    /// else copied) as build `artifact.version`.
    /// The caller has checked size and digest; this re-checks nothing but
    /// writes the completion marker last.
    pub fn install(&self, src: &Path, artifact: &Artifact, move_src: bool) -> Result<Build> {
        parse_version(&artifact.version).map_err(Error::Other)?;
        let final_dir = self.paths.build_dir(&artifact.version);
        if let Ok(b) = read_build(&final_dir) {
            if b.artifact.sha256 == artifact.sha256 {
                return Ok(b);
            }
            return Err(Error::Other(format!(
                "build {} is already installed at {} with a different sha256 ({}); remove it first",
                artifact.version,
                final_dir.display(),
                b.artifact.sha256
            )));
        }
        durable::create_dir("agent store", &self.paths.agents_dir, 0o755)?;
        let tmp =
            self.paths
                .agents_dir
                .join(format!(".{}.tmp-{}", artifact.version, std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir(&tmp).map_err(Error::io("create build directory", &tmp))?;
        let result = (|| {
            let exe = tmp.join(AGENT_FILE);
            let file = match &artifact.image {
                Some(_) => tmp.join(AGENT_TARBALL),
                None => exe.clone(),
            };
            if move_src {
                fs::rename(src, &file).map_err(Error::io("move verified build into", &file))?;
            } else {
                fs::copy(src, &file).map_err(Error::io("copy agent build to", &file))?;
            }
            if let Some(image) = &artifact.image {
                fs::set_permissions(&file, fs::Permissions::from_mode(0o644))
                    .map_err(Error::io("set mode of", &file))?;
                fs::File::open(&file)
                    .and_then(|f| f.sync_all())
                    .map_err(Error::io("fsync", &file))?;
                // The same artifact runs natively: its program, from the
                // layers (written durably by the extractor).
                crate::image::extract_file(&file, &image.program, &exe)?;
            }
            fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))
                .map_err(Error::io("set mode of", &exe))?;
            fs::File::open(&exe)
                .and_then(|f| f.sync_all())
                .map_err(Error::io("fsync", &exe))?;
            durable::write_json("artifact marker", &tmp.join(ARTIFACT_FILE), artifact)?;
            if final_dir.exists() {
                // An incomplete directory of the same name (no marker): replace it.
                fs::remove_dir_all(&final_dir)
                    .map_err(Error::io("remove incomplete build", &final_dir))?;
            }
            fs::rename(&tmp, &final_dir).map_err(Error::io("rename build into", &final_dir))?;
            durable::sync_dir(&self.paths.agents_dir)?;
            read_build(&final_dir)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Point `current` at `version`; `previous` keeps what `current` was.
    /// Both switches are single renames; `previous` is switched first so a
    /// crash between them leaves `current` unchanged and `previous` merely
    /// refreshed.
    pub fn switch_current(&self, version: &str) -> Result<()> {
        if let Some(old) = self.link_name(&self.paths.current()) {
            if old != version {
                durable::switch_symlink("previous", &self.paths.previous(), Path::new(&old))?;
            }
        }
        durable::switch_symlink("current", &self.paths.current(), Path::new(version))
    }

    /// Make the store's directory entries durable.
    pub fn sync(&self) -> Result<()> {
        durable::sync_dir(&self.paths.agents_dir)
    }

    /// Point `current` at `version` (one rename). Not `durable`: the
    /// directory is not fsynced (the caller runs `sync` later; the
    /// update's downtime window holds no fsync).
    pub fn point_current(&self, version: &str, durable: bool) -> Result<()> {
        self.point("current", &self.paths.current(), version, durable)
    }

    /// Point `previous` at `version`.
    pub fn point_previous(&self, version: &str, durable: bool) -> Result<()> {
        self.point("previous", &self.paths.previous(), version, durable)
    }

    fn point(&self, what: &str, link: &Path, version: &str, sync: bool) -> Result<()> {
        if sync {
            durable::switch_symlink(what, link, Path::new(version))
        } else {
            durable::switch_symlink_unsynced(what, link, Path::new(version))
        }
    }

    /// Remove `previous` (there is no build before `current`).
    pub fn remove_previous(&self) -> Result<()> {
        let link = self.paths.previous();
        match fs::remove_file(&link) {
            Ok(()) => durable::sync_dir(&self.paths.agents_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &link)(e)),
        }
    }

    /// Why `current()` finds no build, in words for the operator: the link
    /// is missing, dangles, or names a build whose install did not finish.
    pub fn current_problem(&self) -> String {
        let link = self.paths.current();
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return format!(
                    "no agent build is installed ({} does not exist)",
                    link.display()
                )
            }
            Err(e) => return format!("{} is not a symlink to a build ({e})", link.display()),
        };
        let name = target.display();
        let dir = self.paths.agents_dir.join(&target);
        let marker = dir.join(ARTIFACT_FILE);
        if !dir.is_dir() {
            return format!("{} points at {name}, which does not exist", link.display());
        }
        match fs::read(&marker) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "{} points at {name}, which has no completion marker ({}): an install was interrupted, so the build may be incomplete",
                link.display(),
                marker.display()
            ),
            Err(e) => format!(
                "{} points at {name}, whose completion marker {} cannot be read: {e}",
                link.display(),
                marker.display()
            ),
            Ok(_) => match read_build(&dir) {
                Ok(_) => format!("{} points at a complete build {name}", link.display()),
                Err(e) => format!("{} points at {name}, which is not usable: {e}", link.display()),
            },
        }
    }

    /// First start: install the bundled agent (`var/cache/ecs/ecs-agent.tar`
    /// or `var/cache/ecs/ecs-agent`) when no build is current. Never
    /// replaces a current build: an agent updated through the API is not
    /// silently downgraded by a package.
    pub fn ensure_current(&self) -> Result<Build> {
        if let Some(b) = self.current() {
            return Ok(b);
        }
        let Some(bundled) = self.bundled() else {
            return Err(Error::NoAgent {
                current: Some(self.current_problem()),
                bundled: self.paths.bundled_agent(),
            });
        };
        let build = self.install_file(&bundled, &format!("file://{}", bundled.display()))?;
        self.point_current(build.version(), true)?;
        log::info!(
            "installed the bundled agent {} as the current build",
            build.version()
        );
        Ok(build)
    }

    /// The bundled agent: the image tarball, else the executable.
    pub fn bundled(&self) -> Option<PathBuf> {
        [self.paths.bundled_tarball(), self.paths.bundled_agent()]
            .into_iter()
            .find(|p| p.is_file())
    }

    /// Install the bundled agent into the store (not switched).
    pub fn install_bundled(&self) -> Result<Build> {
        let bundled = self.bundled().ok_or_else(|| Error::NoAgent {
            current: Some(self.current_problem()),
            bundled: self.paths.bundled_agent(),
        })?;
        self.install_file(&bundled, &format!("file://{}", bundled.display()))
    }

    /// Install the file at `src` (an executable or an image tarball; its
    /// version probed, its digest taken here), copying it.
    pub fn install_file(&self, src: &Path, source: &str) -> Result<Build> {
        let image = identify(src)?;
        let (version, git_hash) = probe_artifact(src, image.as_ref(), &self.paths.agents_dir)?;
        let (sha256, size) = hash_file(src)?;
        let artifact = Artifact {
            version,
            git_hash,
            sha256,
            size,
            source: source.to_string(),
            installed_at: now_rfc3339(),
            image,
        };
        self.install(src, &artifact, false)
    }
}

/// What a verified file is: an image tarball (`Some`) or an executable
/// (`None`). A tar archive that is not a usable image is an error.
pub fn identify(path: &Path) -> Result<Option<ImageInfo>> {
    if !is_tar(path) {
        return Ok(None);
    }
    let a = crate::image::inspect(path)?;
    let program = a.program().map(String::from).ok_or_else(|| {
        Error::Other(format!(
            "{}: the image has neither an entrypoint nor a command",
            path.display()
        ))
    })?;
    Ok(Some(ImageInfo {
        id: a.image_id,
        program,
        repo_tags: a.repo_tags,
    }))
}

/// Whether `path` starts like a POSIX tar archive (`ustar` at 257).
fn is_tar(path: &Path) -> bool {
    let mut head = [0u8; 263];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[257..262] == b"ustar"
}

/// The version of a build file: an image's program asked with `-version`
/// (extracted into `scratch` for that), or the executable itself.
pub fn probe_artifact(
    path: &Path,
    image: Option<&ImageInfo>,
    scratch: &Path,
) -> Result<(String, Option<String>)> {
    match image {
        Some(_) => crate::image::probe_version(path, scratch, Duration::from_secs(10)),
        None => probe_version(path),
    }
}

fn read_build(dir: &Path) -> Result<Build> {
    let marker = dir.join(ARTIFACT_FILE);
    let bytes = fs::read(&marker).map_err(Error::io("read build marker", &marker))?;
    let artifact: Artifact = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("{}: invalid build marker: {e}", marker.display())))?;
    if !dir.join(AGENT_FILE).is_file() {
        return Err(Error::Other(format!(
            "{}: build has a marker but no executable",
            dir.display()
        )));
    }
    Ok(Build {
        dir: dir.to_path_buf(),
        artifact,
    })
}

/// A file's identity and last change, as `fstat` tells them: the same
/// seal later means the same bytes, short of a fault below the file
/// system. Any write changes the mtime and the ctime, and the ctime cannot
/// be set back from user space. (Where file times are coarse, a write in
/// the same clock tick as the change before the seal was taken keeps
/// them: only a write racing with the very start of a hash, a tick after
/// the file was installed, could go unseen.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Seal {
    pub fn of(m: &fs::Metadata) -> Seal {
        use std::os::unix::fs::MetadataExt;
        Seal {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The seal of the file at `path` now.
    pub fn of_path(path: &Path) -> Result<Seal> {
        let m = fs::metadata(path).map_err(Error::io("stat", path))?;
        Ok(Seal::of(&m))
    }
}

/// SHA-256 (hex) and size of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    hash_and_seal(path).map(|(sha, size, _)| (sha, size))
}

/// `hash_file`, and the file's seal when it did not change while it was
/// read (the same before and after).
pub fn hash_and_seal(path: &Path) -> Result<(String, u64, Option<Seal>)> {
    let mut f = fs::File::open(path).map_err(Error::io("open", path))?;
    let stat = |f: &fs::File| {
        f.metadata()
            .map(|m| Seal::of(&m))
            .map_err(Error::io("stat", path))
    };
    let before = stat(&f)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(Error::io("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    let unchanged = stat(&f).ok() == Some(before) && before.size == size;
    let seal = unchanged.then_some(before);
    Ok((hex(&h.finalize()), size, seal))
}

/// Ask an agent executable for its version (`--version`), accepting the
/// banner `Amazon ECS Agent - v1.2.3 (abcdef12)` and the real agent's
/// `Version: 1.2.3` / `Commit: abcdef12` lines.
pub fn probe_version(exe: &Path) -> Result<(String, Option<String>)> {
    let mut child = Command::new(exe)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(Error::io("run agent --version:", exe))?;
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = so.read_to_string(&mut out);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    parse_version_banner(&out).ok_or_else(|| {
        Error::Other(format!(
            "{}: cannot tell its version from `--version` (printed {:?})",
            exe.display(),
            out.trim()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners() {
        assert_eq!(
            parse_version_banner("Amazon ECS Agent - v1.30.0 (02ff320c)\n"),
            Some(("1.30.0".into(), Some("02ff320c".into())))
        );
        assert_eq!(
            parse_version_banner("Amazon ECS Agent - v1.30.0 (*02ff320c)"),
            Some(("1.30.0".into(), Some("02ff320c".into())))
        );
        assert_eq!(
            parse_version_banner("Amazon ECS Agent:\n\tVersion: 1.51.0\n\tCommit: 2d6f5fc7\n"),
            Some(("1.51.0".into(), Some("2d6f5fc7".into())))
        );
        assert_eq!(parse_version_banner("hello"), None);
        assert_eq!(parse_version_banner("x - v../../etc (1)"), None);
    }

    #[test]
    fn versions_are_safe_names() {
        assert!(parse_version("1.2.3").is_ok());
        assert!(parse_version("v1.2.3-rc.1").is_ok());
        assert!(parse_version("1.2").is_err());
        assert!(parse_version("../1.2.3").is_err());
        assert!(parse_version("1.2.3/x").is_err());
    }
}
