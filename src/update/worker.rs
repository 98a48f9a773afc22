//! The update machine's long work, run on worker threads: each `Work` item
//! becomes one `Report`. Nothing here decides anything: a worker does its
//! job and says how it went; the machine chooses what follows.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::download::{self, DlError};
use super::gate;
use super::journal::{Failure, Reason, Target};
use super::machine::{Report, Work};
use super::snapshot::{self, SNAPSHOT_DIR};
use crate::config::Config;
use crate::error::EcsErrorName::{ClientException, ServerException};
use crate::paths::Paths;
use crate::store::{self, Artifact, Seal, Store};

/// What every worker may use.
#[derive(Clone)]
pub struct Ctx {
    pub paths: Paths,
    pub cfg: Config,
    /// The engine's socket when the agent runs in Docker: a staged image
    /// is loaded into it while staging.
    pub engine: Option<std::path::PathBuf>,
    /// The engine the agent's tasks run on (in both runtimes), when one is
    /// configured or at the default socket.
    pub tasks_engine: Option<std::path::PathBuf>,
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
        Work::DesiredImage { .. } => "desired-image",
    }
}

/// The update `work` belongs to (for a panic report).
pub fn id(work: &Work) -> Option<String> {
    match work {
        Work::Download { id, .. }
        | Work::Reverify { id, .. }
        | Work::RecordTasks { id, .. }
        | Work::Snapshot { id, .. }
        | Work::Restore { id, .. }
        | Work::Gate { id, .. } => Some(id.clone()),
        Work::DesiredImage { .. } => None,
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
        Work::Reverify { id, target, seal } => {
            let (result, seal) = match reverify(paths, &target, seal) {
                Ok(seal) => (Ok(()), seal),
                Err(f) => (Err(f), None),
            };
            Report::Reverified { id, result, seal }
        }
        Work::RecordTasks { id, from_engine } => Report::Tasks {
            id,
            result: if from_engine {
                Ok(engine_tasks(ctx))
            } else {
                gate::record_tasks(&ctx.cfg.introspection, ctx.cfg.update.health_timeout)
            },
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
            check_engine,
        } => {
            let spec = gate::Spec {
                endpoint: ctx.cfg.introspection.clone(),
                version,
                tasks_before,
                engine: ctx.tasks_engine.clone().filter(|_| check_engine),
                timeout: ctx.cfg.update.health_timeout,
                stable: ctx.cfg.update.health_stable,
            };
            Report::Gate {
                id,
                seq,
                result: gate::run(&spec),
            }
        }
        Work::DesiredImage { perform } => Report::DesiredImage {
            perform,
            result: exit_42_target(paths),
        },
    }
}

/// The tasks the engine runs: its running containers that carry an ECS
/// task's ARN (the agent labels them), grouped by task. No engine: none.
fn engine_tasks(ctx: &Ctx) -> Vec<super::journal::TaskRecord> {
    use std::collections::BTreeMap;
    let Some(socket) = &ctx.tasks_engine else {
        return Vec::new();
    };
    // This agent's: an engine may hold other clusters' tasks (tests share one).
    let cluster = format!("{CLUSTER_LABEL}={}", ctx.cfg.cluster);
    let listed = crate::engine::Engine::connect(socket, std::time::Duration::from_secs(10))
        .and_then(|e| e.containers(false, &[("label", TASK_ARN_LABEL), ("label", &cluster)]));
    let containers = match listed {
        Ok(c) => c,
        Err(e) => {
            log::warn!("cannot list the engine's task containers before the update: {e}");
            return Vec::new();
        }
    };
    let mut tasks: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in containers {
        if let Some(arn) = c.labels.get(TASK_ARN_LABEL) {
            tasks.entry(arn.clone()).or_default().push(c.id);
        }
    }
    tasks
        .into_iter()
        .map(|(arn, mut containers)| {
            containers.sort();
            super::journal::TaskRecord { arn, containers }
        })
        .collect()
}

/// The labels the agent puts on every container of a task.
pub const TASK_ARN_LABEL: &str = "com.amazonaws.ecs.task-arn";
pub const CLUSTER_LABEL: &str = "com.amazonaws.ecs.cluster";

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
    let verify = |m: String| Failure::new(ClientException, Reason::Verify, m);
    let image = store::identify(&partial).map_err(|e| verify(e.to_string()))?;
    if learned.version.is_empty() {
        if image.is_none() {
            fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))
                .map_err(|e| verify(format!("chmod {}: {e}", partial.display())))?;
        }
        let (v, h) = store::probe_artifact(&partial, image.as_ref(), &paths.agents_dir)
            .map_err(|e| verify(e.to_string()))?;
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
        image,
    };
    let store = Store::new(paths);
    let build = store
        .install(&partial, &artifact, true)
        .map_err(|e| Failure::new(ServerException, Reason::Disk, e.to_string()))?;
    if let Some(socket) = &ctx.engine {
        // Loaded now, so the engine's `load` is not part of the downtime.
        crate::agent_image::preload(socket, &build, store.current().as_ref())
            .map_err(|e| Failure::new(ServerException, Reason::Verify, e))?;
    }
    Ok(learned)
}

