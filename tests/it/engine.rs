//! The Engine API client and the image-archive reader against a real
//! Docker engine (`DOCKER_HOST`, default `/var/run/docker.sock`).
//!
//! Every test builds its own tiny image (`docker import` of a static
//! busybox rootfs) under a unique throw-away tag, names its containers
//! uniquely, and removes both when it ends (a `Cleanup` guard, also on
//! panic); no other container or image is touched. With `CI` set a missing
//! engine or busybox fails the test; elsewhere the test is skipped with a
//! loud message (`harness::tools`).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ecs_warden::agent_env::{self, Runtime};
use ecs_warden::engine::{
    ContainerCreate, Engine, EngineError, HostConfig, LogOptions, Stream, WaitCondition,
};
use ecs_warden::host_facts::HostFacts;
use ecs_warden::image;
use ecs_warden::paths::Paths;
use ecs_warden::runtime::docker_config;

use crate::harness::unavailable;

const TIMEOUT: Duration = Duration::from_secs(30);
const BUSYBOX: &str = "/bin/busybox";

/// The harness's one switch: fails the test in CI, else a loud skip.
fn skip(test: &str, why: &str) -> Option<Engine> {
    unavailable(test, &format!("{why}; run scripts/docker-env.sh"));
    None
}

/// The engine, or `None` (skip) when none answers outside CI.
fn engine(test: &str) -> Option<Engine> {
    let host = std::env::var("DOCKER_HOST").ok();
    let socket = match ecs_warden::engine::socket_from_docker_host(host.as_deref()) {
        Ok(s) => s,
        Err(e) => return skip(test, &e),
    };
    if !is_static(Path::new(BUSYBOX)) {
        return skip(
            test,
            "a static /bin/busybox is needed (Debian's busybox-static)",
        );
    }
    match Engine::connect(&socket, TIMEOUT) {
        Ok(e) => Some(e),
        Err(e) => skip(test, &format!("no Docker engine answers: {e}")),
    }
}

