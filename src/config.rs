//! Configuration: built-in defaults, then `var/lib/ecs/ecs.config`, then
//! `etc/ecs/ecs.config` (later wins), as ecs-init reads them.
//!
//! 1. Each file is parsed into `KEY=VALUE` entries, remembering file and
//!    line; comments (`#`), blank lines, an optional `export ` and matching
//!    quotes around the value are accepted. What ecs-init would skip or
//!    pass on (a line without `=`, a key that is no name, an unmatched
//!    quote) is a warning naming the file and line, never an error, except
//!    on the warden's own `ECS_WARDEN_*` keys, which stay strict.
//! 2. Entries merge in order; every key goes to the agent's environment.
//! 3. The warden's own keys are parsed into `Config`; a bad value is an
//!    error naming the file, line, key and what is expected. Nothing starts
//!    on an error. Keys that ecs-init or the agent own take what ecs-init
//!    takes: a value it would ignore is a warning and the default.
//!    Warnings are kept in `Config::warnings` and logged once logging is
//!    up.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::source::Source;

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub value: String,
    pub origin: Option<Origin>,
}

/// Loopback `host:port` of the agent's introspection API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn base_url(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// Restart backoff after the agent fails: `min` doubling to `max` with
/// jitter, reset once the agent has run for `stable`.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    pub min: Duration,
    pub max: Duration,
    pub stable: Duration,
}

/// The host network set-up (`hostnet.rs`), from ecs-init's keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostNetConfig {
    /// `ECS_ALLOW_OFFHOST_INTROSPECTION_ACCESS`: leave port 51678 open to
    /// other hosts.
    pub allow_offhost_introspection: bool,
    /// `ECS_SKIP_LOCALHOST_TRAFFIC_FILTER`: no DROP of packets to 127/8
    /// from elsewhere.
    pub skip_localhost_filter: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Vec<String>,
}

/// Update-machine settings.
#[derive(Debug, Clone)]
pub struct UpdateConfig {
    /// Manifest URL (`https://`, `file://`, loopback `http://`), checked
    /// against the source rules.
    pub source: Option<Source>,
    pub allow_http: bool,
    /// Exact version to install instead of the highest one.
    pub pinned_version: Option<semver::Version>,
    pub health_timeout: Duration,
    pub health_stable: Duration,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before it counts as a stall.
    pub read_timeout: Duration,
    /// Minimum average throughput over `stall_window`, bytes per second.
    pub min_rate: u64,
    pub stall_window: Duration,
    /// Attempts per download (first try included).
    pub attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_delay: Duration,
    /// Largest build accepted, in bytes: a manifest entry above it is
    /// refused, and so is a size learned from the source.
    pub max_build_size: u64,
}

/// The validated configuration. Built once at the edge, passed down.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every key, merged; the agent's environment.
    pub env: BTreeMap<String, Entry>,
    pub log_level: log::LevelFilter,
    pub updates_enabled: bool,
    pub introspection: Endpoint,
    pub stop_timeout: Duration,
    pub backoff: BackoffConfig,
    pub proxy: ProxyConfig,
    pub update: UpdateConfig,
    /// Loopback TCP port for the ECS JSON API; off when `None`.
    pub api_port: Option<u16>,
    /// The cluster the agent registers in (`ECS_CLUSTER`).
    pub cluster: String,
    pub host_net: HostNetConfig,
    /// What was accepted with a warning (file, line and why), to be logged
    /// once logging is set up.
    pub warnings: Vec<String>,
}

/// Longest `KEY=VALUE` (with its NUL) in the agent's environment: Linux's
/// `MAX_ARG_STRLEN`, 32 pages.
pub const MAX_ENV_ENTRY: usize = 128 * 1024;
/// Most bytes the config may put in the agent's environment (strings and
/// envp pointers). `execve` takes a quarter of the stack limit for argv and
/// environment together: 2 MiB with the usual 8 MiB. Half of that is left
/// for the inherited environment, the paths the warden adds and argv.
pub const MAX_ENV_TOTAL: usize = 1024 * 1024;

