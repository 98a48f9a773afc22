//! Putting the status document together on a connection's thread: the
//! main loop's snapshot plus what the agent says now. What the agent
//! revealed (its instance ARN, cluster, task counts) goes back to the main
//! loop's cache when it changed.

use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::config::Config;
use crate::document::{self, Observation, Snapshot, StatusDoc};
use crate::error::{ApiError, EcsErrorName};
use crate::event::{self, Action, Answer, Event};

/// The main loop's snapshot.
pub fn snapshot(tx: &Sender<Event>) -> Result<Snapshot, ApiError> {
    match event::ask(tx, Action::Status)? {
        Answer::Snapshot(s) => Ok(*s),
        other => Err(ApiError::ecs(
            EcsErrorName::ServerException,
            format!("the main loop answered a status request with {other:?}"),
        )),
    }
}

/// The snapshot and what the agent reports now (each call within
/// `budget`); news goes back to the main loop.
pub fn observe(
    tx: &Sender<Event>,
    cfg: &Config,
    budget: Duration,
) -> Result<(Snapshot, Observation), ApiError> {
    let snap = snapshot(tx)?;
    let obs = document::observe(cfg, budget);
    let seen = event::Observation {
        container_instance_arn: obs
            .metadata
            .as_ref()
            .and_then(|m| m.arn().map(String::from)),
        cluster: obs
            .metadata
            .as_ref()
            .and_then(|m| m.cluster.clone())
            .filter(|c| !c.is_empty()),
        docker_version: None,
        task_counts: obs.task_counts(),
    };
    let known = &snap.observed;
    let news = (seen.container_instance_arn.is_some()
        && seen.container_instance_arn != known.container_instance_arn)
        || (seen.cluster.is_some() && seen.cluster != known.cluster)
        || seen.task_counts.is_some_and(|c| c != snap.last_task_counts);
    if news {
        event::tell(tx, Action::Observe(seen));
    }
    Ok((snap, obs))
}

/// The status document.
pub fn status(tx: &Sender<Event>, cfg: &Config) -> Result<StatusDoc, ApiError> {
    let (snap, obs) = observe(tx, cfg, document::INTROSPECTION_BUDGET)?;
    Ok(document::status(snap, &obs))
}
