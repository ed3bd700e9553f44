//! One client connection: its buffers, its deadlines, and turning the bytes it sends into
//! handler calls and the responses into bytes to send.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use crate::parse::{self, Head, Parsed};
use crate::response::Persistence;
use crate::{Deferred, Reply, Request, Response, ServerConfig, StatusCode};

/// While this much of the output is unsent, the connection takes no further requests.
const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// How long a connection the server is closing goes on reading, and dropping, what the peer
/// still sends (see [`Connection::ready_to_close`]).
const LINGER: Duration = Duration::from_secs(2);

/// What a connection waits for when its deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The rest of a started request: answer 408 and close.
    Request,
    /// A first request on a new connection, or a next one on a kept-alive connection:
    /// close without a word.
    Idle,
}

/// The byte stream under a connection: the client's socket, or (in [`crate::fuzzing`]) an
/// in-memory pipe. Neither call blocks.
pub(crate) trait Stream {
    /// Reads what has arrived: `Ok(0)` at end of file, `WouldBlock` when nothing is there.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends what the peer takes: `WouldBlock` when it takes nothing now.
    fn send(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Ends the sending side: the peer reads end of file after what was sent.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Whether bytes have arrived that `recv` has not taken yet (end of file is none).
    fn has_pending_input(&self) -> bool;
}

impl Stream for UnixStream {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        send(self.as_raw_fd(), bytes)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn has_pending_input(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: recv(2) writes at most one byte into `byte`, which lives across the
        // call; MSG_PEEK leaves the byte in the socket, MSG_DONTWAIT never blocks. The
        // result is only compared.
        let n = unsafe {
            libc::recv(
                self.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n > 0
    }
}

/// A client connection.
pub(crate) struct Connection<S = UnixStream> {
    stream: S,
    /// Bytes received and not yet consumed.
    input: Vec<u8>,
    /// The head of the request whose body is arriving.
    head: Option<Head>,
    /// Whether `100 Continue` went out for `head`.
    continued: bool,
    /// Responses not yet sent, from `sent` on.
    output: Vec<u8>,
    sent: usize,
    /// When the first byte of the request being received arrived.
    request_started: Option<Instant>,
    /// Last time bytes went either way.
    last_activity: Instant,
    /// Responses queued so far.
    answered: u64,
    /// The peer has shut down its side: no more requests will come.
    peer_done: bool,
    /// No further requests: close once `output` is sent.
    closing: bool,
    /// Set once everything is sent and the write side shut: the connection is closed when
    /// the peer closes its side, or at this time.
    lingering_until: Option<Instant>,
    /// The events the connection is registered for.
    pub(crate) registered: EventSet,
    /// A request whose response comes later, with how to write it.
    waiting: Option<(Deferred, bool, Persistence)>,
}

impl<S: Stream> Connection<S> {
    /// A new connection, registered for reading.
    pub(crate) fn new(stream: S, now: Instant) -> Self {
        Connection {
            stream,
            input: Vec::new(),
            head: None,
            continued: false,
            output: Vec::new(),
            sent: 0,
            request_started: None,
            last_activity: now,
            answered: 0,
            peer_done: false,
            closing: false,
            lingering_until: None,
            registered: EventSet::IN,
            waiting: None,
        }
    }

    /// Reads once from the socket into the input buffer, `scratch` being the read buffer.
    /// End of file marks the peer done; EAGAIN and EINTR are not errors.
    pub(crate) fn receive(
        &mut self,
        scratch: &mut [u8],
        config: &ServerConfig,
        now: Instant,
    ) -> io::Result<()> {
        let room = input_capacity(config).saturating_sub(self.input.len());
        let limit = room.min(scratch.len());
        if limit == 0 || self.peer_done {
            return Ok(());
        }
        match self.stream.recv(&mut scratch[..limit]) {
            Ok(0) => self.peer_done = true,
            // A connection being closed drops what still comes (see `ready_to_close`).
            Ok(_) if self.closing => {}
            Ok(n) => {
                self.input.extend_from_slice(&scratch[..n]);
                self.request_started.get_or_insert(now);
                self.last_activity = now;
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Answers every complete request in the input, in order, and sends what the socket
    /// takes. Stops taking requests while much output is unsent, and after one whose
    /// response closes the connection.
    pub(crate) fn serve(
        &mut self,
        config: &ServerConfig,
        handler: &mut dyn FnMut(Request) -> Reply,
        now: Instant,
    ) -> io::Result<()> {
        let mut consumed = 0;
        while !self.closing && self.waiting.is_none() {
            if self.output.len() - self.sent >= OUTPUT_HIGH_WATER {
                self.flush(now)?;
                if self.output.len() - self.sent >= OUTPUT_HIGH_WATER {
                    break;
                }
            }
            match self.next_request(&mut consumed, config) {
                Next::Request(request, head_only, persistence) => {
                    match handler(request) {
                        Reply::Now(response) => self.answer(response, head_only, persistence),
                        Reply::Later(deferred) => {
                            self.waiting = Some((deferred, head_only, persistence));
                        }
                    }
                    self.request_started = (consumed < self.input.len()).then_some(now);
                }
                Next::Rejected(response) => {
                    log::debug!("rejecting a request: {}", response.status);
                    response.write_to(&mut self.output, false, Persistence::Close);
                    self.closing = true;
                }
                Next::Incomplete => {
                    // The peer hung up with a partial request (or none): nothing more comes.
                    self.closing |= self.peer_done;
                    break;
                }
            }
        }
        self.input.drain(..consumed);
        if self.closing {
            self.input.clear();
            self.head = None;
            self.request_started = None;
        }
        self.flush(now)
    }

    fn answer(&mut self, response: Response, head_only: bool, persistence: Persistence) {
        response.write_to(&mut self.output, head_only, persistence);
        self.answered += 1;
        self.closing = persistence == Persistence::Close;
    }

    /// Whether a request waits for its deferred response.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Asks a deferred response whether it is there; if so, queues it (and serves what came
    /// in behind it). Returns whether it was.
    pub(crate) fn poll_deferred(
        &mut self,
        config: &ServerConfig,
        handler: &mut dyn FnMut(Request) -> Reply,
        now: Instant,
    ) -> io::Result<bool> {
        let Some((deferred, _, _)) = self.waiting.as_mut() else {
            return Ok(false);
        };
        let Some(response) = deferred.poll() else {
            return Ok(false);
        };
        if let Some((_, head_only, persistence)) = self.waiting.take() {
            self.answer(response, head_only, persistence);
        }
        self.last_activity = now;
        if !self.input.is_empty() {
            self.request_started.get_or_insert(now);
        }
        self.serve(config, handler, now)?;
        Ok(true)
    }

    /// The next complete request from `input[*consumed..]`, moving `consumed` past it.
    fn next_request(&mut self, consumed: &mut usize, config: &ServerConfig) -> Next {
        if self.head.is_none() {
            let rest = &self.input[*consumed..];
            if rest.is_empty() {
                return Next::Incomplete;
            }
            match parse::parse_head(rest, config) {
                Parsed::Partial => return Next::Incomplete,
                Parsed::Rejected(response) => return Next::Rejected(response),
                Parsed::Complete(head) => {
                    *consumed += head.len;
                    self.head = Some(head);
                    self.continued = false;
                }
            }
        }
        let body_len = self.head.as_ref().map_or(0, |head| head.body_len);
        if self.input.len() - *consumed < body_len {
            if let Some(head) = self.head.as_ref().filter(|head| head.expects_continue) {
                if !self.continued && !head.http10 {
                    self.output
                        .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    self.continued = true;
                }
            }
            return Next::Incomplete;
        }
        let Some(head) = self.head.take() else {
            return Next::Incomplete;
        };
        let body = self.input[*consumed..*consumed + body_len].to_vec();
        *consumed += body_len;
        let head_only = head.is_head();
        let persistence = match (head.keep_alive, head.http10) {
            (false, _) => Persistence::Close,
            (true, true) => Persistence::KeepAlive,
            (true, false) => Persistence::Implied,
        };
        Next::Request(head.into_request(body), head_only, persistence)
    }

    /// Sends as much of the output as the socket takes without blocking.
    pub(crate) fn flush(&mut self, now: Instant) -> io::Result<()> {
        while self.sent < self.output.len() {
            match self.stream.send(&self.output[self.sent..]) {
                Ok(n) => {
                    self.sent += n;
                    self.last_activity = now;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.sent = 0;
        Ok(())
    }

    /// Gives up on a request that did not complete in time: queues a 408, which closes the
    /// connection, and tries once to send it.
    pub(crate) fn time_out(&mut self, now: Instant) {
        let response = Response::error(
            StatusCode::REQUEST_TIMEOUT,
            "the request did not arrive in time",
        );
        response.write_to(&mut self.output, false, Persistence::Close);
        self.closing = true;
        if let Err(e) = self.flush(now) {
            log::debug!("sending 408: {e}");
        }
    }

    /// The events to wait for.
    pub(crate) fn wanted(&self, config: &ServerConfig) -> EventSet {
        if self.lingering_until.is_some() {
            return EventSet::IN;
        }
        let unsent = self.output.len() - self.sent;
        let mut events = EventSet::empty();
        if !self.closing
            && self.waiting.is_none()
            && !self.peer_done
            && unsent < OUTPUT_HIGH_WATER
            && self.input.len() < input_capacity(config)
        {
            events |= EventSet::IN;
        }
        if unsent > 0 {
            events |= EventSet::OUT;
        }
        events
    }

    /// Whether the connection is done: closing and everything sent.
    pub(crate) fn finished(&self) -> bool {
        self.closing && self.sent == self.output.len()
    }

    /// For a finished connection: whether to close it now. Closing a socket with unread
    /// input resets the connection, and a reset can destroy the answer before the peer has
    /// read it (a 413 sent while the client is still sending the body it refuses). So
    /// while the peer may still be sending, the connection shuts its write side (the peer
    /// sees the end of the answer) and lingers: what arrives is read and dropped until the
    /// peer closes its side or for at most two seconds.
    pub(crate) fn ready_to_close(&mut self, now: Instant) -> bool {
        if self.peer_done {
            return true;
        }
        if let Some(until) = self.lingering_until {
            return until <= now;
        }
        if let Err(e) = self.stream.shutdown_write() {
            log::debug!("shutting down an API connection's write side: {e}");
            return true;
        }
        self.lingering_until = Some(now + LINGER);
        false
    }

    /// Whether the connection has nothing under way: no request arriving, nothing left to
    /// send. That is a kept-alive connection between requests, or a new one that has sent
    /// nothing yet.
    pub(crate) fn is_idle(&self) -> bool {
        self.request_started.is_none()
            && self.output.is_empty()
            && !self.closing
            && self.waiting.is_none()
    }

    /// Whether the connection can be closed to make room for a newcomer: nothing under way
    /// and nothing arrived that the server has not read yet (a request waiting in the
    /// socket would be lost, and the client reset).
    pub(crate) fn can_make_room(&self) -> bool {
        self.is_idle() && !self.stream.has_pending_input()
    }

    /// Whether the connection has sent nothing and been answered nothing since it was
    /// accepted.
    fn is_silent(&self) -> bool {
        self.answered == 0 && self.is_idle()
    }

    /// The stream, for the in-memory harness to act as the client.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Last time bytes went either way.
    pub(crate) fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// When the connection times out, and what it waits for then. A new connection must
    /// start its first request within the request timeout, so that silent sockets cannot
    /// hold the connection limit. While responses are unsent the connection waits for the
    /// client to read them, which is bounded by the idle timeout since the last progress;
    /// requests behind them are not stalled.
    pub(crate) fn deadline(&self, config: &ServerConfig) -> (Instant, Wait) {
        if let Some(until) = self.lingering_until {
            return (until, Wait::Idle);
        }
        match self.request_started {
            Some(start) if self.sent == self.output.len() => {
                (start + config.request_timeout, Wait::Request)
            }
            None if self.is_silent() => (self.last_activity + config.request_timeout, Wait::Idle),
            _ => (self.last_activity + config.idle_timeout, Wait::Idle),
        }
    }
}

impl<S: AsRawFd> AsRawFd for Connection<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// The outcome of looking for the next request.
enum Next {
    Request(Request, bool, Persistence),
    Rejected(Response),
    Incomplete,
}

/// Most input a connection buffers: one request of the largest size.
fn input_capacity(config: &ServerConfig) -> usize {
    config
        .max_header_bytes
        .saturating_add(config.max_body_bytes)
}

/// EAGAIN and EINTR.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// `send(2)` without blocking and without SIGPIPE: a peer that went away is an `EPIPE`
/// error for this connection, never a signal to the process.
pub(crate) fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is a live slice, and the kernel reads at most `bytes.len()` bytes
    // from it; `fd` is a socket the caller owns. The return value is checked below.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    // A negative count is an error, reported in errno.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