/// The highest `ECS_WARDEN_MAX_BUILD_SIZE` (1 PiB): far above any build,
/// and low enough that no size arithmetic on a build can overflow.
pub const MAX_BUILD_SIZE_LIMIT: u64 = 1 << 50;

/// The warden's own keys with their defaults; documented in README.md.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("ECS_LOGLEVEL", "info"),
    ("ECS_UPDATES_ENABLED", "true"),
    ("ECS_WARDEN_INTROSPECTION_URL", "http://127.0.0.1:51678"),
    ("ECS_WARDEN_STOP_TIMEOUT", "30s"),
    ("ECS_WARDEN_RESTART_BACKOFF_MIN", "500ms"),
    ("ECS_WARDEN_RESTART_BACKOFF_MAX", "15s"),
    ("ECS_WARDEN_RESTART_STABLE", "60s"),
    ("ECS_WARDEN_ALLOW_HTTP", "false"),
    ("ECS_WARDEN_HEALTH_TIMEOUT", "60s"),
    ("ECS_WARDEN_HEALTH_STABLE", "10s"),
    ("ECS_WARDEN_DOWNLOAD_CONNECT_TIMEOUT", "10s"),
    ("ECS_WARDEN_DOWNLOAD_READ_TIMEOUT", "30s"),
    ("ECS_WARDEN_DOWNLOAD_MIN_RATE", "1024"),
    ("ECS_WARDEN_DOWNLOAD_STALL_WINDOW", "60s"),
    ("ECS_WARDEN_DOWNLOAD_ATTEMPTS", "5"),
    ("ECS_WARDEN_DOWNLOAD_RETRY_DELAY", "1s"),
    // 1 GiB: ten times the real agent's tarball.
    ("ECS_WARDEN_MAX_BUILD_SIZE", "1073741824"),
    ("ECS_CLUSTER", "default"),
];

/// Parse one config file's text. `file` is for messages only; lines that
/// ecs-init would skip or pass on as they are add a warning to `warnings`.
pub fn parse_file(
    file: &Path,
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, Entry)>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |key: &str, message: String| Error::Config {
            file: file.to_path_buf(),
            line: line_no,
            key: key.to_string(),
            message,
        };
        let at = format!("{}:{line_no}", file.display());
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            let found = format!("expected KEY=VALUE, found {:?}", truncate(line, 60));
            if line.starts_with(WARDEN_PREFIX) {
                return Err(err("", found));
            }
            warnings.push(format!("{at}: {found}; line skipped, as ecs-init does"));
            continue;
        };
        let key = key.trim();
        if !valid_key(key) {
            let found = format!(
                "invalid key {:?}: expected letters, digits and '_', not starting with a digit",
                truncate(key, 60)
            );
            if key.starts_with(WARDEN_PREFIX) {
                return Err(err("", found));
            }
            warnings.push(format!(
                "{at}: {found}; line skipped (no program reads such a name)"
            ));
            continue;
        }
        let value = match unquote(value.trim()) {
            Ok(v) => v,
            Err(m) if key.starts_with(WARDEN_PREFIX) => return Err(err(key, m)),
            Err(m) => {
                warnings.push(format!(
                    "{at}: {key}: {m}; the value is kept as written, as ecs-init does"
                ));
                value.trim().to_string()
            }
        };
        out.push((
            key.to_string(),
            Entry {
                value,
                origin: Some(Origin {
                    file: file.to_path_buf(),
                    line: line_no,
                }),
            },
        ));
    }
    Ok(out)
}

/// The warden's own keys: strict, unlike the keys ecs-init and the agent own.
const WARDEN_PREFIX: &str = "ECS_WARDEN_";

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unquote(v: &str) -> std::result::Result<String, String> {
    let bytes = v.as_bytes();
    if let Some(&q) = bytes.first() {
        if q == b'"' || q == b'\'' {
            if bytes.len() >= 2 && bytes[bytes.len() - 1] == q {
                return Ok(v[1..v.len() - 1].to_string());
            }
            return Err(format!("unterminated {} quote", q as char));
        }
    }
    Ok(v.to_string())
}

