//! Versions that failed an update are quarantined: refused until the
//! operator forces them (a newer version is not affected). The list is a
//! value the update machine owns; it is read from
//! `var/lib/ecs-warden/quarantine.json` once at start and written back
//! (durably) whenever the machine changes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::Result;
use crate::paths::Paths;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub at: String,
    pub reason: String,
}

/// The quarantine list: version → when and why.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quarantine {
    versions: BTreeMap<String, Entry>,
}

impl Quarantine {
    /// The list on disk; a missing or unreadable file is an empty list
    /// (the list only ever refuses, so losing it is safe).
    pub fn load(paths: &Paths) -> Quarantine {
        std::fs::read(paths.quarantine())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, paths: &Paths) -> Result<()> {
        durable::write_json("quarantine list", &paths.quarantine(), self)
    }

    pub fn get(&self, version: &str) -> Option<&Entry> {
        self.versions.get(version)
    }

    pub fn versions(&self) -> &BTreeMap<String, Entry> {
        &self.versions
    }

    pub fn add(&mut self, version: &str, at: String, reason: &str) {
        self.versions.insert(
            version.to_string(),
            Entry {
                at,
                reason: reason.to_string(),
            },
        );
    }

    /// Whether `version` was in the list.
    pub fn remove(&mut self, version: &str) -> bool {
        self.versions.remove(version).is_some()
    }
}
