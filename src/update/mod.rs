//! The update machine (see `machine`): manifest, download, journal, gate.

pub mod manifest;
