//! Update sources and their manifest.
//!
//! A manifest lists builds: `{"schemaVersion": 1, "agents": [{"version",
//! "gitHash", "arch", "url", "sha256", "size"}]}`. Unknown fields are
//! ignored; a newer schema is refused. The target is the highest version for
//! this host's architecture, or exactly the requested/pinned one. `url` is
//! absolute or relative to the manifest.

use std::io::Read;

use serde::Deserialize;

use super::fetch;
use super::journal::Target;
use crate::config::{ProxyConfig, UpdateConfig};
use crate::store::parse_version;

/// The newest manifest schema this warden understands.
pub const SCHEMA_VERSION: u64 = 1;
/// A manifest larger than this is refused.
pub const MAX_MANIFEST: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    /// Checked before deserializing (a newer schema may not parse).
    #[allow(dead_code)]
    schema_version: u64,
    agents: Vec<Entry>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Entry {
    version: String,
    #[serde(default)]
    git_hash: Option<String>,
    arch: String,
    url: String,
    sha256: String,
    size: u64,
}

/// A validated manifest entry.
#[derive(Debug, Clone)]
pub struct Build {
    pub version: semver::Version,
    pub target: Target,
    pub arch: String,
}

/// This host's architecture as `uname -m` prints it.
pub fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

/// Check an update source URL: `https://`, `file:///`, or `http://` to a
/// loopback address (any host when `allow_http`).
pub fn check_source(src: &str, allow_http: bool) -> Result<(), String> {
    if let Some(rest) = src.strip_prefix("https://") {
        if host_of(rest).is_empty() {
            return Err("expected https://HOST/PATH".into());
        }
        return Ok(());
    }
    if let Some(path) = src.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err("expected file:///ABSOLUTE/PATH".into());
        }
        return Ok(());
    }
    if let Some(rest) = src.strip_prefix("http://") {
        let host = host_of(rest);
        if host.is_empty() {
            return Err("expected http://HOST/PATH".into());
        }
        if allow_http || is_loopback_host(host) {
            return Ok(());
        }
        return Err(format!(
            "plain http to {host} is refused: use https, a loopback address, or set ECS_WARDEN_ALLOW_HTTP=true"
        ));
    }
    Err("expected an https://, file:/// or loopback http:// URL".into())
}

/// The host part of `host[:port]/path...` (brackets kept off IPv6).
pub fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Resolve `url` against the manifest's own URL.
pub fn resolve_url(base: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    if let Some(path) = url.strip_prefix('/') {
        // Absolute path on the manifest's host.
        if let Some((scheme, rest)) = base.split_once("://") {
            let authority = rest.split('/').next().unwrap_or("");
            return format!("{scheme}://{authority}/{path}");
        }
    }
    let dir = match base.rfind('/') {
        Some(i) => &base[..=i],
        None => base,
    };
    format!("{dir}{url}")
}

/// Fetch the manifest text (≤ 1 MiB) from `source`.
pub fn fetch(source: &str, proxy: &ProxyConfig, cfg: &UpdateConfig) -> Result<Vec<u8>, String> {
    check_source(source, cfg.allow_http)?;
    let mut out = Vec::new();
    if let Some(path) = source.strip_prefix("file://") {
        let f = std::fs::File::open(path).map_err(|e| format!("read manifest {path}: {e}"))?;
        f.take(MAX_MANIFEST + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("read manifest {path}: {e}"))?;
    } else {
        let agent = fetch::agent_for(source, proxy, cfg)?;
        // An overall deadline: a manifest trickled a byte at a time must
        // not hold this thread (and the CLI waiting on it) for minutes.
        let deadline = fetch::probe_deadline(cfg);
        let started = std::time::Instant::now();
        let late = |e: String| {
            if started.elapsed() >= deadline {
                format!(
                    "fetch manifest {source}: no complete answer within {} (connect plus read timeout, at most {}): {e}",
                    humantime::format_duration(deadline),
                    humantime::format_duration(fetch::PROBE_DEADLINE_CAP)
                )
            } else {
                format!("fetch manifest {source}: {e}")
            }
        };
        let resp = agent
            .get(source)
            .timeout(deadline)
            .call()
            .map_err(|e| match e {
                ureq::Error::Status(code, r) => {
                    format!("fetch manifest {source}: HTTP {code} {}", r.status_text())
                }
                ureq::Error::Transport(t) => late(t.to_string()),
            })?;
        resp.into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut out)
            .map_err(|e| late(e.to_string()))?;
    }
    if out.len() as u64 > MAX_MANIFEST {
        return Err(format!(
            "manifest {source} is larger than {MAX_MANIFEST} bytes"
        ));
    }
    Ok(out)
}

