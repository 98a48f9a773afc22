//! A container's output as lines: undoes the engine's stream framing.
//!
//! Without a TTY the engine multiplexes stdout and stderr into frames:
//! 1. an 8-byte header: stream (0 stdin, 1 stdout, 2 stderr), three zero
//!    bytes, the payload's length (big-endian u32);
//! 2. the payload, which may hold part of a line, or several.
//!
//! With a TTY the body is the raw terminal output. Either way the reader
//! keeps one partial line per stream and yields whole lines; a line longer
//! than `MAX_LINE` is cut there, so memory stays bounded whatever the
//! container prints.

use std::collections::VecDeque;
use std::io::{self, Read};

/// Longest line kept whole; longer ones are yielded in pieces.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of output, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: Stream,
    pub text: String,
}

/// Lines from a logs body.
pub struct LogReader<R> {
    inner: R,
    tty: bool,
    partial: [Vec<u8>; 2],
    ready: VecDeque<LogLine>,
    done: bool,
    buf: Vec<u8>,
}

impl<R: Read> LogReader<R> {
    pub fn new(inner: R, tty: bool) -> LogReader<R> {
        LogReader {
            inner,
            tty,
            partial: [Vec::new(), Vec::new()],
            ready: VecDeque::new(),
            done: false,
            buf: vec![0u8; 16 * 1024],
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    fn feed(&mut self, stream: Stream, mut bytes: &[u8]) {
        let idx = stream as usize;
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.partial[idx].extend_from_slice(&bytes[..i]);
                    self.emit(stream);
                    bytes = &bytes[i + 1..];
                }
                None => {
                    let room = MAX_LINE - self.partial[idx].len();
                    let take = room.min(bytes.len());
                    self.partial[idx].extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.partial[idx].len() >= MAX_LINE {
                        self.emit(stream);
                    }
                }
            }
        }
    }

    fn emit(&mut self, stream: Stream) {
        let mut line = std::mem::take(&mut self.partial[stream as usize]);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        self.ready.push_back(LogLine {
            stream,
            text: String::from_utf8_lossy(&line).into_owned(),
        });
    }

    fn finish(&mut self) {
        self.done = true;
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !self.partial[stream as usize].is_empty() {
                self.emit(stream);
            }
        }
    }

    /// Read more of the body; false at its end.
    fn fill(&mut self) -> io::Result<bool> {
        if self.tty {
            let n = read_retry(&mut self.inner, &mut self.buf)?;
            if n == 0 {
                return Ok(false);
            }
            let chunk = std::mem::take(&mut self.buf);
            self.feed(Stream::Stdout, &chunk[..n]);
            self.buf = chunk;
            return Ok(true);
        }
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            let n = read_retry(&mut self.inner, &mut head[got..])?;
            if n == 0 {
                if got == 0 {
                    return Ok(false);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "logs ended inside a frame header",
                ));
            }
            got += n;
        }
        let stream = match head[0] {
            0 | 1 => Stream::Stdout,
            2 => Stream::Stderr,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("logs frame for unknown stream {other} (is the container a TTY?)"),
                ))
            }
        };
        let mut left = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        while left > 0 {
            let want = left.min(self.buf.len());
            let mut chunk = std::mem::take(&mut self.buf);
            let n = read_retry(&mut self.inner, &mut chunk[..want]);
            let n = match n {
                Ok(0) => {
                    self.buf = chunk;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "logs ended inside a frame",
                    ));
                }
                Ok(n) => n,
                Err(e) => {
                    self.buf = chunk;
                    return Err(e);
                }
            };
            self.feed(stream, &chunk[..n]);
            self.buf = chunk;
            left -= n;
        }
        Ok(true)
    }
}

fn read_retry(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl<R: Read> Iterator for LogReader<R> {
    type Item = io::Result<LogLine>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(Ok(line));
            }
            if self.done {
                return None;
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => self.finish(),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![stream, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn lines(body: Vec<u8>, tty: bool) -> Vec<(Stream, String)> {
        LogReader::new(io::Cursor::new(body), tty)
            .map(|l| l.map(|l| (l.stream, l.text)).unwrap())
            .collect()
    }

    #[test]
    fn demux_joins_lines_split_across_frames() {
        let mut body = frame(1, b"hel");
        body.extend(frame(2, b"oops\n"));
        body.extend(frame(1, b"lo\nsecond\nthi"));
        body.extend(frame(1, b"rd"));
        assert_eq!(
            lines(body, false),
            vec![
                (Stream::Stderr, "oops".into()),
                (Stream::Stdout, "hello".into()),
                (Stream::Stdout, "second".into()),
                (Stream::Stdout, "third".into()),
            ]
        );
    }

    #[test]
    fn tty_output_is_raw() {
        assert_eq!(
            lines(b"a\r\nb\nc".to_vec(), true),
            vec![
                (Stream::Stdout, "a".into()),
                (Stream::Stdout, "b".into()),
                (Stream::Stdout, "c".into())
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_and_truncated_frames_fail() {
        let long = vec![b'x'; MAX_LINE + 10];
        let got = lines(frame(1, &long), false);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.len(), MAX_LINE);
        assert_eq!(got[1].1.len(), 10);
        let mut body = frame(1, b"abcdef");
        body.truncate(10);
        let res: Vec<_> = LogReader::new(io::Cursor::new(body), false).collect();
        assert!(res.last().unwrap().is_err());
    }
}
