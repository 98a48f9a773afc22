//! Docker image tarballs (`docker save`), read without Docker: what an
//! archive holds (`inspect`), one file out of its layers (`extract_file`,
//! in `extract.rs`), and the version of the agent it carries
//! (`probe_version`).
//!
//! Two layouts are read:
//! - Docker's (every `docker save`; the only one before Docker 25):
//!   `manifest.json` = `[{"Config": "<hex>.json", "RepoTags": [...],
//!   "Layers": ["<id>/layer.tar", ...]}]`, plus `repositories`; a layer
//!   shared by two images may be a symlink to the other's `layer.tar`.
//! - OCI (Docker 25+ writes it beside `manifest.json`; other tools write
//!   it alone): `index.json` → (image index →) image manifest →
//!   `blobs/sha256/<hex>` for the config and the layers, which may be
//!   gzip-compressed.
//!
//! Inspecting:
//! 1. index the tar's members by one pass over its headers, seeking over
//!    their contents (a 90 MB archive is read in a few hundred small reads);
//! 2. read `manifest.json` when present, else `index.json` (choosing the
//!    linux manifest for this machine's architecture from an image index);
//! 3. read the image config, check it against its digest (its name), and
//!    take from it the entrypoint, command, environment and the layers'
//!    `diff_ids`; check that every layer is in the archive.
//!
//! Any failure names the file and what is missing or wrong, so `inspect`
//! is also the "is this an image archive?" check.

mod extract;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub use extract::extract_file;

/// Configs and manifests larger than this are not an image's.
const MAX_JSON: u64 = 16 * 1024 * 1024;
/// Links inside the archive followed at most this many times.
const MAX_MEMBER_LINKS: usize = 8;

/// Which layout the archive was read through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `manifest.json` (Docker's; Docker 25+ adds an OCI index beside it).
    Docker,
    /// `index.json` only.
    Oci,
}

/// What an image archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    pub path: PathBuf,
    pub layout: Layout,
    /// `sha256:<hex>` of the image config: the image ID the engine gives
    /// the image when it loads it (with its classic image store).
    pub image_id: String,
    /// `repo:tag` names, as `docker load` will tag it.
    pub repo_tags: Vec<String>,
    pub architecture: String,
    pub os: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub working_dir: String,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
}

/// One layer: where its bytes are in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The member's name in the archive (after following member links).
    pub member: String,
    /// Offset of its contents in the archive file.
    pub offset: u64,
    pub size: u64,
    /// `sha256:<hex>` of the uncompressed layer tar, from the image config.
    pub diff_id: String,
}

impl ImageArchive {
    /// The program the image runs: the entrypoint's first word, else the
    /// command's.
    pub fn program(&self) -> Option<&str> {
        self.entrypoint
            .first()
            .or_else(|| self.cmd.first())
            .map(String::as_str)
    }
}

/// A member of the tar: where its contents are, or what it links to.
#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Symlink(String),
    HardLink(String),
    Other,
}

struct Index {
    path: PathBuf,
    file: File,
    members: BTreeMap<String, Member>,
}

