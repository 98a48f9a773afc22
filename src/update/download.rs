//! Download a build into a partial file, hashing as bytes arrive.
//!
//! 1. Refuse a build above `ECS_WARDEN_MAX_BUILD_SIZE` (a size learned
//!    with `HEAD` for the agent's stage call, or one from a journal, is held
//!    to it too); check free space for what is still missing. Size
//!    arithmetic saturates or is checked: an absurd size is refused, never
//!    wrapped.
//! 2. Resume from the partial file's length with `Range` (after a retry or
//!    a warden restart); when the server ignores the range (200), start
//!    over. The bytes already on disk are hashed once, on the first attempt
//!    after a restart; later attempts keep the running hash.
//! 3. Check the status: 4xx fails at once, 5xx and connection failures are
//!    retried with backoff. A `Content-Length` that disagrees with the
//!    manifest fails at once. Never store more than `size` bytes.
//! 4. Stream: the socket is read on this thread while a second thread
//!    writes and hashes the previous chunk, so verification overlaps the
//!    transfer. A read that stalls past the read timeout, or a throughput
//!    below the minimum rate over the stall window, is retried. Written
//!    bytes are sent to disk as they come and dropped from the page cache
//!    a few MiB behind (see [`WriteBehind`]).
//! 5. At `size` bytes compare the SHA-256 and fsync the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::fetch::{self, FetchError};
use super::journal::Target;
use crate::config::{ProxyConfig, UpdateConfig};
use crate::store::hex;

const CHUNK: usize = 1024 * 1024;
/// Chunks in flight between the reader and the writer/hasher.
const IN_FLIGHT: usize = 3;
/// Head room kept free beyond the build's size.
const SPACE_MARGIN: u64 = 16 * 1024 * 1024;
/// Longest time received bytes wait in memory before they are written.
const HAND_OVER: Duration = Duration::from_millis(200);
/// Write-behind: at most this many written bytes are kept in the page
/// cache; older ones are waited for on disk and dropped from it.
const WRITE_BEHIND: u64 = 8 * 1024 * 1024;

/// Why a download failed, and whether to try again.
#[derive(Debug)]
pub enum DlError {
    /// Will not get better by retrying: 4xx, size or digest mismatch.
    Fatal(String),
    /// The disk is full or the directory unwritable.
    Disk(String),
    /// Worth another attempt: 5xx, connection failure, stall, truncation.
    Retry(String),
}

impl DlError {
    pub fn message(&self) -> &str {
        match self {
            DlError::Fatal(m) | DlError::Disk(m) | DlError::Retry(m) => m,
        }
    }
}

/// Progress reports: bytes on disk so far and the total.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// What to fetch and with which settings.
pub struct Job<'a> {
    /// The build; `size` 0 means unknown (an agent's stage call): it is
    /// learned from the source before the download starts.
    pub target: Target,
    pub partial: PathBuf,
    pub proxy: &'a ProxyConfig,
    pub cfg: &'a UpdateConfig,
}

/// The writer/hasher thread: consumes chunks, writes them, hashes them.
struct Sink {
    tx: Option<SyncSender<Vec<u8>>>,
    back: Receiver<Vec<u8>>,
    handle: Option<JoinHandle<io::Result<(Sha256, File)>>>,
    spare: Vec<Vec<u8>>,
}

/// Write-behind for the partial file. Write-back of each chunk starts as
/// soon as it is written (`sync_file_range` WRITE), and once bytes are
/// [`WRITE_BEHIND`] behind the end they are waited for and dropped from the
/// page cache (`POSIX_FADV_DONTNEED`). So the final fsync finds (almost)
/// nothing dirty, the page cache does not grow by the build's size, and its
/// pages are reused chunk after chunk instead of fresh ones being taken
/// (a fresh page is expensive where memory is lent by a hypervisor on
/// first touch: 2.1 s of system time per GiB on the benchmark's VM, more
/// than the socket and the hash together).
struct WriteBehind {
    /// Bytes before this offset are on disk and dropped from the cache.
    dropped: u64,
    /// The end of what has been written.
    end: u64,
    /// Off after the file system said `sync_file_range` is not for it.
    enabled: bool,
}

impl WriteBehind {
    fn new(at: u64) -> WriteBehind {
        WriteBehind {
            dropped: at & !4095,
            end: at,
            enabled: true,
        }
    }

