//! One warden per root: an exclusive `flock(2)` on `run/ecs-warden/lock`,
//! held for the life of the process (and across `reexec`, since the
//! descriptor survives `execve`). The holder's PID is written into the file
//! so a refused second start can name it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

pub struct Lock {
    _file: Flock<File>,
}

impl Lock {
    /// Take the lock or fail at once with `AlreadyRunning`.
    pub fn acquire(path: &Path) -> Result<Lock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(Error::io("open lock file", path))?;
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, _)) => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Err(Error::AlreadyRunning {
                    lock: path.to_path_buf(),
                    pid: s.trim().parse().ok(),
                });
            }
        };
        locked
            .set_len(0)
            .and_then(|_| locked.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(locked, "{}", std::process::id()))
            .map_err(Error::io("write lock file", path))?;
        Ok(Lock { _file: locked })
    }

    /// The descriptor holding the lock (kept across `reexec`).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self._file.as_raw_fd()
    }

    /// Take over the lock held by an inherited descriptor (after `reexec`).
    /// Locking the same open file description again succeeds at once.
    pub fn adopt(fd: std::os::fd::RawFd, path: &Path) -> Result<Lock> {
        let file = crate::sys::adopt_fd(fd).ok_or_else(|| {
            Error::Other(format!(
                "re-exec hand-off names lock descriptor {fd}, which is not open"
            ))
        })?;
        let _ = crate::sys::close_on_exec(fd);
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Lock { _file: l }),
            Err(_) => Err(Error::AlreadyRunning {
                lock: path.to_path_buf(),
                pid: None,
            }),
        }
    }

    /// Whether some process holds the lock (for `post-stop`, `status`).
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        Flock::lock(file, FlockArg::LockSharedNonblock).is_err()
    }
}
