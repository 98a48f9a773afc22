//! Updates: the state machine (`machine`) and what it drives: manifest,
//! download, journal, snapshot, gate, quarantine, the workers that run the
//! long steps, and housekeeping.

pub mod download;
pub mod fetch;
pub mod gate;
pub mod housekeeping;
pub mod journal;
pub mod machine;
pub mod manifest;
pub mod quarantine;
pub mod request;
pub mod snapshot;
pub mod status;
pub mod watch;
pub mod worker;
