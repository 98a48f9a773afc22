//! The warden's own log file, where ecs-init kept its own:
//! `var/log/ecs/ecs-init.log`, in ecs-init's logfmt
//! (`level=info time=2024-01-01T00:00:00Z msg="..."`, time in UTC, `msg`
//! quoted as Go's `%q` quotes), beside the stderr log that journald keeps.
//!
//! Rolling is ecs-init's (seelog's hourly roll, 24 rolls kept), made safe
//! for the several processes that write one file (`start`, `pre-start`,
//! `post-stop`, the CLI):
//! 1. each line is one append(2) write to `ecs-init.log`;
//! 2. before a write, a file last written in an earlier hour (UTC) is
//!    rolled: hard-linked as `ecs-init.log.YYYY-MM-DD-HH` (the hour it was
//!    written in) and unlinked; a process that finds that name taken knows
//!    another one rolled it, and reopens;
//! 3. after a roll, all but the newest 24 rolls are deleted;
//! 4. within one hour the file stops growing at 5 MiB (the agent's own
//!    default file size), with a last line that says so, so the whole log
//!    stays under 25 × 5 MiB.
//!
//! A log that cannot be written (read-only, full, missing directory) costs
//! one warning on stderr, and another only after it worked again; nothing
//! else depends on it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

/// Rolls kept beside the current file (ecs-init's `maxrolls`).
pub const MAX_ROLLS: usize = 24;
/// Largest size of one hour's file.
pub const MAX_FILE_BYTES: u64 = 5 * 1024 * 1024;

/// One log file, shared by the threads of this process.
pub struct LogFile {
    path: PathBuf,
    cap: u64,
    // The logger is global and called from every thread: the file handle
    // and its failure state are the one thing behind a lock.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    file: Option<File>,
    /// The hour whose cap line was written.
    capped: Option<String>,
    failing: bool,
}

impl LogFile {
    pub fn new(path: PathBuf) -> LogFile {
        LogFile::with_cap(path, MAX_FILE_BYTES)
    }

    pub fn with_cap(path: PathBuf, cap: u64) -> LogFile {
        LogFile {
            path,
            cap,
            state: Mutex::new(State::default()),
        }
    }

    /// Append one record; never fails (see the module header).
    pub fn write(&self, level: log::Level, msg: &str) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        match self.write_locked(&mut st, level, msg, now) {
            Ok(()) => st.failing = false,
            Err(e) => {
                st.file = None;
                if !st.failing {
                    st.failing = true;
                    eprintln!(
                        "ecs-warden: warning: cannot write the log file {}: {e}; logging to stderr only",
                        self.path.display()
                    );
                }
            }
        }
    }

    fn write_locked(
        &self,
        st: &mut State,
        level: log::Level,
        msg: &str,
        now: SystemTime,
    ) -> io::Result<()> {
        let hour = hour_of(now);
        let meta = match fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut meta = meta;
        if let Some(m) = &meta {
            let written = hour_of(m.modified()?);
            if m.len() > 0 && written < hour {
                self.roll(&written)?;
                meta = None;
            }
        }
        // Reopen when the path is no longer our file (rolled, by us or by
        // another process, or removed).
        let ours = match (&st.file, &meta) {
            (Some(f), Some(m)) => f
                .metadata()
                .map(|fm| fm.ino() == m.ino() && fm.dev() == m.dev())?,
            _ => false,
        };
        if !ours {
            st.file = Some(self.open()?);
        }
        let f = st.file.as_mut().expect("opened above");
        let size = f.metadata()?.len();
        if size >= self.cap {
            if st.capped.as_deref() != Some(hour.as_str()) {
                st.capped = Some(hour.clone());
                let line = logfmt(
                    log::Level::Warn,
                    now,
                    &format!(
                        "{} reached {} bytes this hour; until the next hour, lines go to stderr only",
                        self.path.display(),
                        self.cap
                    ),
                );
                f.write_all(line.as_bytes())?;
            }
            return Ok(());
        }
        f.write_all(logfmt(level, now, msg).as_bytes())
    }

    fn open(&self) -> io::Result<File> {
        if let Some(dir) = self.path.parent() {
            if !dir.is_dir() {
                fs::create_dir_all(dir)?;
            }
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&self.path)
    }

    /// Step 2 and 3 of the module header.
    fn roll(&self, hour: &str) -> io::Result<()> {
        let rolled = roll_name(&self.path, hour);
        match fs::hard_link(&self.path, &rolled) {
            Ok(()) => match fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
            // Another process rolled it first (the name is taken, or the
            // file is already gone).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
        prune(&self.path, MAX_ROLLS);
        Ok(())
    }
}

/// `ecs-init.log.YYYY-MM-DD-HH`, seelog's name for a roll.
fn roll_name(path: &Path, hour: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(hour);
    path.with_file_name(name)
}

/// Delete all but the newest `keep` rolls of `path` (best effort: a roll
/// that cannot be deleted now is deleted after a later roll).
fn prune(path: &Path, keep: usize) {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!("{}.", base.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut rolls: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.strip_prefix(&prefix).is_some_and(is_hour))
        .collect();
    rolls.sort();
    let excess = rolls.len().saturating_sub(keep);
    for name in &rolls[..excess] {
        let _ = fs::remove_file(dir.join(name));
    }
}

