//! HTTP/1.1 over the engine's unix socket: one request per connection.
//!
//! A call:
//! 1. connect to the socket; every read and write from here on is bounded
//!    by the call's deadline (none for calls that block by design:
//!    `wait`, following logs);
//! 2. write the head (`Connection: close`) and the body: nothing, a JSON
//!    document, or a file streamed from disk with its size as
//!    `Content-Length` (never held in memory);
//! 3. read the response head (≤ 64 KiB, parsed by `httparse`), skipping
//!    interim `1xx` answers;
//! 4. hand back the body as a reader that undoes its framing
//!    (`Content-Length`, chunked, or until the engine closes).
//!
//! Why not the project's `http.rs` client: it buffers whole bodies, and the
//! engine's answers to `load`, `logs` and `wait` are streams.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const MAX_HEAD: u64 = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// Chunk-size lines and trailers are short; anything longer is not HTTP.
const MAX_LINE: u64 = 4096;
/// Block size for streaming a file into the request.
const COPY_BLOCK: usize = 256 * 1024;

/// The request body.
pub(crate) enum Body<'a> {
    Empty,
    Json(Vec<u8>),
    /// A file and the number of bytes to send from its current position.
    File(&'a mut File, u64),
}

/// The socket with the call's deadline applied to every operation.
pub(crate) struct Conn {
    stream: UnixStream,
    deadline: Option<Instant>,
}

impl Conn {
    pub(crate) fn connect(socket: &Path, deadline: Option<Instant>) -> io::Result<Conn> {
        let stream = UnixStream::connect(socket)?;
        Ok(Conn { stream, deadline })
    }

    /// From now on, no deadline (for the body of a call that blocks by
    /// design, once its head has arrived in time).
    pub(crate) fn clear_deadline(&mut self) {
        self.deadline = None;
    }

    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// A handle that can shut the connection down from another thread,
    /// which ends a blocked read with end-of-file.
    pub(crate) fn shutdown_handle(&self) -> io::Result<UnixStream> {
        self.stream.try_clone()
    }

    fn remaining(&self) -> io::Result<Option<Duration>> {
        match self.deadline {
            None => Ok(None),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the call's deadline passed",
                )),
            },
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.remaining()?;
        self.stream.set_read_timeout(left)?;
        self.stream.read(buf).map_err(timed_out)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.remaining()?;
        self.stream.set_write_timeout(left)?;
        self.stream.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A socket timeout surfaces as `WouldBlock`; name it for what it is.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "the call's deadline passed")
    } else {
        e
    }
}

/// A response whose body has not been read yet.
pub(crate) struct Response {
    pub status: u16,
    pub body: BodyReader,
}

impl Response {
    /// Read the whole body, refusing more than `cap` bytes.
    pub(crate) fn read_body(&mut self, cap: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.body).take(cap + 1).read_to_end(&mut out)?;
        if out.len() as u64 > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("answer larger than {cap} bytes"),
            ));
        }
        Ok(out)
    }
}

/// Write the request and read the response head. A write that fails
/// because the engine already answered and closed (it refuses a load
/// early, for example) still yields that answer when one can be read.
pub(crate) fn call(
    mut conn: Conn,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Body<'_>,
) -> io::Result<Response> {
    let len = match &body {
        Body::Empty => 0,
        Body::Json(b) => b.len() as u64,
        Body::File(_, n) => *n,
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: ecs-warden/{}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if len > 0 || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    let sent = send(&mut conn, head.as_bytes(), body);
    let mut reader = BufReader::with_capacity(64 * 1024, conn);
    match read_head(&mut reader) {
        Ok((status, headers)) => {
            let framing = framing(method, status, &headers)?;
            Ok(Response {
                status,
                body: BodyReader {
                    inner: reader,
                    framing,
                },
            })
        }
        // No answer to read: the write's error is the one that matters.
        Err(read_err) => Err(sent.err().unwrap_or(read_err)),
    }
}

fn send(conn: &mut Conn, head: &[u8], body: Body<'_>) -> io::Result<()> {
    match body {
        Body::Empty => conn.write_all(head)?,
        Body::Json(b) => {
            let mut all = Vec::with_capacity(head.len() + b.len());
            all.extend_from_slice(head);
            all.extend_from_slice(&b);
            conn.write_all(&all)?;
        }
        Body::File(f, n) => {
            conn.write_all(head)?;
            let mut buf = vec![0u8; COPY_BLOCK];
            let mut left = n;
            while left > 0 {
                let want = left.min(COPY_BLOCK as u64) as usize;
                let got = f.read(&mut buf[..want])?;
                if got == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ended {left} bytes before its size"),
                    ));
                }
                conn.write_all(&buf[..got])?;
                left -= got as u64;
            }
        }
    }
    conn.flush()
}

/// Read one response head, skipping interim 1xx answers.
fn read_head(reader: &mut BufReader<Conn>) -> io::Result<(u16, Vec<(String, String)>)> {
    loop {
        let mut head = Vec::new();
        loop {
            let room = MAX_HEAD.saturating_sub(head.len() as u64);
            if room == 0 {
                return Err(invalid("response head larger than 64 KiB"));
            }
            let n = (&mut *reader).take(room).read_until(b'\n', &mut head)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if head.is_empty() {
                        "the engine closed the connection without answering"
                    } else {
                        "the engine closed the connection inside the response head"
                    },
                ));
            }
            if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") || head == b"\r\n" {
                break;
            }
        }
        if head == b"\r\n" || head == b"\n" {
            // Stray blank line between responses.
            continue;
        }
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(invalid("incomplete response head")),
            Err(e) => return Err(invalid(&format!("malformed response head: {e}"))),
        }
        let status = resp.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let headers = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).trim().to_string(),
                )
            })
            .collect();
        return Ok((status, headers));
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

