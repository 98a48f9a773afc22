//! HTTP requests to update sources: per-phase timeouts, the proxies from
//! the config (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`), and redirects,
//! which are followed here and not by ureq, so that each hop passes the
//! source rules (`crate::source`) before anything connects to it. The
//! manifest fetch, the size probe (`HEAD`) and the download all go
//! through `request`:
//!
//! 1. Check the URL: the first against `Source::check`, each later one
//!    against `Source::check_redirect` from the hop before it. A refusal
//!    ends the request; nothing was sent to that URL.
//! 2. Send the request (same method, same headers: a download's `Range`
//!    too) with ureq's redirects off, through the proxy for this hop's host,
//!    within what is left of the overall deadline when there is one.
//! 3. A 301, 302, 303, 307 or 308 with a `Location`: resolve it against
//!    this hop's URL (`Url::join`) and go to 1, at most `MAX_REDIRECTS`
//!    times.
//! 4. Anything else is the answer, returned with the URL that gave it.

use std::time::{Duration, Instant};

use url::Host;

use crate::config::{ProxyConfig, UpdateConfig};
use crate::source::{Scheme, Source, MAX_REDIRECTS};

/// Why a request got no usable answer. Each names the URL it is about:
/// the hop that failed, which is not the first URL after a redirect.
#[derive(Debug)]
pub enum FetchError {
    /// Refused by the source rules or the redirect limit before anything
    /// was sent to the URL it names: retrying cannot help.
    Refused { url: Source, reason: String },
    /// An HTTP error status (4xx, 5xx, or a 3xx that is not a redirect).
    Status {
        url: Source,
        code: u16,
        text: String,
    },
    /// No answer: connection, TLS, a timeout, a malformed response.
    Transport { url: Source, detail: String },
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Refused { url, reason } => write!(f, "{url}: {reason}"),
            FetchError::Status { url, code, text } => write!(f, "{url}: HTTP {code} {text}"),
            FetchError::Transport { url, detail } => write!(f, "{url}: {detail}"),
        }
    }
}

/// A response, and the URL that gave it (the last hop).
pub struct Fetched {
    pub url: Source,
    pub response: ureq::Response,
}

/// Longest overall deadline of a small fetch (see `probe_deadline`).
pub const PROBE_DEADLINE_CAP: Duration = Duration::from_secs(20);

/// The overall deadline of a manifest fetch or a `HEAD` probe of a build,
/// redirects and body included: one connect plus one read timeout, at most
/// `PROBE_DEADLINE_CAP`. Their answers are small, so a server that
/// trickles them a byte at a time (never silent long enough for the read
/// timeout) is cut off here; and the cap keeps it below the 30 s the CLI
/// waits for its answer, so the CLI hears why.
pub fn probe_deadline(cfg: &UpdateConfig) -> Duration {
    cfg.connect_timeout
        .saturating_add(cfg.read_timeout)
        .min(PROBE_DEADLINE_CAP)
}

/// `detail` of a failure, saying so when it came from the overall
/// `deadline` of a request that started at `started`.
pub fn past_deadline(deadline: Duration, started: Instant, detail: String) -> String {
    if started.elapsed() >= deadline {
        format!(
            "no complete answer within {} (connect plus read timeout, at most {}): {detail}",
            humantime::format_duration(deadline),
            humantime::format_duration(PROBE_DEADLINE_CAP)
        )
    } else {
        detail
    }
}

/// `method` (`GET` or `HEAD`) on `src` with `headers`, following redirects
/// as the module's steps say, all hops and the body within `deadline` when
/// one is given. `src` must be http or https.
pub fn request(
    method: &str,
    src: &Source,
    headers: &[(&str, &str)],
    deadline: Option<Duration>,
    proxy: &ProxyConfig,
    cfg: &UpdateConfig,
) -> Result<Fetched, FetchError> {
    let refused = |url: &Source, reason: String| FetchError::Refused {
        url: url.clone(),
        reason,
    };
    src.check(cfg.allow_http).map_err(|m| refused(src, m))?;
    let started = Instant::now();
    let late = |detail: String| match deadline {
        Some(d) => past_deadline(d, started, detail),
        None => detail,
    };
    let mut url = src.clone();
    let mut hops = 0;
    loop {
        if url.scheme() == Scheme::File {
            return Err(refused(&url, "is not an HTTP URL".into()));
        }
        let agent = agent_for(&url, proxy, cfg).map_err(|m| refused(&url, m))?;
        let mut req = agent.request_url(method, url.url());
        for (k, v) in headers {
            req = req.set(k, v);
        }
        if let Some(d) = deadline {
            let left = d.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(FetchError::Transport {
                    url,
                    detail: late(format!("{hops} redirects took all of it")),
                });
            }
            req = req.timeout(left);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                return Err(FetchError::Status {
                    url,
                    code,
                    text: r.status_text().to_string(),
                })
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(FetchError::Transport {
                    url,
                    detail: late(transport_detail(&t)),
                })
            }
        };
        let code = resp.status();
        if !(300..400).contains(&code) {
            return Ok(Fetched {
                url,
                response: resp,
            });
        }
        if !matches!(code, 301 | 302 | 303 | 307 | 308) {
            return Err(FetchError::Status {
                url,
                code,
                text: resp.status_text().to_string(),
            });
        }
        let Some(location) = resp.header("Location") else {
            return Err(refused(
                &url,
                format!("HTTP {code} redirect without a Location header"),
            ));
        };
        let next = url
            .join(location)
            .map_err(|m| refused(&url, format!("HTTP {code} redirect to {location:?}: {m}")))?;
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(refused(
                &url,
                format!("redirects to {next}: more than {MAX_REDIRECTS} redirects (the first URL was {src})"),
            ));
        }
        url.check_redirect(&next, cfg.allow_http)
            .map_err(|m| refused(&url, format!("the redirect to {next} is refused: {m}")))?;
        log::debug!("{url} redirects ({code}) to {next}");
        url = next;
    }
}

