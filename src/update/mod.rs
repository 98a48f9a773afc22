//! The update machine: manifest, download, journal, snapshot, gate, and the
//! state machine that drives them (`machine`).

pub mod download;
pub mod fetch;
pub mod gate;
pub mod journal;
pub mod machine;
pub mod manifest;
pub mod quarantine;
pub mod request;
pub mod snapshot;