    /// `len` bytes were just written at the end. An error is a write-back
    /// error: reported here, because the wait consumes it (a later fsync
    /// of the same file would no longer see it).
    fn written(&mut self, file: &File, len: u64) -> io::Result<()> {
        use nix::libc::{
            SYNC_FILE_RANGE_WAIT_AFTER as AFTER, SYNC_FILE_RANGE_WAIT_BEFORE as BEFORE,
            SYNC_FILE_RANGE_WRITE as WRITE,
        };
        let at = self.end;
        self.end = at.saturating_add(len);
        if !self.enabled || len == 0 {
            return Ok(());
        }
        if let Err(e) = self.sync(file, at, len, WRITE) {
            return self.unsupported(e);
        }
        if self.end - self.dropped < WRITE_BEHIND {
            return Ok(());
        }
        // Keep the newer half in flight; wait for the older one.
        let upto = (self.end - WRITE_BEHIND / 2) & !4095;
        let (from, n) = (self.dropped, upto - self.dropped);
        if let Err(e) = self.sync(file, from, n, BEFORE | WRITE | AFTER) {
            return self.unsupported(e);
        }
        let _ = nix::fcntl::posix_fadvise(
            file.as_raw_fd(),
            from as i64,
            n as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        self.dropped = upto;
        Ok(())
    }

    fn sync(&self, file: &File, at: u64, len: u64, flags: u32) -> io::Result<()> {
        crate::sys::sync_file_range(file, at, len, flags)
    }

    /// A file system without `sync_file_range` (or a size it cannot take)
    /// turns write-behind off; a real I/O error fails the write.
    fn unsupported(&mut self, e: io::Error) -> io::Result<()> {
        use nix::libc::{EINVAL, ENOSYS, EOPNOTSUPP, ESPIPE};
        match e.raw_os_error() {
            Some(EINVAL | ENOSYS | EOPNOTSUPP | ESPIPE) => {
                log::debug!("download write-behind off: sync_file_range: {e}");
                self.enabled = false;
                Ok(())
            }
            _ => Err(e),
        }
    }
}

impl Sink {
    /// A sink appending to `file`, whose first `at` bytes are already
    /// written and hashed into `hasher`.
    fn new(file: File, hasher: Sha256, at: u64) -> Sink {
        let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (btx, back) = sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
        let handle = std::thread::Builder::new()
            .name("download-sink".into())
            .spawn(move || {
                let mut file = file;
                let mut hasher = hasher;
                let mut behind = WriteBehind::new(at);
                let mut failed: Option<io::Error> = None;
                for buf in rx {
                    if failed.is_none() {
                        match file
                            .write_all(&buf)
                            .and_then(|_| behind.written(&file, buf.len() as u64))
                        {
                            Err(e) => failed = Some(e),
                            Ok(()) => hasher.update(&buf),
                        }
                    }
                    let _ = btx.try_send(buf);
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok((hasher, file)),
                }
            })
            .expect("spawn download sink");
        Sink {
            tx: Some(tx),
            back,
            handle: Some(handle),
            spare: Vec::new(),
        }
    }

    /// A buffer of `CHUNK` bytes to read into. A recycled buffer keeps the
    /// length it was last filled to, so only a new buffer (or the tail of a
    /// short one) is zeroed: zeroing every chunk cost as much CPU as the
    /// socket copy itself.
    fn buffer(&mut self) -> Vec<u8> {
        let mut b = match self.back.try_recv() {
            Ok(b) => b,
            Err(_) => self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(CHUNK)),
        };
        b.resize(CHUNK, 0);
        b
    }

    fn push(&mut self, buf: Vec<u8>) -> bool {
        match &self.tx {
            Some(tx) => tx.send(buf).is_ok(),
            None => false,
        }
    }

    fn finish(mut self) -> io::Result<(Sha256, File)> {
        drop(self.tx.take());
        self.handle
            .take()
            .expect("joined once")
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("download sink panicked")))
    }
}

/// The size of the source, for a target whose size is unknown: the file's
/// length, or the `Content-Length` of a `HEAD` request.
fn learn_size(job: &Job) -> Result<u64, DlError> {
    let t = &job.target;
    let size = if let Some(path) = t.url.file_path() {
        fs::metadata(&path)
            .map_err(|e| DlError::Fatal(format!("stat {}: {e}", path.display())))?
            .len()
    } else {
        // An overall deadline, as for a manifest: an answer trickled a
        // byte at a time must not hold the update for minutes.
        let deadline = fetch::probe_deadline(job.cfg);
        let got = fetch::request("HEAD", &t.url, &[], Some(deadline), job.proxy, job.cfg)
            .map_err(fetch_error)?;
        got.response
            .header("Content-Length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                DlError::Fatal(format!(
                    "{}: the server gives no Content-Length, and the build's size is not known otherwise",
                    got.url
                ))
            })?
    };
    if size == 0 {
        return Err(DlError::Fatal(format!("{}: the build is empty", t.url)));
    }
    check_size(job, size)?;
    Ok(size)
}

