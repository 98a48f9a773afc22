//! A loopback HTTP/1.1 file server that misbehaves on purpose.
//!
//! Each path serves a body and follows a script: one `Fault` per request,
//! in order, then a fallback for every later request. That is how the
//! download's status checks, caps, timeouts, retries and resumes are proven
//! against a real socket. Every response closes its connection; every
//! request is recorded (method, path, `Range`) so a test can assert that a
//! retry resumed with `Range: bytes=K-`, and every body byte sent is
//! counted. `HEAD` gets the headers the same request would (the fault's
//! `Content-Length` included), no body.
//!
//! `Fault::Hold` keeps a download in flight for as long as the test wants:
//! it dribbles while the server is held (`hold`) and finishes once
//! released (`release`); `slow_file` sets that up in one call.
//!
//! The server runs on its own accept thread, one thread per connection, and
//! stops when dropped (stalled connections are released then too).

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How one request to a path is answered. Byte counts are relative to the
/// start of the response body (so, for a resumed request, to the range).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Serve the body; a `Range: bytes=K-` gets 206 with `Content-Range`.
    Serve,
    /// Always 200 with the whole body, whatever the `Range`.
    IgnoreRange,
    /// Answer with this HTTP status and a short text body.
    Status(u16),
    /// Declare the full length, send only the first K bytes, close.
    Truncate(u64),
    /// Send K bytes without a `Content-Length`, then close: a body that
    /// looks complete to HTTP but is short of the manifest's size.
    CloseAfter(u64),
    /// Declare this `Content-Length`, send the whole body.
    LieLength(u64),
    /// Send the whole body plus N extra bytes without a `Content-Length`
    /// (the end is the connection's close).
    Overflow(u64),
    /// Send the whole body plus N extra bytes, declared in `Content-Length`.
    OverflowDeclared(u64),
    /// Send K bytes, then send nothing more and keep the connection open
    /// (until the server is dropped or a minute passes).
    Stall(u64),
    /// Send K bytes, wait a moment for the peer to read them, then reset
    /// the connection (`SO_LINGER` 0, then close: an RST, not a FIN).
    Reset(u64),
    /// Send the body in `chunk`-byte writes with `pause` between them.
    Dribble { chunk: usize, pause: Duration },
    /// Send the first eighth of the body (at most 1 MiB) at once, then
    /// 64 KiB every 20 ms while the server is held, never the last byte;
    /// once released, the rest at full speed. (The warden reports progress
    /// per MiB; a host that uses this raises its download read timeout so
    /// that a long hold is not a stall.)
    Hold,
    /// Answer with this 3xx status and `Location: <the string>`, no body.
    Redirect(u16, String),
}

/// A request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

struct Route {
    body: Arc<Vec<u8>>,
    content_type: &'static str,
    script: VecDeque<Fault>,
    then: Fault,
}

#[derive(Default)]
struct Shared {
    routes: HashMap<String, Route>,
    seen: Vec<Seen>,
}

pub struct Server {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    flags: Arc<Flags>,
    accept: Option<JoinHandle<()>>,
}

/// What every connection thread shares with the test, outside the lock.
#[derive(Default)]
struct Flags {
    /// Set when the server is dropped: stalled and held answers end.
    stop: AtomicBool,
    /// While set, `Fault::Hold` answers dribble and do not finish.
    hold: AtomicBool,
    /// Body bytes sent, all connections.
    sent: AtomicU64,
}

