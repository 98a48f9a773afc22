//! The host's local key pair for the loopback ECS API.
//!
//! `etc/ecs-warden/credentials` (mode 0600, directory 0700) is an AWS
//! shared-credentials file, so the stock tools read it as is:
//!
//! ```text
//! [default]
//! aws_access_key_id = EWLK...          (20 characters, A-Z 0-9)
//! aws_secret_access_key = ...          (40 characters, base64 alphabet)
//! ```
//!
//! `load_or_create` makes it on first start (random keys, written durably
//! through `durable::write`) and afterwards only reads it. It reads the
//! format the way botocore's parser does where that matters (`#`/`;`
//! comment lines, `=` or `:` between key and value, option names
//! case-insensitive, other profiles ignored) and refuses, naming the file,
//! anything it cannot trust: a file group or others can access, a missing
//! `[default]` profile or key, a duplicated one, a malformed line or value.
//! The warden never rewrites a file it refused: the operator decides.

use std::fmt;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::durable;
use crate::error::{Error, Result};

/// First characters of every access key id the warden makes ("ecs-warden
/// local key"); real AWS ids start with `AKIA`/`ASIA`, so the two never mix.
pub const ACCESS_KEY_PREFIX: &str = "EWLK";
/// Length of a generated access key id (as AWS's).
pub const ACCESS_KEY_LEN: usize = 20;
/// Length of a generated secret access key (as AWS's).
pub const SECRET_KEY_LEN: usize = 40;
/// Mode of the credentials file.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the directory created to hold it.
pub const DIR_MODE: u32 = 0o700;

/// Shortest secret accepted from the file: a short secret is a weak key.
const MIN_SECRET_LEN: usize = 32;
const MAX_KEY_LEN: usize = 128;

const ID_ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const SECRET_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// An access key pair. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// A fresh random key pair: `EWLK` + 16 characters of A-Z 0-9 (about
    /// 82 bits, just an identifier) and a 40-character secret from the
    /// base64 alphabet (240 bits).
    pub fn generate() -> Result<Credentials> {
        let mut id = String::from(ACCESS_KEY_PREFIX);
        id.push_str(&random_string(
            ID_ALPHABET,
            ACCESS_KEY_LEN - ACCESS_KEY_PREFIX.len(),
        )?);
        Ok(Credentials {
            access_key_id: id,
            secret_access_key: random_string(SECRET_ALPHABET, SECRET_KEY_LEN)?,
        })
    }

    /// The file's text: a shared-credentials file with one `[default]`
    /// profile.
    pub fn to_file_text(&self) -> String {
        format!(
            "# ecs-warden: this host's key pair for its loopback ECS API.\n\
             # Use it with AWS_SHARED_CREDENTIALS_FILE=<this file>. Keep it mode 0600.\n\
             [default]\n\
             aws_access_key_id = {}\n\
             aws_secret_access_key = {}\n",
            self.access_key_id, self.secret_access_key
        )
    }
}

