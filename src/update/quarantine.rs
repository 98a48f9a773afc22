//! Versions that failed an update are quarantined: persisted in
//! `var/lib/ecs-warden/quarantine.json` and refused until the operator
//! forces them (a newer version is not affected).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::Result;
use crate::paths::Paths;
use crate::store::now_rfc3339;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub at: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Doc {
    versions: BTreeMap<String, Entry>,
}

fn load(paths: &Paths) -> Doc {
    std::fs::read(paths.quarantine())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn get(paths: &Paths, version: &str) -> Option<Entry> {
    load(paths).versions.get(version).cloned()
}

pub fn all(paths: &Paths) -> BTreeMap<String, Entry> {
    load(paths).versions
}

pub fn add(paths: &Paths, version: &str, reason: &str) -> Result<()> {
    let mut doc = load(paths);
    doc.versions.insert(
        version.to_string(),
        Entry {
            at: now_rfc3339(),
            reason: reason.to_string(),
        },
    );
    durable::write_json("quarantine list", &paths.quarantine(), &doc)
}

pub fn remove(paths: &Paths, version: &str) -> Result<()> {
    let mut doc = load(paths);
    if doc.versions.remove(version).is_some() {
        durable::write_json("quarantine list", &paths.quarantine(), &doc)?;
    }
    Ok(())
}