impl Server {
    /// Bind `127.0.0.1:0` and start serving (every path 404 until added).
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let flags = Arc::new(Flags::default());
        let (sh, fl) = (shared.clone(), flags.clone());
        let accept = std::thread::Builder::new()
            .name(format!("test-server-{port}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if fl.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (sh, fl) = (sh.clone(), fl.clone());
                    let _ = std::thread::Builder::new()
                        .name("test-server-conn".into())
                        .spawn(move || handle(conn, &sh, &fl));
                }
            })
            .unwrap();
        Server {
            port,
            shared,
            flags,
            accept: Some(accept),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Serve `body` at `path`: `script` for the first requests, then `then`.
    pub fn route(&self, path: &str, body: Vec<u8>, script: &[Fault], then: Fault) {
        self.shared.lock().unwrap().routes.insert(
            path.to_string(),
            Route {
                body: Arc::new(body),
                content_type: "application/octet-stream",
                script: script.iter().cloned().collect(),
                then,
            },
        );
    }

    /// Serve `path` normally.
    pub fn file(&self, path: &str, body: Vec<u8>) {
        self.route(path, body, &[], Fault::Serve);
    }

    /// Change how `path` answers from the next request on (body kept).
    pub fn script(&self, path: &str, script: &[Fault], then: Fault) {
        let mut sh = self.shared.lock().unwrap();
        let r = sh.routes.get_mut(path).expect("route exists");
        r.script = script.iter().cloned().collect();
        r.then = then;
    }

    /// Serve raw manifest text at `/manifest.json`; returns its URL.
    pub fn manifest_text(&self, text: &[u8]) -> String {
        self.file("/manifest.json", text.to_vec());
        if let Some(r) = self.shared.lock().unwrap().routes.get_mut("/manifest.json") {
            r.content_type = "application/json";
        }
        self.url("/manifest.json")
    }

    /// Serve a manifest document at `/manifest.json`; returns its URL.
    pub fn manifest(&self, doc: &Value) -> String {
        self.manifest_text(&serde_json::to_vec_pretty(doc).unwrap())
    }

    /// Serve each build at `/agents/<version>` and a manifest listing them
    /// (relative URLs); returns the manifest's URL.
    pub fn publish(&self, builds: &[(&str, &Path)]) -> String {
        let agents: Vec<Value> = builds
            .iter()
            .map(|(v, p)| {
                let bytes = std::fs::read(p).unwrap();
                let e = entry(v, &bytes, &format!("agents/{v}"));
                self.file(&format!("/agents/{v}"), bytes);
                e
            })
            .collect();
        self.manifest(&json!({"schemaVersion": 1, "agents": agents}))
    }

    /// Serve `file` at `path` with `Fault::Hold`, held from the start when
    /// `held`; its URL.
    pub fn slow_file(&self, path: &str, file: &Path, held: bool) -> String {
        self.flags.hold.store(held, Ordering::SeqCst);
        let body = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        self.route(path, body, &[], Fault::Hold);
        self.url(path)
    }

    /// Make `Fault::Hold` answers dribble without finishing.
    pub fn hold(&self) {
        self.flags.hold.store(true, Ordering::SeqCst);
    }

    /// Let `Fault::Hold` answers finish.
    pub fn release(&self) {
        self.flags.hold.store(false, Ordering::SeqCst);
    }

    /// Body bytes sent so far, all connections.
    pub fn sent(&self) -> u64 {
        self.flags.sent.load(Ordering::SeqCst)
    }

    /// How many `GET`s `path` received.
    pub fn gets(&self, path: &str) -> usize {
        self.seen_at(path)
            .iter()
            .filter(|s| s.method == "GET")
            .count()
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }

    /// The requests for one path.
    pub fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.flags.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// A manifest entry for `bytes` at `url`, for this host's architecture.
pub fn entry(version: &str, bytes: &[u8], url: &str) -> Value {
    json!({
        "version": version,
        "gitHash": &super::sha256_hex(version.as_bytes())[..8],
        "arch": std::env::consts::ARCH,
        "url": url,
        "sha256": super::sha256_fast(bytes),
        "size": bytes.len(),
    })
}

fn handle(mut conn: TcpStream, shared: &Mutex<Shared>, flags: &Flags) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((method, path, range)) = read_head(&mut conn) else {
        return;
    };
    let route = {
        let mut sh = shared.lock().unwrap();
        sh.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            range: range.clone(),
        });
        sh.routes.get_mut(&path).map(|r| {
            let fault = r.script.pop_front().unwrap_or_else(|| r.then.clone());
            (r.body.clone(), r.content_type, fault)
        })
    };
    let Some((body, content_type, fault)) = route else {
        let _ = respond_text(&mut conn, 404, "Not Found", "no such file\n");
        return;
    };
    let head_only = method == "HEAD";
    let _ = answer(
        &mut conn,
        &body,
        content_type,
        &fault,
        range.as_deref(),
        head_only,
        flags,
    );
}

/// Read the request head; the method, the path (query dropped) and the
/// `Range` header.
fn read_head(conn: &mut TcpStream) -> Option<(String, String, Option<String>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path?.split('?').next()?.to_string();
                let range = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("range"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                return Some((req.method?.to_string(), path, range));
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
            _ => return None,
        }
    }
}