/// Parse and validate a manifest; every entry must be valid.
pub fn parse(source: &str, bytes: &[u8]) -> Result<Vec<Build>, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("manifest {source} is not valid JSON: {e}"))?;
    match value.get("schemaVersion").and_then(|v| v.as_u64()) {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(format!(
                "manifest {source} has schemaVersion {v}; this ecs-warden understands up to {SCHEMA_VERSION}: upgrade ecs-warden"
            ))
        }
        Some(0) => return Err(format!("manifest {source}: schemaVersion 0 is not valid")),
        _ => {}
    }
    let doc: Doc = serde_json::from_value(value)
        .map_err(|e| format!("manifest {source} is not a valid manifest: {e}"))?;
    doc.agents
        .iter()
        .enumerate()
        .map(|(i, e)| validate(source, i, e))
        .collect()
}

fn validate(source: &str, i: usize, e: &Entry) -> Result<Build, String> {
    let at = format!("manifest {source}: agents[{i}]");
    let version = parse_version(&e.version).map_err(|m| format!("{at}.version: {m}"))?;
    if e.sha256.len() != 64 || !e.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{at}.sha256: expected 64 hex digits, found {:?}",
            e.sha256
        ));
    }
    if e.size == 0 {
        return Err(format!("{at}.size: must be above 0"));
    }
    if e.arch.trim().is_empty() {
        return Err(format!("{at}.arch: must not be empty"));
    }
    if e.url.trim().is_empty() {
        return Err(format!("{at}.url: must not be empty"));
    }
    if let Some(h) = &e.git_hash {
        if h.is_empty() || h.len() > 40 || !h.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "{at}.gitHash: expected a short hex commit, found {h:?}"
            ));
        }
    }
    let url = resolve_url(source, &e.url);
    if !url.starts_with("https://") && !url.starts_with("http://") && !url.starts_with("file:///") {
        return Err(format!("{at}.url: unsupported URL {url:?}"));
    }
    Ok(Build {
        target: Target {
            version: version.to_string(),
            git_hash: e.git_hash.clone(),
            url,
            sha256: e.sha256.to_ascii_lowercase(),
            size: e.size,
        },
        version,
        arch: e.arch.clone(),
    })
}

/// Refuse a manifest with an entry larger than `max` bytes (the
/// configured `ECS_WARDEN_MAX_BUILD_SIZE`); `builds` are `parse`'s, in the
/// manifest's order.
pub fn check_sizes(source: &str, builds: &[Build], max: u64) -> Result<(), String> {
    match builds.iter().enumerate().find(|(_, b)| b.target.size > max) {
        Some((i, b)) => Err(format!(
            "manifest {source}: agents[{i}] (version {}): size {} bytes is above ECS_WARDEN_MAX_BUILD_SIZE ({max} bytes)",
            b.target.version, b.target.size
        )),
        None => Ok(()),
    }
}