fn is_static(p: &Path) -> bool {
    p.exists()
        && !Command::new("ldd")
            .arg(p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// A name no other test or process uses.
fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "ew-engine-test-{what}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes what a test made, whatever happens to the test.
struct Cleanup {
    engine: Engine,
    containers: Vec<String>,
    images: Vec<String>,
}

impl Cleanup {
    fn new(engine: &Engine) -> Cleanup {
        Cleanup {
            engine: engine.clone(),
            containers: Vec::new(),
            images: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.engine.container_remove(c, true, true);
        }
        for i in &self.images {
            let _ = self.engine.image_remove(i, true);
        }
    }
}

fn docker(args: &[&str]) -> std::process::Output {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A rootfs tar: busybox with a few applet links, plus `extra` files.
fn rootfs(path: &Path, extra: &[(&str, &Path)]) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir.clone(), "bin/", &[][..]).unwrap();
    b.append_path_with_name(BUSYBOX, "bin/busybox").unwrap();
    for applet in ["sh", "sleep", "cat", "true"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    for (name, src) in extra {
        b.append_path_with_name(src, name).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

/// `docker import` of a busybox rootfs (plus `extra`) as `tag`.
fn import(dir: &Path, tag: &str, extra: &[(&str, &Path)]) {
    let tar = dir.join(format!("{}.rootfs.tar", tag.replace([':', '/'], "_")));
    rootfs(&tar, extra);
    docker(&[
        "import",
        "-c",
        r#"ENTRYPOINT ["/bin/busybox"]"#,
        tar.to_str().unwrap(),
        tag,
    ]);
    fs::remove_file(tar).unwrap();
}

fn sh(image: &str, script: &str) -> ContainerCreate {
    ContainerCreate {
        image: image.into(),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec![script.into()]),
        labels: [("ew-engine-test".to_string(), "1".to_string())].into(),
        host_config: HostConfig {
            network_mode: "none".into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn version_ping_and_negotiation() {
    let Some(e) = engine("version_ping_and_negotiation") else {
        return;
    };
    let v = e.server_version();
    assert!(!v.version.is_empty() && !v.api_version.is_empty(), "{v:?}");
    let api = e.api_version();
    assert!(api >= ecs_warden::engine::MIN_API && api <= ecs_warden::engine::MAX_API);
    let newest = ecs_warden::engine::ApiVersion::parse(&v.api_version).unwrap();
    assert_eq!(api, newest.min(ecs_warden::engine::MAX_API));
    e.ping().unwrap();
    assert_eq!(e.version().unwrap().version, v.version);
    // What `docker version` reports as the server's version.
    let cli = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), v.version);

    let err = Engine::connect("/nonexistent/docker.sock", TIMEOUT).unwrap_err();
    assert!(matches!(err, EngineError::Connect { .. }));
    assert!(
        err.to_string().contains("/nonexistent/docker.sock"),
        "{err}"
    );
}

#[test]
fn load_inspect_tag_list_remove() {
    let Some(e) = engine("load_inspect_tag_list_remove") else {
        return;
    };
    let mut clean = Cleanup::new(&e);
    let d = tempfile::tempdir().unwrap();
    let repo = unique("img");
    let tag = format!("{repo}:v1");
    let other = format!("{repo}:moved");
    clean.images.extend([tag.clone(), other.clone()]);
    import(d.path(), &tag, &[]);

    // An archive Docker wrote: the reader agrees with the engine.
    let saved = d.path().join("saved.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), &tag]);
    let archive = image::inspect(&saved).unwrap();
    assert_eq!(archive.repo_tags, vec![tag.clone()]);
    assert_eq!(archive.entrypoint, vec!["/bin/busybox"]);
    let before = e.image_inspect(&tag).unwrap().expect("imported image");
    assert_eq!(archive.image_id, before.id);
    let out = d.path().join("busybox-out");
    image::extract_file(&saved, "/bin/sh", &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), fs::read(BUSYBOX).unwrap());

    // Remove it, then load it back through the client.
    let gone = e.image_remove(&tag, true).unwrap();
    assert!(
        gone.iter()
            .any(|g| g.untagged.as_deref() == Some(tag.as_str())),
        "{gone:?}"
    );
    assert!(e.image_inspect(&tag).unwrap().is_none());
    let loaded = e.image_load(&saved, TIMEOUT).unwrap();
    assert_eq!(loaded.images, vec![tag.clone()]);
    let after = e.image_inspect(&tag).unwrap().unwrap();
    assert_eq!(after.id, before.id);
    assert_eq!(after.config.entrypoint, vec!["/bin/busybox"]);

    e.image_tag(&tag, &other).unwrap();
    assert_eq!(e.image_inspect(&other).unwrap().unwrap().id, before.id);
    let listed = e.images(Some(&repo)).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let mut tags = listed[0].repo_tags.clone();
    tags.sort();
    assert_eq!(tags, vec![other.clone(), tag.clone()]);
    e.image_remove(&other, false).unwrap();
    assert!(e.image_inspect(&other).unwrap().is_none());
    assert!(
        e.image_inspect(&tag).unwrap().is_some(),
        "the other tag stays"
    );

    let err = e.image_remove(&other, false).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(&other), "{err}");
}

#[test]
fn load_surfaces_the_engines_error() {
    let Some(e) = engine("load_surfaces_the_engines_error") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let tag = format!("{}:v1", unique("bad"));
    let mut clean = Cleanup::new(&e);
    clean.images.push(tag.clone());
    import(d.path(), &tag, &[]);
    let saved = d.path().join("saved.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), &tag]);
    e.image_remove(&tag, true).unwrap();

    // Cut short: the engine reports the broken tar in its progress stream.
    let bytes = fs::read(&saved).unwrap();
    let cut = d.path().join("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = e.image_load(&cut, TIMEOUT).unwrap_err();
    assert!(matches!(err, EngineError::Failed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("cut.tar") && msg.contains("load image"),
        "{msg}"
    );

    // Not an image at all.
    let junk = d.path().join("junk.tar");
    fs::write(&junk, b"hello").unwrap();
    let err = e.image_load(&junk, TIMEOUT).unwrap_err();
    assert!(matches!(err, EngineError::Failed { .. }), "{err:?}");

    let err = e
        .image_load(&d.path().join("missing.tar"), TIMEOUT)
        .unwrap_err();
    assert!(matches!(err, EngineError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.tar"), "{err}");
}

#[test]
fn container_lifecycle_stop_wait_logs_remove() {
    let Some(e) = engine("container_lifecycle_stop_wait_logs_remove") else {
        return;
    };
    let mut clean = Cleanup::new(&e);
    let d = tempfile::tempdir().unwrap();
    let tag = format!("{}:v1", unique("life"));
    clean.images.push(tag.clone());
    import(d.path(), &tag, &[]);
    let name = unique("c");
    clean.containers.push(name.clone());

    // A TERM handler: `stop` is graceful, and the exit code says so.
    let mut body = sh(
        &tag,
        "trap 'echo bye; exit 7' TERM; echo out; echo err >&2; sleep 60 & wait",
    );
    body.labels.insert("ew-name".into(), name.clone());
    let created = e.container_create(&name, &body).unwrap();
    let err = e.container_create(&name, &body).unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(err.to_string().contains(&name), "{err}");

    assert!(e.container_start(&name).unwrap());
    assert!(!e.container_start(&name).unwrap(), "already running: 304");
    let c = e.container_inspect(&name).unwrap().unwrap();
    assert_eq!(c.id, created.id);
    assert_eq!(c.name, format!("/{name}"));
    assert!(c.state.running && c.state.pid > 0, "{:?}", c.state);
    assert_eq!(c.config.labels.get("ew-name"), Some(&name));
    assert_eq!(c.config.image, tag);

    // Listing by label and by exact name; a prefix of the name is not it.
    let by_label = e
        .containers(false, &[("label", &format!("ew-name={name}"))])
        .unwrap();
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].id, created.id);
    assert_eq!(
        e.container_by_name(&name).unwrap().map(|c| c.id),
        Some(created.id.clone())
    );
    assert!(e
        .container_by_name(&name[..name.len() - 1])
        .unwrap()
        .is_none());

    // Wait on a worker thread, then stop.
    let pending = e.begin_wait(&name, WaitCondition::NotRunning).unwrap();
    let waiter = std::thread::spawn(move || pending.finish(None));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiter.is_finished(),
        "wait returned while the container runs"
    );
    let t0 = Instant::now();
    assert!(e.container_stop(&name, 10).unwrap());
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "the TERM handler ends it at once"
    );
    let exit = waiter.join().unwrap().unwrap();
    assert_eq!(exit.status_code, 7);
    assert_eq!(exit.error_message(), None);
    assert!(!e.container_stop(&name, 1).unwrap(), "already stopped: 304");

    let c = e.container_inspect(&name).unwrap().unwrap();
    assert!(!c.state.running);
    assert_eq!(c.state.exit_code, 7);
    assert!(c.state.finished_at > c.state.started_at, "{:?}", c.state);

    // Logs, demultiplexed: each line on its own stream.
    let lines = e.logs_tail(&name, 10).unwrap();
    let find = |s: Stream, t: &str| lines.iter().any(|l| l.stream == s && l.text == t);
    assert!(find(Stream::Stdout, "out"), "{lines:?}");
    assert!(find(Stream::Stderr, "err"), "{lines:?}");
    assert!(find(Stream::Stdout, "bye"), "{lines:?}");
    assert_eq!(e.logs_tail(&name, 1).unwrap().len(), 1);

    let err = e.container_kill(&name, "KILL").unwrap_err();
    assert!(err.is_conflict(), "not running: {err}");
    e.container_remove(&name, false, true).unwrap();
    assert!(e.container_inspect(&name).unwrap().is_none());
    assert!(e
        .container_remove(&name, true, true)
        .unwrap_err()
        .is_not_found());
    let err = e
        .begin_wait(&name, WaitCondition::NotRunning)
        .err()
        .unwrap();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn wait_blocks_until_exit_and_can_be_cancelled() {
    let Some(e) = engine("wait_blocks_until_exit_and_can_be_cancelled") else {
        return;
    };
    let mut clean = Cleanup::new(&e);
    let d = tempfile::tempdir().unwrap();
    let tag = format!("{}:v1", unique("wait"));
    clean.images.push(tag.clone());
    import(d.path(), &tag, &[]);

    // Registered before start (next-exit), so even a quick exit is seen.
    let quick = unique("quick");
    clean.containers.push(quick.clone());
    e.container_create(&quick, &sh(&tag, "sleep 1; exit 3"))
        .unwrap();
    let pending = e.begin_wait(&quick, WaitCondition::NextExit).unwrap();
    let t0 = Instant::now();
    e.container_start(&quick).unwrap();
    let exit = pending.finish(None).unwrap();
    assert_eq!(exit.status_code, 3);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );

    // A wait on a long-running container, cancelled from another thread.
    let long = unique("long");
    clean.containers.push(long.clone());
    e.container_create(&long, &sh(&tag, "sleep 600")).unwrap();
    e.container_start(&long).unwrap();
    let pending = e.begin_wait(&long, WaitCondition::NotRunning).unwrap();
    let cancel = pending.canceller().unwrap();
    let waiter = std::thread::spawn(move || pending.finish(None));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiter.is_finished());
    let t0 = Instant::now();
    cancel.cancel();
    let res = waiter.join().unwrap();
    assert!(res.is_err(), "{res:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    // Kill: the wait reports 137.
    let pending = e.begin_wait(&long, WaitCondition::NotRunning).unwrap();
    e.container_kill(&long, "KILL").unwrap();
    assert_eq!(pending.finish(None).unwrap().status_code, 137);
}

#[test]
fn logs_follow_and_tty() {
    let Some(e) = engine("logs_follow_and_tty") else {
        return;
    };
    let mut clean = Cleanup::new(&e);
    let d = tempfile::tempdir().unwrap();
    let tag = format!("{}:v1", unique("logs"));
    clean.images.push(tag.clone());
    import(d.path(), &tag, &[]);

    let name = unique("follow");
    clean.containers.push(name.clone());
    e.container_create(
        &name,
        &sh(
            &tag,
            "for i in 1 2 3; do echo line$i; echo warn$i >&2; sleep 0.4; done",
        ),
    )
    .unwrap();
    e.container_start(&name).unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    for line in e
        .logs(
            &name,
            &LogOptions {
                follow: true,
                ..Default::default()
            },
        )
        .unwrap()
    {
        let line = line.unwrap();
        got.push((line.stream, line.text, t0.elapsed()));
    }
    let out: Vec<&str> = got
        .iter()
        .filter(|l| l.0 == Stream::Stdout)
        .map(|l| l.1.as_str())
        .collect();
    let err: Vec<&str> = got
        .iter()
        .filter(|l| l.0 == Stream::Stderr)
        .map(|l| l.1.as_str())
        .collect();
    assert_eq!(out, vec!["line1", "line2", "line3"]);
    assert_eq!(err, vec!["warn1", "warn2", "warn3"]);
    // Streamed as printed, not at the end: the first line came well
    // before the container finished.
    assert!(
        got[0].2 + Duration::from_millis(600) < got.last().unwrap().2,
        "{got:?}"
    );

    let tty = unique("tty");
    clean.containers.push(tty.clone());
    let mut body = sh(&tag, "echo a; echo b >&2");
    body.tty = true;
    e.container_create(&tty, &body).unwrap();
    let pending = e.begin_wait(&tty, WaitCondition::NextExit).unwrap();
    e.container_start(&tty).unwrap();
    pending.finish(None).unwrap();
    let lines: Vec<String> = e
        .logs_tail(&tty, 10)
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert_eq!(lines, vec!["a", "b"]);
}

#[test]
fn run_to_completion_and_its_timeout() {
    let Some(e) = engine("run_to_completion_and_its_timeout") else {
        return;
    };
    let mut clean = Cleanup::new(&e);
    let d = tempfile::tempdir().unwrap();
    let tag = format!("{}:v1", unique("run"));
    clean.images.push(tag.clone());
    import(d.path(), &tag, &[]);

    let name = unique("once");
    clean.containers.push(name.clone());
    let out = e
        .run_to_completion(&name, &sh(&tag, "echo Version: 1.2.3; exit 4"), TIMEOUT)
        .unwrap();
    assert_eq!(out.status_code, 4);
    assert_eq!(out.output[0].text, "Version: 1.2.3");
    assert!(e.container_inspect(&name).unwrap().is_none(), "removed");

    let slow = unique("slow");
    clean.containers.push(slow.clone());
    let t0 = Instant::now();
    let err = e
        .run_to_completion(&slow, &sh(&tag, "sleep 600"), Duration::from_secs(1))
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(15));
    assert!(e.container_inspect(&slow).unwrap().is_none(), "removed");
}

#[test]
fn oci_layout_around_a_layer_docker_wrote() {
    let Some(e) = engine("oci_layout_around_a_layer_docker_wrote") else {
        return;
    };
    let mut clean = Cleanup::new(&e);
    let d = tempfile::tempdir().unwrap();
    let tag = format!("{}:v1", unique("oci"));
    clean.images.push(tag.clone());
    import(d.path(), &tag, &[]);
    let saved = d.path().join("saved.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), &tag]);
    let docker_archive = image::inspect(&saved).unwrap();

    // Re-pack the engine's layer and config as an OCI layout with a
    // gzip-compressed layer, as containerd or skopeo write one.
    let mut ar = tar::Archive::new(fs::File::open(&saved).unwrap());
    let (mut layer, mut config) = (Vec::new(), Vec::new());
    let config_name = format!("{}.json", &docker_archive.image_id[7..]);
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let p = entry.path().unwrap().to_string_lossy().into_owned();
        if p == docker_archive.layers[0].member {
            std::io::copy(&mut entry, &mut layer).unwrap();
        } else if p == config_name {
            std::io::copy(&mut entry, &mut config).unwrap();
        }
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    let layer_gz = gz.finish().unwrap();
    let digest = |b: &[u8]| {
        use sha2::Digest;
        format!(
            "sha256:{}",
            ecs_warden::store::hex(&sha2::Sha256::digest(b))
        )
    };
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(&layer_gz), "size": layer_gz.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": digest(&manifest), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": format!("docker.io/{tag}")}}],
    }))
    .unwrap();
    let oci = d.path().join("oci.tar");
    let mut b = tar::Builder::new(fs::File::create(&oci).unwrap());
    for (name, data) in [
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        (
            format!("blobs/sha256/{}", &digest(&layer_gz)[7..]),
            layer_gz.clone(),
        ),
        (
            format!("blobs/sha256/{}", &digest(&config)[7..]),
            config.clone(),
        ),
        (
            format!("blobs/sha256/{}", &digest(&manifest)[7..]),
            manifest.clone(),
        ),
        ("index.json".to_string(), index),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();

    let a = image::inspect(&oci).unwrap();
    assert_eq!(a.layout, image::Layout::Oci);
    assert_eq!(a.image_id, docker_archive.image_id);
    assert_eq!(a.repo_tags, vec![tag.clone()]);
    let out = d.path().join("sh-out");
    image::extract_file(&oci, "/bin/sh", &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), fs::read(BUSYBOX).unwrap());
    drop(e);
}