#[derive(Debug)]
enum Framing {
    Empty,
    Length(u64),
    /// Bytes left in the current chunk; `None` before the first size line.
    Chunked {
        left: u64,
        started: bool,
        done: bool,
    },
    UntilClose,
}

fn framing(method: &str, status: u16, headers: &[(String, String)]) -> io::Result<Framing> {
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if let Some(te) = get("Transfer-Encoding") {
        if te
            .rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(Framing::Chunked {
                left: 0,
                started: false,
                done: false,
            });
        }
        return Ok(Framing::UntilClose);
    }
    if let Some(cl) = get("Content-Length") {
        let n = cl
            .parse::<u64>()
            .map_err(|_| invalid(&format!("bad Content-Length {cl:?}")))?;
        return Ok(Framing::Length(n));
    }
    Ok(Framing::UntilClose)
}

/// The response body with its framing undone.
pub(crate) struct BodyReader {
    inner: BufReader<Conn>,
    framing: Framing,
}

impl BodyReader {
    /// See `Conn::clear_deadline`.
    pub(crate) fn clear_deadline(&mut self) {
        self.inner.get_mut().clear_deadline();
    }

    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.inner.get_mut().set_deadline(deadline);
    }

    pub(crate) fn shutdown_handle(&self) -> io::Result<UnixStream> {
        self.inner.get_ref().shutdown_handle()
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        let n = (&mut self.inner)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the engine closed the connection inside a chunked body",
            ));
        }
        if !line.ends_with(b"\n") {
            return Err(invalid("chunk framing line too long"));
        }
        Ok(String::from_utf8_lossy(&line).trim().to_string())
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::Empty => Ok(0),
            Framing::UntilClose => self.inner.read(buf),
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => {
                let want = buf.len().min(left.min(usize::MAX as u64) as usize);
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the engine closed the connection {left} bytes before the body's end"
                        ),
                    ));
                }
                self.framing = Framing::Length(left - n as u64);
                Ok(n)
            }
            Framing::Chunked { done: true, .. } => Ok(0),
            Framing::Chunked {
                left: 0, started, ..
            } => {
                if started {
                    // The CRLF that ends the previous chunk's data.
                    let end = self.read_line()?;
                    if !end.is_empty() {
                        return Err(invalid("chunk data longer than its size"));
                    }
                }
                let line = self.read_line()?;
                let size_hex = line.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size_hex, 16)
                    .map_err(|_| invalid(&format!("bad chunk size line {line:?}")))?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    loop {
                        if self.read_line()?.is_empty() {
                            break;
                        }
                    }
                    self.framing = Framing::Chunked {
                        left: 0,
                        started: true,
                        done: true,
                    };
                    return Ok(0);
                }
                self.framing = Framing::Chunked {
                    left: size,
                    started: true,
                    done: false,
                };
                self.read(buf)
            }
            Framing::Chunked { left, .. } => {
                let want = buf.len().min(left.min(usize::MAX as u64) as usize);
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the engine closed the connection inside a chunk",
                    ));
                }
                self.framing = Framing::Chunked {
                    left: left - n as u64,
                    started: true,
                    done: false,
                };
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    /// A one-shot server on a temporary socket that answers with `raw`
    /// (written in pieces of `piece` bytes, to split framing lines) after
    /// reading the request head; returns the request it read.
    fn serve(raw: Vec<u8>, piece: usize) -> (tempfile::TempDir, thread::JoinHandle<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let h = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&b[..n]);
            }
            for c in raw.chunks(piece.max(1)) {
                s.write_all(c).unwrap();
                s.flush().unwrap();
            }
            req
        });
        (dir, h)
    }

    fn get(dir: &tempfile::TempDir, deadline: Option<Instant>) -> io::Result<(u16, Vec<u8>)> {
        let conn = Conn::connect(&dir.path().join("s.sock"), deadline)?;
        let mut r = call(conn, "GET", "/x", None, Body::Empty)?;
        let body = r.read_body(1 << 20)?;
        Ok((r.status, body))
    }

    #[test]
    fn chunked_body_split_anywhere() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n".to_vec();
        for piece in [1, 3, 7, 1000] {
            let (dir, h) = serve(raw.clone(), piece);
            let (status, body) = get(&dir, None).unwrap();
            assert_eq!(status, 200);
            assert_eq!(body, b"hello, world", "piece size {piece}");
            let req = h.join().unwrap();
            assert!(req.starts_with(b"GET /x HTTP/1.1\r\n"));
        }
    }

    #[test]
    fn content_length_and_short_body() {
        let (dir, _h) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcdEXTRA".to_vec(),
            2,
        );
        assert_eq!(get(&dir, None).unwrap().1, b"abcd");
        let (dir, _h) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            100,
        );
        let err = get(&dir, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    #[test]
    fn deadline_cuts_a_silent_engine() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let _h = thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            thread::sleep(Duration::from_secs(3));
            drop(s);
        });
        let t0 = Instant::now();
        let err = get(&dir, Some(Instant::now() + Duration::from_millis(300))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn malformed_chunk_size_is_an_error() {
        let (dir, _h) = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            100,
        );
        let err = get(&dir, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}
