//! Update sources: parsing and the rules.
//!
//! Every URL the update machine reads from (the manifest, a build, each hop
//! of a redirect, the agent's staged location) is a `Source`: parsed once,
//! by the `url` crate, which is the parser ureq uses, so the host the rules
//! look at is the host a request connects to. Relative URLs are resolved
//! with `Url::join` (RFC 3986). The rules:
//!
//! 1. `https://HOST/...` is allowed.
//! 2. `file:///ABSOLUTE/PATH` is allowed as a first URL (the operator's
//!    source, a manifest's build, a rollback's own store), never as the
//!    target of a redirect.
//! 3. `http://HOST/...` is allowed when HOST is loopback (`localhost`,
//!    127.0.0.0/8, `::1`), or to any host with `ECS_WARDEN_ALLOW_HTTP=true`.
//! 4. A redirect hop must pass rule 3 (or be https), may not go from https
//!    to plain http unless `ECS_WARDEN_ALLOW_HTTP=true`, and a request
//!    follows at most `MAX_REDIRECTS` of them (`update::fetch` applies this
//!    before it connects to the hop).
//!
//! Any other scheme, or one written without `//`, is refused. On the wire
//! (journal, status, API) a source is its URL string.

use std::fmt;
use std::path::{Path, PathBuf};

use url::{Host, Url};

/// Redirects one request may follow.
pub const MAX_REDIRECTS: usize = 5;

const EXPECTED: &str = "expected an https://, file:/// or loopback http:// URL";
const EXPECTED_FILE: &str = "expected file:///ABSOLUTE/PATH";

/// A parsed update URL: `https`, `http` or `file`, with a host for the
/// first two and an absolute local path for the last.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Source(Url);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
    File,
}

impl Source {
    /// Parse an absolute URL as an operator or a manifest writes it. Only
    /// its form is checked here; `check` applies the rules.
    pub fn parse(text: &str) -> Result<Source, String> {
        let text = text.trim();
        // The WHATWG parser reads `https:host`, `http:\\host` and
        // `https:///host` as `https://host/`; a source must be written out
        // plainly, so that nobody reads it differently.
        let written_out = ["https://", "http://", "file://"].iter().any(|p| {
            text.len() >= p.len()
                && text.is_char_boundary(p.len())
                && text[..p.len()].eq_ignore_ascii_case(p)
                && (p.starts_with("file") || !text[p.len()..].starts_with(['/', '\\']))
        });
        if !written_out {
            return Err(EXPECTED.into());
        }
        let url = Url::parse(text).map_err(|e| format!("not a valid URL ({e}); {EXPECTED}"))?;
        Source::from_url(url)
    }

    /// A local file: `file:///...`, percent-encoded as needed (spaces,
    /// `#`, bytes that are not UTF-8), so `file_path` gives it back exactly.
    /// Every path here derives from the root, which is absolute; a relative
    /// one (a bug) is read from `/`.
    pub fn file(path: &Path) -> Source {
        debug_assert!(path.is_absolute(), "{} is not absolute", path.display());
        let path = Path::new("/").join(path);
        Source(Url::from_file_path(&path).expect("an absolute path makes a file URL"))
    }

