//! The update machine's long work, run on worker threads: each `Work` item
//! becomes one `Report`. Nothing here decides anything: a worker does its
//! job and says how it went; the machine chooses what follows.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::download::{self, DlError};
use super::gate;
use super::journal::{Failure, Reason, Target};
use super::machine::{Report, Work};
use super::snapshot::{self, SNAPSHOT_DIR};
use crate::config::Config;
use crate::error::EcsErrorName::{ClientException, ServerException};
use crate::paths::Paths;
use crate::store::{self, Artifact, Store};

/// What every worker may use.
#[derive(Clone)]
pub struct Ctx {
    pub paths: Paths,
    pub cfg: Config,
}

/// A thread name for `work`.
pub fn name(work: &Work) -> &'static str {
    match work {
        Work::Download { .. } => "download",
        Work::Reverify { .. } => "reverify",
        Work::RecordTasks { .. } => "tasks",
        Work::Snapshot { .. } => "snapshot",
        Work::Restore { .. } => "restore",
        Work::Gate { .. } => "gate",
        Work::Exit42 => "exit-42",
    }
}

/// The update `work` belongs to (for a panic report).
pub fn id(work: &Work) -> Option<String> {
    match work {
        Work::Download { id, .. }
        | Work::Reverify { id, .. }
        | Work::RecordTasks { id }
        | Work::Snapshot { id, .. }
        | Work::Restore { id, .. }
        | Work::Gate { id, .. } => Some(id.clone()),
        Work::Exit42 => None,
    }
}

/// Do `work`; `progress` receives the download's progress reports.
pub fn run(work: Work, ctx: &Ctx, progress: &dyn Fn(Report)) -> Report {
    let paths = &ctx.paths;
    match work {
        Work::Download { id, target, source } => {
            let result = stage(ctx, &id, target, &source, progress);
            Report::Staged { id, result }
        }
        Work::Reverify { id, target } => Report::Reverified {
            result: reverify(paths, &target),
            id,
        },
        Work::RecordTasks { id } => Report::Tasks {
            id,
            result: gate::record_tasks(&ctx.cfg.introspection, ctx.cfg.update.health_timeout),
        },
        Work::Snapshot { id, version } => Report::Snapshot {
            id: id.clone(),
            result: snapshot::take(&paths.data_dir, &snapshot_path(paths, &version), &id)
                .map_err(|e| e.to_string()),
        },
        Work::Restore { id, version } => Report::Restored {
            id,
            result: snapshot::restore(&snapshot_path(paths, &version), &paths.data_dir)
                .map_err(|e| e.to_string()),
        },
        Work::Gate {
            id,
            seq,
            version,
            tasks_before,
        } => {
            let spec = gate::Spec {
                endpoint: ctx.cfg.introspection.clone(),
                version,
                tasks_before,
                timeout: ctx.cfg.update.health_timeout,
                stable: ctx.cfg.update.health_stable,
            };
            Report::Gate {
                id,
                seq,
                result: gate::run(&spec),
            }
        }
        Work::Exit42 => Report::Exit42 {
            result: exit_42_target(paths),
        },
    }
}

/// Where build `version`'s data snapshot lives.
pub fn snapshot_path(paths: &Paths, version: &str) -> std::path::PathBuf {
    paths.build_dir(version).join(SNAPSHOT_DIR)
}

/// Download, verify and install `target` into the store; the target as
/// learned (its size, and its version when the request did not know it).
fn stage(
    ctx: &Ctx,
    id: &str,
    target: Target,
    source: &str,
    progress: &dyn Fn(Report),
) -> Result<Target, Failure> {
    let paths = &ctx.paths;
    let partial = paths.partial(&target.key());
    let mut job = download::Job {
        partial: partial.clone(),
        target: target.clone(),
        proxy: &ctx.cfg.proxy,
        cfg: &ctx.cfg.update,
    };
    let mut report = |done: u64, total: u64| {
        if done * 2 >= total && done < total {
            crate::failpoint::hit("mid-download");
        }
        progress(Report::Progress {
            id: id.to_string(),
            done,
            total,
        });
    };
    let size = download::run(&mut job, &mut report).map_err(|e| match e {
        DlError::Fatal(m) => Failure::new(ClientException, Reason::Download, m),
        DlError::Disk(m) => Failure::new(ServerException, Reason::Disk, m),
        DlError::Retry(m) => Failure::new(ServerException, Reason::Download, m),
    })?;
    let mut learned = target;
    learned.size = size;
    if learned.version.is_empty() {
        let (v, h) = probe_partial(&partial)
            .map_err(|m| Failure::new(ClientException, Reason::Verify, m))?;
        learned.version = v;
        learned.git_hash = learned.git_hash.or(h);
    }
    let artifact = Artifact {
        version: learned.version.clone(),
        git_hash: learned.git_hash.clone(),
        sha256: learned.sha256.clone(),
        size: learned.size,
        source: format!("{} ({source})", learned.url),
        installed_at: store::now_rfc3339(),
    };
    Store::new(paths)
        .install(&partial, &artifact, true)
        .map(|_| learned)
        .map_err(|e| Failure::new(ServerException, Reason::Disk, e.to_string()))
}

/// Hash the staged build again: it must still be what was verified.
fn reverify(paths: &Paths, target: &Target) -> Result<(), Failure> {
    let exe = paths
        .build_dir(&target.version)
        .join(crate::paths::AGENT_FILE);
    match store::hash_file(&exe) {
        Ok((sha, size)) if sha == target.sha256 && size == target.size => Ok(()),
        Ok((sha, size)) => Err(Failure::new(
            ClientException,
            Reason::Verify,
            format!(
                "the staged build {} changed on disk: {size} bytes hashing to {sha}, expected {} bytes hashing to {}",
                exe.display(),
                target.size,
                target.sha256
            ),
        )),
        Err(e) => Err(Failure::new(ServerException, Reason::Verify, e.to_string())),
    }
}

/// The version a downloaded (verified) executable reports.
fn probe_partial(partial: &Path) -> Result<(String, Option<String>), String> {
    fs::set_permissions(partial, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", partial.display()))?;
    store::probe_version(partial).map_err(|e| e.to_string())
}

/// Read `desired-image`, check the file it names, and describe it.
fn exit_42_target(paths: &Paths) -> Result<Option<Target>, String> {
    let desired = paths.desired_image();
    let name = match fs::read_to_string(&desired) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", desired.display())),
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "{} names {name:?}, not a file in {}",
            desired.display(),
            paths.cache_dir.display()
        ));
    }
    let file = paths.cache_dir.join(&name);
    let meta = fs::symlink_metadata(&file)
        .map_err(|e| format!("{} names {}: {e}", desired.display(), file.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", file.display()));
    }
    let (sha256, size) = store::hash_file(&file).map_err(|e| e.to_string())?;
    // The agent stages a download (0644, like its image tarballs), but
    // the version probe executes it: give the owner the execute bit.
    let mode = meta.permissions().mode();
    if mode & 0o100 == 0 {
        fs::set_permissions(&file, fs::Permissions::from_mode(mode | 0o100))
            .map_err(|e| format!("make {} executable: {e}", file.display()))?;
    }
    let (version, git_hash) = store::probe_version(&file).map_err(|e| e.to_string())?;
    Ok(Some(Target {
        version,
        git_hash,
        url: crate::source::Source::file(&file),
        sha256,
        size,
    }))
}
