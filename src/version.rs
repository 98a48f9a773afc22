//! Agent versions as text: the store's rule for a version (semver, safe as
//! a directory name), the agent's `--version` banners, and lower-case hex
//! for digests. A leaf: the store, the image reader and the introspection
//! client all use it.

/// Check a version string is safe as a directory name and is semver.
pub fn parse_version(v: &str) -> std::result::Result<semver::Version, String> {
    let v = v.strip_prefix('v').unwrap_or(v);
    if v.contains('/') || v.contains("..") || v.is_empty() {
        return Err(format!("{v:?} is not a valid version"));
    }
    semver::Version::parse(v).map_err(|e| format!("{v:?} is not a semantic version ({e})"))
}

/// The version (and commit) in an agent's `--version` output: the banner
/// `Amazon ECS Agent - v1.2.3 (abcdef12)`, or the real agent's
/// `Version: 1.2.3` / `Commit: abcdef12` lines.
pub fn parse_version_banner(out: &str) -> Option<(String, Option<String>)> {
    // Banner form: "Amazon ECS Agent - v1.2.3 (abcdef12)"; a '*' before the
    // hash marks a dirty build.
    if let Some(i) = out.find(" - v") {
        let rest = &out[i + 4..];
        let ver: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
        let hash = rest
            .split_once('(')
            .and_then(|(_, h)| h.split_once(')'))
            .map(|(h, _)| h.trim_start_matches('*').to_string());
        if parse_version(&ver).is_ok() {
            return Some((ver, hash));
        }
    }
    let mut ver = None;
    let mut hash = None;
    for line in out.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Version:") {
            ver = Some(v.trim().trim_start_matches('v').to_string());
        } else if let Some(h) = line.strip_prefix("Commit:") {
            hash = Some(h.trim().trim_start_matches('*').to_string());
        }
    }
    ver.filter(|v| parse_version(v).is_ok()).map(|v| (v, hash))
}

/// Lower-case hex of `bytes` (digests).
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
    }
    s
}