/// Hash the staged build again: it must still be what was verified.
/// Hash the staged build again, unless it still has the `seal` of an
/// earlier hash of it: its seal as hashed now, when it did not change
/// while it was read.
pub fn reverify(
    paths: &Paths,
    target: &Target,
    seal: Option<Seal>,
) -> Result<Option<Seal>, Failure> {
    let Some(build) = Store::new(paths).build(&target.version) else {
        return Err(Failure::new(
            ClientException,
            Reason::Verify,
            format!(
                "the staged build {} is no longer in the store",
                target.version
            ),
        ));
    };
    let exe = build.artifact_file();
    if let Some(seal) = seal {
        if Seal::of_path(&exe).ok() == Some(seal) {
            log::info!(
                "{} is the file hashed at staging, unchanged since; not read again",
                exe.display()
            );
            return Ok(Some(seal));
        }
        log::warn!(
            "{} changed since it was hashed at staging; hashing it again",
            exe.display()
        );
    }
    match store::hash_and_seal(&exe) {
        Ok((sha, size, seal)) if sha == target.sha256 && size == target.size => Ok(seal),
        Ok((sha, size, _)) => Err(Failure::new(
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
    // What the real agent stages is an image tarball; a bare executable
    // (the sample agent's) is accepted too.
    let image = store::identify(&file).map_err(|e| e.to_string())?;
    let (sha256, size) = store::hash_file(&file).map_err(|e| e.to_string())?;
    if image.is_none() {
        // The version probe executes it: give the owner the execute bit.
        let mode = meta.permissions().mode();
        if mode & 0o100 == 0 {
            fs::set_permissions(&file, fs::Permissions::from_mode(mode | 0o100))
                .map_err(|e| format!("make {} executable: {e}", file.display()))?;
        }
    }
    let (version, git_hash) = store::probe_artifact(&file, image.as_ref(), &paths.agents_dir)
        .map_err(|e| e.to_string())?;
    Ok(Some(Target {
        version,
        git_hash,
        url: crate::source::Source::file(&file),
        sha256,
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build 1.1.0 in a store under a temporary root; its target.
    fn a_build(dir: &std::path::Path) -> (Paths, Target, std::path::PathBuf) {
        let paths = Paths::new(dir.join("root"));
        let src = dir.join("agent");
        fs::write(&src, b"#!/bin/sh\necho 'Amazon ECS Agent - v1.1.0 (0a)'\n").unwrap();
        let (sha256, size) = store::hash_file(&src).unwrap();
        let artifact = Artifact {
            version: "1.1.0".into(),
            git_hash: None,
            sha256: sha256.clone(),
            size,
            source: "file:///agent".into(),
            installed_at: store::now_rfc3339(),
            image: None,
        };
        let build = Store::new(&paths).install(&src, &artifact, false).unwrap();
        let target = Target {
            version: "1.1.0".into(),
            git_hash: None,
            url: crate::source::Source::file(&src),
            sha256,
            size,
        };
        (paths, target, build.artifact_file())
    }

    #[test]
    fn a_sealed_build_is_not_read_again_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, target, file) = a_build(dir.path());
        let seal = reverify(&paths, &target, None)
            .unwrap()
            .expect("unchanged while hashed: sealed");
        assert_eq!(Seal::of_path(&file).unwrap(), seal);

        // With the seal, the bytes are not read: a target whose digest
        // does not match still passes (how the test sees that no hash ran).
        let mut wrong = target.clone();
        wrong.sha256 = "0".repeat(64);
        assert_eq!(reverify(&paths, &wrong, Some(seal)).unwrap(), Some(seal));

        // Rewritten with the same length: the seal no longer fits, the
        // file is hashed and the change found. (A tick later: on kernels
        // with coarse file times a write in the same tick as the last one
        // keeps its times.)
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut perms = fs::metadata(&file).unwrap().permissions();
        perms.set_mode(0o755);
        fs::set_permissions(&file, perms).unwrap();
        let old = fs::read(&file).unwrap();
        let mut new = old.clone();
        new[old.len() - 3] ^= 1;
        fs::write(&file, &new).unwrap();
        assert_ne!(Seal::of_path(&file).unwrap(), seal);
        let err = reverify(&paths, &target, Some(seal)).unwrap_err();
        assert_eq!(err.reason, Reason::Verify);
        assert!(err.message.contains("changed on disk"), "{}", err.message);
    }
}
