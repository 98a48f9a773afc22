//! Archives built here, in both layouts, byte for byte as the tools write
//! them (names, digests, links between members), to test the reader and
//! the layer rules without Docker. `tests/it/engine.rs` adds archives that a
//! real engine wrote and loads them back.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::*;

pub(crate) enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

fn hexdigest(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// A layer tar holding `entries`, in order.
pub(crate) fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        match e {
            E::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::Symlink(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::HardLink(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                h.set_mode(0o644);
                b.append_link(&mut h, p, t).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn config_json(layers: &[Vec<u8>], entrypoint: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", hexdigest(l)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Env": ["PATH=/usr/bin:/bin", "A=1"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

fn add(b: &mut tar::Builder<fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    b.append_data(&mut h, name, data).unwrap();
}

/// `docker save`'s own layout (Docker ≤ 24): layer directories first,
/// config `<hex>.json`, `manifest.json` and `repositories` last. A layer
/// identical to an earlier one is a symlink to it, as Docker writes.
pub(crate) fn docker_archive(dir: &Path, layers: &[Vec<u8>], entrypoint: &[&str]) -> PathBuf {
    let path = dir.join("image.tar");
    let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
    let mut names: Vec<String> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let id = format!("{:064x}", i + 1);
        let name = format!("{id}/layer.tar");
        add(&mut b, &format!("{id}/VERSION"), b"1.0");
        if let Some(j) = layers[..i].iter().position(|o| o == l) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, &name, format!("../{:064x}/layer.tar", j + 1))
                .unwrap();
        } else {
            add(&mut b, &name, l);
        }
        names.push(name);
    }
    let config = config_json(layers, entrypoint);
    let config_name = format!("{}.json", hexdigest(&config));
    add(&mut b, &config_name, &config);
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["amazon/amazon-ecs-agent:latest"],
        "Layers": names,
    }]);
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    add(
        &mut b,
        "repositories",
        br#"{"amazon/amazon-ecs-agent":{"latest":"x"}}"#,
    );
    b.into_inner().unwrap().flush().unwrap();
    path
}

/// An OCI layout with only `index.json` (as containerd, skopeo or buildah
/// write it): the index points at an image index for two platforms, of
/// which only this machine's manifest is in the archive, plus an
/// attestation manifest; layers gzip-compressed when `gzip`.
pub(crate) fn oci_archive(
    dir: &Path,
    layers: &[Vec<u8>],
    entrypoint: &[&str],
    gzip: bool,
) -> PathBuf {
    let path = dir.join("oci.tar");
    let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
    let blob = |b: &mut tar::Builder<fs::File>, data: &[u8]| -> String {
        let d = hexdigest(data);
        add(b, &format!("blobs/sha256/{d}"), data);
        format!("sha256:{d}")
    };
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let mut layer_descs = Vec::new();
    for l in layers {
        let (data, mt) = if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(l).unwrap();
            (
                enc.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        } else {
            (l.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let digest = blob(&mut b, &data);
        layer_descs
            .push(serde_json::json!({"mediaType": mt, "digest": digest, "size": data.len()}));
    }
    let config = config_json(layers, entrypoint);
    let config_digest = blob(&mut b, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    let manifest_digest = blob(&mut b, &manifest);
    let arch = oci_arch();
    let other = if arch == "amd64" { "arm64" } else { "amd64" };
    let sub = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "a".repeat(64)), "size": 1,
             "platform": {"architecture": other, "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "b".repeat(64)), "size": 1,
             "platform": {"architecture": "unknown", "os": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": manifest_digest, "size": manifest.len(),
             "platform": {"architecture": arch, "os": "linux"}},
        ],
    }))
    .unwrap();
    let sub_digest = blob(&mut b, &sub);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sub_digest, "size": sub.len(),
            "annotations": {
                "io.containerd.image.name": "docker.io/amazon/amazon-ecs-agent:latest",
                "org.opencontainers.image.ref.name": "latest",
            },
        }],
    });
    add(&mut b, "index.json", &serde_json::to_vec(&index).unwrap());
    b.into_inner().unwrap().flush().unwrap();
    path
}

