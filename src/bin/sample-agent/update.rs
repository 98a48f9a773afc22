//! The agent's side of an update, two ways.
//!
//! `request-update` plays the agent on an update message from the control
//! plane, against the warden's unix control socket (plain HTTP/1.1,
//! `Connection: close`):
//! 1. `POST /v1/agent/stage` with `{"location", "signature", "version"?}`;
//! 2. only if that answered 2xx, `POST /v1/agent/perform` with
//!    `{"signature"}`;
//! 3. report both statuses and bodies to whoever asked.
//!
//! `stage-local` imitates the real agent's own staging, as ecs-init expects:
//! 1. copy the build into `ECS_UPDATE_DOWNLOAD_DIR` as
//!    `<random>.ecs-update.bin` (durably);
//! 2. write `desired-image` there: the copy's basename and a newline
//!    (durably, so ecs-init never reads half a name);
//! 3. the caller answers, then exits with code 42.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::durable;
use crate::error::{Error, Result};
use crate::ids;
use crate::introspection::{ApiError, UpdateParams};

pub const STAGE_PATH: &str = "/v1/agent/stage";
pub const PERFORM_PATH: &str = "/v1/agent/perform";
pub const DESIRED_IMAGE: &str = "desired-image";
/// Staging may include a download on the warden's side: be patient.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_RESPONSE: usize = 1 << 20;

/// How one call to the control socket went.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Step {
    /// The warden answered; `body` is its JSON, or its text as a string.
    Answered { status: u16, body: Value },
    /// No HTTP answer (no socket, refused, timed out, garbled).
    Failed { error: String },
}

impl Step {
    fn succeeded(&self) -> bool {
        matches!(self, Step::Answered { status, .. } if (200..300).contains(status))
    }
}

/// The answer to `POST /sample/request-update`.
#[derive(Debug, Serialize)]
pub struct UpdateOutcome {
    pub stage: Step,
    /// `null` when stage did not succeed, so perform was not sent.
    pub perform: Option<Step>,
}

impl UpdateOutcome {
    /// 200 when every step that was sent got an HTTP answer, else 502.
    pub fn http_status(&self) -> u16 {
        let answered = |s: &Step| matches!(s, Step::Answered { .. });
        if answered(&self.stage) && self.perform.as_ref().is_none_or(answered) {
            200
        } else {
            502
        }
    }
}

/// Steps 1 to 3 of `request-update`.
pub fn request_update(socket: &Path, params: &UpdateParams) -> UpdateOutcome {
    let mut stage_body = json!({
        "location": params.location,
        "signature": params.signature,
    });
    if let Some(version) = &params.version {
        stage_body["version"] = json!(version);
    }
    let stage = call(socket, STAGE_PATH, &stage_body);
    let perform = stage.succeeded().then(|| {
        call(
            socket,
            PERFORM_PATH,
            &json!({ "signature": params.signature }),
        )
    });
    UpdateOutcome { stage, perform }
}

fn call(socket: &Path, path: &str, body: &Value) -> Step {
    match post_json(socket, path, body) {
        Ok((status, bytes)) => Step::Answered {
            status,
            body: decode_body(&bytes),
        },
        Err(e) => Step::Failed {
            error: e.to_string(),
        },
    }
}

