//! The crate's only `unsafe`: adopting file descriptors inherited across
//! `execve(2)` (the `reexec` hand-off), plus the close-on-exec switches
//! that let them be inherited; and `sync_file_range(2)`, which nix does not
//! wrap (the download's write-behind).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

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

/// `sync_file_range(2)` on `file`'s bytes `offset..offset + len` with
/// `flags` (`nix::libc::SYNC_FILE_RANGE_*`).
#[allow(unsafe_code)]
pub fn sync_file_range(file: &File, offset: u64, len: u64, flags: u32) -> io::Result<()> {
    let off = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain integers and a descriptor owned by the borrowed `File`,
    // open for the whole call; the kernel touches no memory of ours.
    let rc = unsafe { nix::libc::sync_file_range(file.as_raw_fd(), off, len, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