/// A build above the configured bound is refused before any byte of it is
/// fetched (a size from an old journal or the source, not only a
/// manifest's).
fn check_size(job: &Job, size: u64) -> Result<(), DlError> {
    let max = job.cfg.max_build_size;
    if size > max {
        return Err(DlError::Fatal(format!(
            "{}: the build is {size} bytes, above ECS_WARDEN_MAX_BUILD_SIZE ({max} bytes)",
            job.target.url
        )));
    }
    Ok(())
}

/// Run a whole download with retries. On success the partial file holds
/// exactly the target's bytes, verified and fsynced; returns their size.
pub fn run(job: &mut Job, progress: Progress) -> Result<u64, DlError> {
    if job.target.size == 0 {
        job.target.size = learn_size(job)?;
    }
    check_size(job, job.target.size)?;
    let job = &*job;
    let t = &job.target;
    let mut hashed: Option<(Sha256, u64)> = None;
    let mut attempt = 1;
    loop {
        match attempt_once(job, &mut hashed, progress) {
            Ok(()) => return Ok(t.size),
            Err(DlError::Retry(m)) if attempt < job.cfg.attempts => {
                let delay = job
                    .cfg
                    .retry_delay
                    .checked_mul(1 << (attempt - 1).min(10))
                    .unwrap_or(Duration::from_secs(30))
                    .min(Duration::from_secs(30));
                log::warn!(
                    "download of {} failed (attempt {attempt} of {}): {m}; retrying in {}",
                    t.version,
                    job.cfg.attempts,
                    humantime::format_duration(delay)
                );
                std::thread::sleep(delay);
                attempt += 1;
            }
            Err(DlError::Retry(m)) => {
                return Err(DlError::Retry(format!(
                    "{m} (gave up after {attempt} attempts)"
                )))
            }
            Err(e) => return Err(e),
        }
    }
}

fn open_partial(path: &Path) -> Result<File, DlError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| disk_error(format!("open partial file {}", path.display()), e))
}

fn disk_error(what: String, e: io::Error) -> DlError {
    if e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) {
        DlError::Disk(format!("{what}: no space left on device"))
    } else {
        DlError::Disk(format!("{what}: {e}"))
    }
}

/// Free bytes for unprivileged use in the file system holding `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    Ok((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

fn attempt_once(
    job: &Job,
    hashed: &mut Option<(Sha256, u64)>,
    progress: Progress,
) -> Result<(), DlError> {
    let t = &job.target;
    let mut file = open_partial(&job.partial)?;
    let mut have = file
        .metadata()
        .map_err(|e| disk_error(format!("stat {}", job.partial.display()), e))?
        .len();
    if have > t.size {
        have = 0;
    }
    // The running hash must cover exactly the bytes on disk.
    let hasher = match hashed.take() {
        Some((h, n)) if n == have => h,
        _ => hash_prefix(&mut file, have, &job.partial)?,
    };
    let dir = job.partial.parent().unwrap_or(Path::new("."));
    let free =
        free_space(dir).map_err(|e| DlError::Disk(format!("statvfs {}: {e}", dir.display())))?;
    // `have <= size` here; saturating, so an absurd size reads as "more
    // than is free", never as a wrapped small number.
    let need = t.size.saturating_sub(have).saturating_add(SPACE_MARGIN);
    if free < need {
        return Err(DlError::Disk(format!(
            "not enough free space in {}: {} bytes needed (build of {} bytes plus {} head room), {free} available",
            dir.display(),
            need,
            t.size,
            SPACE_MARGIN
        )));
    }
    if have == t.size {
        return finish(job, file, hasher);
    }
    let (reader, offset) = open_source(job, have)?;
    if offset == 0 && have > 0 {
        log::info!(
            "the server ignored the range request; downloading {} from the start",
            t.version
        );
    }
    let hasher = if offset != have {
        have = 0;
        Sha256::new()
    } else {
        hasher
    };
    file.set_len(have)
        .and_then(|_| file.seek(SeekFrom::Start(have)).map(|_| ()))
        .map_err(|e| disk_error(format!("prepare {}", job.partial.display()), e))?;
    let (hasher, file, done) = stream(job, reader, file, hasher, have, progress)?;
    if done < t.size {
        *hashed = Some((hasher, done));
        return Err(DlError::Retry(format!(
            "{}: the body ended after {done} of {} bytes",
            t.url, t.size
        )));
    }
    finish(job, file, hasher)
}

