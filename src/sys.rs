//! The crate's only `unsafe`: adopting file descriptors inherited across
//! `execve(2)` (the `reexec` hand-off), plus the close-on-exec switches
//! that let them be inherited.

use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// Wrap a descriptor this process inherited from its previous image.
///
/// The caller passes a descriptor number it read from the hand-off record
/// written by the previous image of this same process, and wraps each
/// number once.
#[allow(unsafe_code)]
pub fn adopt_fd(fd: RawFd) -> Option<File> {
    // Refuse numbers that are not open here (a stale record).
    fcntl(fd, FcntlArg::F_GETFD).ok()?;
    // SAFETY: `fd` is open (checked above) and was handed over by the
    // previous image of this process for exactly this use; nothing else in
    // this image has wrapped it, so the `File` is its only owner.
    Some(unsafe { File::from_raw_fd(fd) })
}

/// Let `fd` survive `execve` (clear `FD_CLOEXEC`).
pub fn keep_on_exec(fd: RawFd) -> nix::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map(|_| ())
}

/// Close `fd` on `execve` again (set `FD_CLOEXEC`).
pub fn close_on_exec(fd: RawFd) -> nix::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(|_| ())
}
