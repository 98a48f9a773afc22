//! The slow tests: the ones that compile release or cross builds (the RPMs
//! for x86_64 and aarch64 through `scripts/build-rpm.sh`, the benchmark's
//! quick run). Minutes each, so they live in their own test target: the fast
//! suite (`cargo test --features failpoints --test it`) runs without them,
//! `cargo test --features failpoints --test slow` runs only them, and
//! `bash scripts/test.sh` (CI) runs both. See `tests/it/main.rs` for the
//! layout and the harness.

#[path = "../it/harness/mod.rs"]
mod harness;

mod bench_quick;
mod packaging;