impl Index {
    fn build(path: &Path) -> Result<Index> {
        let file = File::open(path).map_err(Error::io("open image archive", path))?;
        let mut members = BTreeMap::new();
        {
            let mut ar = tar::Archive::new(&file);
            let entries = ar
                .entries_with_seek()
                .map_err(|e| not_archive(path, &format!("not a tar file: {e}")))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| not_archive(path, &format!("not a tar file: {e}")))?;
                let name = member_name(&entry.path_bytes());
                let kind = entry.header().entry_type();
                let link = || {
                    entry
                        .link_name_bytes()
                        .map(|l| String::from_utf8_lossy(&l).into_owned())
                        .unwrap_or_default()
                };
                let m = if kind.is_file() || kind.is_contiguous() {
                    Member::File {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    }
                } else if kind.is_symlink() {
                    Member::Symlink(link())
                } else if kind.is_hard_link() {
                    Member::HardLink(link())
                } else {
                    Member::Other
                };
                members.insert(name, m);
            }
        }
        if members.is_empty() {
            return Err(not_archive(path, "the tar file is empty"));
        }
        Ok(Index {
            path: path.to_path_buf(),
            file,
            members,
        })
    }

    /// Offset and size of `name`'s contents, following links between
    /// members (relative to the link's directory, or to the archive root).
    fn locate(&self, name: &str) -> Option<(String, u64, u64)> {
        let mut name = member_name(name.as_bytes());
        for _ in 0..=MAX_MEMBER_LINKS {
            match self.members.get(&name)? {
                Member::File { offset, size } => return Some((name, *offset, *size)),
                Member::Symlink(target) => {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    name = join_member(dir, target)?;
                }
                Member::HardLink(target) => name = member_name(target.as_bytes()),
                Member::Other => return None,
            }
        }
        None
    }

    fn has(&self, name: &str) -> bool {
        self.locate(name).is_some()
    }

    fn read(&self, name: &str, what: &str) -> Result<Vec<u8>> {
        let (_, offset, size) = self.locate(name).ok_or_else(|| {
            not_archive(&self.path, &format!("{what} {name} is not in the archive"))
        })?;
        if size > MAX_JSON {
            return Err(not_archive(
                &self.path,
                &format!("{what} {name} is {size} bytes, too large for one"),
            ));
        }
        let mut f = &self.file;
        f.seek(SeekFrom::Start(offset))
            .map_err(Error::io(format!("read {what} {name} in"), &self.path))?;
        let mut buf = Vec::with_capacity(size as usize);
        f.take(size)
            .read_to_end(&mut buf)
            .map_err(Error::io(format!("read {what} {name} in"), &self.path))?;
        if buf.len() as u64 != size {
            return Err(not_archive(
                &self.path,
                &format!("{what} {name} is cut short (the archive is truncated)"),
            ));
        }
        Ok(buf)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, name: &str, what: &str) -> Result<T> {
        let bytes = self.read(name, what)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| not_archive(&self.path, &format!("{what} {name} is not valid: {e}")))
    }

    fn layer(&self, name: &str, diff_id: &str) -> Result<Layer> {
        let (member, offset, size) = self.locate(name).ok_or_else(|| {
            not_archive(&self.path, &format!("layer {name} is not in the archive"))
        })?;
        Ok(Layer {
            member,
            offset,
            size,
            diff_id: diff_id.to_string(),
        })
    }
}

fn not_archive(path: &Path, what: &str) -> Error {
    Error::Other(format!(
        "{}: not a usable docker image archive: {what}",
        path.display()
    ))
}

/// A member's name as the manifests spell it: no `./`, no trailing `/`.
fn member_name(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let parts: Vec<&str> = s
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    parts.join("/")
}

