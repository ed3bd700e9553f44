//! The destination's `migration` thread: accepts the sender, checks each request, writes
//! memory into boot RAM and plugged blocks only, and has the VMM thread build, restore and
//! start the VM. The first error is answered with its reason and ends the migration; the
//! VMM thread then drops the half-built VM.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use super::protocol::{self, Command, ProtocolError};
use super::source::Link;
use super::transport::{Counting, Listener, Stream};
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
    /// Build the VM from this `Config` payload; answer where its memory may go.
    Config(Vec<u8>, Reply<Vec<Place>>),
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
    let fd = match &stream {
        Stream::Unix(s) => s.as_raw_fd(),
        Stream::Tcp(s) => s.as_raw_fd(),
    };
    let mut receiver = Receiver {
        stream: Counting {
            inner: stream,
            bytes: 0,
        },
        fd,
        places: None,
        started: false,
        passes: 0,
        memory_bytes: 0,
    };
    let started = Instant::now();
    let mut state_at = None;
    loop {
        match receiver.step(link) {
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

struct Receiver {
    stream: Counting<Stream>,
    fd: RawFd,
    /// Where memory may go, once the VM is built.
    places: Option<Vec<Place>>,
    started: bool,
    /// `Memory` requests taken.
    passes: u64,
    memory_bytes: u64,
}

impl Receiver {
    fn ok(&mut self) -> Result<(), Refusal> {
        protocol::write_ok(&mut self.stream).map_err(broken)
    }

    fn step(&mut self, link: &Link<DestinationMessage>) -> Result<Step, Refusal> {
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
                let places = ask(link, |reply| DestinationMessage::Config(payload, reply))
                    .map_err(|e| refuse(format!("the configuration is refused: {e}")))?;
                self.places = Some(places);
                self.ok()?;
            }
            Command::Memory => {
                self.memory(request.length)?;
                self.passes += 1;
                self.ok()?;
                link.send(DestinationMessage::Progress {
                    requests: self.passes,
                    bytes: self.memory_bytes,
                });
            }
            Command::State => {
                if self.places.is_none() {
                    return Err(refuse("State before Config"));
                }
                let payload = protocol::read_payload(&mut self.stream, "State", request.length)
                    .map_err(broken)?;
                ask(link, |reply| DestinationMessage::State(payload, reply))
                    .map_err(|e| refuse(format!("the state is refused: {e}")))?;
                self.ok()?;
                return Ok(Step::StateReceived);
            }
            Command::Complete | Command::CompletePaused => {
                let paused = request.command == Command::CompletePaused;
                ask(link, |reply| DestinationMessage::Complete { paused, reply })
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
                return Err(refuse(
                    "MemoryFd: Accordion does not take memory by file descriptor",
                ))
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
            // built (`holds` above), mapped writable; no vCPU runs in it yet and no device
            // thread touches it, so nothing else reads or writes it meanwhile.
            unsafe { read_into(self.fd, host, len) }.map_err(|e| Refusal {
                reason: format!("reading memory from the sender: {e}"),
                answer: false,
            })?;
            self.memory_bytes += len;
        }
        Ok(())
    }
}

/// Reads exactly `len` bytes from `fd` to host address `host`.
///
/// # Safety
/// `[host, host + len)` must be mapped writable and touched by nothing else meanwhile.
unsafe fn read_into(fd: RawFd, host: u64, len: u64) -> std::io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let chunk = (len - done).min(1 << 30) as usize;
        // SAFETY: see the function's contract; `fd` is the open stream.
        let n = unsafe { libc::read(fd, (host + done) as *mut libc::c_void, chunk) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        done += n as u64;
    }
    Ok(())
}
