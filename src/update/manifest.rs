//! The manifest of an update source.
//!
//! A manifest lists builds: `{"schemaVersion": 1, "agents": [{"version",
//! "gitHash", "arch", "url", "sha256", "size"}]}`. Unknown fields are
//! ignored; a newer schema is refused. The target is the highest version for
//! this host's architecture, or exactly the requested/pinned one. `url` is
//! absolute or relative to the manifest's URL (after redirects), resolved
//! as RFC 3986 says; which URLs may be fetched is `crate::source`'s rule.

use std::io::Read;

use serde::Deserialize;

use super::fetch;
use super::journal::Target;
use crate::config::{ProxyConfig, UpdateConfig};
use crate::source::Source;
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

/// Fetch the manifest text (≤ 1 MiB) from `source`, following redirects
/// that pass the source rules. Returns the URL it came from (relative
/// build URLs are relative to that) and the bytes.
pub fn fetch(
    source: &Source,
    proxy: &ProxyConfig,
    cfg: &UpdateConfig,
) -> Result<(Source, Vec<u8>), String> {
    source.check(cfg.allow_http)?;
    let mut out = Vec::new();
    let from = if let Some(path) = source.file_path() {
        let shown = path.display();
        let f = std::fs::File::open(&path).map_err(|e| format!("read manifest {shown}: {e}"))?;
        f.take(MAX_MANIFEST + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("read manifest {shown}: {e}"))?;
        source.clone()
    } else {
        // An overall deadline: a manifest trickled a byte at a time must
        // not hold this thread (and the CLI waiting on it) for minutes.
        let deadline = fetch::probe_deadline(cfg);
        let started = std::time::Instant::now();
        let got = fetch::request("GET", source, &[], Some(deadline), proxy, cfg)
            .map_err(|e| format!("fetch manifest {e}"))?;
        got.response
            .into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                let e = fetch::past_deadline(deadline, started, e.to_string());
                format!("fetch manifest {}: {e}", got.url)
            })?;
        got.url
    };
    if out.len() as u64 > MAX_MANIFEST {
        return Err(format!(
            "manifest {source} is larger than {MAX_MANIFEST} bytes"
        ));
    }
    Ok((from, out))
}

/// Parse and validate a manifest read from `source`; every entry must be
/// valid.
pub fn parse(source: &Source, bytes: &[u8]) -> Result<Vec<Build>, String> {
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

fn validate(source: &Source, i: usize, e: &Entry) -> Result<Build, String> {
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
    let url = source
        .join(&e.url)
        .map_err(|m| format!("{at}.url {:?}: {m}", e.url))?;
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
pub fn check_sizes(source: &Source, builds: &[Build], max: u64) -> Result<(), String> {
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
    source: &Source,
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

    fn src(s: &str) -> Source {
        Source::parse(s).unwrap()
    }

    #[test]
    fn build_urls_resolve_against_the_manifest() {
        let one = |base: &str, url: &str| {
            let text = m(&e("1.0.0", "x86_64").replace("\"a-1.0.0\"", &format!("{url:?}")));
            parse(&src(base), text.as_bytes()).map(|b| b[0].target.url.to_string())
        };
        assert_eq!(
            one("https://example.com", "agent").unwrap(),
            "https://example.com/agent"
        );
        assert_eq!(
            one("https://example.com/m.json?sig=a/b", "agent").unwrap(),
            "https://example.com/agent"
        );
        assert_eq!(
            one("https://example.com/m.json", "//cdn.example/x").unwrap(),
            "https://cdn.example/x"
        );
        let e = one("https://example.com/m.json", "ftp://h/x").unwrap_err();
        assert!(e.contains("agents[0].url"), "{e}");
    }

    #[test]
    fn picks_highest_for_arch_or_exact() {
        let text = m(&[
            e("1.2.0", "x86_64"),
            e("1.10.0", "x86_64"),
            e("9.0.0", "aarch64"),
        ]
        .join(","));
        let base = src("file:///m.json");
        let builds = parse(&base, text.as_bytes()).unwrap();
        let best = choose(&base, &builds, "x86_64", None).unwrap();
        assert_eq!(best.target.version, "1.10.0");
        assert_eq!(best.target.url.as_str(), "file:///a-1.10.0");
        let v = semver::Version::parse("1.2.0").unwrap();
        assert_eq!(
            choose(&base, &builds, "x86_64", Some(&v))
                .unwrap()
                .target
                .version,
            "1.2.0"
        );
        let missing = semver::Version::parse("1.3.0").unwrap();
        assert!(choose(&base, &builds, "x86_64", Some(&missing)).is_err());
        assert!(choose(&base, &builds, "s390x", None).is_err());
    }

    #[test]
    fn refuses_bad_manifests() {
        let bad = |s: &str| parse(&src("file:///m"), s.as_bytes()).unwrap_err();
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