fn respond_text(conn: &mut TcpStream, code: u16, reason: &str, text: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    conn.flush()
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// The start of a `bytes=K-` (or `bytes=K-L`) range.
fn range_start(range: Option<&str>) -> Option<u64> {
    range?
        .trim()
        .strip_prefix("bytes=")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn answer(
    conn: &mut TcpStream,
    body: &[u8],
    content_type: &str,
    fault: &Fault,
    range: Option<&str>,
    head_only: bool,
    flags: &Flags,
) -> std::io::Result<()> {
    let stop = &flags.stop;
    // Every body byte goes out through here, to be counted.
    let send = |conn: &mut TcpStream, bytes: &[u8]| -> std::io::Result<()> {
        conn.write_all(bytes)?;
        flags.sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        Ok(())
    };
    if let Fault::Status(code) = fault {
        return respond_text(conn, *code, reason(*code), "scripted failure\n");
    }
    if let Fault::Redirect(code, location) = fault {
        write!(
            conn,
            "HTTP/1.1 {code} {}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            reason(*code)
        )?;
        return conn.flush();
    }
    let total = body.len() as u64;
    let start = match (fault, range_start(range)) {
        (Fault::IgnoreRange, _) | (_, None) => 0,
        (_, Some(s)) if s >= total => {
            return respond_text(conn, 416, reason(416), "range not satisfiable\n");
        }
        (_, Some(s)) => s,
    };
    let slice = &body[start as usize..];
    let mut head = if start > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}\r\n",
            total - 1
        )
    } else {
        "HTTP/1.1 200 OK\r\n".to_string()
    };
    head.push_str(&format!(
        "Content-Type: {content_type}\r\nConnection: close\r\n"
    ));
    let len = slice.len() as u64;
    match fault {
        Fault::Overflow(_) | Fault::CloseAfter(_) => {}
        Fault::OverflowDeclared(extra) => {
            head.push_str(&format!("Content-Length: {}\r\n", len + extra))
        }
        Fault::LieLength(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        _ => head.push_str(&format!("Content-Length: {len}\r\n")),
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    if head_only {
        return conn.flush();
    }
    let cut = |k: u64| &slice[..k.min(len) as usize];
    match fault {
        Fault::Serve | Fault::IgnoreRange | Fault::LieLength(_) => send(conn, slice)?,
        Fault::Status(_) | Fault::Redirect(..) => unreachable!(),
        Fault::Truncate(k) | Fault::CloseAfter(k) => {
            send(conn, cut(*k))?;
            conn.flush()?;
            let _ = conn.shutdown(Shutdown::Write);
            // Let the peer read to the FIN before the socket goes.
            std::thread::sleep(Duration::from_millis(100));
        }
        Fault::Overflow(extra) | Fault::OverflowDeclared(extra) => {
            send(conn, slice)?;
            send(conn, &vec![b'X'; *extra as usize])?;
            conn.flush()?;
            let _ = conn.shutdown(Shutdown::Write);
            std::thread::sleep(Duration::from_millis(100));
        }
        Fault::Stall(k) => {
            send(conn, cut(*k))?;
            conn.flush()?;
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Fault::Reset(k) => {
            send(conn, cut(*k))?;
            conn.flush()?;
            std::thread::sleep(Duration::from_millis(300));
            let linger = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            nix::sys::socket::setsockopt(&conn.as_fd(), nix::sys::socket::sockopt::Linger, &linger)
                .map_err(std::io::Error::from)?;
            // Dropping the stream now sends an RST.
        }
        Fault::Dribble { chunk, pause } => {
            for piece in slice.chunks((*chunk).max(1)) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                send(conn, piece)?;
                conn.flush()?;
                std::thread::sleep(*pause);
            }
        }
        Fault::Hold => {
            let hold = &flags.hold;
            let mut pos = (slice.len() / 8).min(1 << 20);
            send(conn, &slice[..pos])?;
            while hold.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                let upto = (pos + 64 * 1024).min(slice.len().saturating_sub(1));
                if upto > pos {
                    send(conn, &slice[pos..upto])?;
                    pos = upto;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if stop.load(Ordering::SeqCst) && hold.load(Ordering::SeqCst) {
                return Ok(());
            }
            send(conn, &slice[pos..])?;
        }
    }
    conn.flush()
}
