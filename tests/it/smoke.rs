//! The harness itself: a host starts, answers status, and stops cleanly.

use std::time::Duration;

use crate::harness::*;

#[test]
fn start_status_stop() {
    let mut host = Host::new();
    host.start();
    host.wait_agent("1.0.0");
    let st = host.status().expect("status answers");
    assert_eq!(st["supervisor"]["agentState"], "RUNNING");
    assert_eq!(st["build"]["version"], "1.0.0");
    let out = host.cli(&["stop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(host.wait_exit(Duration::from_secs(10)), 0);
    let out = host.cli(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "status without a warden exits 3"
    );
}