#[test]
fn the_ecs_init_container_body_is_what_the_engine_keeps() {
    let Some(e) = engine("the_ecs_init_container_body_is_what_the_engine_keeps") else {
        return;
    };
    let mut clean = Cleanup::new(&e);
    let d = tempfile::tempdir().unwrap();
    let tag = format!("{}:v1", unique("cfg"));
    clean.images.push(tag.clone());
    import(d.path(), &tag, &[]);

    let paths = Paths::new(d.path());
    let config: std::collections::BTreeMap<String, String> = [
        ("ECS_CLUSTER", "c1"),
        ("ECS_AGENT_LABELS", r#"{"team":"infra"}"#),
        ("ECS_LOG_OPTS", r#"{"max-size":"1m","max-file":"2"}"#),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let facts = HostFacts::default();
    let env = agent_env::environment(&config, Runtime::Docker, &paths, &facts);
    let c = docker_config::agent_container(&docker_config::Inputs {
        paths: &paths,
        config: &config,
        env: &env,
        docker_host: None,
        api: e.api_version(),
        facts: &facts,
    });
    assert_eq!(c.name, "ecs-agent");
    // Never the real `ecs-agent`, and never started: the engine creates
    // missing bind sources (host paths) only at start.
    let name = unique("ecs-agent");
    clean.containers.push(name.clone());
    let mut body = c.create.clone();
    body.image = tag.clone();
    e.container_create(&name, &body).unwrap();
    let got = e.container_inspect(&name).unwrap().unwrap();
    let h = &got.host_config;
    assert_eq!(h.binds, c.create.host_config.binds);
    assert_eq!(h.network_mode, "host");
    assert_eq!(h.userns_mode, "host");
    assert_eq!(h.cap_add, vec!["NET_ADMIN", "SYS_ADMIN"]);
    assert_eq!(h.init, Some(true));
    assert!(!h.privileged);
    let log = h.log_config.as_ref().unwrap();
    assert_eq!(log.kind, "json-file");
    assert_eq!(log.config.get("max-size").map(String::as_str), Some("1m"));
    assert_eq!(log.config.get("max-file").map(String::as_str), Some("2"));
    assert_eq!(h.restart_policy.as_ref().unwrap().name, "no");
    assert_eq!(
        got.config.labels.get("team").map(String::as_str),
        Some("infra")
    );
    for kv in [
        "ECS_CLUSTER=c1",
        "ECS_LOGFILE=/log/ecs-agent.log",
        "ECS_DATADIR=/data",
        "ECS_UPDATE_DOWNLOAD_DIR=/var/cache/ecs",
        "ECS_ENABLE_TASK_ENI=true",
        "ECS_EBSTA_SUPPORTED=false",
    ] {
        assert!(
            got.config.env.iter().any(|e| e == kv),
            "{kv} not in {:?}",
            got.config.env
        );
    }
    assert!(
        !d.path().join("var").exists(),
        "create must not make bind sources"
    );
}

// ---- measurement: a ~90 MB image through `POST /images/load` ----

fn status_kib(field: &str) -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Reset the peak RSS to the current RSS (Linux ≥ 4.0).
fn reset_peak() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[test]
fn load_of_a_90mb_archive_streams_in_bounded_memory() {
    let Some(e) = engine("load_of_a_90mb_archive_streams_in_bounded_memory") else {
        return;
    };
    let mut clean = Cleanup::new(&e);
    let d = tempfile::tempdir().unwrap();
    let tag = format!("{}:v1", unique("big"));
    clean.images.push(tag.clone());
    // 90 MB that does not compress: a cheap PRNG (xorshift).
    let blob = d.path().join("blob");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&blob).unwrap());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..90 {
            for c in buf.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf).unwrap();
        }
    }
    import(d.path(), &tag, &[("blob", &blob)]);
    fs::remove_file(&blob).unwrap();
    let saved = d.path().join("big.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), &tag]);
    let size = fs::metadata(&saved).unwrap().len();
    assert!(size > 90 << 20, "{size}");
    e.image_remove(&tag, true).unwrap();

    // `ECS_WARDEN_BENCH_ROUNDS=N` repeats the comparison, alternating
    // which loader goes first.
    let rounds: usize = std::env::var("ECS_WARDEN_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (mut ours_all, mut cli_all) = (Vec::new(), Vec::new());
    let (mut rss0, mut peak, mut grew, mut can_reset) = (0, 0, 0, false);
    for round in 0..rounds {
        for ours_turn in [round % 2 == 0, round % 2 != 0] {
            if ours_turn {
                can_reset = reset_peak();
                rss0 = status_kib("VmRSS:");
                let t0 = Instant::now();
                let loaded = e.image_load(&saved, Duration::from_secs(600)).unwrap();
                ours_all.push(t0.elapsed().as_secs_f64());
                peak = status_kib("VmHWM:");
                grew = grew.max(peak.saturating_sub(rss0));
                assert_eq!(loaded.images, vec![tag.clone()]);
            } else {
                let t0 = Instant::now();
                docker(&["load", "-q", "-i", saved.to_str().unwrap()]);
                cli_all.push(t0.elapsed().as_secs_f64());
            }
            e.image_remove(&tag, true).unwrap();
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (ours, cli) = (median(&mut ours_all), median(&mut cli_all));

    // Extraction from the same archive reads (and hashes) every layer.
    let reset2 = reset_peak();
    let rss1 = status_kib("VmRSS:");
    let t0 = Instant::now();
    image::extract_file(&saved, "/bin/busybox", &d.path().join("bb")).unwrap();
    let extract = t0.elapsed();
    let peak2 = status_kib("VmHWM:");

    eprintln!(
        "MEASURED load of {:.1} MB, median of {rounds}: client {ours:.2}s {ours_all:.2?} (RSS {rss0} kB, peak {peak} kB, most +{grew} kB{}), \
         `docker load -i` {cli:.2}s {cli_all:.2?}; extract /bin/busybox {:.2}s (peak +{} kB{})",
        size as f64 / 1e6,
        if can_reset { "" } else { ", peak not resettable" },
        extract.as_secs_f64(),
        peak2.saturating_sub(rss1),
        if reset2 { "" } else { ", peak not resettable" },
    );
    if can_reset {
        assert!(
            grew < 32 * 1024,
            "loading {size} bytes raised the peak RSS by {grew} kB: the body is being buffered"
        );
    }
    if reset2 {
        assert!(
            peak2.saturating_sub(rss1) < 32 * 1024,
            "extract peak +{} kB",
            peak2 - rss1
        );
    }
}