/// `YYYY-MM-DD-HH` (Go's `2006-01-02-15`, ecs-init's `datepattern`).
fn is_hour(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 13
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 10 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// The UTC hour of `t` as `YYYY-MM-DD-HH`. (ecs-init names rolls in local
/// time; a static binary has no time-zone database, and EC2 hosts run in
/// UTC by default.)
fn hour_of(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2024-01-02T03:04:05Z
    format!("{}-{}", &s[..10], &s[11..13])
}

/// One line in ecs-init's format (its `logfmtFormatter`).
pub fn logfmt(level: log::Level, time: SystemTime, msg: &str) -> String {
    let level = match level {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    format!(
        "level={level} time={} msg={}\n",
        humantime::format_rfc3339_seconds(time),
        go_quote(msg)
    )
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes; printable
/// Unicode stays as it is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The process's log file, once `install` set it.
static FILE: OnceLock<LogFile> = OnceLock::new();

/// The process's logger: every record to stderr (as `stderr` formats it),
/// and to the log file.
struct Tee {
    stderr: env_logger::Logger,
}

impl log::Log for Tee {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.stderr.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.stderr.matches(record) {
            return;
        }
        self.stderr.log(record);
        if let Some(f) = FILE.get() {
            f.write(record.level(), &record.args().to_string());
        }
    }

    fn flush(&self) {
        self.stderr.flush();
    }
}

/// Install the process's logger (once; later calls do nothing).
pub fn install(stderr: env_logger::Logger, file: Option<PathBuf>) {
    let level = stderr.filter();
    if let Some(path) = file {
        let _ = FILE.set(LogFile::new(path));
    }
    if log::set_boxed_logger(Box::new(Tee { stderr })).is_ok() {
        log::set_max_level(level);
    }
}

/// Write to the log file only, at the configured level: for what the edge
/// already printed on stderr itself (a verb's final error).
pub fn to_file(level: log::Level, msg: &str) {
    if level <= log::max_level() {
        if let Some(f) = FILE.get() {
            f.write(level, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn lines_are_ecs_init_logfmt() {
        let t = UNIX_EPOCH + Duration::from_secs(1_704_067_200); // 2024-01-01T00:00:00Z
        assert_eq!(
            logfmt(log::Level::Info, t, "pre-start: say \"hi\"\n\tä\u{1}\\"),
            "level=info time=2024-01-01T00:00:00Z msg=\"pre-start: say \\\"hi\\\"\\n\\tä\\x01\\\\\"\n"
        );
        assert_eq!(
            hour_of(t + Duration::from_secs(3 * 3600 + 59)),
            "2024-01-01-03"
        );
        assert!(is_hour("2024-01-01-03"));
        assert!(!is_hour("2024-01-01T03"));
        assert!(!is_hour("2024-01-01-3"));
    }

    fn set_mtime(p: &Path, ago: Duration) {
        let f = File::options().write(true).open(p).unwrap();
        f.set_modified(SystemTime::now() - ago).unwrap();
    }

    #[test]
    fn an_earlier_hours_file_is_rolled_and_old_rolls_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/ecs-init.log");
        let log = LogFile::new(path.clone());
        log.write(log::Level::Info, "first");
        assert!(fs::read_to_string(&path).unwrap().contains("msg=\"first\""));

        for h in 0..30 {
            fs::write(roll_name(&path, &format!("2000-01-01-{h:02}")), "old").unwrap();
        }
        fs::write(dir.path().join("log/ecs-init.log.keep-me"), "x").unwrap();
        set_mtime(&path, Duration::from_secs(2 * 3600));
        let hour = hour_of(SystemTime::now() - Duration::from_secs(2 * 3600));
        log.write(log::Level::Warn, "second");

        let rolled = fs::read_to_string(roll_name(&path, &hour)).unwrap();
        assert!(
            rolled.contains("msg=\"first\"") && !rolled.contains("second"),
            "{rolled}"
        );
        let now = fs::read_to_string(&path).unwrap();
        assert_eq!(now.lines().count(), 1, "{now}");
        assert!(now.starts_with("level=warn time="), "{now}");
        let mut names: Vec<String> = fs::read_dir(dir.path().join("log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 1 + MAX_ROLLS + 1, "{names:?}");
        assert!(
            names.contains(&"ecs-init.log.keep-me".to_string()),
            "not a roll: kept"
        );
        assert!(
            !names.contains(&"ecs-init.log.2000-01-01-06".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"ecs-init.log.2000-01-01-07".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn another_process_rolling_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ecs-init.log");
        let a = LogFile::new(path.clone());
        let b = LogFile::new(path.clone());
        a.write(log::Level::Info, "a1");
        b.write(log::Level::Info, "b1");
        fs::rename(&path, dir.path().join("elsewhere")).unwrap();
        b.write(log::Level::Info, "b2");
        a.write(log::Level::Info, "a2");
        let now = fs::read_to_string(&path).unwrap();
        assert!(
            now.contains("b2") && now.contains("a2") && !now.contains("a1"),
            "{now}"
        );
    }

    #[test]
    fn size_cap_within_an_hour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ecs-init.log");
        let log = LogFile::with_cap(path.clone(), 200);
        for i in 0..20 {
            log.write(log::Level::Info, &format!("line {i}"));
        }
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.len() < 400, "{text}");
        assert_eq!(text.matches("reached 200 bytes").count(), 1, "{text}");
        assert!(!text.contains("line 19"), "{text}");
    }

    #[test]
    fn an_unwritable_log_is_no_failure() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: open(2) fails even as root.
        let path = dir.path().join("ecs-init.log");
        fs::create_dir(&path).unwrap();
        let log = LogFile::new(path.clone());
        log.write(log::Level::Error, "lost");
        log.write(log::Level::Error, "lost again");
        assert!(log.state.lock().unwrap().failing);
        fs::remove_dir(&path).unwrap();
        log.write(log::Level::Info, "back");
        assert!(!log.state.lock().unwrap().failing);
        assert!(fs::read_to_string(&path).unwrap().contains("back"));
    }
}
