//! systemd readiness and watchdog (`sd_notify(3)` protocol): one datagram
//! per message to `$NOTIFY_SOCKET`. Without that variable every call is a
//! no-op, so the warden runs the same outside systemd.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<String>,
    /// Half of `$WATCHDOG_USEC`, when the unit sets `WatchdogSec`.
    pub watchdog_interval: Option<Duration>,
}

impl Notifier {
    /// Built from the environment at the edge (`main`).
    pub fn new(socket: Option<String>, watchdog_usec: Option<String>) -> Notifier {
        Notifier {
            socket: socket.filter(|s| !s.is_empty()),
            watchdog_interval: watchdog_usec
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|us| *us > 0)
                .map(|us| Duration::from_micros(us / 2)),
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, msg: &str) {
        let Some(path) = &self.socket else { return };
        let result = (|| -> std::io::Result<()> {
            let sock = UnixDatagram::unbound()?;
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
                None => SocketAddr::from_pathname(path)?,
            };
            sock.send_to_addr(msg.as_bytes(), &addr)?;
            Ok(())
        })();
        if let Err(e) = result {
            log::warn!("notify systemd at {path}: {e}");
        }
    }
}
