//! The integration tests: one test binary (`cargo test --test it`), one
//! module per feature, one harness. The layout is ripgrep's.
//!
//! - `harness/` is the only place test infrastructure lives: `Host` (a whole
//!   host in a temporary root running the real binaries), the misbehaving
//!   loopback HTTP server (`harness::server`), the one raw HTTP client
//!   (`harness::client`), `wait_for`, and the switch that decides whether a
//!   missing tool (Docker, the AWS CLI, botocore, ...) fails the test (CI)
//!   or skips it loudly (`harness::tools`); also the API tests' helpers
//!   (`harness::api`), the tests' SigV4 signer (`harness::sign`) and the
//!   real agent's sandboxes (`harness::real_agent`).
//! - every other file is one feature's tests, `use crate::harness::*;` at the
//!   top.
//!
//! To add tests: create `tests/it/<feature>.rs` starting with a `//!`
//! comment (what it proves), add `mod <feature>;` below, and use the harness;
//! do not copy a helper into the module: if two modules need it, it goes
//! into `harness/`. A test that needs a tool calls the matching
//! `harness::tools` check first (`if !docker_available(..) { return; }`).
//! Tests that build release or cross binaries (minutes each) go into the
//! slow target, `tests/slow/main.rs`, instead.
//!
//! Run the fast suite alone with `cargo test --features failpoints --test
//! it` (plus `--lib` for the unit tests); `bash scripts/test.sh` runs
//! everything, the slow target included.

mod harness;

mod agent_driven;
mod api_agent;
mod api_cli;
mod api_protocol;
mod architecture;
mod argv;
mod cli;
mod config;
mod config_compat;
mod containers;
// Fail points (the warden SIGKILLs itself, a worker panics, ...) exist only
// in a `failpoints` build.
#[cfg(feature = "failpoints")]
mod crash_matrix;
#[cfg(feature = "failpoints")]
mod disk_faults;
mod dropin;
mod engine;
mod faults;
mod flood;
mod hostnet;
mod limits;
mod real_agent;
mod real_agent_fixtures;
mod reexec;
mod sample_agent;
mod sigv4_botocore;
mod smoke;
mod supervisor;
mod update;
mod urls;
