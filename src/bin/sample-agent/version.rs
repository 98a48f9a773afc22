//! The build identity (version, hash, baked-in fault), read from the binary's
//! own bytes, and the `stamp` subcommand that writes it.
//!
//! A stamped binary is the original ELF file with one trailer line appended
//! (the ELF loader ignores bytes past the last segment):
//!
//! ```text
//! \n#sample-agent-version:<VERSION>:<HASH8>:<FAULT>\n
//! ```
//!
//! `VERSION` is semver (`1.2.3`, `1.2.3-rc.1`), `HASH8` eight lowercase hex
//! digits, `FAULT` empty or a fault as `SAMPLE_AGENT_FAULT` takes it (it may
//! hold colons, so it is the rest of the line). The trailer is at most
//! [`TAIL_LEN`] bytes and is looked for only there. Stamping:
//!
//! 1. read `/proc/self/exe` whole and strip a valid trailer if there is one;
//! 2. append the new trailer;
//! 3. write the result with the durable helper, mode 0755.
//!
//! An unstamped binary is version [`UNSTAMPED_VERSION`] with a hash that
//! fingerprints the file (size, first and last 4 KiB), cheap to compute.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::durable;
use crate::error::{Error, Result};
use crate::fault::Fault;
use crate::ids;

pub const TRAILER_PREFIX: &str = "#sample-agent-version:";
/// The trailer must fit in the last this many bytes of the file.
pub const TAIL_LEN: usize = 256;
pub const UNSTAMPED_VERSION: &str = "1.0.0";
const SELF_EXE: &str = "/proc/self/exe";
const FINGERPRINT_SPAN: usize = 4096;

/// Who this binary is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub version: String,
    pub hash: String,
    /// A fault baked in by `stamp --fault`.
    pub fault: Option<Fault>,
    pub stamped: bool,
}

impl Build {
    /// The identity of the running executable.
    pub fn of_self() -> Result<Build> {
        Build::of_file(Path::new(SELF_EXE))
    }

