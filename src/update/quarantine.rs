//! Versions that failed an update are quarantined: persisted in
//! `var/lib/ecs-warden/quarantine.json` and refused until the operator
//! forces them (a newer version is not affected).
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
use crate::store::{now_rfc3339, parse_version};

/// Most versions kept; the oldest entries (by `at`) go first.
pub const MAX_ENTRIES: usize = 32;

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

fn save(paths: &Paths, doc: &Doc) -> Result<()> {
    durable::write_json("quarantine list", &paths.quarantine(), doc)
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
    bound(&mut doc, version);
    save(paths, &doc)
}

/// Drop the oldest entries beyond `MAX_ENTRIES`, never `keep` (the one just
/// added). RFC 3339 times in UTC sort as text.
fn bound(doc: &mut Doc, keep: &str) {
    while doc.versions.len() > MAX_ENTRIES {
        let oldest = doc
            .versions
            .iter()
            .filter(|(v, _)| v.as_str() != keep)
            .min_by(|a, b| a.1.at.cmp(&b.1.at).then_with(|| a.0.cmp(b.0)))
            .map(|(v, _)| v.clone());
        match oldest {
            Some(v) => {
                doc.versions.remove(&v);
            }
            None => break,
        }
    }
}

pub fn remove(paths: &Paths, version: &str) -> Result<()> {
    let mut doc = load(paths);
    if doc.versions.remove(version).is_some() {
        save(paths, &doc)?;
    }
    Ok(())
}

/// Drop every entry for a version older than `current_version` (by SemVer
/// precedence, so build metadata counts for nothing), and entries whose
/// version does not parse; keep the bound. Writes only when something
/// changed; returns the versions dropped.
pub fn prune(paths: &Paths, current_version: &str) -> Result<Vec<String>> {
    let Ok(current) = parse_version(current_version) else {
        return Ok(Vec::new());
    };
    let mut doc = load(paths);
    let dropped: Vec<String> = doc
        .versions
        .keys()
        .filter(|v| match parse_version(v) {
            Ok(v) => v.cmp_precedence(&current) == Ordering::Less,
            Err(_) => true,
        })
        .cloned()
        .collect();
    for v in &dropped {
        doc.versions.remove(v);
    }
    let before = doc.versions.len();
    bound(&mut doc, "");
    if !dropped.is_empty() || doc.versions.len() != before {
        save(paths, &doc)?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::create_dir_all(&paths.warden_dir).unwrap();
        (dir, paths)
    }

    fn versions(paths: &Paths) -> Vec<String> {
        all(paths).into_keys().collect()
    }

    #[test]
    fn prune_drops_versions_older_than_the_current_build() {
        let (_d, p) = paths();
        for v in ["1.0.0", "1.4.9", "1.5.0-rc.1", "1.5.0", "1.5.1", "2.0.0"] {
            add(&p, v, "failed its health gate").unwrap();
        }
        // A hand-edited list may hold anything.
        let mut doc = load(&p);
        doc.versions.insert(
            "not-a-version".into(),
            Entry {
                at: now_rfc3339(),
                reason: "x".into(),
            },
        );
        save(&p, &doc).unwrap();

        let mut dropped = prune(&p, "1.5.0+build.7").unwrap();
        dropped.sort();
        assert_eq!(dropped, ["1.0.0", "1.4.9", "1.5.0-rc.1", "not-a-version"]);
        // The current version itself (build metadata aside) and newer stay.
        assert_eq!(versions(&p), ["1.5.0", "1.5.1", "2.0.0"]);
        assert!(get(&p, "1.5.1").is_some());

        // Nothing more to drop: no write either.
        let before = std::fs::metadata(p.quarantine())
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(prune(&p, "1.5.0").unwrap().is_empty());
        let after = std::fs::metadata(p.quarantine())
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after, "an unchanged list is not rewritten");
        // An unusable current version drops nothing.
        assert!(prune(&p, "garbage").unwrap().is_empty());
        assert_eq!(versions(&p).len(), 3);
    }

    #[test]
    fn the_list_is_bounded_and_the_oldest_entry_goes() {
        let (_d, p) = paths();
        for i in 0..MAX_ENTRIES + 5 {
            add(&p, &format!("1.{i}.0"), "rolled back").unwrap();
            // Distinct, ordered `at` times (millisecond resolution).
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let vs = versions(&p);
        assert_eq!(vs.len(), MAX_ENTRIES);
        for i in 0..5 {
            assert!(get(&p, &format!("1.{i}.0")).is_none(), "1.{i}.0 kept");
        }
        for i in 5..MAX_ENTRIES + 5 {
            assert!(get(&p, &format!("1.{i}.0")).is_some(), "1.{i}.0 dropped");
        }
        // Re-adding a version refreshes it rather than growing the list.
        add(&p, "1.5.0", "again").unwrap();
        assert_eq!(versions(&p).len(), MAX_ENTRIES);
        assert_eq!(get(&p, "1.5.0").unwrap().reason, "again");
    }
}