fn hash_prefix(file: &mut File, len: u64, path: &Path) -> Result<Sha256, DlError> {
    let mut h = Sha256::new();
    if len == 0 {
        return Ok(h);
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| DlError::Disk(format!("read {}: {e}", path.display())))?;
    let mut left = len;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        file.read_exact(&mut buf[..want])
            .map_err(|e| DlError::Disk(format!("read {}: {e}", path.display())))?;
        h.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(h)
}

/// Open the source at byte `have`. Returns the reader and the offset it
/// actually starts at (0 when a server ignored the range).
fn open_source(job: &Job, have: u64) -> Result<(Box<dyn Read + Send>, u64), DlError> {
    let t = &job.target;
    if let Some(file) = t.url.file_path() {
        let path = file.display();
        let mut f = File::open(&file).map_err(|e| DlError::Fatal(format!("open {path}: {e}")))?;
        let len = f
            .metadata()
            .map_err(|e| DlError::Fatal(format!("stat {path}: {e}")))?
            .len();
        if len != t.size {
            return Err(DlError::Fatal(format!(
                "{path} is {len} bytes; the manifest says {}",
                t.size
            )));
        }
        f.seek(SeekFrom::Start(have))
            .map_err(|e| DlError::Fatal(format!("seek {path}: {e}")))?;
        return Ok((Box::new(f), have));
    }
    // The range goes to every hop of a redirect: the server that has the
    // bytes answers it.
    let range = format!("bytes={have}-");
    let headers: &[(&str, &str)] = if have > 0 { &[("Range", &range)] } else { &[] };
    let got =
        fetch::request("GET", &t.url, headers, None, job.proxy, job.cfg).map_err(fetch_error)?;
    let (at, resp) = (got.url, got.response);
    let offset = match resp.status() {
        206 => {
            let start = resp
                .header("Content-Range")
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if start != Some(have) {
                // A range we did not ask for: start over rather than guess.
                let _ = fs::remove_file(&job.partial);
                return Err(DlError::Retry(format!(
                    "{}: unexpected Content-Range {:?} for a request from byte {have}",
                    at,
                    resp.header("Content-Range")
                )));
            }
            have
        }
        200 => 0,
        other => {
            return Err(DlError::Fatal(format!(
                "{}: unexpected HTTP {other} {}",
                at,
                resp.status_text()
            )))
        }
    };
    if let Some(len) = resp.header("Content-Length") {
        let len: u64 = len
            .trim()
            .parse()
            .map_err(|_| DlError::Fatal(format!("{at}: invalid Content-Length {len:?}")))?;
        if Some(len) != t.size.checked_sub(offset) {
            return Err(DlError::Fatal(format!(
                "{}: Content-Length {len} disagrees with the manifest (size {}, from byte {offset})",
                at, t.size
            )));
        }
    }
    Ok((Box::new(resp.into_reader()), offset))
}