/// Random characters from `alphabet`, without modulo bias.
fn random_string(alphabet: &[u8], len: usize) -> Result<String> {
    // The largest multiple of the alphabet size that fits in a byte: bytes
    // at or above it are drawn again.
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::getrandom(&mut buf)
            .map_err(|e| Error::Other(format!("generate API credentials: no randomness: {e}")))?;
        for &b in &buf {
            if usize::from(b) < limit && out.len() < len {
                out.push(alphabet[usize::from(b) % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

/// Read the key pair at `path`, creating it first when the file is missing.
pub fn load_or_create(path: &Path) -> Result<Credentials> {
    match File::open(path) {
        Ok(file) => load(path, file),
        Err(e) if e.kind() == ErrorKind::NotFound => create(path),
        Err(e) => Err(Error::io("open API credentials", path)(e)),
    }
}

fn create(path: &Path) -> Result<Credentials> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        durable::create_dir("API credentials", dir, DIR_MODE)?;
    }
    let creds = Credentials::generate()?;
    durable::write(
        "API credentials",
        path,
        creds.to_file_text().as_bytes(),
        FILE_MODE,
    )?;
    log::info!(
        "created API credentials {} (access key id {})",
        path.display(),
        creds.access_key_id
    );
    Ok(creds)
}

fn load(path: &Path, mut file: File) -> Result<Credentials> {
    let refuse = |line: usize, key: &str, message: String| Error::Config {
        file: path.to_path_buf(),
        line,
        key: key.to_string(),
        message,
    };
    // Checked on the open file, so what is checked is what is read.
    let meta = file
        .metadata()
        .map_err(Error::io("stat API credentials", path))?;
    if !meta.is_file() {
        return Err(refuse(0, "", "API credentials: not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refuse(
            0,
            "",
            format!(
                "API credentials file is accessible by group or others (mode {mode:04o}); \
                 it holds a secret key: `chmod 600 {}` (or remove it to make a new key pair)",
                path.display()
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(Error::io("read API credentials", path))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| refuse(0, "", "API credentials file is not valid UTF-8".into()))?;
    parse(&text).map_err(|e| refuse(e.line, e.key, e.message))
}

/// Why a credentials file was refused: the line (0 for the whole file),
/// the key concerned (may be empty) and what is wrong. Never holds the
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub key: &'static str,
    pub message: String,
}

const KEY_ID: &str = "aws_access_key_id";
const SECRET: &str = "aws_secret_access_key";

/// Parse a shared-credentials file and return its `[default]` key pair.
pub fn parse(text: &str) -> std::result::Result<Credentials, ParseError> {
    let err = |line: usize, key: &'static str, message: String| ParseError { line, key, message };
    let mut section: Option<&str> = None;
    let mut seen_default = false;
    let mut key_id: Option<(usize, &str)> = None;
    let mut secret: Option<(usize, &str)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| err(n, "", "unterminated [profile] header".into()))?
                .trim();
            if name == "default" {
                if seen_default {
                    return Err(err(n, "", "second [default] profile".into()));
                }
                seen_default = true;
            }
            section = Some(name);
            continue;
        }
        // configparser splits at the first `=` or `:`; so does this. The
        // line itself is never quoted back: it may hold the secret.
        let Some(at) = line.find(['=', ':']) else {
            return Err(err(
                n,
                "",
                "expected `key = value`, a [profile] header or a comment".into(),
            ));
        };
        let (name, value) = (line[..at].trim(), line[at + 1..].trim());
        let Some(profile) = section else {
            return Err(err(
                n,
                "",
                "`key = value` before any [profile] header".into(),
            ));
        };
        if profile != "default" {
            continue;
        }
        let slot = if name.eq_ignore_ascii_case(KEY_ID) {
            (&mut key_id, KEY_ID)
        } else if name.eq_ignore_ascii_case(SECRET) {
            (&mut secret, SECRET)
        } else {
            continue;
        };
        if slot.0.is_some() {
            return Err(err(
                n,
                slot.1,
                "given twice in the [default] profile".into(),
            ));
        }
        *slot.0 = Some((n, value));
    }
    if !seen_default {
        return Err(err(
            0,
            "",
            format!("no [default] profile (it must hold {KEY_ID} and {SECRET})"),
        ));
    }
    let (id_line, id) =
        key_id.ok_or_else(|| err(0, KEY_ID, "missing from the [default] profile".into()))?;
    let (secret_line, secret) =
        secret.ok_or_else(|| err(0, SECRET, "missing from the [default] profile".into()))?;
    if !(16..=MAX_KEY_LEN).contains(&id.len())
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(err(
            id_line,
            KEY_ID,
            format!("invalid value {id:?}: expected 16 to {MAX_KEY_LEN} letters, digits or `_`"),
        ));
    }
    if !(MIN_SECRET_LEN..=MAX_KEY_LEN).contains(&secret.len())
        || !secret.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(err(
            secret_line,
            SECRET,
            format!(
                "invalid value ({} characters): expected {MIN_SECRET_LEN} to {MAX_KEY_LEN} \
                 printable ASCII characters without spaces",
                secret.chars().count()
            ),
        ));
    }
    Ok(Credentials {
        access_key_id: id.to_string(),
        secret_access_key: secret.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_0600_in_a_0700_dir_then_reused() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("etc/ecs-warden/credentials");
        let first = load_or_create(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        assert_eq!(first.access_key_id.len(), ACCESS_KEY_LEN);
        assert!(first.access_key_id.starts_with(ACCESS_KEY_PREFIX));
        assert!(first
            .access_key_id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert_eq!(first.secret_access_key.len(), SECRET_KEY_LEN);
        assert!(first
            .secret_access_key
            .bytes()
            .all(|b| SECRET_ALPHABET.contains(&b)));

        // Parsed back from the file, and the same keys on the next start.
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(parse(&text).unwrap(), first);
        let second = load_or_create(&path).unwrap();
        assert_eq!(second, first);
        // No temporary files left next to it.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn two_hosts_get_different_keys() {
        let a = Credentials::generate().unwrap();
        let b = Credentials::generate().unwrap();
        assert_ne!(a.access_key_id, b.access_key_id);
        assert_ne!(a.secret_access_key, b.secret_access_key);
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = Credentials {
            access_key_id: "EWLKAAAAAAAAAAAAAAAA".into(),
            secret_access_key: "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-xx".into(),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("EWLKAAAAAAAAAAAAAAAA"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn group_or_world_access_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let creds = Credentials::generate().unwrap();
        for bad in [0o644, 0o640, 0o604, 0o660] {
            durable::write("t", &path, creds.to_file_text().as_bytes(), bad).unwrap();
            let e = load_or_create(&path).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(&format!("{bad:04o}")), "{e}");
            assert!(!e.contains(&creds.secret_access_key), "{e}");
        }
        // Left as it was: the operator decides.
        assert_eq!(mode(&path), 0o660);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(load_or_create(&path).unwrap(), creds);
    }

    #[test]
    fn without_default_profile_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        let text = "[other]\naws_access_key_id = EWLKAAAAAAAAAAAAAAAA\n\
                    aws_secret_access_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n";
        durable::write("t", &path, text.as_bytes(), 0o600).unwrap();
        let e = load_or_create(&path).unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e:?}");
        let e = e.to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("[default]"), "{e}");
        assert!(!e.contains("wJalrXUtnFEMI"), "{e}");
    }

    #[test]
    fn tolerates_comments_whitespace_case_and_other_profiles() {
        let text = "\
# a comment
; another

[dev]
aws_access_key_id = AKIAOTHEROTHEROTHER1
aws_secret_access_key = otherotherotherotherotherotherotherother

  [ default ]
\tAWS_Access_Key_ID=EWLKABCDEFGHIJKLMNOP\t
aws_secret_access_key :   wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY   
region = us-west-2
[later]
aws_access_key_id = AKIALATERLATERLATER1
";
        let c = parse(text).unwrap();
        assert_eq!(c.access_key_id, "EWLKABCDEFGHIJKLMNOP");
        assert_eq!(
            c.secret_access_key,
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        );
    }

    #[test]
    fn malformed_files_are_refused_with_the_line() {
        const S: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let cases: &[(String, usize, &str)] = &[
            (String::new(), 0, "no [default] profile"),
            ("[default]\n".into(), 0, "missing"),
            (
                format!("[default]\naws_secret_access_key = {S}\n"),
                0,
                "missing",
            ),
            (
                "[default]\naws_access_key_id = EWLKAAAAAAAAAAAAAAAA\n".into(),
                0,
                "missing",
            ),
            (
                format!("[default\naws_access_key_id = EWLKAAAAAAAAAAAAAAAA\naws_secret_access_key = {S}\n"),
                1,
                "unterminated",
            ),
            (
                format!("aws_access_key_id = EWLKAAAAAAAAAAAAAAAA\n[default]\naws_secret_access_key = {S}\n"),
                1,
                "before any [profile]",
            ),
            (
                format!("[default]\naws_access_key_id EWLKAAAAAAAAAAAAAAAA\naws_secret_access_key = {S}\n"),
                2,
                "expected `key = value`",
            ),
            (
                format!("[default]\naws_access_key_id = EWLK AAAA\naws_secret_access_key = {S}\n"),
                2,
                "invalid value",
            ),
            (
                "[default]\naws_access_key_id = EWLKAAAAAAAAAAAAAAAA\naws_secret_access_key = short\n"
                    .into(),
                3,
                "invalid value",
            ),
            (
                format!("[default]\naws_access_key_id = EWLKAAAAAAAAAAAAAAAA\naws_access_key_id = EWLKBBBBBBBBBBBBBBBB\naws_secret_access_key = {S}\n"),
                3,
                "twice",
            ),
            (
                format!("[default]\naws_access_key_id = EWLKAAAAAAAAAAAAAAAA\naws_secret_access_key = {S}\n[default]\n"),
                4,
                "second [default]",
            ),
        ];
        for (text, line, what) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, *line, "{text:?}: {e:?}");
            assert!(e.message.contains(what), "{text:?}: {e:?}");
            assert!(!e.message.contains(S), "{e:?}");
        }
    }
}