fn decode_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// One `POST` with a JSON body over a unix socket; returns status and body.
pub fn post_json(socket: &Path, path: &str, body: &Value) -> Result<(u16, Vec<u8>)> {
    let fail = |message: String| Error::Control {
        socket: socket.to_path_buf(),
        message,
    };
    let payload = serde_json::to_vec(body).map_err(|e| fail(e.to_string()))?;
    let mut stream =
        UnixStream::connect(socket).map_err(|e| fail(format!("cannot connect: {e}")))?;
    stream
        .set_read_timeout(Some(CONTROL_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CONTROL_TIMEOUT)))
        .map_err(|e| fail(e.to_string()))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\n\
         Host: localhost\r\n\
         User-Agent: ecs-warden-sample-agent\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        payload.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&payload))
        .and_then(|()| stream.flush())
        .map_err(|e| fail(format!("cannot send POST {path}: {e}")))?;
    read_response(&mut stream).map_err(|e| fail(format!("POST {path}: {e}")))
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads one HTTP/1.1 response: stops at the end of the body as its headers
/// frame it (length, chunked, or connection close), not only at EOF.
fn read_response(stream: &mut impl Read) -> std::result::Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("cannot read the response: {e}"))?;
        let eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(format!("response is larger than {MAX_RESPONSE} bytes"));
        }

        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if eof => {
                return Err("connection closed before the response head ended".into())
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(format!("malformed response: {e}")),
        };
        let status = response.code.unwrap_or_default();
        if status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok((status, Vec::new()));
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
        };
        let framing = if header("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
            Framing::Chunked
        } else if let Some(len) = header("content-length") {
            Framing::Length(
                len.parse()
                    .map_err(|_| format!("bad content-length {len:?}"))?,
            )
        } else {
            Framing::UntilClose
        };
        let body = &buf[head_len..];
        match framing {
            Framing::Length(len) if body.len() >= len => return Ok((status, body[..len].to_vec())),
            Framing::Length(len) if eof => {
                return Err(format!(
                    "connection closed after {} of {len} body bytes",
                    body.len()
                ))
            }
            Framing::Chunked => match dechunk(body)? {
                Some(body) => return Ok((status, body)),
                None if eof => return Err("connection closed inside a chunked body".into()),
                None => {}
            },
            Framing::UntilClose if eof => return Ok((status, body.to_vec())),
            _ => {}
        }
    }
}

/// Decodes a chunked body; `None` while it is incomplete.
fn dechunk(mut data: &[u8]) -> std::result::Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&data[..line_end]);
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// What `stage-local` wrote.
#[derive(Debug, Serialize)]
pub struct Staged {
    pub staged: PathBuf,
    pub desired_image: PathBuf,
}

/// Steps 1 and 2 of `stage-local`.
pub fn stage_local(file: &Path, download_dir: &Path) -> std::result::Result<Staged, ApiError> {
    let bytes = std::fs::read(file).map_err(|e| {
        ApiError::bad_request(Error::io("read the build to stage", file, e).to_string())
    })?;
    let internal = |e: Error| ApiError::internal(&e);
    durable::create_dir_all(download_dir, "update download dir").map_err(internal)?;
    let name = format!("{}.ecs-update.bin", ids::random_hex(16));
    let staged = download_dir.join(&name);
    durable::write(&staged, "staged build", 0o644, &bytes).map_err(internal)?;
    let desired_image = download_dir.join(DESIRED_IMAGE);
    durable::write(
        &desired_image,
        "desired-image file",
        0o644,
        format!("{name}\n").as_bytes(),
    )
    .map_err(internal)?;
    Ok(Staged {
        staged,
        desired_image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> std::result::Result<(u16, Vec<u8>), String> {
        read_response(&mut std::io::Cursor::new(bytes.to_vec()))
    }

    #[test]
    fn reads_each_framing() {
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing").unwrap(),
            (200, b"{}".to_vec())
        );
        assert_eq!(
            read(b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap(),
            (409, b"abcde".to_vec())
        );
        assert_eq!(
            read(b"HTTP/1.0 500 Oops\r\n\r\nuntil close").unwrap(),
            (500, b"until close".to_vec())
        );
        assert_eq!(
            read(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(),
            (204, vec![])
        );
        assert!(read(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").is_err());
        assert!(read(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
        assert!(read(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn bodies_are_json_when_they_can_be() {
        assert_eq!(decode_body(b"{\"a\":1}"), json!({"a": 1}));
        assert_eq!(decode_body(b"plain"), json!("plain"));
        assert_eq!(decode_body(b""), Value::Null);
    }
}
