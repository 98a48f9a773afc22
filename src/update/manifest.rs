//! Update sources and their manifest.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