/// A transport error without the URL ureq puts first (ours names the hop).
fn transport_detail(t: &ureq::Transport) -> String {
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s.push_str(": ");
        s.push_str(m);
    }
    if let Some(e) = std::error::Error::source(t) {
        s.push_str(": ");
        s.push_str(&e.to_string());
    }
    s
}

/// The proxy to use for `url`, if any.
pub fn proxy_for<'a>(url: &Source, proxy: &'a ProxyConfig) -> Option<&'a str> {
    let host = url.host()?;
    if no_proxy_matches(&host, &proxy.no_proxy) {
        return None;
    }
    match url.scheme() {
        Scheme::Https => proxy.https.as_deref().or(proxy.http.as_deref()),
        Scheme::Http => proxy.http.as_deref(),
        Scheme::File => None,
    }
}

/// curl's NO_PROXY rules: `*` matches all; `example.com` and
/// `.example.com` match the host and its subdomains; an IP address matches
/// that address (`::1` or `[::1]`). A `:PORT` on an entry is ignored.
fn no_proxy_matches(host: &Host<&str>, list: &[String]) -> bool {
    list.iter().any(|entry| {
        let e = entry.trim().to_ascii_lowercase();
        if e == "*" {
            return true;
        }
        let name = if let Some(v6) = e.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else if e.matches(':').count() == 1 {
            e.split(':').next().unwrap_or("")
        } else {
            e.as_str()
        };
        match host {
            Host::Domain(d) => {
                let bare = name.trim_start_matches('.');
                let d = d.to_ascii_lowercase();
                !bare.is_empty() && (d == bare || d.ends_with(&format!(".{bare}")))
            }
            Host::Ipv4(ip) => name.parse::<std::net::Ipv4Addr>().is_ok_and(|n| n == *ip),
            Host::Ipv6(ip) => name.parse::<std::net::Ipv6Addr>().is_ok_and(|n| n == *ip),
        }
    })
}

/// A ureq agent for `url` with the update timeouts and no redirects of its
/// own. `read_timeout` bounds each read (a stall); the caller enforces the
/// minimum throughput.
fn agent_for(url: &Source, proxy: &ProxyConfig, cfg: &UpdateConfig) -> Result<ureq::Agent, String> {
    let mut b = ureq::AgentBuilder::new()
        .timeout_connect(cfg.connect_timeout)
        .timeout_read(cfg.read_timeout)
        .timeout_write(Duration::from_secs(30))
        .redirects(0)
        .user_agent(concat!("ecs-warden/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = proxy_for(url, proxy) {
        let p = ureq::Proxy::new(p).map_err(|e| format!("invalid proxy {p}: {e}"))?;
        b = b.proxy(p);
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_rules() {
        let p = ProxyConfig {
            http: Some("http://proxy:3128".into()),
            https: Some("http://sproxy:3128".into()),
            no_proxy: vec![
                "169.254.169.254".into(),
                ".internal".into(),
                "example.com".into(),
                "[::1]:8080".into(),
                "10.0.0.1:3128".into(),
            ],
        };
        let for_ = |u: &str| proxy_for(&Source::parse(u).unwrap(), &p);
        assert_eq!(
            for_("https://s3.amazonaws.com/x"),
            Some("http://sproxy:3128")
        );
        assert_eq!(for_("http://a.b/x"), Some("http://proxy:3128"));
        assert_eq!(for_("http://169.254.169.254/x"), None);
        assert_eq!(for_("https://repo.internal/x"), None);
        assert_eq!(for_("https://www.example.com/x"), None);
        assert_eq!(for_("https://WWW.EXAMPLE.COM/x"), None);
        assert_eq!(for_("https://notexample.com/x"), Some("http://sproxy:3128"));
        assert_eq!(for_("http://[::1]:9/x"), None);
        assert_eq!(for_("http://10.0.0.1/x"), None);
        assert_eq!(for_("file:///x"), None);
        // The host ureq connects to, not what a string split would see.
        assert_eq!(
            for_("https://example.com\\@other.test/x"),
            None,
            "the host is example.com"
        );
        assert_eq!(
            for_("https://example.com@other.test/x"),
            Some("http://sproxy:3128"),
            "the host is other.test"
        );
        let all = ProxyConfig {
            no_proxy: vec!["*".into()],
            ..p.clone()
        };
        assert_eq!(
            proxy_for(&Source::parse("https://a/x").unwrap(), &all),
            None
        );
    }
}
