//! The destination's `migration` thread: accepts the sender, checks each request, writes
//! memory into boot RAM and plugged blocks only, and has the VMM thread build, restore and
//! start the VM. The first error is answered with its reason and ends the migration; the
//! VMM thread then drops the half-built VM.

use std::fs::File;
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use super::protocol::{self, Command, ProtocolError};
use super::source::Link;
use super::transport::{FdStream, Listener};
use super::{MigrationReport, Place};
use crate::seccomp::ThreadFilter;

/// How long a read may wait once the sender is connected.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// An answer from the VMM thread: `Ok` or the reason.
pub type Reply<T> = Sender<Result<T, String>>;

/// What the thread asks of the VMM thread.
pub enum DestinationMessage {
    /// The sender connected.
    Connected,
    /// A `Memory` request was written into guest memory: requests and bytes so far.
    Progress {
        requests: u64,
        bytes: u64,
    },
    /// Build the VM from this `Config` payload (with a local migration's memory files);
    /// answer where its memory may go.
    Config(Vec<u8>, Vec<File>, Reply<Vec<Place>>),
    /// Restore the machine from this `State` payload.
    State(Vec<u8>, Reply<()>),
    /// Start the VM (or leave it paused).
    Complete {
        paused: bool,
        reply: Reply<()>,
    },
    Finished(Result<MigrationReport, String>),
}

/// Starts the `migration` thread of a destination, accepting on `listener`.
pub fn start(
    listener: Listener,
    link: Link<DestinationMessage>,
    filter: ThreadFilter,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("migration".into())
        .spawn(move || {
            let result = match filter.apply_to_current() {
                Ok(()) => receive(&listener, &link),
                Err(e) => Err(format!("the migration thread cannot start: {e}")),
            };
            drop(listener);
            link.send(DestinationMessage::Finished(result));
        })
}

fn ask<T>(
    link: &Link<DestinationMessage>,
    message: impl FnOnce(Reply<T>) -> DestinationMessage,
) -> Result<T, String> {
    let (reply, answer) = channel();
    if !link.send(message(reply)) {
        return Err("the VMM is going away".into());
    }
    answer
        .recv()
        .map_err(|_| "the VMM is going away".to_string())?
}

/// What the receiver needs from the VMM: a VM built from the configuration (and where its
/// memory may go), restored from the state, started.
pub trait Builder {
    /// `files`: a local migration's memory files, in the order the sender numbered them.
    fn config(&mut self, payload: Vec<u8>, files: Vec<File>) -> Result<Vec<Place>, String>;
    fn state(&mut self, payload: Vec<u8>) -> Result<(), String>;
    fn complete(&mut self, paused: bool) -> Result<(), String>;
    /// A `Memory` request is in: requests and bytes so far.
    fn progress(&mut self, _requests: u64, _bytes: u64) {}
}

impl Builder for &Link<DestinationMessage> {
    fn config(&mut self, payload: Vec<u8>, files: Vec<File>) -> Result<Vec<Place>, String> {
        ask(self, |reply| {
            DestinationMessage::Config(payload, files, reply)
        })
    }

    fn state(&mut self, payload: Vec<u8>) -> Result<(), String> {
        ask(self, |reply| DestinationMessage::State(payload, reply))
    }

    fn complete(&mut self, paused: bool) -> Result<(), String> {
        ask(self, |reply| DestinationMessage::Complete { paused, reply })
    }

    fn progress(&mut self, requests: u64, bytes: u64) {
        self.send(DestinationMessage::Progress { requests, bytes });
    }
}

fn receive(
    listener: &Listener,
    link: &Link<DestinationMessage>,
) -> Result<MigrationReport, String> {
    let stream = listener
        .accept()
        .map_err(|e| format!("accepting the sender: {e}"))?;
    link.send(DestinationMessage::Connected);
    stream
        .set_timeout(Some(STREAM_TIMEOUT))
        .map_err(|e| format!("setting the stream's timeout: {e}"))?;
    run(stream, link)
}

/// Takes a whole migration from `stream`, with `builder` making the VM: the report, or why
/// it failed (the sender was told, if it can be).
///
/// # Safety of guest memory
/// The places `builder.config` returns must be host memory the receiver may write, and
/// nothing else may touch them until the migration ends.
pub fn run<S: FdStream>(stream: S, mut builder: impl Builder) -> Result<MigrationReport, String> {
    let mut receiver = Receiver {
        stream,
        files: Vec::new(),
        places: None,
        started: false,
        passes: 0,
        memory_bytes: 0,
    };
    let started = Instant::now();
    let mut state_at = None;
    loop {
        match receiver.step(&mut builder) {
            Ok(Step::More) => {}
            Ok(Step::StateReceived) => state_at = Some(Instant::now()),
            Ok(Step::Done) => {
                return Ok(MigrationReport {
                    bytes: receiver.memory_bytes,
                    passes: receiver.passes,
                    downtime_ms: state_at.map_or(0, |t| t.elapsed().as_millis() as u64),
                    total_ms: started.elapsed().as_millis() as u64,
                })
            }
            Err(Refusal { reason, answer }) => {
                if answer {
                    // The sender learns why; it may be gone already.
                    let _ = protocol::write_error(&mut receiver.stream, &reason);
                }
                return Err(reason);
            }
        }
    }
}

