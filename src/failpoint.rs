//! Test-only fail points. With the `failpoints` feature, `hit(name)` makes
//! the warden SIGKILL itself when `ECS_WARDEN_FAILPOINT` (read once by
//! `main`) names that point: the crash-matrix tests use it to die at an
//! exact step. Without the feature, `hit` compiles to nothing.

#[cfg(feature = "failpoints")]
static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Arm a fail point (called once, from `main`).
pub fn arm(_name: Option<String>) {
    #[cfg(feature = "failpoints")]
    let _ = ARMED.set(_name.filter(|n| !n.is_empty()));
}

#[inline]
pub fn hit(_name: &str) {
    #[cfg(feature = "failpoints")]
    if ARMED.get().and_then(|n| n.as_deref()) == Some(_name) {
        log::error!("fail point {_name}: killing the warden");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        loop {
            std::thread::park();
        }
    }
}