/// Copy from `reader` to `file` from byte `have`, never past `size`.
/// Returns the hash, the file and the bytes on disk.
fn stream(
    job: &Job,
    mut reader: Box<dyn Read + Send>,
    file: File,
    hasher: Sha256,
    have: u64,
    progress: Progress,
) -> Result<(Sha256, File, u64), DlError> {
    let t = &job.target;
    let cfg = job.cfg;
    let mut sink = Sink::new(file, hasher, have);
    let mut done = have;
    let mut window_start = Instant::now();
    let mut window_bytes = 0u64;
    let mut last_report = Instant::now();
    progress(done, t.size);
    let mut result: Result<(), DlError> = Ok(());
    'outer: loop {
        let mut buf = sink.buffer();
        let mut filled = 0;
        let mut eof = false;
        let started = Instant::now();
        // Fill one chunk (or hit EOF) before handing it over; on a slow
        // link hand over what arrived after `HAND_OVER`, so the bytes reach
        // the partial file (and survive a re-exec or a restart, which
        // resume from its length) instead of waiting in memory for a
        // chunk that may take minutes to fill.
        while filled < CHUNK {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    filled += n;
                    window_bytes += n as u64;
                    if (filled as u64).checked_add(done).is_none_or(|d| d > t.size) {
                        result = Err(DlError::Fatal(format!(
                            "{}: the server sent more than the declared {} bytes",
                            t.url, t.size
                        )));
                        break 'outer;
                    }
                    if started.elapsed() >= HAND_OVER {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    buf.truncate(filled);
                    done += filled as u64;
                    sink.push(buf);
                    result = Err(DlError::Retry(if is_timeout(&e) {
                        format!(
                            "{}: no data for {} (stalled at {done} of {} bytes)",
                            t.url,
                            humantime::format_duration(cfg.read_timeout),
                            t.size
                        )
                    } else {
                        format!("{}: {e} (at {done} of {} bytes)", t.url, t.size)
                    }));
                    break 'outer;
                }
            }
            let elapsed = window_start.elapsed();
            if elapsed >= cfg.stall_window && !cfg.stall_window.is_zero() {
                let rate = window_bytes as f64 / elapsed.as_secs_f64();
                if rate < cfg.min_rate as f64 {
                    buf.truncate(filled);
                    done += filled as u64;
                    sink.push(buf);
                    result = Err(DlError::Retry(format!(
                        "{}: stalled: {rate:.0} bytes/s over {}, below the minimum {} bytes/s",
                        t.url,
                        humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                        cfg.min_rate
                    )));
                    break 'outer;
                }
                window_start = Instant::now();
                window_bytes = 0;
            }
        }
        buf.truncate(filled);
        done += filled as u64;
        if filled > 0 && !sink.push(buf) {
            break;
        }
        if last_report.elapsed() >= Duration::from_millis(200) || eof {
            progress(done, t.size);
            last_report = Instant::now();
        }
        if eof {
            break;
        }
    }
    let (hasher, file) = sink
        .finish()
        .map_err(|e| disk_error(format!("write {}", job.partial.display()), e))?;
    progress(done, t.size);
    result.map(|_| (hasher, file, done))
}

/// A read that timed out: ureq reports the socket's `SO_RCVTIMEO` as
/// `TimedOut` (a bare socket says `WouldBlock`); a decoder in between may
/// wrap that error, so the wrapped ones count too.
fn is_timeout(e: &io::Error) -> bool {
    let timed_out = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        )
    };
    if timed_out(e) {
        return true;
    }
    let mut inner: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|i| i as _);
    while let Some(err) = inner {
        if err.downcast_ref::<io::Error>().is_some_and(timed_out) {
            return true;
        }
        inner = err.source();
    }
    false
}

/// A failed request as a download error: what retrying can fix is retried.
fn fetch_error(e: FetchError) -> DlError {
    match &e {
        FetchError::Status { code, .. }
            if (500..600).contains(code) || *code == 408 || *code == 429 =>
        {
            DlError::Retry(e.to_string())
        }
        FetchError::Status { .. } | FetchError::Refused { .. } => DlError::Fatal(e.to_string()),
        FetchError::Transport { .. } => DlError::Retry(e.to_string()),
    }
}