    fn from_url(url: Url) -> Result<Source, String> {
        match url.scheme() {
            "https" | "http" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(format!("{url} has no host; {EXPECTED}"));
                }
            }
            "file" => {
                if url.to_file_path().is_err() {
                    return Err(format!("{url}: {EXPECTED_FILE}"));
                }
            }
            _ => return Err(EXPECTED.into()),
        }
        Ok(Source(url))
    }

    /// `reference` (absolute, or relative to this URL) resolved as RFC 3986
    /// says: `agent` next to the manifest, `/x` on its host, `//cdn/x` on
    /// its scheme. Its form is checked; the rules are not.
    pub fn join(&self, reference: &str) -> Result<Source, String> {
        let url = self
            .0
            .join(reference.trim())
            .map_err(|e| format!("cannot resolve {reference:?} against {self}: {e}"))?;
        Source::from_url(url)
    }

    pub fn scheme(&self) -> Scheme {
        match self.0.scheme() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            _ => Scheme::File,
        }
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The host a request connects to (none for `file:`).
    pub fn host(&self) -> Option<Host<&str>> {
        match self.scheme() {
            Scheme::File => None,
            _ => self.0.host(),
        }
    }

    /// The local path of a `file:` source.
    pub fn file_path(&self) -> Option<PathBuf> {
        match self.scheme() {
            Scheme::File => self.0.to_file_path().ok(),
            _ => None,
        }
    }

    /// Rules 1-3: may this URL be read at all?
    pub fn check(&self, allow_http: bool) -> Result<(), String> {
        match self.scheme() {
            Scheme::Https | Scheme::File => Ok(()),
            Scheme::Http => {
                let host = self.host().expect("http has a host");
                if allow_http || is_loopback(&host) {
                    Ok(())
                } else {
                    Err(format!(
                        "plain http to {host} is refused: use https, a loopback address, or set ECS_WARDEN_ALLOW_HTTP=true"
                    ))
                }
            }
        }
    }

    /// Rule 4: may a request to `self` follow a redirect to `to`?
    pub fn check_redirect(&self, to: &Source, allow_http: bool) -> Result<(), String> {
        match (self.scheme(), to.scheme()) {
            (_, Scheme::File) => Err("a redirect to a file: URL is never followed".into()),
            (Scheme::Https, Scheme::Http) if !allow_http => Err(
                "a redirect from https to plain http is refused (set ECS_WARDEN_ALLOW_HTTP=true to allow it)"
                    .into(),
            ),
            _ => to.check(allow_http),
        }
    }
}

/// `localhost` or a loopback address, as the URL parser resolved the host
/// (`127.1` and `0x7f000001` are 127.0.0.1 to it, as to ureq).
pub fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Parse `text` and apply the rules: a source an operator may configure.
pub fn checked(text: &str, allow_http: bool) -> Result<Source, String> {
    let src = Source::parse(text)?;
    src.check(allow_http)?;
    Ok(src)
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({:?})", self.as_str())
    }
}

