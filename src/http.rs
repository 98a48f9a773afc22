//! A deliberately small HTTP/1.1 server and client, one request per
//! connection (`Connection: close`), for the control socket and the
//! loopback API.
//!
//! Why not a crate: the control API must stay responsive while any client
//! misbehaves. Here every connection gets its own thread and a hard
//! deadline for the whole request (a client that sends half a request is
//! cut off without holding anyone else up), the head and the body have
//! caps, and the number of connections is bounded. Parsing the head is
//! `httparse`'s job.
//!
//! Serving a connection:
//! 1. accept; when `max_conns` are already open, answer 503 at once;
//! 2. read the head (≤ 16 KiB) and the body (≤ `max_body`, by
//!    `Content-Length`; chunked bodies are refused) before `deadline`;
//! 3. hand the request to the handler and write its response;
//! 4. close; after refusing a request that was not read to its end (body
//!    or head too large, malformed), first stop sending and discard what
//!    the client still sends for a moment ("lingering close"): closing a
//!    socket with unread input resets the connection (TCP RST; ECONNRESET
//!    on a unix socket), and the reset destroys the answer before the
//!    client reads it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// Lingering close: how long, and how many bytes, to discard at most.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw query string (after `?`), possibly empty.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// True when the request came over TCP (must be authenticated).
    pub tcp: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(&self.query, name)
    }
}

pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Response {
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        Response::new(status, "application/json", body)
    }

    pub fn header(mut self, k: &str, v: &str) -> Response {
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed before sending anything: not worth an answer.
    Closed,
    /// The deadline passed with the request incomplete.
    Timeout,
    HeadTooLarge,
    BodyTooLarge {
        limit: usize,
    },
    Malformed(String),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "connection closed"),
            ReadError::Timeout => write!(f, "request not received in time"),
            ReadError::HeadTooLarge => write!(f, "request head over {MAX_HEAD} bytes"),
            ReadError::BodyTooLarge { limit } => write!(f, "request body over {limit} bytes"),
            ReadError::Malformed(m) => write!(f, "malformed request: {m}"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A connection of either kind.
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(d),
            Conn::Tcp(s) => s.set_read_timeout(d),
        }
    }
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_write_timeout(d),
            Conn::Tcp(s) => s.set_write_timeout(d),
        }
    }
    fn shutdown(&self) {
        self.shutdown_how(Shutdown::Both);
    }
    fn shutdown_how(&self, how: Shutdown) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(how),
            Conn::Tcp(s) => s.shutdown(how),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// Read with the socket timeout set to what is left before `deadline`.
fn read_some(conn: &mut Conn, buf: &mut [u8], deadline: Instant) -> Result<usize, ReadError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ReadError::Timeout);
    }
    conn.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
    loop {
        match conn.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ReadError::Timeout)
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

fn owned_headers(hs: &[httparse::Header]) -> Vec<(String, String)> {
    hs.iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// Read one request, head and body, before `deadline`.
pub fn read_request(
    conn: &mut Conn,
    deadline: Instant,
    max_body: usize,
    tcp: bool,
) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head_len, mut req) = loop {
        let n = read_some(conn, &mut chunk, deadline)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Malformed("connection closed inside the request head".into())
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let target = parsed.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let req = Request {
                    method: parsed.method.unwrap_or("").to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    headers: owned_headers(parsed.headers),
                    body: Vec::new(),
                    tcp,
                };
                break (len, req);
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(ReadError::HeadTooLarge);
                }
            }
            Err(e) => return Err(ReadError::Malformed(e.to_string())),
        }
    };
    if req
        .header("Transfer-Encoding")
        .is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
    {
        return Err(ReadError::Malformed(
            "chunked request bodies are not supported; send Content-Length".into(),
        ));
    }
    let len = match req.header("Content-Length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| ReadError::Malformed(format!("bad Content-Length {v:?}")))?,
    };
    if len > max_body {
        return Err(ReadError::BodyTooLarge { limit: max_body });
    }
    let mut body = buf.split_off(head_len);
    while body.len() < len {
        let n = read_some(conn, &mut chunk, deadline)?;
        if n == 0 {
            return Err(ReadError::Malformed(format!(
                "connection closed after {} of {len} body bytes",
                body.len()
            )));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    req.body = body;
    Ok(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

pub fn write_response(conn: &mut impl Write, resp: &Response) -> io::Result<()> {
    let mut out = Vec::with_capacity(resp.body.len() + 256);
    write!(out, "HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status))?;
    for (k, v) in &resp.headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    write!(
        out,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body.len()
    )?;
    out.extend_from_slice(&resp.body);
    conn.write_all(&out)?;
    conn.flush()
}

/// What a server does with requests.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> Response;
    /// The answer to a request that could not be read.
    fn reject(&self, err: &ReadError) -> Response;
}

/// Limits for one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_conns: usize,
    pub max_body: usize,
    pub request_timeout: Duration,
}

pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Conn::Tcp(s)
            }),
        }
    }
}