/// Why the migration stops, and whether the sender is to be told (not when the stream
/// broke).
struct Refusal {
    reason: String,
    answer: bool,
}

fn refuse(reason: impl std::fmt::Display) -> Refusal {
    Refusal {
        reason: reason.to_string(),
        answer: true,
    }
}

fn broken(e: ProtocolError) -> Refusal {
    let answer = !matches!(e, ProtocolError::Io { .. });
    Refusal {
        reason: format!("the stream from the sender: {e}"),
        answer,
    }
}

enum Step {
    More,
    StateReceived,
    Done,
}

struct Receiver<S> {
    stream: S,
    /// A local migration's memory files, before Config.
    files: Vec<File>,
    /// Where memory may go, once the VM is built.
    places: Option<Vec<Place>>,
    started: bool,
    /// `Memory` requests taken.
    passes: u64,
    memory_bytes: u64,
}

impl<S: FdStream> Receiver<S> {
    fn ok(&mut self) -> Result<(), Refusal> {
        protocol::write_ok(&mut self.stream).map_err(broken)
    }

    fn step(&mut self, builder: &mut impl Builder) -> Result<Step, Refusal> {
        let request = protocol::read_request(&mut self.stream).map_err(broken)?;
        if request.command != Command::Start && !self.started {
            return Err(refuse(format!(
                "{:?} before Start: the stream does not begin as a migration does",
                request.command
            )));
        }
        match request.command {
            Command::Start => {
                if self.started {
                    return Err(refuse("a second Start"));
                }
                request.check_start().map_err(refuse)?;
                self.started = true;
                self.ok()?;
            }
            Command::Config => {
                if self.places.is_some() {
                    return Err(refuse("a second Config"));
                }
                let payload = protocol::read_payload(&mut self.stream, "Config", request.length)
                    .map_err(broken)?;
                let places = builder
                    .config(payload, std::mem::take(&mut self.files))
                    .map_err(|e| refuse(format!("the configuration is refused: {e}")))?;
                self.places = Some(places);
                self.ok()?;
            }
            Command::Memory => {
                self.memory(request.length)?;
                self.passes += 1;
                self.ok()?;
                builder.progress(self.passes, self.memory_bytes);
            }
            Command::State => {
                if self.places.is_none() {
                    return Err(refuse("State before Config"));
                }
                let payload = protocol::read_payload(&mut self.stream, "State", request.length)
                    .map_err(broken)?;
                builder
                    .state(payload)
                    .map_err(|e| refuse(format!("the state is refused: {e}")))?;
                self.ok()?;
                return Ok(Step::StateReceived);
            }
            Command::Complete | Command::CompletePaused => {
                let paused = request.command == Command::CompletePaused;
                builder
                    .complete(paused)
                    .map_err(|e| refuse(format!("the VM cannot start: {e}")))?;
                self.ok()?;
                return Ok(Step::Done);
            }
            Command::Abandon => {
                let _ = self.ok();
                return Err(Refusal {
                    reason: "the sender abandoned the migration".into(),
                    answer: false,
                });
            }
            Command::MemoryFd => {
                if self.places.is_some() {
                    return Err(refuse("MemoryFd after Config"));
                }
                if request.length != 4 {
                    return Err(refuse(format!(
                        "MemoryFd of {} bytes; it carries a 4-byte index",
                        request.length
                    )));
                }
                let mut index = [0u8; 4];
                let file = self
                    .stream
                    .read_with_fd(&mut index)
                    .map_err(|e| refuse(format!("MemoryFd: {e}")))?
                    .ok_or_else(|| refuse("MemoryFd without a file descriptor"))?;
                let index = u32::from_le_bytes(index);
                if index as usize != self.files.len() {
                    return Err(refuse(format!(
                        "MemoryFd {index} out of order (expected {})",
                        self.files.len()
                    )));
                }
                self.files.push(file);
                self.ok()?;
            }
        }
        Ok(Step::More)
    }

    /// Reads a `Memory` request's table and its bytes into guest memory; a range outside
    /// boot RAM and the plugged blocks is refused before any of its bytes are read.
    fn memory(&mut self, table_len: u64) -> Result<(), Refusal> {
        let Some(places) = self.places.as_ref() else {
            return Err(refuse("Memory before Config"));
        };
        let ranges = protocol::read_ranges(&mut self.stream, table_len).map_err(broken)?;
        let mut targets = Vec::with_capacity(ranges.len());
        for r in &ranges {
            let place = places
                .iter()
                .find(|p| p.holds(r.gpa, r.length))
                .ok_or_else(|| {
                    refuse(format!(
                        "memory range {:#x}+{:#x} is neither boot RAM nor a plugged virtio-mem \
                     block",
                        r.gpa, r.length
                    ))
                })?;
            targets.push((place.host + (r.gpa - place.gpa), r.length));
        }
        for (host, len) in targets {
            // SAFETY: [host, host + len) lies in boot RAM or a plugged block of the VM being
            // built (`holds` above: the builder's places), mapped writable; no vCPU runs in
            // it yet and no device thread touches it, so nothing else reads or writes it
            // while this slice lives.
            let memory = unsafe { std::slice::from_raw_parts_mut(host as *mut u8, len as usize) };
            self.stream.read_exact(memory).map_err(|e| Refusal {
                reason: format!("reading memory from the sender: {e}"),
                answer: false,
            })?;
            self.memory_bytes += len;
        }
        Ok(())
    }
}