    pub fn of_file(path: &Path) -> Result<Build> {
        let mut file = File::open(path).map_err(|e| Error::io("open executable", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat executable", path, e))?
            .len();
        let tail = read_span(&mut file, len.saturating_sub(TAIL_LEN as u64), len, path)?;
        if let Some((trailer, _)) = Trailer::find(&tail) {
            return Ok(Build {
                version: trailer.version,
                hash: trailer.hash,
                fault: trailer.fault,
                stamped: true,
            });
        }

        let mut hasher = Sha256::new();
        hasher.update(b"sample-agent unstamped\0");
        hasher.update(len.to_le_bytes());
        hasher.update(read_span(
            &mut file,
            0,
            len.min(FINGERPRINT_SPAN as u64),
            path,
        )?);
        hasher.update(read_span(
            &mut file,
            len.saturating_sub(FINGERPRINT_SPAN as u64),
            len,
            path,
        )?);
        Ok(Build {
            version: UNSTAMPED_VERSION.to_string(),
            hash: ids::to_hex(&hasher.finalize()[..4]),
            fault: None,
            stamped: false,
        })
    }

    /// The real agent's banner, as `--version` and `/v1/metadata` show it.
    pub fn banner(&self) -> String {
        format!("Amazon ECS Agent - v{} ({})", self.version, self.hash)
    }
}

/// Reads bytes `start..end` of an open file.
fn read_span(file: &mut File, start: u64, end: u64, path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity((end - start) as usize);
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.take(end - start).read_to_end(&mut buf))
        .map_err(|e| Error::io("read executable", path, e))?;
    Ok(buf)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Trailer {
    version: String,
    hash: String,
    fault: Option<Fault>,
}

impl Trailer {
    fn render(&self) -> String {
        let fault = self
            .fault
            .as_ref()
            .map(Fault::to_string)
            .unwrap_or_default();
        format!("\n{TRAILER_PREFIX}{}:{}:{fault}\n", self.version, self.hash)
    }

    /// Finds a valid trailer at the very end of `bytes`; returns it and its
    /// length (counting the leading newline).
    fn find(bytes: &[u8]) -> Option<(Trailer, usize)> {
        let tail = &bytes[bytes.len().saturating_sub(TAIL_LEN)..];
        let body = tail.strip_suffix(b"\n")?;
        let needle = format!("\n{TRAILER_PREFIX}");
        let start = body
            .windows(needle.len())
            .rposition(|w| w == needle.as_bytes())?;
        let line = std::str::from_utf8(&body[start + needle.len()..]).ok()?;
        if line.contains('\n') {
            return None;
        }
        let mut fields = line.splitn(3, ':');
        let version = fields.next()?;
        let hash = fields.next()?;
        let fault = fields.next()?;
        check_version(version).ok()?;
        if !ids::is_lower_hex(hash, 8) {
            return None;
        }
        let fault = match fault {
            "" => None,
            f => Some(f.parse::<Fault>().ok()?),
        };
        let trailer = Trailer {
            version: version.to_string(),
            hash: hash.to_string(),
            fault,
        };
        Some((trailer, tail.len() - start))
    }
}

/// `X.Y.Z` with an optional `-pre` part (semver; no leading `v`).
pub fn check_version(version: &str) -> std::result::Result<(), String> {
    match semver::Version::parse(version) {
        Ok(v) if v.build.is_empty() => Ok(()),
        _ => Err(format!(
            "version {version:?} is not X.Y.Z or X.Y.Z-pre (for example 1.2.3 or 1.2.3-rc.1)"
        )),
    }
}

/// What `sample-agent stamp` was asked to do, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampRequest {
    pub version: String,
    pub out: PathBuf,
    pub hash: Option<String>,
    pub fault: Option<Fault>,
}

/// Writes a copy of this binary, stamped, to `request.out`.
pub fn stamp(request: &StampRequest) -> Result<()> {
    let exe = Path::new(SELF_EXE);
    let mut bytes = std::fs::read(exe).map_err(|e| Error::io("read executable", exe, e))?;
    if let Some((_, len)) = Trailer::find(&bytes) {
        bytes.truncate(bytes.len() - len);
    }
    let trailer = Trailer {
        version: request.version.clone(),
        hash: request
            .hash
            .clone()
            .unwrap_or_else(|| default_hash(&request.version)),
        fault: request.fault.clone(),
    };
    let rendered = trailer.render();
    if rendered.len() > TAIL_LEN {
        return Err(Error::Usage(format!(
            "stamp trailer would be {} bytes, more than {TAIL_LEN}: shorten the version or fault",
            rendered.len()
        )));
    }
    bytes.extend_from_slice(rendered.as_bytes());
    durable::write(&request.out, "stamped binary", 0o755, &bytes)
}

/// First 8 hex digits of sha256(VERSION).
pub fn default_hash(version: &str) -> String {
    ids::to_hex(&Sha256::digest(version.as_bytes())[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailer(fault: Option<Fault>) -> Trailer {
        Trailer {
            version: "1.2.3-rc.1".into(),
            hash: "abcdef12".into(),
            fault,
        }
    }

    #[test]
    fn trailer_round_trips_after_binary_bytes() {
        for fault in [None, Some(Fault::Exit(3)), Some(Fault::Unhealthy)] {
            let t = trailer(fault);
            let mut bytes = vec![0u8, 1, 2, b'\n', 0xff];
            bytes.extend_from_slice(t.render().as_bytes());
            let (found, len) = Trailer::find(&bytes).unwrap();
            assert_eq!(found, t);
            assert_eq!(len, t.render().len());
        }
    }

    #[test]
    fn no_trailer_in_plain_or_damaged_bytes() {
        assert!(Trailer::find(b"\x7fELF\x02\x01").is_none());
        assert!(Trailer::find(b"\n#sample-agent-version:1.2:abcdef12:\n").is_none());
        assert!(Trailer::find(b"\n#sample-agent-version:1.2.3:ABCDEF12:\n").is_none());
        assert!(Trailer::find(b"\n#sample-agent-version:1.2.3:abcdef12:boom\n").is_none());
        assert!(Trailer::find(b"\n#sample-agent-version:1.2.3:abcdef12:\nx").is_none());
    }

    #[test]
    fn versions() {
        assert!(check_version("1.2.3").is_ok());
        assert!(check_version("1.2.3-pre").is_ok());
        assert!(check_version("v1.2.3").is_err());
        assert!(check_version("1.2").is_err());
        assert!(check_version("1.2.3+build").is_err());
        assert_eq!(default_hash("1.2.3").len(), 8);
        assert_ne!(default_hash("1.2.3"), default_hash("1.2.4"));
    }
}
