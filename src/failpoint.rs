//! Test-only fail points. With the `failpoints` feature,
//! `ECS_WARDEN_FAILPOINT` (read once by `main`) names a point and what
//! happens there; without the feature, `hit` compiles to nothing.
//!
//! - `NAME`: the warden SIGKILLs itself at the point (the crash matrix);
//! - `pause:NAME`: the first time the point is reached, the thread writes
//!   NAME into the pause file (`ECS_WARDEN_FAILPOINT_PAUSE`) and waits
//!   until the file is removed, so a test can change the disk at an exact
//!   step (the disk-fault matrix);
//! - `panic:NAME`: the thread at the point panics (a worker that panics).
//!
//! Points are the literals passed to `hit`, and `record-STEP` just before
//! the journal records STEP (`record-updated`, `record-failed` for the two
//! terminal steps).

#[cfg(feature = "failpoints")]
static ARMED: std::sync::OnceLock<Option<(String, Option<std::path::PathBuf>)>> =
    std::sync::OnceLock::new();

/// Arm a fail point (called once, from `main`).
pub fn arm(_spec: Option<String>, _pause_file: Option<std::path::PathBuf>) {
    #[cfg(feature = "failpoints")]
    let _ = ARMED.set(_spec.filter(|n| !n.is_empty()).map(|s| (s, _pause_file)));
}

#[inline]
pub fn hit(_name: &str) {
    #[cfg(feature = "failpoints")]
    {
        let Some(Some((spec, pause))) = ARMED.get() else {
            return;
        };
        let (mode, point) = spec.split_once(':').unwrap_or(("kill", spec));
        if point != _name {
            return;
        }
        match mode {
            "pause" => {
                static PAUSED: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Some(file) = pause else {
                    log::error!("fail point {_name}: pause without ECS_WARDEN_FAILPOINT_PAUSE");
                    return;
                };
                log::warn!(
                    "fail point {_name}: pausing until {} is removed",
                    file.display()
                );
                if std::fs::write(file, _name).is_ok() {
                    while file.exists() {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
                log::warn!("fail point {_name}: going on");
            }
            "panic" => panic!("fail point {_name}"),
            _ => {
                log::error!("fail point {_name}: killing the warden");
                let _ = nix::sys::signal::kill(
                    nix::unistd::getpid(),
                    nix::sys::signal::Signal::SIGKILL,
                );
                loop {
                    std::thread::park();
                }
            }
        }
    }
}

/// The point just before the journal records a step, named as the journal
/// names it (`updated`, `failed` for the two terminal steps).
pub fn before_record(_step: &str) {
    #[cfg(feature = "failpoints")]
    hit(&format!("record-{_step}"));
}
