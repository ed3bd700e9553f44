//! A man in the middle of a live migration over unix sockets: it forwards the sender's
//! requests to the receiver one at a time (it reads Cloud Hypervisor's framing, which
//! Accordion speaks), counts the bytes the sender writes, records each request, and lets a
//! test act at a chosen point: hold the sender, cut the connection, kill the destination,
//! change a payload, or lose an answer.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub const START: u16 = 1;
pub const CONFIG: u16 = 2;
pub const STATE: u16 = 3;
pub const MEMORY: u16 = 4;
pub const COMPLETE: u16 = 5;
pub const COMPLETE_PAUSED: u16 = 8;

/// One request the sender made.
#[derive(Clone, Debug)]
pub struct Seen {
    pub command: u16,
    /// The payload (for Memory, the range table).
    pub payload: Vec<u8>,
    /// Memory: its ranges (gpa, length).
    pub ranges: Vec<(u64, u64)>,
    /// Memory: which pass it belongs to (0 for the first), told apart by the address
    /// order starting again.
    pub pass: u64,
}

/// What to do with a request, asked before it is forwarded.
pub enum Act {
    Forward,
    /// Forward this payload instead (same length).
    Replace(Vec<u8>),
    /// Close both connections without forwarding it.
    Cut,
    /// Forward it, and drop the receiver's answer: the sender sees the connection close.
    LoseAnswer,
}

/// The decision, given the request and all before it.
pub type Policy = Box<dyn FnMut(&Seen, &[Seen]) -> Act + Send>;

/// See the module doc.
pub struct Tap {
    pub bytes: Arc<Mutex<u64>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    gate: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

fn read_exact_or_end(stream: &mut UnixStream, buf: &mut [u8]) -> bool {
    stream.read_exact(buf).is_ok()
}

impl Tap {
    /// Listens on `listen`; the connection it accepts is forwarded to `to` once
    /// [`open`](Self::open) is called, with `policy` deciding for each request.
    pub fn start(listen: &Path, to: PathBuf, policy: Policy) -> Tap {
        let listener = UnixListener::bind(listen).expect("tap socket");
        let bytes = Arc::new(Mutex::new(0u64));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (gate, opened) = channel();
        let (b, s) = (bytes.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let Ok((from, _)) = listener.accept() else {
                return;
            };
            forward(from, &to, &opened, policy, &b, &s);
        });
        Tap {
            bytes,
            seen,
            gate,
            thread: Some(thread),
        }
    }

    /// Lets the sender through.
    pub fn open(&self) {
        let _ = self.gate.send(());
    }

    /// Waits until the connection has ended; returns the bytes the sender wrote.
    pub fn finish(mut self) -> u64 {
        self.open();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.bytes.lock().unwrap()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn forward(
    mut from: UnixStream,
    to: &Path,
    opened: &Receiver<()>,
    mut policy: Policy,
    bytes: &Mutex<u64>,
    seen: &Mutex<Vec<Seen>>,
) {
    let _ = opened.recv();
    let Ok(mut dest) = UnixStream::connect(to) else {
        return;
    };
    let mut pass = 0u64;
    let mut last_end = 0u64;
    loop {
        let mut header = [0u8; 16];
        if !read_exact_or_end(&mut from, &mut header) {
            return;
        }
        let command = u16::from_le_bytes([header[0], header[1]]);
        let length = u64::from_le_bytes(header[8..16].try_into().unwrap());
        let mut payload = vec![0u8; length as usize];
        if !read_exact_or_end(&mut from, &mut payload) {
            return;
        }
        *bytes.lock().unwrap() += 16 + length;
        let mut ranges = Vec::new();
        if command == MEMORY {
            for entry in payload.chunks_exact(16) {
                let gpa = u64::from_le_bytes(entry[..8].try_into().unwrap());
                let len = u64::from_le_bytes(entry[8..].try_into().unwrap());
                ranges.push((gpa, len));
            }
            if let Some(&(gpa, _)) = ranges.first() {
                if gpa < last_end {
                    pass += 1;
                }
            }
            if let Some(&(gpa, len)) = ranges.last() {
                last_end = gpa + len;
            }
        }
        let request = Seen {
            command,
            payload: payload.clone(),
            ranges: ranges.clone(),
            pass,
        };
        let act = {
            let before = seen.lock().unwrap();
            policy(&request, &before)
        };
        seen.lock().unwrap().push(request);
        let lose = matches!(act, Act::LoseAnswer);
        let payload = match act {
            Act::Cut => return,
            Act::Replace(other) => other,
            Act::Forward | Act::LoseAnswer => payload,
        };
        if dest.write_all(&header).is_err() || dest.write_all(&payload).is_err() {
            return;
        }
        // The memory behind the table.
        let mut left: u64 = ranges.iter().map(|r| r.1).sum();
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = (left as usize).min(buf.len());
            if !read_exact_or_end(&mut from, &mut buf[..n]) || dest.write_all(&buf[..n]).is_err() {
                return;
            }
            *bytes.lock().unwrap() += n as u64;
            left -= n as u64;
        }
        // The answer.
        let mut answer = [0u8; 16];
        if !read_exact_or_end(&mut dest, &mut answer) {
            return;
        }
        let reason_len = u64::from_le_bytes(answer[8..16].try_into().unwrap());
        let mut reason = vec![0u8; reason_len as usize];
        if !read_exact_or_end(&mut dest, &mut reason) || lose {
            return;
        }
        if from.write_all(&answer).is_err() || from.write_all(&reason).is_err() {
            return;
        }
    }
}