fn extract(path: &Path, inside: &str) -> Result<Vec<u8>> {
    let dest = path.with_file_name("out-agent");
    extract_file(path, inside, &dest)?;
    let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    Ok(fs::read(&dest).unwrap())
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn inspect_docker_layout() {
    let d = tempfile::tempdir().unwrap();
    let l1 = layer(&[E::File("agent", b"v1")]);
    let l2 = layer(&[E::Dir("etc/"), E::File("etc/x", b"y")]);
    let p = docker_archive(d.path(), &[l1.clone(), l2, l1], &["/agent"]);
    let a = inspect(&p).unwrap();
    assert_eq!(a.layout, Layout::Docker);
    assert_eq!(a.repo_tags, vec!["amazon/amazon-ecs-agent:latest"]);
    assert_eq!(a.entrypoint, vec!["/agent"]);
    assert_eq!(a.program(), Some("/agent"));
    assert_eq!(a.env, vec!["PATH=/usr/bin:/bin", "A=1"]);
    assert_eq!(a.architecture, "amd64");
    assert_eq!(a.layers.len(), 3);
    // The third layer is a symlink to the first one's member.
    assert_eq!(a.layers[2].member, a.layers[0].member);
    assert_eq!(a.layers[2].offset, a.layers[0].offset);
    assert!(a.image_id.starts_with("sha256:") && a.image_id.len() == 71);
    assert_eq!(extract(&p, "/agent").unwrap(), b"v1");
}

#[test]
fn inspect_oci_layout_gzip_and_nested_index() {
    let d = tempfile::tempdir().unwrap();
    let l1 = layer(&[E::File("agent", b"first")]);
    let l2 = layer(&[E::File("agent", b"second")]);
    let p = oci_archive(d.path(), &[l1, l2], &["/agent"], true);
    let a = inspect(&p).unwrap();
    assert_eq!(a.layout, Layout::Oci);
    assert_eq!(a.repo_tags, vec!["amazon/amazon-ecs-agent:latest"]);
    assert_eq!(a.layers.len(), 2);
    assert!(a.layers[0].member.starts_with("blobs/sha256/"));
    assert_eq!(extract(&p, "/agent").unwrap(), b"second");
    let p = oci_archive(
        d.path(),
        &[layer(&[E::File("./agent", b"plain")])],
        &["/agent"],
        false,
    );
    assert_eq!(extract(&p, "agent").unwrap(), b"plain");
}

#[test]
fn later_layers_replace_and_whiteouts_remove() {
    let d = tempfile::tempdir().unwrap();
    let add1 = layer(&[E::File("agent", b"one"), E::File("keep", b"k")]);
    let gone = layer(&[E::File(".wh.agent", b"")]);
    let back = layer(&[E::File("agent", b"three")]);
    let p = docker_archive(d.path(), &[add1.clone(), gone.clone()], &["/agent"]);
    let err = extract(&p, "/agent").unwrap_err().to_string();
    assert!(
        err.contains("image.tar") && err.contains("/agent is not in the image"),
        "{err}"
    );
    assert_eq!(extract(&p, "/keep").unwrap(), b"k");
    let p = docker_archive(d.path(), &[add1, gone, back], &["/agent"]);
    assert_eq!(extract(&p, "/agent").unwrap(), b"three");
    assert!(leftovers(d.path()).is_empty(), "{:?}", leftovers(d.path()));
}

#[test]
fn opaque_directories_hide_lower_layers_only() {
    let d = tempfile::tempdir().unwrap();
    let low = layer(&[
        E::Dir("opt/"),
        E::File("opt/agent", b"low"),
        E::File("opt/other", b"o"),
    ]);
    let opq = layer(&[
        E::Dir("opt/"),
        E::File("opt/.wh..wh..opq", b""),
        E::File("opt/new", b"n"),
    ]);
    let p = docker_archive(d.path(), &[low.clone(), opq], &["/opt/agent"]);
    assert!(extract(&p, "/opt/agent").is_err());
    assert!(extract(&p, "/opt/other").is_err());
    assert_eq!(extract(&p, "/opt/new").unwrap(), b"n");
    // The marker hides the layers below, not entries of its own layer,
    // whichever comes first in the tar.
    let same = layer(&[
        E::File("opt/agent", b"same"),
        E::File("opt/.wh..wh..opq", b""),
    ]);
    let p = docker_archive(d.path(), &[low, same], &["/opt/agent"]);
    assert_eq!(extract(&p, "/opt/agent").unwrap(), b"same");
}

#[test]
fn whiteout_or_file_over_a_parent_directory() {
    let d = tempfile::tempdir().unwrap();
    let low = layer(&[E::Dir("opt/"), E::File("opt/agent", b"low")]);
    let p = docker_archive(
        d.path(),
        &[low.clone(), layer(&[E::File(".wh.opt", b"")])],
        &["/opt/agent"],
    );
    assert!(extract(&p, "/opt/agent").is_err());
    let p = docker_archive(
        d.path(),
        &[low, layer(&[E::File("opt", b"now a file")])],
        &["/opt/agent"],
    );
    assert!(extract(&p, "/opt/agent").is_err());
}

#[test]
fn links_are_followed_inside_the_image_only() {
    let d = tempfile::tempdir().unwrap();
    let l = layer(&[
        E::Dir("bin/"),
        E::File("bin/real-agent", b"real"),
        E::Symlink("agent", "/usr/local/bin/agent"),
        E::Dir("usr/"),
        E::Symlink("usr/local", "../opt"),
        E::Dir("opt/"),
        E::Symlink("opt/bin", "/bin"),
        E::Symlink("bin/agent", "real-agent"),
        E::HardLink("hard", "bin/real-agent"),
        E::Symlink("escape", "../../../../../etc/hostname"),
        E::Symlink("loop1", "loop2"),
        E::Symlink("loop2", "loop1"),
    ]);
    let p = docker_archive(d.path(), &[l], &["/agent"]);
    // /agent -> /usr/local/bin/agent; /usr/local -> /opt; /opt/bin -> /bin;
    // /bin/agent -> real-agent.
    assert_eq!(extract(&p, "/agent").unwrap(), b"real");
    assert_eq!(extract(&p, "/hard").unwrap(), b"real");
    // Resolved in the image: /etc/hostname of the image, which it lacks.
    let err = extract(&p, "/escape").unwrap_err().to_string();
    assert!(
        err.contains("not in the image") && err.contains("/etc/hostname"),
        "{err}"
    );
    let err = extract(&p, "/loop1").unwrap_err().to_string();
    assert!(err.contains("links to follow"), "{err}");
    let err = extract(&p, "/bin").unwrap_err().to_string();
    assert!(err.contains("a directory"), "{err}");
    assert!(leftovers(d.path()).is_empty());
}

#[test]
fn layers_are_checked_against_their_diff_ids() {
    let d = tempfile::tempdir().unwrap();
    let l = layer(&[E::File("agent", b"v1")]);
    let p = docker_archive(d.path(), &[l], &["/agent"]);
    // Flip a byte inside the agent's contents: same length, wrong hash.
    let mut bytes = fs::read(&p).unwrap();
    let at = bytes.windows(2).position(|w| w == b"v1").unwrap();
    bytes[at + 1] = b'2';
    fs::write(&p, &bytes).unwrap();
    let dest = d.path().join("out");
    fs::write(&dest, b"old").unwrap();
    let err = extract_file(&p, "/agent", &dest).unwrap_err().to_string();
    assert!(err.contains("does not match its diff_id"), "{err}");
    assert_eq!(
        fs::read(&dest).unwrap(),
        b"old",
        "the destination must stay as it was"
    );
    assert!(leftovers(d.path()).is_empty());
}

#[test]
fn not_an_image_archive() {
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk.tar");
    fs::write(&junk, vec![7u8; 4096]).unwrap();
    let err = inspect(&junk).unwrap_err().to_string();
    assert!(
        err.contains("junk.tar") && err.contains("not a usable docker image archive"),
        "{err}"
    );

    let plain = d.path().join("plain.tar");
    fs::write(&plain, layer(&[E::File("agent", b"x")])).unwrap();
    let err = inspect(&plain).unwrap_err().to_string();
    assert!(
        err.contains("plain.tar") && err.contains("neither manifest.json"),
        "{err}"
    );

    // A manifest naming a layer the archive lacks.
    let p = d.path().join("nolayer.tar");
    let mut b = tar::Builder::new(fs::File::create(&p).unwrap());
    let config = config_json(&[layer(&[])], &["/agent"]);
    let cname = format!("{}.json", hexdigest(&config));
    add(&mut b, &cname, &config);
    add(
        &mut b,
        "manifest.json",
        format!(r#"[{{"Config":"{cname}","RepoTags":null,"Layers":["abc/layer.tar"]}}]"#)
            .as_bytes(),
    );
    b.into_inner().unwrap();
    let err = inspect(&p).unwrap_err().to_string();
    assert!(
        err.contains("layer abc/layer.tar is not in the archive"),
        "{err}"
    );

    // A config that is not the one its name claims.
    let p = d.path().join("badconfig.tar");
    let mut b = tar::Builder::new(fs::File::create(&p).unwrap());
    let cname = format!("{}.json", "0".repeat(64));
    add(&mut b, &cname, &config);
    add(
        &mut b,
        "manifest.json",
        format!(r#"[{{"Config":"{cname}","Layers":[]}}]"#).as_bytes(),
    );
    b.into_inner().unwrap();
    let err = inspect(&p).unwrap_err().to_string();
    assert!(err.contains("does not match its digest"), "{err}");
}

#[test]
fn the_real_agents_version_text_parses() {
    // Exactly what `amazon-ecs-agent -version` 1.105.1 prints (measured,
    // ../shared/real-agent/README.md).
    let out = "Amazon ECS Agent:\n\tVersion: 1.105.1\n\tCommit: a8b3e7d3\n\tDirty: true\n";
    assert_eq!(
        crate::version::parse_version_banner(out),
        Some(("1.105.1".to_string(), Some("a8b3e7d3".to_string())))
    );
}

#[test]
fn probe_version_runs_the_images_program() {
    let d = tempfile::tempdir().unwrap();
    let script = b"#!/bin/sh\nprintf 'Amazon ECS Agent:\\n\\tVersion: 1.105.2\\n\\tCommit: a8b3e7d3\\n\\tDirty: true\\n'\n";
    let l = layer(&[E::File("agent", script)]);
    let p = docker_archive(d.path(), &[l], &["/agent"]);
    let scratch = d.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    assert_eq!(
        probe_version(&p, &scratch, Duration::from_secs(10)).unwrap(),
        ("1.105.2".to_string(), Some("a8b3e7d3".to_string()))
    );
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "the probe copy must be removed"
    );

    // The flag it is asked with, and a program that never answers.
    let strict =
        b"#!/bin/sh\n[ \"$1\" = -version ] && echo 'Amazon ECS Agent - v1.2.3 (abcdef12)'\n";
    let p = docker_archive(d.path(), &[layer(&[E::File("agent", strict)])], &["/agent"]);
    assert_eq!(
        probe_version(&p, &scratch, Duration::from_secs(10))
            .unwrap()
            .0,
        "1.2.3"
    );
    let hang = b"#!/bin/sh\nexec sleep 600\n";
    let p = docker_archive(d.path(), &[layer(&[E::File("agent", hang)])], &["/agent"]);
    let t0 = std::time::Instant::now();
    let err = probe_version(&p, &scratch, Duration::from_millis(500))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no answer within") && err.contains("/agent"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    let p = docker_archive(
        d.path(),
        &[layer(&[E::File("agent", b"#!/bin/sh\necho hi\n")])],
        &["/agent"],
    );
    let err = probe_version(&p, &scratch, Duration::from_secs(10))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot tell the version") && err.contains("hi"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0);
}

#[test]
fn familiar_names() {
    assert_eq!(
        familiar_name("docker.io/library/busybox:latest").as_deref(),
        Some("busybox:latest")
    );
    assert_eq!(
        familiar_name("docker.io/amazon/amazon-ecs-agent:latest").as_deref(),
        Some("amazon/amazon-ecs-agent:latest")
    );
    assert_eq!(
        familiar_name("localhost:5000/a").as_deref(),
        Some("localhost:5000/a:latest")
    );
    assert_eq!(familiar_name("latest"), None);
}