impl serde::Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Source, D::Error> {
        let text = String::deserialize(d)?;
        Source::parse(&text).map_err(|m| serde::de::Error::custom(format!("{text:?}: {m}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    fn ok(s: &str, allow_http: bool) -> bool {
        checked(s, allow_http).is_ok()
    }

    #[test]
    fn the_rules() {
        assert!(ok("https://example.com/m.json", false));
        assert!(ok("HTTPS://Example.COM/m.json", false));
        assert!(ok("file:///srv/m.json", false));
        assert!(ok("http://127.0.0.1:8080/m.json", false));
        assert!(ok("http://127.9.9.9/m.json", false));
        assert!(ok("http://[::1]:8080/m.json", false));
        assert!(ok("http://localhost/m.json", false));
        assert!(ok("http://LOCALHOST/m.json", false));
        assert!(!ok("http://example.com/m.json", false));
        assert!(ok("http://example.com/m.json", true));
        assert!(!ok("ftp://x/y", true));
        assert!(!ok("file://relative", false));
        assert!(!ok("file:relative", false));
        assert!(!ok("https:example.com/m", false));
        assert!(!ok("http:\\\\127.0.0.1/m", false));
        assert!(!ok("http://", true));
        assert!(!ok("https:///m", true));
        assert!(!ok("", true));
    }

    #[test]
    fn the_host_checked_is_the_host_connected_to() {
        // The WHATWG parser (and so ureq) reads `\` as `/`: the host is
        // evil.example, and `@localhost/m` is the path.
        let evil = Source::parse("http://evil.example\\@localhost/m").unwrap();
        assert_eq!(evil.host().unwrap().to_string(), "evil.example");
        let e = evil.check(false).unwrap_err();
        assert!(e.contains("plain http to evil.example is refused"), "{e}");
        // User info is not the host.
        let e = checked("http://localhost@evil.example/m", false).unwrap_err();
        assert!(e.contains("evil.example"), "{e}");
        let e = checked("http://127.0.0.1:80@evil.example/m", false).unwrap_err();
        assert!(e.contains("evil.example"), "{e}");
        // Shorthand forms of loopback are loopback to both.
        assert!(ok("http://127.1/m", false));
        assert!(ok("http://0x7f000001/m", false));
        assert!(!ok("http://127.0.0.1.evil.example/m", false));
        assert!(!ok("http://localhost.evil.example/m", false));
    }

    #[test]
    fn relative_urls_join_as_rfc_3986_says() {
        let j = |base: &str, r: &str| Source::parse(base).unwrap().join(r).unwrap().to_string();
        let b = "http://127.0.0.1:9/dir/manifest.json";
        assert_eq!(j(b, "a"), "http://127.0.0.1:9/dir/a");
        assert_eq!(j(b, "/x/a"), "http://127.0.0.1:9/x/a");
        assert_eq!(j(b, "../a"), "http://127.0.0.1:9/a");
        assert_eq!(j(b, "https://h/a"), "https://h/a");
        assert_eq!(j("file:///srv/m.json", "a"), "file:///srv/a");
        // A base without a path: the join is on its root, not its host.
        assert_eq!(
            j("https://example.com", "agent"),
            "https://example.com/agent"
        );
        // Network-path reference: the base's scheme, another host.
        assert_eq!(j("https://example.com/m.json", "//cdn/x"), "https://cdn/x");
        // A query with slashes is not part of the directory.
        assert_eq!(
            j("https://h/dir/m.json?sig=a/b/c", "agent"),
            "https://h/dir/agent"
        );
        assert_eq!(
            j("https://h/dir/m.json", "agent?X-Amz-Signature=a/b"),
            "https://h/dir/agent?X-Amz-Signature=a/b"
        );
        // A file manifest cannot point at another host's file.
        assert!(Source::parse("file:///srv/m.json")
            .unwrap()
            .join("//cdn/x")
            .is_err());
        assert!(Source::parse("https://h/m")
            .unwrap()
            .join("ftp://h/x")
            .is_err());
    }

    #[test]
    fn redirects() {
        let s = |t: &str| Source::parse(t).unwrap();
        let lo = s("http://127.0.0.1:1/m");
        assert!(lo.check_redirect(&s("http://127.0.0.1:2/m"), false).is_ok());
        assert!(lo
            .check_redirect(&s("https://example.com/m"), false)
            .is_ok());
        let e = lo
            .check_redirect(&s("http://192.0.2.1/m"), false)
            .unwrap_err();
        assert!(e.contains("plain http to 192.0.2.1"), "{e}");
        assert!(lo.check_redirect(&s("http://192.0.2.1/m"), true).is_ok());
        let tls = s("https://example.com/m");
        let e = tls
            .check_redirect(&s("http://127.0.0.1/m"), false)
            .unwrap_err();
        assert!(e.contains("from https to plain http"), "{e}");
        assert!(tls.check_redirect(&s("http://127.0.0.1/m"), true).is_ok());
        assert!(lo.check_redirect(&s("file:///etc/passwd"), true).is_err());
    }

    #[test]
    fn files_round_trip_any_path() {
        for p in ["/srv/a b/ecs-agent", "/srv/50%/#1?x", "/srv/\u{e9}t\u{e9}"] {
            let src = Source::file(Path::new(p));
            assert_eq!(src.file_path().unwrap(), PathBuf::from(p), "{src}");
            let again = Source::parse(src.as_str()).unwrap();
            assert_eq!(again.file_path().unwrap(), PathBuf::from(p));
        }
        let raw = Path::new(OsStr::from_bytes(b"/tmp/\xff/ecs-agent"));
        let src = Source::file(raw);
        assert_eq!(src.file_path().unwrap(), raw);
    }

    #[test]
    fn on_the_wire_a_string() {
        let src = Source::parse("https://example.com/a?b=c").unwrap();
        let json = serde_json::to_string(&src).unwrap();
        assert_eq!(json, r#""https://example.com/a?b=c""#);
        let back: Source = serde_json::from_str(&json).unwrap();
        assert_eq!(back, src);
        assert!(serde_json::from_str::<Source>(r#""ftp://x/y""#).is_err());
    }
}