/// `target` of a member link in directory `dir`, kept inside the archive.
fn join_member(dir: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

// ---- the documents ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfigFile {
    architecture: String,
    os: String,
    config: Option<RunConfig>,
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RunConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RootFs {
    diff_ids: Vec<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    annotations: BTreeMap<String, String>,
    platform: Option<Platform>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct OciIndex {
    media_type: String,
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct OciManifest {
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Read what an image archive holds; an error names the file and what is
/// missing or wrong. See the module comment.
pub fn inspect(path: &Path) -> Result<ImageArchive> {
    let index = Index::build(path)?;
    let (layout, config_name, mut repo_tags, layer_names) = if index.has("manifest.json") {
        let entries: Vec<ManifestEntry> = index.json("manifest.json", "manifest")?;
        let entry = match entries.len() {
            1 => entries.into_iter().next().unwrap(),
            0 => return Err(not_archive(path, "manifest.json lists no image")),
            n => {
                return Err(not_archive(
                    path,
                    &format!("manifest.json lists {n} images; an agent archive holds one"),
                ))
            }
        };
        (
            Layout::Docker,
            entry.config,
            entry.repo_tags.unwrap_or_default(),
            entry.layers,
        )
    } else if index.has("index.json") {
        let (manifest, names) = oci_manifest(&index)?;
        let layers = manifest
            .layers
            .iter()
            .map(|l| blob_name(&index, &l.digest))
            .collect::<Result<Vec<_>>>()?;
        (
            Layout::Oci,
            blob_name(&index, &manifest.config.digest)?,
            names,
            layers,
        )
    } else {
        return Err(not_archive(
            path,
            "it has neither manifest.json (docker save) nor index.json (OCI layout)",
        ));
    };

    let config_bytes = index.read(&config_name, "image config")?;
    let digest = format!("sha256:{}", hex(&Sha256::digest(&config_bytes)));
    if let Some(expected) = digest_in_name(&config_name) {
        if expected != digest {
            return Err(not_archive(
                path,
                &format!(
                    "image config {config_name} does not match its digest (it hashes to {digest})"
                ),
            ));
        }
    }
    let config: ConfigFile = serde_json::from_slice(&config_bytes).map_err(|e| {
        not_archive(
            path,
            &format!("image config {config_name} is not valid: {e}"),
        )
    })?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != layer_names.len() {
        return Err(not_archive(
            path,
            &format!(
                "the manifest lists {} layers and the image config {} diff_ids",
                layer_names.len(),
                diff_ids.len()
            ),
        ));
    }
    let layers = layer_names
        .iter()
        .zip(&diff_ids)
        .map(|(name, diff)| index.layer(name, diff))
        .collect::<Result<Vec<_>>>()?;

    if repo_tags.is_empty() && index.has("repositories") {
        // Docker's older record of the names: {"repo": {"tag": "<layer id>"}}.
        let repos: BTreeMap<String, BTreeMap<String, String>> =
            index.json("repositories", "repositories file")?;
        for (repo, tags) in repos {
            for tag in tags.keys() {
                repo_tags.push(format!("{repo}:{tag}"));
            }
        }
    }
    let run = config.config.unwrap_or_default();
    Ok(ImageArchive {
        path: path.to_path_buf(),
        layout,
        image_id: digest,
        repo_tags,
        architecture: config.architecture,
        os: config.os,
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        env: run.env.unwrap_or_default(),
        working_dir: run.working_dir,
        layers,
    })
}

/// `sha256:<hex>` → `blobs/sha256/<hex>`, which must be in the archive.
fn blob_name(index: &Index, digest: &str) -> Result<String> {
    let (alg, hex) = digest
        .split_once(':')
        .filter(|(a, h)| !a.is_empty() && !h.is_empty() && !h.contains('/') && !a.contains('/'))
        .ok_or_else(|| not_archive(&index.path, &format!("{digest:?} is not a digest")))?;
    let name = format!("blobs/{alg}/{hex}");
    if !index.has(&name) {
        return Err(not_archive(
            &index.path,
            &format!("blob {digest} ({name}) is not in the archive"),
        ));
    }
    Ok(name)
}

/// The digest a member's name claims: `<hex>.json` or `blobs/sha256/<hex>`.
fn digest_in_name(name: &str) -> Option<String> {
    let base = name.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    let is_hex = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let named = name.ends_with(".json") && !name.contains('/') || name.starts_with("blobs/sha256/");
    (is_hex && named).then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// This machine's architecture in OCI's words.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// The image manifest `index.json` leads to, and the names its
/// annotations give the image.
fn oci_manifest(index: &Index) -> Result<(OciManifest, Vec<String>)> {
    let top: OciIndex = index.json("index.json", "OCI index")?;
    let mut names = Vec::new();
    let mut candidates: Vec<Descriptor> = Vec::new();
    for d in &top.manifests {
        if let Some(n) = d
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| d.annotations.get("org.opencontainers.image.ref.name"))
        {
            if let Some(n) = familiar_name(n) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        candidates.push(d.clone());
    }
    // Descend through image indexes (multi-platform images), at most a few
    // levels, keeping the manifests present in the archive.
    for _ in 0..4 {
        let mut next = Vec::new();
        let mut descended = false;
        for d in candidates {
            if INDEX_TYPES.contains(&d.media_type.as_str()) {
                descended = true;
                let name = blob_name(index, &d.digest)?;
                let sub: OciIndex = index.json(&name, "OCI image index")?;
                next.extend(sub.manifests);
            } else {
                next.push(d);
            }
        }
        candidates = next;
        if !descended {
            break;
        }
    }
    let arch = oci_arch();
    let usable = |d: &Descriptor| {
        let attestation = d
            .annotations
            .get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest");
        let platform_ok = d
            .platform
            .as_ref()
            .is_none_or(|p| p.os == "linux" && p.architecture == arch);
        !attestation
            && platform_ok
            && index.has(&format!("blobs/{}", d.digest.replacen(':', "/", 1)))
    };
    let chosen = candidates.iter().find(|d| usable(d)).ok_or_else(|| {
        not_archive(
            &index.path,
            &format!("index.json leads to no linux/{arch} image manifest present in the archive"),
        )
    })?;
    let name = blob_name(index, &chosen.digest)?;
    let manifest: OciManifest = index.json(&name, "OCI image manifest")?;
    if INDEX_TYPES.contains(&manifest.media_type.as_str()) {
        return Err(not_archive(
            &index.path,
            &format!("{name} is an image index nested too deeply"),
        ));
    }
    Ok((manifest, names))
}

/// `docker.io/library/busybox:latest` → `busybox:latest`, as `docker
/// images` shows it; a bare tag (no repository) is no name.
fn familiar_name(full: &str) -> Option<String> {
    // OCI's `ref.name` may be a bare tag ("latest"): that names no repository.
    if !full.contains('/') && !full.contains(':') {
        return None;
    }
    let (repo, tag) = match full.rfind(':') {
        Some(i) if !full[i + 1..].contains('/') => (&full[..i], &full[i + 1..]),
        _ => (full, "latest"),
    };
    if repo.is_empty() || tag.is_empty() {
        return None;
    }
    let repo = repo.strip_prefix("docker.io/").unwrap_or(repo);
    let repo = repo.strip_prefix("library/").unwrap_or(repo);
    Some(format!("{repo}:{tag}"))
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    crate::version::hex(bytes)
}

/// The version of the agent an image archive carries: its program
/// (entrypoint) is extracted into `scratch_dir` and run with `-version`,
/// whose answer is parsed by `version::parse_version_banner` (the banner,
/// or the real agent's `Version:` / `Commit:` lines). A program that has
/// not answered within `timeout` is killed. The extracted copy is removed.
pub fn probe_version(
    tarball: &Path,
    scratch_dir: &Path,
    timeout: Duration,
) -> Result<(String, Option<String>)> {
    let archive = inspect(tarball)?;
    let program = archive.program().ok_or_else(|| {
        Error::Other(format!(
            "{}: the image has neither an entrypoint nor a command to ask for its version",
            tarball.display()
        ))
    })?;
    if !program.starts_with('/') {
        return Err(Error::Other(format!(
            "{}: the image's program {program:?} is not an absolute path; cannot find it without a shell",
            tarball.display()
        )));
    }
    let dest = crate::durable::temp_sibling(&scratch_dir.join("image-probe"), "agent");
    extract::extract_from(&archive, program, &dest)?;
    let result = run_version(&dest, timeout);
    let _ = std::fs::remove_file(&dest);
    let out = result.map_err(|e| {
        Error::Other(format!(
            "{}: run its program {program} -version: {e}",
            tarball.display()
        ))
    })?;
    crate::version::parse_version_banner(&out).ok_or_else(|| {
        Error::Other(format!(
            "{}: cannot tell the version of {program} from `-version` (printed {:?})",
            tarball.display(),
            out.trim()
        ))
    })
}

/// Run `exe -version` and collect its standard output (at most 64 KiB),
/// killing it after `timeout`.
fn run_version(exe: &Path, timeout: Duration) -> std::result::Result<String, String> {
    use std::process::{Command, Stdio};
    let spawn = || {
        Command::new(exe)
            .arg("-version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
    };
    // ETXTBSY: another thread's fork can briefly hold a copy of the
    // descriptor the file was just written through; it goes at its exec.
    let mut tries = 0;
    let mut child = loop {
        match spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            other => break other.map_err(|e| e.to_string())?,
        }
    };
    let mut stdout = child.stdout.take().ok_or("no standard output")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // The read runs beside the deadline: a program that keeps its output
    // open must not hold the caller past `timeout`.
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = (&mut stdout).take(64 * 1024).read_to_end(&mut out);
        let _ = tx.send(r.map(|_| out));
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("read its output: {e}"));
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ));
        }
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests;
