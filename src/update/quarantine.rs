//! Versions that failed an update are quarantined: refused until the
//! operator forces them (a newer version is not affected). The list is a
//! value the update machine owns; it is read from
//! `var/lib/ecs-warden/quarantine.json` once at start and written back
//! (durably) whenever the machine changes it.
//!
//! The list stays small: it holds at most `MAX_ENTRIES` versions (adding one
//! more drops the oldest entry), and `prune` drops the versions older than
//! the build that runs, which no update would pick again anyway
//! (housekeeping calls it).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::Result;
use crate::paths::Paths;
use crate::store::parse_version;

/// Most versions kept; the oldest entries (by `at`) go first.
pub const MAX_ENTRIES: usize = 32;

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

    /// Quarantine `version` (or refresh its entry); beyond `MAX_ENTRIES`
    /// the oldest other entry goes.
    pub fn add(&mut self, version: &str, at: String, reason: &str) {
        self.versions.insert(
            version.to_string(),
            Entry {
                at,
                reason: reason.to_string(),
            },
        );
        self.bound(version);
    }

    /// Whether `version` was in the list.
    pub fn remove(&mut self, version: &str) -> bool {
        self.versions.remove(version).is_some()
    }

    /// Drop every entry for a version older than `current_version` (by
    /// SemVer precedence, so build metadata counts for nothing), and the
    /// entries whose version does not parse (no target could match them);
    /// keep the bound. Returns the versions dropped: when there are any,
    /// the caller saves the list.
    pub fn prune(&mut self, current_version: &str) -> Vec<String> {
        let Ok(current) = parse_version(current_version) else {
            return Vec::new();
        };
        let mut dropped: Vec<String> = self
            .versions
            .keys()
            .filter(|v| match parse_version(v) {
                Ok(v) => v.cmp_precedence(&current) == Ordering::Less,
                Err(_) => true,
            })
            .cloned()
            .collect();
        for v in &dropped {
            self.versions.remove(v);
        }
        dropped.extend(self.bound(""));
        dropped
    }

    /// Drop the oldest entries beyond `MAX_ENTRIES`, never `keep` (the one
    /// just added); RFC 3339 times in UTC sort as text. Returns them.
    fn bound(&mut self, keep: &str) -> Vec<String> {
        let mut dropped = Vec::new();
        while self.versions.len() > MAX_ENTRIES {
            let oldest = self
                .versions
                .iter()
                .filter(|(v, _)| v.as_str() != keep)
                .min_by(|a, b| a.1.at.cmp(&b.1.at).then_with(|| a.0.cmp(b.0)))
                .map(|(v, _)| v.clone());
            match oldest {
                Some(v) => {
                    self.versions.remove(&v);
                    dropped.push(v);
                }
                None => break,
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: usize) -> String {
        format!("2026-01-01T00:00:{:02}.{:03}Z", i / 1000, i % 1000)
    }

    fn names(q: &Quarantine) -> Vec<&str> {
        q.versions().keys().map(String::as_str).collect()
    }

    #[test]
    fn prune_drops_versions_older_than_the_current_build() {
        let mut q = Quarantine::default();
        for (i, v) in ["1.0.0", "1.4.9", "1.5.0-rc.1", "1.5.0", "1.5.1", "2.0.0"]
            .iter()
            .enumerate()
        {
            q.add(v, at(i), "failed its health gate");
        }
        // A hand-edited list may hold anything.
        q.add("not-a-version", at(9), "x");

        let mut dropped = q.prune("1.5.0+build.7");
        dropped.sort();
        assert_eq!(dropped, ["1.0.0", "1.4.9", "1.5.0-rc.1", "not-a-version"]);
        // The current version itself (build metadata aside) and newer stay.
        assert_eq!(names(&q), ["1.5.0", "1.5.1", "2.0.0"]);
        assert!(q.get("1.5.1").is_some());
        // Nothing more to drop; an unusable current version drops nothing.
        assert!(q.prune("1.5.0").is_empty());
        assert!(q.prune("garbage").is_empty());
        assert_eq!(names(&q).len(), 3);
    }

    #[test]
    fn the_list_is_bounded_and_the_oldest_entry_goes() {
        let mut q = Quarantine::default();
        for i in 0..MAX_ENTRIES + 5 {
            q.add(&format!("1.{i}.0"), at(i), "rolled back");
        }
        assert_eq!(q.versions().len(), MAX_ENTRIES);
        for i in 0..5 {
            assert!(q.get(&format!("1.{i}.0")).is_none(), "1.{i}.0 kept");
        }
        for i in 5..MAX_ENTRIES + 5 {
            assert!(q.get(&format!("1.{i}.0")).is_some(), "1.{i}.0 dropped");
        }
        // Re-adding a version refreshes it rather than growing the list;
        // the one just added is never the one dropped, even when its time
        // is the oldest (a clock that went back).
        q.add("1.5.0", at(1000), "again");
        assert_eq!(q.versions().len(), MAX_ENTRIES);
        assert_eq!(q.get("1.5.0").unwrap().reason, "again");
        q.add("9.0.0", at(0), "clock went back");
        assert!(q.get("9.0.0").is_some());
        assert_eq!(q.versions().len(), MAX_ENTRIES);
    }

    #[test]
    fn the_list_survives_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::create_dir_all(&paths.warden_dir).unwrap();
        let mut q = Quarantine::default();
        q.add("1.2.0", at(1), "rolled back");
        q.save(&paths).unwrap();
        assert_eq!(Quarantine::load(&paths), q);
    }
}
