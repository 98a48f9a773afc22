//! A deliberately small HTTP/1.1 server and client, one request per
//! connection (`Connection: close`), for the control socket and the
//! loopback API.
//!
//! Why not a crate: the control API must stay responsive while any client
//! misbehaves. Here every connection gets its own thread and a hard
//! deadline for the whole request (a client that sends half a request is
//! cut off without holding anyone else up), the head and the body have
//! caps, and the number of connections is bounded without letting a flood
//! lock out `status` or `stop`. Parsing the head is `httparse`'s job.
//!
//! Serving a connection:
//! 1. accept. At most `max_conns` connections have a thread; when they are
//!    all taken, the oldest connection that is still sending its request
//!    (else the oldest waiting for a slow slot, step 3) is cut off
//!    (answered 503) to make room, so a new client always gets in: a real
//!    client sends its whole request within a moment of connecting, while
//!    idle sockets and slowloris heads are exactly the old, incomplete
//!    ones. Only when every connection is being answered is the new one
//!    refused: 503, written with the lingering close (step 5) on a
//!    short-lived thread of its own;
//! 2. read the head (≤ 16 KiB) and the body (≤ `max_body`, framed by
//!    `Content-Length` as RFC 9112 §6.3 says: see `body_length`) before
//!    `request_timeout`;
//! 3. a request the handler calls slow (one that fetches from the network,
//!    such as an update resolving its manifest) waits, at most `SLOW_WAIT`,
//!    for one of `max_slow` slots, else gets 503; everything else (status,
//!    stop, metrics) is answered at once. So slow requests can hold at most
//!    `max_slow` threads busy, and cheap ones never queue behind them;
//! 4. hand the request to the handler and write its response;
//! 5. close; after refusing a request that was not read to its end (body
//!    or head too large, malformed, or refused at accept), first stop
//!    sending and discard what the client still sends for a moment
//!    ("lingering close"): closing a socket with unread input resets the
//!    connection (TCP RST; ECONNRESET on a unix socket), and the reset
//!    destroys the answer before the client reads it.
//!
//! Limits per peer would not help here: every TCP peer is 127.0.0.1 (the
//! API listens on loopback only) and every unix peer is root (the socket
//! is 0600). The bookkeeping (the accept thread's table of connections,
//! each connection's phase in an atomic, the slow slots' semaphore) is the
//! server's own; no program state is shared.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// Lingering close: how long, and how many bytes, to discard at most.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;
/// Longest wait of a slow request for one of the `max_slow` slots.
pub const SLOW_WAIT: Duration = Duration::from_secs(5);
/// Connections refused at accept (all busy) that are being answered at
/// once; beyond this a refused connection is closed unanswered.
const MAX_REFUSING: usize = 16;

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

    /// Set header `k` to `v`, replacing every value it had (names compare
    /// without case, as HTTP's do).
    pub fn set_header(mut self, k: &str, v: &str) -> Response {
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        self.header(k, v)
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
    /// A body framed other than by `Content-Length` (chunked).
    LengthRequired,
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
            ReadError::LengthRequired => write!(
                f,
                "chunked request bodies are not supported: send Content-Length"
            ),
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

// I/O on a shared `&Conn` (the accept thread keeps a reference to cut a
// connection off), as the std streams allow.
impl Read for &Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => (&*s).read(buf),
            Conn::Tcp(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => (&*s).write(buf),
            Conn::Tcp(s) => (&*s).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => (&*s).flush(),
            Conn::Tcp(s) => (&*s).flush(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

/// Read with the socket timeout set to what is left before `deadline`.
fn read_some(mut conn: &Conn, buf: &mut [u8], deadline: Instant) -> Result<usize, ReadError> {
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
    conn: &Conn,
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
    let len = body_length(&req.headers, max_body)?;
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

/// The length of a request's body, by RFC 9112 §6.3 (the connection is
/// closed after every answer, as it requires for each refusal here):
/// - `Transfer-Encoding` together with `Content-Length` is refused (400):
///   the two disagree on the framing, the mark of request smuggling;
/// - `Transfer-Encoding` whose last coding is not `chunked` cannot be
///   framed at all (400); a chunked body is not supported here (411: send
///   `Content-Length`);
/// - `Content-Length` is decimal digits only (no sign, no blanks inside);
///   repeated fields and comma-separated lists count as the one value when
///   every element is valid and all are the same (§6.3 item 5), and are
///   refused otherwise (400);
/// - no framing field: no body.
///
/// A length above `max_body` is `BodyTooLarge`.
fn body_length(headers: &[(String, String)], max_body: usize) -> Result<usize, ReadError> {
    fn fields<'a>(
        headers: &'a [(String, String)],
        name: &'static str,
    ) -> impl Iterator<Item = &'a str> {
        headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    let has_length = fields(headers, "Content-Length").next().is_some();
    let codings: Vec<&str> = fields(headers, "Transfer-Encoding")
        .flat_map(|v| v.split(','))
        .map(|c| c.trim_matches([' ', '\t']))
        .filter(|c| !c.is_empty())
        .collect();
    if fields(headers, "Transfer-Encoding").next().is_some() {
        if has_length {
            return Err(ReadError::Malformed(
                "both Transfer-Encoding and Content-Length: the framing is ambiguous (RFC 9112 §6.3)"
                    .into(),
            ));
        }
        if !codings
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case("chunked"))
        {
            return Err(ReadError::Malformed(format!(
                "Transfer-Encoding {:?} does not end in chunked: the body length cannot be known (RFC 9112 §6.3)",
                codings.join(", ")
            )));
        }
        return Err(ReadError::LengthRequired);
    }
    let mut value: Option<u64> = None;
    let mut too_large = false;
    for field in fields(headers, "Content-Length") {
        let bad = || ReadError::Malformed(format!("invalid Content-Length {field:?}"));
        let mut elements = 0;
        for element in field.split(',').map(|e| e.trim_matches([' ', '\t'])) {
            if element.is_empty() {
                continue;
            }
            if !element.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            elements += 1;
            // All digits: a failed parse can only be an overflow.
            let Ok(n) = element.parse::<u64>() else {
                too_large = true;
                continue;
            };
            match value {
                Some(v) if v != n => {
                    return Err(ReadError::Malformed(format!(
                        "conflicting Content-Length values ({v} and {n})"
                    )))
                }
                _ => value = Some(n),
            }
        }
        if elements == 0 {
            return Err(bad());
        }
    }
    if too_large && value.is_some() {
        return Err(ReadError::Malformed(
            "conflicting Content-Length values".into(),
        ));
    }
    match value {
        _ if too_large => Err(ReadError::BodyTooLarge { limit: max_body }),
        None => Ok(0),
        Some(n) if n > max_body as u64 => Err(ReadError::BodyTooLarge { limit: max_body }),
        Some(n) => Ok(n as usize),
    }
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
        411 => "Length Required",
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
    /// Whether answering `req` may take long (it fetches from the network):
    /// such requests share the listener's `max_slow` slots.
    fn is_slow(&self, _req: &Request) -> bool {
        false
    }
    /// The answer when the server is too busy for a request (503).
    fn busy(&self, why: &str) -> Response {
        Response::new(503, "text/plain", format!("{why}\n"))
    }
}

/// Limits for one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections with a thread at once (see the module's step 1).
    pub max_conns: usize,
    /// Slow requests (`Handler::is_slow`) answered at once.
    pub max_slow: usize,
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

/// Cheap requests (not `Handler::is_slow`) being answered, process-wide:
/// `wait_for_answers` lets a warden that is exiting finish writing them.
static ANSWERING: AtomicUsize = AtomicUsize::new(0);

/// Wait (at most `max`) until no cheap request is being answered, so the
/// answer to `stop` reaches its caller before the process exits. Call it
/// once the main loop is gone: handlers still waiting for it then fail at
/// once, so this is short.
pub fn wait_for_answers(max: Duration) {
    let until = Instant::now() + max;
    while ANSWERING.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Counts one cheap answer in `ANSWERING` while it lives.
struct Answering;

impl Answering {
    fn new() -> Answering {
        ANSWERING.fetch_add(1, Ordering::SeqCst);
        Answering
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        ANSWERING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where a connection is; only the phases before `BUSY` may be cut off.
const READING: u8 = 0;
const WAITING: u8 = 1;
const BUSY: u8 = 2;
const EVICTED: u8 = 3;

/// One connection, shared by its thread (which owns it) and the accept
/// thread's table (which holds it weakly, to cut it off).
struct Slot {
    phase: AtomicU8,
    conn: Conn,
}

impl Slot {
    fn advance(&self, from: u8, to: u8) -> bool {
        self.phase
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn evicted(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == EVICTED
    }
}

/// The `max_slow` slots: a counting semaphore whose waiters also wake when
/// they are cut off.
struct SlowSlots {
    max: usize,
    used: Mutex<usize>,
    changed: Condvar,
}

/// A slow slot held; given back when dropped.
struct SlowSlot<'a>(&'a SlowSlots);

impl Drop for SlowSlot<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        self.0.changed.notify_all();
    }
}

impl SlowSlots {
    /// Take a slot before `until`; None when cut off or out of time.
    fn acquire(&self, slot: &Slot, until: Instant) -> Option<SlowSlot<'_>> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if slot.evicted() {
                return None;
            }
            if *used < self.max {
                *used += 1;
                return Some(SlowSlot(self));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            used = self
                .changed
                .wait_timeout(used, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wake the waiters, so a cut-off one notices.
    fn wake(&self) {
        let _used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }
}

/// Accept connections forever on a dedicated thread; one thread per
/// connection, at most `limits.max_conns` at once (module doc, step 1).
pub fn serve(name: &str, listener: Listener, limits: Limits, handler: Arc<dyn Handler>) {
    let tcp = matches!(listener, Listener::Tcp(_));
    let name = name.to_string();
    let slow = Arc::new(SlowSlots {
        max: limits.max_slow.max(1),
        used: Mutex::new(0),
        changed: Condvar::new(),
    });
    let refusing = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(format!("{name}-accept"))
        .spawn(move || {
            // Oldest first; entries whose thread has ended are dropped at
            // the next accept.
            let mut table: Vec<Weak<Slot>> = Vec::new();
            loop {
                let conn = match listener.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("{name}: accept: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                table.retain(|w| w.strong_count() > 0);
                if table.len() >= limits.max_conns && !evict_oldest(&table, &slow) {
                    refuse(&name, conn, &*handler, &refusing);
                    continue;
                }
                let slot = Arc::new(Slot {
                    phase: AtomicU8::new(READING),
                    conn,
                });
                table.push(Arc::downgrade(&slot));
                let (handler, slow) = (handler.clone(), slow.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("{name}-conn"))
                    .spawn(move || serve_conn(&slot, limits, tcp, &*handler, &slow));
                if let Err(e) = spawned {
                    log::warn!("{name}: cannot start a connection thread: {e}");
                }
            }
        })
        .expect("spawn accept thread");
}

/// Cut off the oldest connection still reading its request, else the
/// oldest waiting for a slow slot (its request came complete: more likely
/// a real client); false when every connection is being answered.
fn evict_oldest(table: &[Weak<Slot>], slow: &SlowSlots) -> bool {
    for slot in table.iter().filter_map(Weak::upgrade) {
        if slot.advance(READING, EVICTED) {
            // Its blocked read returns at once; it answers 503.
            slot.conn.shutdown_how(Shutdown::Read);
            return true;
        }
    }
    for slot in table.iter().filter_map(Weak::upgrade) {
        if slot.advance(WAITING, EVICTED) {
            slow.wake();
            return true;
        }
    }
    false
}

/// Every connection is being answered: 503 on a thread of its own, with
/// the lingering close, so the client reads it (at most `MAX_REFUSING` at
/// once; beyond, the connection is closed unanswered).
fn refuse(name: &str, conn: Conn, handler: &dyn Handler, refusing: &Arc<AtomicUsize>) {
    if refusing.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let resp = handler.busy("too many connections: every one is being answered; try again");
    let refusing2 = refusing.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("{name}-refuse"))
        .spawn(move || {
            let _ = conn.set_write_timeout(Some(Duration::from_millis(500)));
            let _ = write_response(&mut &conn, &resp);
            linger(&conn);
            conn.shutdown();
            refusing2.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        refusing.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve_conn(slot: &Slot, limits: Limits, tcp: bool, handler: &dyn Handler, slow: &SlowSlots) {
    let conn = &slot.conn;
    let deadline = Instant::now() + limits.request_timeout;
    let read = read_request(conn, deadline, limits.max_body, tcp);
    // Held until the answer is written (see `wait_for_answers`).
    let mut answering: Option<Answering> = None;
    let evicted_answer = || {
        handler.busy("the server is busy: this connection was the oldest one still sending its request or waiting, and was cut off to make room; try again")
    };
    let (resp, unread) = match read {
        _ if slot.evicted() => (evicted_answer(), false),
        Ok(req) if handler.is_slow(&req) => {
            let wait_until = Instant::now() + SLOW_WAIT;
            if !slot.advance(READING, WAITING) {
                (evicted_answer(), false)
            } else {
                match slow.acquire(slot, wait_until) {
                    Some(_slot_held) if slot.advance(WAITING, BUSY) => (handler.handle(req), false),
                    _ if slot.evicted() => (evicted_answer(), false),
                    _ => (
                        handler.busy(&format!(
                            "too many slow requests (such as updates resolving their manifest) at once: {} are being answered; try again",
                            slow.max
                        )),
                        false,
                    ),
                }
            }
        }
        Ok(req) => {
            if slot.advance(READING, BUSY) {
                answering = Some(Answering::new());
                (handler.handle(req), false)
            } else {
                (evicted_answer(), false)
            }
        }
        Err(ReadError::Closed) => return,
        Err(e) => {
            // A timeout or an i/o error left nothing to read that matters.
            let unread = matches!(
                e,
                ReadError::BodyTooLarge { .. }
                    | ReadError::HeadTooLarge
                    | ReadError::Malformed(_)
                    | ReadError::LengthRequired
            );
            (handler.reject(&e), unread)
        }
    };
    let _ = conn.set_write_timeout(Some(limits.request_timeout));
    let _ = write_response(&mut &*conn, &resp);
    if unread {
        linger(conn);
    }
    conn.shutdown();
    drop(answering);
}

/// Lingering close: end our side, then read and discard the client's
/// input until it closes (it has our answer by then), for at most
/// `LINGER_TIME` and `LINGER_BYTES`, so that closing does not reset the
/// connection and destroy the answer in flight.
fn linger(conn: &Conn) {
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

    use std::sync::mpsc;

    /// Answers `/block` only once told to (so its connection stays busy),
    /// everything else at once.
    struct Blocking {
        entered: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl Handler for Blocking {
        fn handle(&self, req: Request) -> Response {
            if req.path == "/block" {
                let _ = self.entered.lock().unwrap().send(());
                let _ = self.release.lock().unwrap().recv();
            }
            Response::new(200, "text/plain", "ok\n")
        }
        fn reject(&self, err: &ReadError) -> Response {
            Response::new(400, "text/plain", err.to_string())
        }
    }

    enum Addr {
        Unix(std::path::PathBuf),
        Tcp(u16),
    }

    /// A server on a unix socket in `dir` (or on loopback TCP) with
    /// `max_conns`; the sender that releases `/block` answers and the
    /// receiver that says one began.
    fn server(
        dir: &std::path::Path,
        max_conns: usize,
        tcp: bool,
    ) -> (Addr, mpsc::Sender<()>, mpsc::Receiver<()>) {
        let (listener, addr) = if tcp {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            (Listener::Tcp(l), Addr::Tcp(port))
        } else {
            let sock = dir.join("s.sock");
            (
                Listener::Unix(UnixListener::bind(&sock).unwrap()),
                Addr::Unix(sock),
            )
        };
        let (etx, erx) = mpsc::channel();
        let (rtx, rrx) = mpsc::channel();
        serve(
            "test",
            listener,
            Limits {
                max_conns,
                max_slow: 1,
                max_body: 1024,
                request_timeout: Duration::from_secs(10),
            },
            Arc::new(Blocking {
                entered: Mutex::new(etx),
                release: Mutex::new(rrx),
            }),
        );
        (addr, rtx, erx)
    }

    fn connect(addr: &Addr) -> Conn {
        let c = match addr {
            Addr::Unix(p) => Conn::Unix(UnixStream::connect(p).unwrap()),
            Addr::Tcp(port) => Conn::Tcp(TcpStream::connect(("127.0.0.1", *port)).unwrap()),
        };
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }

    fn send(addr: &Addr, req: &[u8]) -> Conn {
        let c = connect(addr);
        (&c).write_all(req).unwrap();
        c
    }

    fn answer(c: Conn) -> io::Result<String> {
        let mut buf = Vec::new();
        (&c).read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Every connection busy: a new one gets its 503 even though it sent
    /// more than the server reads (the lingering close keeps the answer
    /// from being destroyed by a reset).
    #[test]
    fn refused_at_accept_the_client_still_reads_its_503() {
        for tcp in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (addr, release, entered) = server(dir.path(), 2, tcp);
            let busy: Vec<_> = (0..2)
                .map(|_| send(&addr, b"GET /block HTTP/1.1\r\n\r\n"))
                .collect();
            for _ in 0..2 {
                entered.recv_timeout(Duration::from_secs(5)).unwrap();
            }
            for i in 0..20 {
                let mut req = b"POST /x HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".to_vec();
                req.extend(vec![b'x'; 100_000]);
                let c = connect(&addr);
                let _ = (&c).write_all(&req);
                let got = answer(c)
                    .unwrap_or_else(|e| panic!("refusal {i} (tcp: {tcp}): no answer: {e}"));
                assert!(got.starts_with("HTTP/1.1 503"), "refusal {i}: {got:?}");
            }
            for _ in 0..2 {
                release.send(()).unwrap();
            }
            for c in busy {
                assert!(answer(c).unwrap().starts_with("HTTP/1.1 200"));
            }
        }
    }

    /// Connections that send nothing are cut off, oldest first, to make
    /// room for one that sends its request.
    #[test]
    fn the_oldest_incomplete_connection_makes_room() {
        for tcp in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (addr, _release, _entered) = server(dir.path(), 2, tcp);
            let idle: Vec<_> = (0..2)
                .map(|_| {
                    let c = send(&addr, b"GET /x HTT");
                    std::thread::sleep(Duration::from_millis(50));
                    c
                })
                .collect();
            let got = answer(send(&addr, b"GET /x HTTP/1.1\r\n\r\n")).unwrap();
            assert!(got.starts_with("HTTP/1.1 200"), "tcp {tcp}: {got:?}");
            let mut idle = idle.into_iter();
            let oldest = answer(idle.next().unwrap()).unwrap();
            assert!(oldest.starts_with("HTTP/1.1 503"), "tcp {tcp}: {oldest:?}");
            // The younger one is still being read: it completes normally.
            let young = idle.next().unwrap();
            (&young).write_all(b"P/1.1\r\n\r\n").unwrap();
            assert!(answer(young).unwrap().starts_with("HTTP/1.1 200"));
        }
    }

    fn len(fields: &[(&str, &str)]) -> Result<usize, String> {
        let hs: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        body_length(&hs, 100).map_err(|e| match e {
            ReadError::Malformed(_) => "400".into(),
            ReadError::LengthRequired => "411".into(),
            ReadError::BodyTooLarge { .. } => "413".into(),
            other => other.to_string(),
        })
    }

    #[test]
    fn body_framing() {
        let cl = "content-length";
        let te = "Transfer-Encoding";
        assert_eq!(len(&[]), Ok(0));
        assert_eq!(len(&[(cl, "2")]), Ok(2));
        assert_eq!(len(&[(cl, "002")]), Ok(2));
        assert_eq!(len(&[(cl, "2, 2")]), Ok(2));
        assert_eq!(len(&[(cl, "2,2,")]), Ok(2));
        assert_eq!(len(&[(cl, "2"), ("Content-Length", "2")]), Ok(2));
        for bad in ["+2", "-2", " ", "", "2 2", "0x2", "2.0", "2, 3", "2,x", "١"] {
            assert_eq!(len(&[(cl, bad)]), Err("400".into()), "{bad:?}");
        }
        assert_eq!(len(&[(cl, "2"), (cl, "3")]), Err("400".into()));
        assert_eq!(len(&[(cl, "101")]), Err("413".into()));
        assert_eq!(len(&[(cl, "99999999999999999999999")]), Err("413".into()));
        assert_eq!(
            len(&[(cl, "2, 99999999999999999999999")]),
            Err("400".into())
        );
        assert_eq!(len(&[(te, "chunked")]), Err("411".into()));
        assert_eq!(len(&[(te, "gzip"), (te, "Chunked")]), Err("411".into()));
        assert_eq!(len(&[(te, "chunked"), (cl, "2")]), Err("400".into()));
        assert_eq!(len(&[(te, "chunked, gzip")]), Err("400".into()));
        assert_eq!(len(&[(te, "identity")]), Err("400".into()));
        assert_eq!(len(&[(te, "")]), Err("400".into()));
    }

    #[test]
    fn set_header_replaces_whatever_the_case() {
        let r = Response::new(200, "application/json", "{}")
            .header("X-Other", "1")
            .set_header("content-type", "application/x-amz-json-1.1");
        assert_eq!(
            r.headers,
            [
                ("X-Other".to_string(), "1".to_string()),
                (
                    "content-type".to_string(),
                    "application/x-amz-json-1.1".to_string()
                ),
            ]
        );
    }

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
