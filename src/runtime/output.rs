//! Forwarding the agent's output: each line goes to the warden's stderr as
//! `ecs-agent[ID]: ...`, and the last lines are kept for the exit-code-2
//! report, handed to the main loop when the output ends. Used by every
//! runtime (a pipe natively, the engine's log stream for a container).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::Sender;

use crate::event::{AgentEvent, Event};

/// Lines of agent output kept for the exit-code-2 report.
pub const TAIL_LINES: usize = 20;
/// Longest line forwarded in one piece.
const MAX_LINE: usize = 16 * 1024;

/// Forward `source` on a thread of its own until it ends. `label` names
/// the agent in each line (its PID, or the container's short id).
pub fn forward(run: u64, label: String, mut source: impl Read + Send + 'static, tx: Sender<Event>) {
    let spawned = std::thread::Builder::new()
        .name(format!("agent-output-{label}"))
        .spawn(move || {
            let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
            let mut line: Vec<u8> = Vec::with_capacity(256);
            let mut buf = [0u8; 8192];
            let emit = |line: &mut Vec<u8>, tail: &mut VecDeque<String>| {
                let text = String::from_utf8_lossy(line).into_owned();
                let _ = writeln!(io::stderr().lock(), "ecs-agent[{label}]: {text}");
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text);
                line.clear();
            };
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                for &b in &buf[..n] {
                    if b == b'\n' {
                        emit(&mut line, &mut tail);
                    } else {
                        line.push(b);
                        if line.len() >= MAX_LINE {
                            emit(&mut line, &mut tail);
                        }
                    }
                }
            }
            if !line.is_empty() {
                emit(&mut line, &mut tail);
            }
            let _ = tx.send(Event::Agent(AgentEvent::OutputClosed {
                run,
                tail: tail.into(),
            }));
        });
    if let Err(e) = spawned {
        log::error!("start the output thread for agent {run}: {e}");
    }
}