/// Pick the target: exactly `want` when given, else the highest version
/// for `arch`.
pub fn choose(
    source: &str,
    builds: &[Build],
    arch: &str,
    want: Option<&semver::Version>,
) -> Result<Build, String> {
    let mut mine: Vec<&Build> = builds.iter().filter(|b| b.arch == arch).collect();
    if mine.is_empty() {
        return Err(format!(
            "manifest {source} has no build for architecture {arch}"
        ));
    }
    if let Some(v) = want {
        return mine
            .into_iter()
            .find(|b| &b.version == v)
            .cloned()
            .ok_or_else(|| format!("manifest {source} has no build of version {v} for {arch}"));
    }
    mine.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(mine.last().cloned().cloned().expect("not empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn m(agents: &str) -> String {
        format!(r#"{{"schemaVersion": 1, "extra": true, "agents": [{agents}]}}"#)
    }

    fn e(v: &str, arch: &str) -> String {
        format!(
            r#"{{"version":"{v}","arch":"{arch}","url":"a-{v}","sha256":"{H}","size":10,"new":1}}"#
        )
    }

    #[test]
    fn sources() {
        assert!(check_source("https://example.com/m.json", false).is_ok());
        assert!(check_source("file:///srv/m.json", false).is_ok());
        assert!(check_source("http://127.0.0.1:8080/m.json", false).is_ok());
        assert!(check_source("http://[::1]:8080/m.json", false).is_ok());
        assert!(check_source("http://example.com/m.json", false).is_err());
        assert!(check_source("http://example.com/m.json", true).is_ok());
        assert!(check_source("ftp://x/y", true).is_err());
        assert!(check_source("file://relative", false).is_err());
    }

    #[test]
    fn urls_resolve_against_the_manifest() {
        let b = "http://127.0.0.1:9/dir/manifest.json";
        assert_eq!(resolve_url(b, "a"), "http://127.0.0.1:9/dir/a");
        assert_eq!(resolve_url(b, "/x/a"), "http://127.0.0.1:9/x/a");
        assert_eq!(resolve_url(b, "https://h/a"), "https://h/a");
        assert_eq!(resolve_url("file:///srv/m.json", "a"), "file:///srv/a");
    }

    #[test]
    fn picks_highest_for_arch_or_exact() {
        let text = m(&[
            e("1.2.0", "x86_64"),
            e("1.10.0", "x86_64"),
            e("9.0.0", "aarch64"),
        ]
        .join(","));
        let builds = parse("file:///m.json", text.as_bytes()).unwrap();
        let best = choose("m", &builds, "x86_64", None).unwrap();
        assert_eq!(best.target.version, "1.10.0");
        assert_eq!(best.target.url, "file:///a-1.10.0");
        let v = semver::Version::parse("1.2.0").unwrap();
        assert_eq!(
            choose("m", &builds, "x86_64", Some(&v))
                .unwrap()
                .target
                .version,
            "1.2.0"
        );
        let missing = semver::Version::parse("1.3.0").unwrap();
        assert!(choose("m", &builds, "x86_64", Some(&missing)).is_err());
        assert!(choose("m", &builds, "s390x", None).is_err());
    }

    #[test]
    fn refuses_bad_manifests() {
        let bad = |s: &str| parse("m", s.as_bytes()).unwrap_err();
        assert!(bad("not json").contains("not valid JSON"));
        assert!(bad(r#"{"schemaVersion": 2, "agents": []}"#).contains("upgrade ecs-warden"));
        assert!(bad(r#"{"schemaVersion": 1}"#).contains("agents"));
        let no_sha = r#"{"schemaVersion":1,"agents":[{"version":"1.0.0","arch":"x86_64","url":"a","size":1}]}"#;
        assert!(bad(no_sha).contains("sha256"));
        let bad_hex = m(&e("1.0.0", "x86_64").replace(H, &"z".repeat(64)));
        assert!(bad(&bad_hex).contains("64 hex"));
        assert!(bad(&m(&e("1.0", "x86_64"))).contains("version"));
        assert!(bad(&m(&e("../1.0.0", "x86_64"))).contains("version"));
        assert!(bad(&m(&e("1.0.0/x", "x86_64"))).contains("version"));
    }
}