/// Read a config file; a missing file is an empty one.
fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::Config {
                file: path.to_path_buf(),
                line: 0,
                key: String::new(),
                message: "file is not valid UTF-8".into(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // A config file that exists but cannot be read is a config error
        // (exit 4), like one that cannot be parsed.
        Err(e) => Err(Error::Config {
            file: path.to_path_buf(),
            line: 0,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }),
    }
}

impl Config {
    /// Load and validate the host's configuration.
    pub fn load(paths: &Paths) -> Result<Config> {
        let mut env: BTreeMap<String, Entry> = DEFAULTS
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Entry {
                        value: v.to_string(),
                        origin: None,
                    },
                )
            })
            .collect();
        let mut warnings = Vec::new();
        for file in [&paths.var_config, &paths.etc_config] {
            if let Some(text) = read_optional(file)? {
                for (k, e) in parse_file(file, &text, &mut warnings)? {
                    env.insert(k, e);
                }
            }
        }
        let mut config = Config::from_env(env)?;
        warnings.append(&mut config.warnings);
        config.warnings = warnings;
        Ok(config)
    }

    /// Validate merged entries into a `Config`.
    pub fn from_env(env: BTreeMap<String, Entry>) -> Result<Config> {
        let v = Validator {
            env: &env,
            warnings: Default::default(),
        };
        v.agent_environment()?;
        let backoff = BackoffConfig {
            min: v.duration("ECS_WARDEN_RESTART_BACKOFF_MIN")?,
            max: v.duration("ECS_WARDEN_RESTART_BACKOFF_MAX")?,
            stable: v.duration("ECS_WARDEN_RESTART_STABLE")?,
        };
        if backoff.max < backoff.min {
            return Err(v.bad(
                "ECS_WARDEN_RESTART_BACKOFF_MAX",
                format!(
                    "must not be below ECS_WARDEN_RESTART_BACKOFF_MIN ({})",
                    v.get("ECS_WARDEN_RESTART_BACKOFF_MIN")
                ),
            ));
        }
        let attempts = v.integer("ECS_WARDEN_DOWNLOAD_ATTEMPTS", 1, 100)? as u32;
        let allow_http = v.boolean("ECS_WARDEN_ALLOW_HTTP")?;
        let update = UpdateConfig {
            source: match v.optional("ECS_WARDEN_UPDATE_SOURCE") {
                None => None,
                Some(s) => Some(
                    crate::source::checked(&s, allow_http)
                        .map_err(|m| v.bad("ECS_WARDEN_UPDATE_SOURCE", m))?,
                ),
            },
            allow_http,
            pinned_version: match v.optional("ECS_WARDEN_AGENT_VERSION") {
                None => None,
                Some(s) => Some(semver::Version::parse(s.trim_start_matches('v')).map_err(
                    |e| {
                        v.bad(
                            "ECS_WARDEN_AGENT_VERSION",
                            format!("expected a version such as 1.106.0 ({e})"),
                        )
                    },
                )?),
            },
            health_timeout: v.duration("ECS_WARDEN_HEALTH_TIMEOUT")?,
            health_stable: v.duration("ECS_WARDEN_HEALTH_STABLE")?,
            connect_timeout: v.positive_duration("ECS_WARDEN_DOWNLOAD_CONNECT_TIMEOUT")?,
            read_timeout: v.positive_duration("ECS_WARDEN_DOWNLOAD_READ_TIMEOUT")?,
            min_rate: v.integer("ECS_WARDEN_DOWNLOAD_MIN_RATE", 0, u64::MAX)?,
            stall_window: v.duration("ECS_WARDEN_DOWNLOAD_STALL_WINDOW")?,
            attempts,
            retry_delay: v.duration("ECS_WARDEN_DOWNLOAD_RETRY_DELAY")?,
            max_build_size: v.integer("ECS_WARDEN_MAX_BUILD_SIZE", 1, MAX_BUILD_SIZE_LIMIT)?,
        };
        let api_port = match v.optional("ECS_WARDEN_API_PORT") {
            None => None,
            Some(_) => Some(v.integer("ECS_WARDEN_API_PORT", 1, 65535)? as u16),
        };
        let cluster = v.get("ECS_CLUSTER").to_string();
        let cluster = if cluster.is_empty() {
            "default".to_string()
        } else {
            cluster
        };
        let config = Config {
            log_level: v.log_level("ECS_LOGLEVEL"),
            updates_enabled: v.boolean("ECS_UPDATES_ENABLED")?,
            introspection: v.endpoint("ECS_WARDEN_INTROSPECTION_URL")?,
            stop_timeout: v.duration("ECS_WARDEN_STOP_TIMEOUT")?,
            backoff,
            proxy: ProxyConfig {
                http: v.proxy("HTTP_PROXY", "http_proxy"),
                https: v.proxy("HTTPS_PROXY", "https_proxy"),
                no_proxy: v
                    .optional("NO_PROXY")
                    .or_else(|| v.optional("no_proxy"))
                    .map(|s| {
                        s.split(',')
                            .map(|p| p.trim().to_string())
                            .filter(|p| !p.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            update,
            api_port,
            cluster,
            host_net: HostNetConfig {
                allow_offhost_introspection: v
                    .lenient_bool("ECS_ALLOW_OFFHOST_INTROSPECTION_ACCESS"),
                skip_localhost_filter: v.lenient_bool("ECS_SKIP_LOCALHOST_TRAFFIC_FILTER"),
            },
            warnings: v.warnings.take(),
            env,
        };
        Ok(config)
    }

    /// The agent's environment: every merged key.
    pub fn agent_env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env.iter().map(|(k, e)| (k.as_str(), e.value.as_str()))
    }
}

struct Validator<'a> {
    env: &'a BTreeMap<String, Entry>,
    /// Values of ecs-init's and the agent's keys taken leniently.
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Validator<'_> {
    fn get(&self, key: &str) -> &str {
        self.env.get(key).map(|e| e.value.as_str()).unwrap_or("")
    }

    fn optional(&self, key: &str) -> Option<String> {
        let v = self.get(key).trim();
        (!v.is_empty()).then(|| v.to_string())
    }

    fn bad(&self, key: &str, expected: String) -> Error {
        let value = self.get(key);
        let (file, line) = match self.env.get(key).and_then(|e| e.origin.clone()) {
            Some(o) => (o.file, o.line),
            None => (PathBuf::from("<built-in defaults>"), 0),
        };
        Error::Config {
            file,
            line,
            key: key.to_string(),
            message: format!("invalid value {value:?}: {expected}"),
        }
    }

    fn boolean(&self, key: &str) -> Result<bool> {
        parse_bool(self.get(key)).ok_or_else(|| self.bad(key, "expected true or false".into()))
    }

    fn duration(&self, key: &str) -> Result<Duration> {
        parse_duration(self.get(key)).ok_or_else(|| {
            self.bad(
                key,
                "expected a duration such as 500ms, 30s, 2m or 1h30m".into(),
            )
        })
    }

    /// A duration that must not be zero (a zero socket timeout cannot be
    /// set: every download would fail).
    fn positive_duration(&self, key: &str) -> Result<Duration> {
        let d = self.duration(key)?;
        if d.is_zero() {
            return Err(self.bad(
                key,
                "must be above 0 (a timeout of 0 can never be met)".into(),
            ));
        }
        Ok(d)
    }

    /// Every entry goes to the agent's environment, so each must be one
    /// `execve` can pass: no NUL byte, `KEY=VALUE` within
    /// `MAX_ENV_ENTRY`, and all of them together within `MAX_ENV_TOTAL`
    /// (counted defaults first, then by file and line; the entry that
    /// crosses the bound is the one named).
    fn agent_environment(&self) -> Result<()> {
        let mut entries: Vec<(&String, &Entry)> = self.env.iter().collect();
        // Built-in defaults first, then the files in line order.
        entries.sort_by(|a, b| {
            let key = |e: &Entry| e.origin.as_ref().map(|o| (o.file.clone(), o.line));
            key(a.1).cmp(&key(b.1)).then_with(|| a.0.cmp(b.0))
        });
        let mut total = 0usize;
        for (n, (k, e)) in entries.iter().enumerate() {
            if e.value.contains('\0') {
                return Err(self.bad_entry(
                    k,
                    "the value contains a NUL byte, which no environment variable can hold".into(),
                ));
            }
            // "KEY=VALUE" and its NUL terminator.
            let entry = k.len() + 1 + e.value.len() + 1;
            if entry > MAX_ENV_ENTRY {
                return Err(self.bad_entry(
                    k,
                    format!(
                        "KEY=VALUE is {entry} bytes, over the {MAX_ENV_ENTRY} bytes execve allows one environment string (MAX_ARG_STRLEN)"
                    ),
                ));
            }
            // The string and its pointer in envp.
            total += entry + std::mem::size_of::<usize>();
            if total > MAX_ENV_TOTAL {
                return Err(self.bad_entry(
                    k,
                    format!(
                        "the agent's environment reaches {total} bytes at this entry (key {} of {}), over the {MAX_ENV_TOTAL} bytes it may take so that execve can start the agent: remove keys",
                        n + 1,
                        entries.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// An error about `key`'s entry without quoting its (possibly huge or
    /// binary) value.
    fn bad_entry(&self, key: &str, message: String) -> Error {
        let (file, line) = match self.env.get(key).and_then(|e| e.origin.clone()) {
            Some(o) => (o.file, o.line),
            None => (PathBuf::from("<built-in defaults>"), 0),
        };
        Error::Config {
            file,
            line,
            key: key.to_string(),
            message,
        }
    }

    fn integer(&self, key: &str, min: u64, max: u64) -> Result<u64> {
        match self.get(key).trim().parse::<u64>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(self.bad(key, format!("expected a whole number from {min} to {max}"))),
        }
    }

    /// Where `key` was set, for a warning.
    fn at(&self, key: &str) -> String {
        match self.env.get(key).and_then(|e| e.origin.as_ref()) {
            Some(o) => format!("{}:{}", o.file.display(), o.line),
            None => "<built-in defaults>".into(),
        }
    }

    fn warn(&self, key: &str, message: String) {
        let at = self.at(key);
        self.warnings
            .borrow_mut()
            .push(format!("{at}: {key}: {message}"));
    }

    /// ecs-init's (and the agent's) levels, plus `critical` and `trace`.
    /// `none` turns the warden's log off, as it turns ecs-init's off. An
    /// unknown level is ecs-init's default, `info`, with a warning.
    fn log_level(&self, key: &str) -> log::LevelFilter {
        match self.get(key).trim().to_ascii_lowercase().as_str() {
            "trace" => log::LevelFilter::Trace,
            "debug" => log::LevelFilter::Debug,
            "info" => log::LevelFilter::Info,
            "warn" => log::LevelFilter::Warn,
            "error" | "crit" | "critical" => log::LevelFilter::Error,
            "none" => log::LevelFilter::Off,
            _ => {
                self.warn(
                    key,
                    format!(
                        "unknown level {:?} (debug, info, warn, error, crit, none); using info, as ecs-init does",
                        self.get(key)
                    ),
                );
                log::LevelFilter::Info
            }
        }
    }

    /// A boolean ecs-init reads with Go's `strconv.ParseBool`, taking
    /// anything else (with an error in its log) as `false`.
    fn lenient_bool(&self, key: &str) -> bool {
        let v = self.get(key);
        if v.trim().is_empty() {
            return false;
        }
        parse_bool(v).unwrap_or_else(|| {
            self.warn(
                key,
                format!(
                    "invalid value {v:?}: expected true or false; using false, as ecs-init does"
                ),
            );
            false
        })
    }

    fn endpoint(&self, key: &str) -> Result<Endpoint> {
        parse_loopback_url(self.get(key)).map_err(|m| self.bad(key, m))
    }

    /// A proxy as Go (ecs-init and the agent) reads it: `KEY`, else its
    /// lower-case twin; `host:port` without a scheme means
    /// `http://host:port`. The agent gets the value as written; a value
    /// that is no proxy URL even so is a warning, and the warden's own
    /// downloads go direct.
    fn proxy(&self, key: &str, lower: &str) -> Option<String> {
        let (key, v) = match self.optional(key) {
            Some(v) => (key, v),
            None => (lower, self.optional(lower)?),
        };
        let has_scheme = ["http://", "https://", "socks5://"]
            .iter()
            .any(|s| v.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s)));
        let url = if has_scheme { v } else { format!("http://{v}") };
        let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
        if rest.trim_end_matches('/').is_empty() || rest.contains(char::is_whitespace) {
            self.warn(
                key,
                format!(
                    "{url:?} is not a proxy URL such as http://proxy.example:3128; the warden's downloads ignore it"
                ),
            );
            return None;
        }
        Some(url)
    }
}

/// Go's `strconv.ParseBool`, which the agent uses for the same keys.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Durations as Go writes them: `500ms`, `30s`, `2m`, `1h30m`, `1.5s`; a bare
/// `0` is zero.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * scale;
    }
    if !total.is_finite() || total > 365.0 * 86400.0 {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

/// `http://HOST:PORT[/]` where HOST is a loopback address or `localhost`.
pub fn parse_loopback_url(s: &str) -> std::result::Result<Endpoint, String> {
    const EXPECT: &str =
        "expected http://HOST:PORT with a loopback HOST, such as http://127.0.0.1:51678";
    let rest = s
        .trim()
        .strip_prefix("http://")
        .ok_or_else(|| EXPECT.to_string())?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, p) = r.split_once("]:").ok_or_else(|| EXPECT.to_string())?;
        (h, p)
    } else {
        rest.rsplit_once(':').ok_or_else(|| EXPECT.to_string())?
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| EXPECT.to_string())?;
    let loopback = host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if !loopback {
        return Err(format!("{host} is not a loopback address; {EXPECT}"));
    }
    Ok(Endpoint {
        host: if host == "localhost" {
            "127.0.0.1".into()
        } else {
            host.to_string()
        },
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration("5d"), None);
        assert_eq!(parse_duration(""), None);
    }

    fn parse(text: &str) -> (Vec<(String, String)>, Vec<String>) {
        let mut warnings = Vec::new();
        let got = parse_file(Path::new("/etc/ecs/ecs.config"), text, &mut warnings).unwrap();
        let kv = got.into_iter().map(|(k, e)| (k, e.value)).collect();
        (kv, warnings)
    }

    #[test]
    fn lines_quotes_comments() {
        let text = "# c\n\nA=1\nexport B=\"two words\"\nC='x'\n D = y \nE=\n";
        let mut w = Vec::new();
        let got = parse_file(Path::new("f"), text, &mut w).unwrap();
        let kv: Vec<_> = got
            .iter()
            .map(|(k, e)| (k.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            kv,
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "x"),
                ("D", "y"),
                ("E", "")
            ]
        );
        assert_eq!(got[3].1.origin.as_ref().unwrap().line, 6);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn what_ecs_init_skips_or_keeps_is_a_warning() {
        let (kv, w) = parse("A=1\nnot a pair\n1A=1\nC=\"open\nD=x # not a comment\nE=a=b\n");
        let kv: Vec<_> = kv.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            kv,
            [
                ("A", "1"),
                ("C", "\"open"),
                ("D", "x # not a comment"),
                ("E", "a=b")
            ]
        );
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("/etc/ecs/ecs.config:2: expected KEY=VALUE"),
            "{w:?}"
        );
        assert!(w[0].contains("skipped"), "{w:?}");
        assert!(
            w[1].starts_with("/etc/ecs/ecs.config:3: invalid key \"1A\""),
            "{w:?}"
        );
        assert!(
            w[2].starts_with("/etc/ecs/ecs.config:4: C: unterminated \" quote"),
            "{w:?}"
        );
    }

    #[test]
    fn the_wardens_own_keys_stay_strict() {
        let mut w = Vec::new();
        let f = Path::new("/etc/ecs/ecs.config");
        let e = parse_file(f, "A=1\nECS_WARDEN_STOP_TIMEOUT 30s\n", &mut w).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/ecs/ecs.config:2: expected KEY=VALUE"),
            "{e}"
        );
        let e = parse_file(f, "ECS_WARDEN_X-Y=1\n", &mut w).unwrap_err();
        assert!(e.to_string().contains("invalid key"), "{e}");
        let e = parse_file(f, "ECS_WARDEN_UPDATE_SOURCE=\"open\n", &mut w).unwrap_err();
        assert!(
            e.to_string()
                .contains("ECS_WARDEN_UPDATE_SOURCE: unterminated"),
            "{e}"
        );
        assert!(w.is_empty(), "{w:?}");
    }

    fn config(text: &str) -> Config {
        let mut env: BTreeMap<String, Entry> = DEFAULTS
            .iter()
            .map(|(k, v)| {
                let e = Entry {
                    value: v.to_string(),
                    origin: None,
                };
                (k.to_string(), e)
            })
            .collect();
        let mut w = Vec::new();
        for (k, e) in parse_file(Path::new("/etc/ecs/ecs.config"), text, &mut w).unwrap() {
            env.insert(k, e);
        }
        Config::from_env(env).unwrap()
    }

    #[test]
    fn ecs_init_keys_take_what_ecs_init_takes() {
        let c = config("HTTP_PROXY=10.0.0.131:3128\nhttps_proxy=HTTPS://p:1\nno_proxy=a, .b\n");
        assert_eq!(c.proxy.http.as_deref(), Some("http://10.0.0.131:3128"));
        assert_eq!(c.proxy.https.as_deref(), Some("HTTPS://p:1"));
        assert_eq!(c.proxy.no_proxy, ["a", ".b"]);
        assert_eq!(
            c.env["HTTP_PROXY"].value, "10.0.0.131:3128",
            "the agent gets the value as written"
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let c = config("HTTPS_PROXY=http://\n");
        assert_eq!(c.proxy.https, None);
        assert!(
            c.warnings[0].starts_with("/etc/ecs/ecs.config:1: HTTPS_PROXY: "),
            "{:?}",
            c.warnings
        );

        for (level, want) in [
            ("none", log::LevelFilter::Off),
            ("crit", log::LevelFilter::Error),
            ("critical", log::LevelFilter::Error),
            ("WARN", log::LevelFilter::Warn),
        ] {
            let c = config(&format!("ECS_LOGLEVEL={level}\n"));
            assert_eq!(c.log_level, want, "{level}");
            assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        }
        let c = config("ECS_LOGLEVEL=verbose\n");
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert!(
            c.warnings[0].contains("ECS_LOGLEVEL: unknown level \"verbose\""),
            "{:?}",
            c.warnings
        );

        let c = config(
            "ECS_ALLOW_OFFHOST_INTROSPECTION_ACCESS=true\nECS_SKIP_LOCALHOST_TRAFFIC_FILTER=yes\n",
        );
        assert_eq!(
            c.host_net,
            HostNetConfig {
                allow_offhost_introspection: true,
                skip_localhost_filter: false
            }
        );
        assert!(
            c.warnings[0].starts_with("/etc/ecs/ecs.config:2: ECS_SKIP_LOCALHOST_TRAFFIC_FILTER: "),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn loopback_urls() {
        assert_eq!(
            parse_loopback_url("http://127.0.0.1:51678").unwrap().port,
            51678
        );
        assert_eq!(
            parse_loopback_url("http://localhost:1/").unwrap().host,
            "127.0.0.1"
        );
        assert!(parse_loopback_url("http://[::1]:80").is_ok());
        assert!(parse_loopback_url("http://10.0.0.1:80").is_err());
        assert!(parse_loopback_url("https://127.0.0.1:80").is_err());
        assert!(parse_loopback_url("http://127.0.0.1").is_err());
    }
}