fn finish(job: &Job, file: File, hasher: Sha256) -> Result<(), DlError> {
    let t = &job.target;
    let got = hex(&hasher.finalize());
    if got != t.sha256 {
        let _ = fs::remove_file(&job.partial);
        return Err(DlError::Fatal(format!(
            "{}: sha256 mismatch: the {} bytes hash to {got}, the manifest says {}",
            t.url, t.size, t.sha256
        )));
    }
    file.sync_all()
        .map_err(|e| disk_error(format!("fsync {}", job.partial.display()), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Entry, DEFAULTS};

    fn config() -> Config {
        let env = DEFAULTS
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Entry {
                        value: v.to_string(),
                        origin: None,
                    },
                )
            })
            .collect();
        Config::from_env(env).unwrap()
    }

    fn job<'a>(cfg: &'a Config, dir: &Path, size: u64) -> Job<'a> {
        Job {
            target: Target {
                version: "1.1.0".into(),
                git_hash: None,
                url: crate::source::Source::file(&dir.join("source")),
                sha256: "0".repeat(64),
                size,
            },
            partial: dir.join(".1.1.0.partial"),
            proxy: &cfg.proxy,
            cfg: &cfg.update,
        }
    }

    /// Bytes that differ from chunk to chunk (no two MiB alike).
    fn data(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A source that answers each read with a few odd-sized bytes, as a
    /// chunked or slow server does, never filling the buffer.
    struct ShortReads {
        data: Vec<u8>,
        at: usize,
        turn: usize,
    }

    impl Read for ShortReads {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            const SIZES: [usize; 5] = [1, 4093, 65_537, 7, 1_048_579];
            self.turn += 1;
            let n = SIZES[self.turn % SIZES.len()]
                .min(buf.len())
                .min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Resident bytes of `path` in the page cache (util-linux `fincore`),
    /// when the tool is there and the file system can drop pages.
    fn resident(path: &Path) -> Option<u64> {
        let fs = nix::sys::statfs::statfs(path).ok()?;
        if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            return None;
        }
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .arg(path)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// Short reads, resumed from an offset that is not page-aligned: every
    /// byte is written once and hashed once, and the digest checks.
    #[test]
    fn short_reads_from_an_unaligned_offset_store_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config();
        let body = data(24 * 1024 * 1024 + 333);
        let have = 12_345usize;
        let mut j = job(&cfg, dir.path(), body.len() as u64);
        j.target.sha256 = hex(&Sha256::digest(&body));
        fs::write(&j.partial, &body[..have]).unwrap();
        let mut file = open_partial(&j.partial).unwrap();
        let hasher = hash_prefix(&mut file, have as u64, &j.partial).unwrap();
        file.seek(SeekFrom::Start(have as u64)).unwrap();
        let reader = ShortReads {
            data: body[have..].to_vec(),
            at: 0,
            turn: 0,
        };
        let mut reports = 0;
        let (hasher, file, done) = stream(
            &j,
            Box::new(reader),
            file,
            hasher,
            have as u64,
            &mut |_, _| reports += 1,
        )
        .unwrap();
        assert_eq!(done, body.len() as u64);
        assert!(reports >= 2);
        finish(&j, file, hasher).unwrap();
        assert!(
            fs::read(&j.partial).unwrap() == body,
            "the partial file is the body"
        );
    }

    /// The page cache holds about the write-behind window, not the build.
    #[test]
    fn the_page_cache_does_not_hold_the_whole_build() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config();
        let body = data(32 * 1024 * 1024);
        let mut j = job(&cfg, dir.path(), body.len() as u64);
        j.target.sha256 = hex(&Sha256::digest(&body));
        let file = open_partial(&j.partial).unwrap();
        let reader = io::Cursor::new(body.clone());
        let (hasher, file, _) =
            stream(&j, Box::new(reader), file, Sha256::new(), 0, &mut |_, _| {}).unwrap();
        finish(&j, file, hasher).unwrap();
        match resident(&j.partial) {
            Some(res) => assert!(
                res <= WRITE_BEHIND + 2 * CHUNK as u64,
                "{res} bytes of the {} still in the page cache",
                body.len()
            ),
            None => eprintln!("no fincore or a tmpfs: residency not checked"),
        }
    }

    /// A digest that disagrees is only known at the last byte: the partial
    /// file is removed then, nothing of it is kept.
    #[test]
    fn a_mismatch_found_at_the_end_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config();
        let body = data(10 * 1024 * 1024 + 1);
        let mut j = job(&cfg, dir.path(), body.len() as u64);
        let mut wrong = body.clone();
        *wrong.last_mut().unwrap() ^= 1;
        j.target.sha256 = hex(&Sha256::digest(&wrong));
        let file = open_partial(&j.partial).unwrap();
        let reader = ShortReads {
            data: body,
            at: 0,
            turn: 0,
        };
        let (hasher, file, done) =
            stream(&j, Box::new(reader), file, Sha256::new(), 0, &mut |_, _| {}).unwrap();
        assert_eq!(done, j.target.size);
        match finish(&j, file, hasher) {
            Err(DlError::Fatal(m)) => assert!(m.contains("sha256 mismatch"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!j.partial.exists(), "the partial file is gone");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A size of u64::MAX (say, from a journal written before the bound
    /// existed) is refused, never overflows.
    #[test]
    fn an_absurd_size_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config();
        let mut j = job(&cfg, dir.path(), u64::MAX);
        match run(&mut j, &mut |_, _| {}) {
            Err(DlError::Fatal(m)) => {
                assert!(m.contains("ECS_WARDEN_MAX_BUILD_SIZE"), "{m}");
                assert!(m.contains("18446744073709551615"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // Below the bound check too, the free-space arithmetic holds.
        fs::write(&j.partial, b"abc").unwrap();
        let mut hashed = None;
        match attempt_once(&j, &mut hashed, &mut |_, _| {}) {
            Err(DlError::Disk(m)) => assert!(m.contains("not enough free space"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
