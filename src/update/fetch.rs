//! HTTP clients for the update source: per-phase timeouts and the proxies
//! from the config (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`).

use std::time::Duration;

use crate::config::{ProxyConfig, UpdateConfig};

/// The proxy to use for `url`, if any.
pub fn proxy_for<'a>(url: &str, proxy: &'a ProxyConfig) -> Option<&'a str> {
    let (scheme, rest) = url.split_once("://")?;
    let host = super::manifest::host_of(rest).to_ascii_lowercase();
    if no_proxy_matches(&host, &proxy.no_proxy) {
        return None;
    }
    match scheme {
        "https" => proxy.https.as_deref().or(proxy.http.as_deref()),
        "http" => proxy.http.as_deref(),
        _ => None,
    }
}

/// curl's NO_PROXY rules: `*` matches all; `example.com` and
/// `.example.com` match the host and its subdomains; IPs match exactly.
fn no_proxy_matches(host: &str, list: &[String]) -> bool {
    list.iter().any(|entry| {
        let e = entry.trim().to_ascii_lowercase();
        let e = e.split(':').next().unwrap_or("").to_string();
        if e == "*" {
            return true;
        }
        let bare = e.trim_start_matches('.');
        !bare.is_empty() && (host == bare || host.ends_with(&format!(".{bare}")))
    })
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

/// A ureq agent for `url` with the update timeouts. `read_timeout` bounds
/// each read (a stall); the caller enforces the minimum throughput.
pub fn agent_for(
    url: &str,
    proxy: &ProxyConfig,
    cfg: &UpdateConfig,
) -> Result<ureq::Agent, String> {
    let mut b = ureq::AgentBuilder::new()
        .timeout_connect(cfg.connect_timeout)
        .timeout_read(cfg.read_timeout)
        .timeout_write(Duration::from_secs(30))
        .redirects(5)
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
            ],
        };
        assert_eq!(
            proxy_for("https://s3.amazonaws.com/x", &p),
            Some("http://sproxy:3128")
        );
        assert_eq!(proxy_for("http://a.b/x", &p), Some("http://proxy:3128"));
        assert_eq!(proxy_for("http://169.254.169.254/x", &p), None);
        assert_eq!(proxy_for("https://repo.internal/x", &p), None);
        assert_eq!(proxy_for("https://www.example.com/x", &p), None);
        assert_eq!(
            proxy_for("https://notexample.com/x", &p),
            Some("http://sproxy:3128")
        );
        assert_eq!(proxy_for("file:///x", &p), None);
    }
}
