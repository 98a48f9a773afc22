//! Turning an update request into a target, before the main loop decides.
//!
//! Runs on the control thread that received the request (fetching the
//! manifest must never block the main loop). The checks that need state
//! (in flight, newer than what runs, quarantine) are the main loop's.

use serde::Deserialize;

use super::journal::{Origin, Target};
use super::manifest;
use crate::config::Config;
use crate::error::ApiError;
use crate::error::EcsErrorName::{InvalidParameterException, UpdatesDisabledException};
use crate::source::Source;

/// The body of `POST /v1/update` and `POST /v1/stage`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Params {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub force: bool,
}

/// A resolved request, ready for the main loop.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub target: Target,
    pub source: String,
    pub origin: Origin,
    /// Perform after staging (`update`), or stop at STAGED (`stage`).
    pub perform: bool,
    pub force: bool,
}

impl Request {
    /// The agent's stage call: `signature` is the build's SHA-256; its
    /// version may be unknown until it is downloaded.
    pub fn agent_stage(location: Source, signature: String, version: Option<String>) -> Request {
        Request {
            source: "the agent's stage call".into(),
            target: Target {
                version: version.unwrap_or_default(),
                git_hash: None,
                url: location,
                sha256: signature,
                size: 0,
            },
            origin: Origin::Agent,
            perform: false,
            force: false,
        }
    }
}

pub fn updates_enabled(cfg: &Config) -> Result<(), ApiError> {
    if cfg.updates_enabled {
        Ok(())
    } else {
        Err(ApiError::ecs(
            UpdatesDisabledException,
            "updates are disabled on this host (ECS_UPDATES_ENABLED=false)",
        ))
    }
}

/// Resolve `params` against the manifest.
pub fn resolve(
    cfg: &Config,
    params: &Params,
    origin: Origin,
    perform: bool,
) -> Result<Request, ApiError> {
    updates_enabled(cfg)?;
    let invalid = |m: String| ApiError::ecs(InvalidParameterException, m);
    let want = match &params.version {
        Some(v) => {
            Some(crate::store::parse_version(v).map_err(|m| invalid(format!("version: {m}")))?)
        }
        None => cfg.update.pinned_version.clone(),
    };
    let source = match (&params.source, &cfg.update.source) {
        (Some(text), _) => {
            Source::parse(text).map_err(|m| invalid(format!("source {text}: {m}")))?
        }
        (None, Some(configured)) => configured.clone(),
        (None, None) => {
            return Err(invalid(
                "no update source: set ECS_WARDEN_UPDATE_SOURCE or pass --source URL".into(),
            ))
        }
    };
    source
        .check(cfg.update.allow_http)
        .map_err(|m| invalid(format!("source {source}: {m}")))?;
    let (fetched_from, bytes) =
        manifest::fetch(&source, &cfg.proxy, &cfg.update).map_err(invalid)?;
    let builds = manifest::parse(&fetched_from, &bytes).map_err(invalid)?;
    manifest::check_sizes(&fetched_from, &builds, cfg.update.max_build_size).map_err(invalid)?;
    let chosen = manifest::choose(&source, &builds, manifest::host_arch(), want.as_ref())
        .map_err(invalid)?;
    chosen
        .target
        .url
        .check(cfg.update.allow_http)
        .map_err(|m| invalid(format!("build URL {}: {m}", chosen.target.url)))?;
    Ok(Request {
        target: chosen.target,
        source: source.to_string(),
        origin,
        perform,
        force: params.force,
    })
}