/// Accept connections forever on a dedicated thread; one thread per
/// connection, at most `limits.max_conns` at once.
pub fn serve(name: &str, listener: Listener, limits: Limits, handler: Arc<dyn Handler>) {
    let open = Arc::new(AtomicUsize::new(0));
    let tcp = matches!(listener, Listener::Tcp(_));
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("{name}-accept"))
        .spawn(move || loop {
            let mut conn = match listener.accept() {
                Ok(c) => c,
                Err(e) => {
                    log::warn!("{name}: accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if open.fetch_add(1, Ordering::SeqCst) >= limits.max_conns {
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = conn.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = write_response(
                    &mut conn,
                    &Response::new(503, "text/plain", "too many connections\n"),
                );
                continue;
            }
            let handler = handler.clone();
            let open2 = open.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-conn"))
                .spawn(move || {
                    serve_conn(conn, limits, tcp, &*handler);
                    open2.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                open.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .expect("spawn accept thread");
}

fn serve_conn(mut conn: Conn, limits: Limits, tcp: bool, handler: &dyn Handler) {
    let deadline = Instant::now() + limits.request_timeout;
    let (resp, unread) = match read_request(&mut conn, deadline, limits.max_body, tcp) {
        Ok(req) => (handler.handle(req), false),
        Err(ReadError::Closed) => return,
        Err(e) => {
            // A timeout or an i/o error left nothing to read that matters.
            let unread = matches!(
                e,
                ReadError::BodyTooLarge { .. } | ReadError::HeadTooLarge | ReadError::Malformed(_)
            );
            (handler.reject(&e), unread)
        }
    };
    let _ = conn.set_write_timeout(Some(limits.request_timeout));
    let _ = write_response(&mut conn, &resp);
    if unread {
        linger(&mut conn);
    }
    conn.shutdown();
}

/// Lingering close: end our side, then read and discard the client's
/// input until it closes (it has our answer by then), for at most
/// `LINGER_TIME` and `LINGER_BYTES`, so that closing does not reset the
/// connection and destroy the answer in flight.
fn linger(conn: &mut Conn) {
    conn.shutdown_how(Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIME;
    let mut buf = [0u8; 16 * 1024];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match read_some(conn, &mut buf, deadline) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
}

/// A response read by the client.
#[derive(Debug)]
pub struct ClientResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Send one request on `conn` and read the whole response.
pub fn client_request(
    mut conn: Conn,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<ClientResponse> {
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    let mut out = Vec::with_capacity(body.len() + 256);
    write!(out, "{method} {path} HTTP/1.1\r\nHost: localhost\r\n")?;
    for (k, v) in headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    write!(
        out,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.extend_from_slice(body);
    conn.write_all(&out)?;
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf)?;
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut hs);
    let head_len = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "response ended inside its head",
            ))
        }
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    };
    Ok(ClientResponse {
        status: resp.code.unwrap_or(0),
        headers: owned_headers(resp.headers),
        body: buf[head_len..].to_vec(),
    })
}

pub fn unix_request(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<ClientResponse> {
    let conn = UnixStream::connect(socket)?;
    client_request(
        Conn::Unix(conn),
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
        timeout,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_encode("arn:aws/x"), "arn%3Aaws%2Fx");
        assert_eq!(
            query_param("a=1&taskarn=x%2Fy", "taskarn").as_deref(),
            Some("x/y")
        );
    }
}
