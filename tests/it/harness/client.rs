//! The one raw HTTP/1.1 client of the tests: exactly the bytes a test
//! writes go out (malformed requests included), over the control socket
//! (`To::Unix`) or loopback TCP (`To::Tcp`), and the whole answer is read
//! until the server closes the connection.
//!
//! 1. `request_bytes` builds a request (or a test writes its own bytes);
//! 2. `raw` connects, sends them, reads to EOF and parses the answer
//!    (`Resp`); `Stream` does the same in steps, for a request sent in
//!    pieces or a connection held open.
//!
//! `http` is the short form for a plain bodyless request to a loopback port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `(status, __type, message)` of an error answer.
    pub fn error(&self) -> (u16, String, String) {
        let v = self.json();
        (
            self.status,
            v["__type"].as_str().unwrap_or("").to_string(),
            v["message"].as_str().unwrap_or("").to_string(),
        )
    }
}

pub fn parse_response(buf: &[u8]) -> std::io::Result<Resp> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut hs);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "response ended inside its head: {:?}",
                    String::from_utf8_lossy(buf)
                ),
            ))
        }
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    Ok(Resp {
        status: r.code.unwrap_or(0),
        headers: r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: buf[n..].to_vec(),
    })
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum To {
    Unix(PathBuf),
    Tcp(u16),
}

pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub fn connect(to: &To) -> std::io::Result<Stream> {
        Ok(match to {
            To::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
            To::Tcp(port) => Stream::Tcp(TcpStream::connect(("127.0.0.1", *port))?),
        })
    }

    pub fn set_timeout(&self, d: Duration) {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(Some(d)).unwrap();
                s.set_write_timeout(Some(d)).unwrap();
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(d)).unwrap();
                s.set_write_timeout(Some(d)).unwrap();
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.write_all(bytes),
            Stream::Tcp(s) => s.write_all(bytes),
        }
    }

    pub fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        match self {
            Stream::Unix(s) => s.read_to_end(&mut buf)?,
            Stream::Tcp(s) => s.read_to_end(&mut buf)?,
        };
        Ok(buf)
    }

    /// Read the whole answer (the server closes after it) and parse it.
    pub fn response(&mut self) -> std::io::Result<Resp> {
        let buf = self.read_all()?;
        parse_response(&buf)
    }
}

/// Send `bytes` as they are and read the answer.
pub fn raw(to: &To, bytes: &[u8], timeout: Duration) -> std::io::Result<Resp> {
    let mut s = Stream::connect(to)?;
    s.set_timeout(timeout);
    s.send(bytes)?;
    s.response()
}

/// A request's bytes: head with the given headers plus `Content-Length`
/// (when `content_length` is `None`, the body's length), then the body.
pub fn request_bytes(
    method: &str,
    path: &str,
    headers: &[(String, String)],
    content_length: Option<usize>,
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            content_length.unwrap_or(body.len())
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out
}

/// One bodyless request to `127.0.0.1:port` (60 s timeout); the status and
/// the body as text. Panics when the exchange fails.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let headers = [("Host".to_string(), "127.0.0.1".to_string())];
    let r = raw(
        &To::Tcp(port),
        &request_bytes(method, path, &headers, None, b""),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"));
    (r.status, r.text())
}
