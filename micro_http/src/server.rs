//! The epoll loop: accepting connections, dispatching their events, enforcing deadlines.

use std::collections::HashMap;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::connection::{self, Connection, Wait};
use crate::response::Persistence;
use crate::{Reply, Request, Response, ServerConfig, StatusCode};

/// Epoll token of the listening socket.
const LISTENER: u64 = 0;
/// Epoll token of the stop event.
const STOP: u64 = 1;
/// Epoll token of the waker: a deferred response may be there.
const WAKE: u64 = 2;
/// The first connection token.
const FIRST_CONNECTION: u64 = 3;
/// Most connections accepted per wakeup, so a flood cannot starve served clients.
const ACCEPTS_PER_WAKEUP: usize = 32;
/// How long accepting pauses when the process is out of file descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Size of the read buffer shared by all connections.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Errors that stop the server. Problems of single connections only close them.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket could not be made nonblocking.
    #[error("making the API socket nonblocking: {0}")]
    Nonblocking(#[source] io::Error),
    /// An epoll operation on the server's own descriptors failed.
    #[error("epoll {what}: {source}")]
    Epoll {
        /// The operation, e.g. "adding the stop event".
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// An HTTP/1.1 server on a unix socket, run on the calling thread by [`HttpServer::run`].
pub struct HttpServer {
    listener: UnixListener,
    config: ServerConfig,
    epoll: Epoll,
    connections: HashMap<u64, Connection>,
    next_token: u64,
    /// Set while accepting is paused (no file descriptors): when to resume.
    accept_paused_until: Option<Instant>,
    scratch: Vec<u8>,
    /// Written when a deferred response may be there.
    wake: EventFd,
}

impl HttpServer {
    /// A server on `listener`, which it makes nonblocking.
    pub fn new(listener: UnixListener, config: ServerConfig) -> Result<Self, ServerError> {
        listener
            .set_nonblocking(true)
            .map_err(ServerError::Nonblocking)?;
        let epoll = Epoll::new().map_err(epoll_error("creating the instance"))?;
        add_readable(&epoll, listener.as_raw_fd(), LISTENER)
            .map_err(epoll_error("adding the listener"))?;
        let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(epoll_error("creating the waker"))?;
        add_readable(&epoll, wake.as_raw_fd(), WAKE).map_err(epoll_error("adding the waker"))?;
        Ok(HttpServer {
            listener,
            config,
            epoll,
            connections: HashMap::new(),
            next_token: FIRST_CONNECTION,
            accept_paused_until: None,
            scratch: vec![0; READ_CHUNK],
            wake,
        })
    }

    /// The eventfd to write once a [`crate::Deferred`] response may be there.
    pub fn waker(&self) -> io::Result<EventFd> {
        self.wake.try_clone()
    }

    /// Serves until `stop` (an EventFd) becomes readable; calls `handler` once per complete
    /// request, in order per connection. `stop` is not read, so it stays readable for others.
    /// Open connections are kept for a later call.
    pub fn run(
        &mut self,
        stop: &EventFd,
        handler: &mut dyn FnMut(Request) -> Response,
    ) -> Result<(), ServerError> {
        self.run_replying(stop, &mut |request| Reply::Now(handler(request)))
    }

    /// As [`run`](Self::run), with a handler that may answer later ([`Reply::Later`]).
    pub fn run_replying(
        &mut self,
        stop: &EventFd,
        handler: &mut dyn FnMut(Request) -> Reply,
    ) -> Result<(), ServerError> {
        add_readable(&self.epoll, stop.as_raw_fd(), STOP)
            .map_err(epoll_error("adding the stop event"))?;
        let result = self.serve(handler);
        if let Err(e) = remove(&self.epoll, stop.as_raw_fd()) {
            log::warn!("removing the stop event from epoll: {e}");
        }
        result
    }

    /// The number of open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    fn serve(&mut self, handler: &mut dyn FnMut(Request) -> Reply) -> Result<(), ServerError> {
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let timeout = self.wait_timeout(Instant::now());
            let count = match self.epoll.wait(timeout, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(epoll_error("waiting")(e)),
            };
            let ready = &events[..count];
            if ready.iter().any(|event| event.data() == STOP) {
                return Ok(());
            }
            for event in ready {
                match event.data() {
                    LISTENER => self.accept_all(),
                    WAKE => self.poll_deferred(handler),
                    token => {
                        let events = EventSet::from_bits_truncate(event.events());
                        self.on_event(token, events, handler);
                    }
                }
            }
            self.enforce_deadlines(handler);
        }
    }

    /// The epoll timeout in milliseconds: until the nearest deadline, rounded up, or -1.
    fn wait_timeout(&self, now: Instant) -> i32 {
        let nearest = self
            .connections
            .values()
            .filter(|connection| !connection.is_waiting())
            .map(|connection| connection.deadline(&self.config).0)
            .chain(self.accept_paused_until)
            .min();
        match nearest {
            None => -1,
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(now);
                let millis = wait.as_nanos().div_ceil(1_000_000);
                i32::try_from(millis).unwrap_or(i32::MAX)
            }
        }
    }

    /// Answers the connections whose deferred response is there.
    fn poll_deferred(&mut self, handler: &mut dyn FnMut(Request) -> Reply) {
        let _ = self.wake.read();
        let waiting: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, connection)| connection.is_waiting())
            .map(|(token, _)| *token)
            .collect();
        for token in waiting {
            let Some(connection) = self.connections.get_mut(&token) else {
                continue;
            };
            match connection.poll_deferred(&self.config, handler, Instant::now()) {
                Ok(false) => {}
                result => self.settle(token, result.map(|_| ())),
            }
        }
    }

    /// Accepts what is pending on the listener, up to [`ACCEPTS_PER_WAKEUP`].
    fn accept_all(&mut self) {
        for _ in 0..ACCEPTS_PER_WAKEUP {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_resource_shortage(&e) => {
                    log::warn!("accepting an API connection: {e}; pausing for {ACCEPT_BACKOFF:?}");
                    self.pause_accepting();
                    return;
                }
                // EINTR, ECONNABORTED, EPROTO and the like concern one connection only.
                Err(e) => log::debug!("accepting an API connection: {e}"),
            }
        }
    }

    /// Takes a new connection in, making room for it or turning it away at the limit.
    fn admit(&mut self, stream: UnixStream) {
        if self.connections.len() >= self.config.max_connections && !self.evict_longest_idle() {
            log::warn!(
                "{} API connections open; answering a new one 503",
                self.connections.len()
            );
            turn_away(&stream);
            return;
        }
        if let Err(e) = stream.set_nonblocking(true) {
            log::warn!("making an API connection nonblocking: {e}");
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        let connection = Connection::new(stream, Instant::now());
        let event = EpollEvent::new(connection.registered, token);
        match self
            .epoll
            .ctl(ControlOperation::Add, connection.as_raw_fd(), event)
        {
            Ok(()) => {
                self.connections.insert(token, connection);
            }
            Err(e) => log::warn!("adding an API connection to epoll: {e}"),
        }
    }

    /// Closes the connection with nothing under way (kept alive between requests, or new
    /// and silent, and no request waiting unread in its socket) that has been quiet
    /// longest; false if every connection has a request or an answer under way.
    fn evict_longest_idle(&mut self) -> bool {
        let oldest = self
            .connections
            .iter()
            .filter(|(_, connection)| connection.can_make_room())
            .min_by_key(|(_, connection)| connection.last_activity())
            .map(|(token, _)| *token);
        match oldest {
            Some(token) => {
                log::debug!("closing the longest idle API connection to make room");
                self.close(token);
                true
            }
            None => false,
        }
    }

    fn pause_accepting(&mut self) {
        if let Err(e) = remove(&self.epoll, self.listener.as_raw_fd()) {
            log::warn!("removing the API listener from epoll: {e}");
            return;
        }
        self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
    }

    fn resume_accepting(&mut self) {
        self.accept_paused_until = None;
        if let Err(e) = add_readable(&self.epoll, self.listener.as_raw_fd(), LISTENER) {
            log::warn!("adding the API listener back to epoll: {e}; retrying later");
            self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
        }
    }

    /// Reads, serves and writes for one connection that epoll reported.
    fn on_event(
        &mut self,
        token: u64,
        events: EventSet,
        handler: &mut dyn FnMut(Request) -> Reply,
    ) {
        let Some(connection) = self.connections.get_mut(&token) else {
            return;
        };
        if events.contains(EventSet::ERROR) {
            log::debug!("API connection error; closing it");
            self.close(token);
            return;
        }
        let now = Instant::now();
        let mut result = Ok(());
        if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP) {
            result = connection.receive(&mut self.scratch, &self.config, now);
        }
        if result.is_ok() {
            result = connection.serve(&self.config, handler, now);
        }
        self.settle(token, result);
    }

    /// After a connection did some work: closes it if it failed or is done, else
    /// updates what epoll waits for on it.
    fn settle(&mut self, token: u64, result: io::Result<()>) {
        let Some(connection) = self.connections.get_mut(&token) else {
            return;
        };
        if let Err(e) = result {
            log::debug!("API connection failed: {e}");
            self.close(token);
            return;
        }
        if connection.finished() && connection.ready_to_close(Instant::now()) {
            self.close(token);
            return;
        }
        let wanted = connection.wanted(&self.config);
        if wanted != connection.registered {
            let event = EpollEvent::new(wanted, token);
            match self
                .epoll
                .ctl(ControlOperation::Modify, connection.as_raw_fd(), event)
            {
                Ok(()) => connection.registered = wanted,
                Err(e) => {
                    log::warn!("updating an API connection in epoll: {e}");
                    self.close(token);
                }
            }
        }
    }

    /// Handles connections whose deadline has passed, and resumes accepting when due.
    fn enforce_deadlines(&mut self, handler: &mut dyn FnMut(Request) -> Reply) {
        let now = Instant::now();
        if self.accept_paused_until.is_some_and(|until| until <= now) {
            self.resume_accepting();
        }
        let expired: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, connection)| {
                !connection.is_waiting() && connection.deadline(&self.config).0 <= now
            })
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            self.expire(token, handler);
        }
    }

    /// A connection past its deadline gets a last look at its socket first, since a slow
    /// handler may have kept the loop from reading bytes that did arrive in time (the rest
    /// of a request, or the first request of a connection that looked silent). If it is
    /// still past its deadline then, an idle one is closed, and one with an incomplete
    /// request is answered 408 and closed.
    fn expire(&mut self, token: u64, handler: &mut dyn FnMut(Request) -> Reply) {
        let Some(connection) = self.connections.get_mut(&token) else {
            return;
        };
        let now = Instant::now();
        let mut result = connection.receive(&mut self.scratch, &self.config, now);
        if result.is_ok() {
            result = connection.serve(&self.config, handler, now);
        }
        if result.is_ok() && !connection.finished() {
            match connection.deadline(&self.config) {
                (deadline, Wait::Idle) if deadline <= now => {
                    log::debug!("closing an idle API connection");
                    self.close(token);
                    return;
                }
                (deadline, Wait::Request) if deadline <= now => {
                    log::debug!("API request timed out");
                    connection.time_out(now);
                    self.close(token);
                    return;
                }
                _ => {}
            }
        }
        self.settle(token, result);
    }

    fn close(&mut self, token: u64) {
        if let Some(connection) = self.connections.remove(&token) {
            if let Err(e) = remove(&self.epoll, connection.as_raw_fd()) {
                log::debug!("removing an API connection from epoll: {e}");
            }
        }
    }
}

/// Adds `fd` to `epoll`, waiting for it to become readable, under `token`.
fn add_readable(epoll: &Epoll, fd: RawFd, token: u64) -> io::Result<()> {
    epoll.ctl(
        ControlOperation::Add,
        fd,
        EpollEvent::new(EventSet::IN, token),
    )
}

/// Removes `fd` from `epoll`.
fn remove(epoll: &Epoll, fd: RawFd) -> io::Result<()> {
    epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default())
}

/// Wraps an error of the epoll operation `what`.
fn epoll_error(what: &'static str) -> impl FnOnce(io::Error) -> ServerError {
    move |source| ServerError::Epoll { what, source }
}

/// Answers a connection the server has no room for with 503, as far as the socket takes
/// it without blocking, and lets it close.
fn turn_away(stream: &UnixStream) {
    let mut bytes = Vec::new();
    Response::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many open API connections",
    )
    .write_to(&mut bytes, false, Persistence::Close);
    if let Err(e) = connection::send(stream.as_raw_fd(), &bytes) {
        log::debug!("sending 503: {e}");
    }
}

/// Errors that mean the process is out of descriptors or memory, not that one connection
/// failed: accepting again at once would fail the same way.
fn is_resource_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
