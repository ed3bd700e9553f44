//! The server's real connection state machine driven over an in-memory stream, for the
//! cargo-fuzz target `api_request` (`vmm/fuzz`) and the pseudo-random tests that keep its
//! body compiled. Compiled for tests and with the `fuzzing` feature only.
//!
//! [`Conversation::converse`] plays one client connection: the client's bytes arrive in the
//! given reads, one at a time, each read served as the epoll loop serves a readable
//! connection ([`crate::HttpServer`]: receive, then answer every complete request); the
//! client reads its responses only when the server cannot go on otherwise (its receive
//! window is full) and at the end. Then the client either shuts down its side or goes
//! quiet until the request timeout. Everything the server sends is parsed back and checked
//! ([`Transcript`] lists what is checked): any broken rule panics, naming it.
//!
//! It has no side effects: no socket, no file, no waiting (deadlines are acted on at once,
//! as if their time had come).

use std::io;
use std::time::Instant;

use vmm_sys_util::epoll::EventSet;

use crate::connection::{Connection, Stream, Wait};
use crate::parse::MAX_HEADERS;
use crate::server::READ_CHUNK;
use crate::{Method, Reply, Request, Response, ServerConfig, StatusCode};

/// Most steps one conversation may take: far more than any input needs, so reaching it
/// means the connection stopped making progress.
const MAX_STEPS: usize = 1_000_000;

/// How the client's side ends once it has sent everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It shuts down its sending side (end of file for the server) and reads until the
    /// server closes.
    Close,
    /// It stays connected and sends nothing more, reading what comes, until the request
    /// timeout has passed.
    Stall,
}

/// One client connection to play.
#[derive(Clone, Debug)]
pub struct Conversation<'a> {
    /// The server's limits.
    pub config: ServerConfig,
    /// The client's bytes, in the reads the server sees them in. An empty read is skipped.
    /// The server reads at most 64 KiB at a time, as its read buffer is that large.
    pub reads: Vec<&'a [u8]>,
    /// How the client's side ends.
    pub ending: Ending,
    /// Most bytes sent to the client and not yet read by it (its socket buffer); `None`
    /// for no limit. At least 256, so that the server's last-gasp 408 fits.
    pub window: Option<usize>,
}

/// A response as the client received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireResponse {
    /// The status code.
    pub status: u16,
    /// The header fields, in order.
    pub headers: Vec<(String, String)>,
    /// The body: `Content-Length` bytes, none for a response to `HEAD`.
    pub body: Vec<u8>,
}

impl WireResponse {
    /// The value of the first header field called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether it says `Connection: close`.
    pub fn closes(&self) -> bool {
        has_token(
            self.headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
                .map(|(_, value)| value.as_str()),
            "close",
        )
    }
}

/// What happened on the connection, checked: [`Conversation::converse`] panics unless
///
/// - every request handed to the handler is within the limits and has exactly its
///   `Content-Length` of body;
/// - the output is a sequence of whole responses and nothing else: interim
///   `100 Continue` responses, and final ones whose status line is `HTTP/1.1`, a code from
///   200 to 599 and a reason phrase (possibly empty), whose header fields are valid, with
///   exactly one `Content-Length` (none on 204 and 304) equal to the body that follows
///   (none after a `HEAD` request), and no `Transfer-Encoding`;
/// - the first final responses answer the handler's requests in order, each with the
///   handler's status (500 for a code out of range) and body, and at most one more
///   follows: the server's own refusal (400, 408, 413, 431, 501: a 4xx or 5xx) closing
///   the connection;
/// - a response saying `Connection: close` is the last, and one follows every request
///   that asked for it; the server closes the connection exactly when the client shut
///   down its side or such a response went out, and never leaves a request half-received
///   without answering 408 when the client stalls;
/// - the connection always makes progress: it never waits for nothing.
#[derive(Clone, Debug)]
pub struct Transcript {
    /// The requests handed to the handler, in order, with the handler's responses.
    pub exchanges: Vec<(Request, Response)>,
    /// The final responses the client received, in order.
    pub responses: Vec<WireResponse>,
    /// How many `100 Continue` interim responses it received.
    pub continues: usize,
    /// Whether the server closed the connection.
    pub closed: bool,
    /// Everything the client received.
    pub output: Vec<u8>,
}

impl Transcript {
    /// The server's own refusal, if it sent one: the final response after those to the
    /// handler's requests.
    pub fn refusal(&self) -> Option<&WireResponse> {
        self.responses.get(self.exchanges.len())
    }
}

impl Conversation<'_> {
    /// Plays the conversation, calling `handler` once per complete request in order, and
    /// checks what the client received (see [`Transcript`]).
    pub fn converse(&self, handler: &mut dyn FnMut(Request) -> Response) -> Transcript {
        if let Some(window) = self.window {
            assert!(window >= 256, "a window of {window} bytes is too small");
        }
        let mut exchanges = Vec::new();
        let mut recording = |request: Request| {
            let response = handler(request.clone());
            exchanges.push((request, response.clone()));
            response
        };
        let mut pump = Pump {
            config: &self.config,
            connection: Connection::new(Pipe::new(self.window), Instant::now()),
            scratch: vec![0; READ_CHUNK],
            steps: 0,
        };
        for read in &self.reads {
            if pump.connection.finished() {
                // The server closed; what the client still sends is lost.
                break;
            }
            pump.connection.stream_mut().arrive(read);
            pump.run(&mut recording);
        }
        match self.ending {
            Ending::Close => {
                pump.connection.stream_mut().shut_down();
                pump.run(&mut recording);
                assert!(
                    pump.connection.finished(),
                    "the client shut down its side, and the server did not close"
                );
            }
            Ending::Stall => pump.stall(&mut recording),
        }
        let closed = pump.connection.finished();
        let output = std::mem::take(&mut pump.connection.stream_mut().received);
        let (responses, continues) = parse_output(&output, &exchanges);
        let transcript = Transcript {
            exchanges,
            responses,
            continues,
            closed,
            output,
        };
        transcript.check(&self.config, self.ending);
        transcript
    }
}

/// The connection and what the epoll loop gives it.
struct Pump<'a> {
    config: &'a ServerConfig,
    connection: Connection<Pipe>,
    scratch: Vec<u8>,
    steps: usize,
}

impl Pump<'_> {
    /// Serves events until the connection waits for the client (more bytes, or the end of
    /// the conversation) or is finished. An event for a readable connection is a read and
    /// then serving, as in `HttpServer::on_event`; one for a writable connection is serving,
    /// after the client has read what it was sent.
    fn run(&mut self, handler: &mut dyn FnMut(Request) -> Response) {
        let now = Instant::now();
        loop {
            self.steps += 1;
            assert!(self.steps < MAX_STEPS, "the connection makes no progress");
            if self.connection.finished() {
                return;
            }
            let wanted = self.connection.wanted(self.config);
            if wanted.contains(EventSet::IN) && self.connection.stream_mut().readable() {
                self.connection
                    .receive(&mut self.scratch, self.config, now)
                    .expect("in-memory reads do not fail");
            } else if wanted.contains(EventSet::OUT) {
                self.connection.stream_mut().client_reads();
            } else {
                assert!(
                    !self.connection.stream_mut().readable(),
                    "the connection stopped reading with the client's bytes waiting \
                     and nothing to send"
                );
                return;
            }
            self.connection
                .serve(self.config, &mut |r| Reply::Now(handler(r)), now)
                .expect("in-memory writes do not fail");
        }
    }

    /// The client sends nothing more and reads everything; then the deadline passes and the
    /// connection is handled as `HttpServer::expire` does: a last look at the socket, then
    /// 408 and closed if a request is still incomplete; an idle connection stays (its idle
    /// timeout would close it silently later).
    fn stall(&mut self, handler: &mut dyn FnMut(Request) -> Response) {
        self.run(handler);
        if self.connection.finished() {
            return;
        }
        self.connection.stream_mut().client_reads();
        let now = Instant::now();
        if self.connection.deadline(self.config).1 != Wait::Request {
            return;
        }
        self.connection
            .receive(&mut self.scratch, self.config, now)
            .expect("in-memory reads do not fail");
        self.connection
            .serve(self.config, &mut |r| Reply::Now(handler(r)), now)
            .expect("in-memory writes do not fail");
        if !self.connection.finished() && self.connection.deadline(self.config).1 == Wait::Request {
            // The server closes the connection right after this one try to send the 408.
            self.connection.time_out(now);
            assert!(self.connection.finished(), "the 408 did not fit the window");
        } else {
            self.run(handler);
        }
    }
}

/// Both directions of an in-memory connection, seen from the server.
struct Pipe {
    /// The client's latest write, and how much of it the server has read.
    incoming: Vec<u8>,
    read: usize,
    /// The client shut down its side.
    eof: bool,
    /// Everything the server sent.
    received: Vec<u8>,
    /// Sent bytes the client has not read yet.
    unread: usize,
    window: Option<usize>,
}

impl Pipe {
    fn new(window: Option<usize>) -> Self {
        Pipe {
            incoming: Vec::new(),
            read: 0,
            eof: false,
            received: Vec::new(),
            unread: 0,
            window,
        }
    }

    /// The client writes `bytes`; the server has read all it wrote before.
    fn arrive(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.read, self.incoming.len());
        self.incoming.clear();
        self.incoming.extend_from_slice(bytes);
        self.read = 0;
    }

    fn shut_down(&mut self) {
        self.eof = true;
    }

    /// Whether a read would return something (bytes or end of file).
    fn readable(&self) -> bool {
        self.read < self.incoming.len() || self.eof
    }

    fn client_reads(&mut self) {
        self.unread = 0;
    }
}

impl Stream for Pipe {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.incoming[self.read..];
        if rest.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.read += n;
        Ok(n)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = self
            .window
            .map_or(usize::MAX, |window| window - self.unread);
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(room);
        self.received.extend_from_slice(&bytes[..n]);
        self.unread += n;
        Ok(n)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn has_pending_input(&self) -> bool {
        self.read < self.incoming.len()
    }
}

impl Transcript {
    fn check(&self, config: &ServerConfig, ending: Ending) {
        for (request, _) in &self.exchanges {
            let length = request
                .header("content-length")
                .map_or(0, |v| v.trim().parse::<usize>().expect("a checked length"));
            assert_eq!(request.body.len(), length, "body of {request:?}");
            assert!(length <= config.max_body_bytes, "a body past the limit");
            let head: usize = request
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>()
                + request.path.len();
            assert!(head < config.max_header_bytes, "a head past the limit");
            assert!(
                request.headers.len() <= MAX_HEADERS,
                "too many header fields"
            );
        }
        let answered = self.exchanges.len();
        assert!(
            self.responses.len() >= answered,
            "{} requests handled, {} responses sent",
            answered,
            self.responses.len()
        );
        for (i, ((request, response), wire)) in
            self.exchanges.iter().zip(&self.responses).enumerate()
        {
            let expected = if (200..=599).contains(&response.status.0) {
                response.status
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            assert_eq!(wire.status, expected.0, "status of response {i}");
            let body = match &response.body {
                Some(body) if expected.allows_body() => body.as_slice(),
                _ => &[],
            };
            if request.method == Method::Head {
                assert!(wire.body.is_empty(), "a body in response {i} to HEAD");
                if expected.allows_body() {
                    let length = wire.header("content-length").and_then(|v| v.parse().ok());
                    assert_eq!(
                        length,
                        Some(body.len()),
                        "Content-Length of response {i} to HEAD"
                    );
                }
            } else {
                assert_eq!(wire.body, body, "body of response {i}");
            }
            let asked_to_close = has_token(
                request
                    .headers
                    .iter()
                    .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
                    .map(|(_, value)| value.as_str()),
                "close",
            );
            assert!(
                !asked_to_close || wire.closes(),
                "request {i} asked to close, response {i} does not say so"
            );
        }
        match &self.responses[answered..] {
            [] => {}
            [refusal] => {
                assert!(
                    (400..=599).contains(&refusal.status),
                    "the server refused a request with {}",
                    refusal.status
                );
                assert!(refusal.closes(), "a refusal that keeps the connection");
            }
            more => panic!("{} responses to no request", more.len()),
        }
        if let Some(i) = self.responses.iter().position(WireResponse::closes) {
            assert_eq!(
                i + 1,
                self.responses.len(),
                "responses after Connection: close"
            );
        }
        let said_close = self.responses.last().is_some_and(WireResponse::closes);
        match ending {
            Ending::Close => assert!(self.closed, "not closed after the client shut down"),
            Ending::Stall => assert_eq!(
                self.closed, said_close,
                "closed: {}, but the last response says close: {}",
                self.closed, said_close
            ),
        }
    }
}

/// Splits what the client received into responses, checking each is well formed (see
/// [`Transcript`]); `exchanges` tell which final responses answer `HEAD` requests.
fn parse_output(output: &[u8], exchanges: &[(Request, Response)]) -> (Vec<WireResponse>, usize) {
    let mut responses: Vec<WireResponse> = Vec::new();
    let mut continues = 0;
    let mut rest = output;
    while !rest.is_empty() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "a truncated response head: {:?}",
                    String::from_utf8_lossy(rest)
                )
            });
        let head = std::str::from_utf8(&rest[..end])
            .unwrap_or_else(|_| panic!("a response head that is not UTF-8: {:?}", &rest[..end]));
        rest = &rest[end + 4..];
        let mut lines = head.split("\r\n");
        let status = parse_status_line(lines.next().unwrap_or_default());
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("a header line without a colon: {line:?}"));
            assert!(is_token(name), "header name {name:?}");
            let value = value.trim_matches([' ', '\t']);
            assert!(
                value
                    .bytes()
                    .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
                "header value {value:?}"
            );
            headers.push((name.to_owned(), value.to_owned()));
        }
        let index = responses.len();
        if status == 100 {
            let expected = exchanges
                .get(index)
                .is_none_or(|(request, _)| request.header("expect").is_some());
            assert!(
                expected,
                "100 Continue before response {index}, which did not ask for it"
            );
            continues += 1;
            continue;
        }
        assert!((200..=599).contains(&status), "final status {status}");
        let field = |name: &str| {
            headers
                .iter()
                .filter(|(field, _)| field.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
                .collect::<Vec<_>>()
        };
        assert!(
            field("transfer-encoding").is_empty(),
            "Transfer-Encoding in a response"
        );
        let lengths = field("content-length");
        let length = if StatusCode(status).allows_body() {
            let [length] = lengths[..] else {
                panic!("response {index} ({status}) has Content-Length {lengths:?}");
            };
            assert!(
                !length.is_empty() && length.bytes().all(|b| b.is_ascii_digit()),
                "Content-Length {length:?}"
            );
            length.parse::<usize>().expect("digits")
        } else {
            assert!(lengths.is_empty(), "Content-Length on a {status}");
            0
        };
        let head_only = exchanges
            .get(index)
            .is_some_and(|(request, _)| request.method == Method::Head);
        let body_len = if head_only { 0 } else { length };
        assert!(
            rest.len() >= body_len,
            "response {index}: Content-Length {length} with {} bytes left",
            rest.len()
        );
        let (body, after) = rest.split_at(body_len);
        rest = after;
        responses.push(WireResponse {
            status,
            headers,
            body: body.to_vec(),
        });
    }
    (responses, continues)
}

/// The code of `HTTP/1.1 <code> <reason>`; the reason may be empty, not the space before it.
fn parse_status_line(line: &str) -> u16 {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .unwrap_or_else(|| panic!("status line {line:?}"));
    let (code, reason) = rest
        .split_at_checked(3)
        .unwrap_or_else(|| panic!("status line {line:?}"));
    assert!(
        code.bytes().all(|b| b.is_ascii_digit()),
        "status line {line:?}"
    );
    let reason = reason
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space after the code: {line:?}"));
    assert!(
        reason
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
        "reason phrase {reason:?}"
    );
    code.parse().expect("three digits")
}

/// Whether `name` is an HTTP token (RFC 9110, section 5.6.2).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether one of the comma-separated `values` is `token`, compared case-insensitively.
fn has_token<'a>(values: impl Iterator<Item = &'a str>, token: &str) -> bool {
    values
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(request: Request) -> Response {
        match request.path.as_str() {
            "/204" => Response::new(StatusCode::NO_CONTENT),
            "/close" => Response::json(StatusCode::OK, "{}"),
            "/weird" => Response::new(StatusCode(1000)),
            _ => Response::json(StatusCode::OK, request.body),
        }
    }

    fn converse(reads: &[&[u8]], ending: Ending, window: Option<usize>) -> Transcript {
        Conversation {
            config: ServerConfig::default(),
            reads: reads.to_vec(),
            ending,
            window,
        }
        .converse(&mut echo)
    }

    #[test]
    fn pipelined_requests_in_pieces() {
        let text = b"PUT /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /204 HTTP/1.1\r\n\r\nHEAD /h HTTP/1.1\r\nContent-Length: 2\r\n\r\nxy";
        let whole = converse(&[text], Ending::Close, None);
        assert_eq!(whole.exchanges.len(), 3);
        let statuses: Vec<u16> = whole.responses.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 204, 200]);
        assert_eq!(whole.responses[0].body, b"abc");
        assert!(whole.responses[2].body.is_empty());
        assert!(whole.closed);
        for cut in 1..text.len() {
            let (a, b) = text.split_at(cut);
            let split = converse(&[a, b], Ending::Close, Some(256));
            assert_eq!(split.responses, whole.responses, "cut at {cut}");
        }
    }

    #[test]
    fn refusals_close() {
        let t = converse(
            &[b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"],
            Ending::Stall,
            None,
        );
        assert_eq!(t.refusal().map(|r| r.status), Some(501));
        assert!(t.closed);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(16 * 1024));
        let t = converse(&[big.as_bytes()], Ending::Close, None);
        assert_eq!(t.refusal().map(|r| r.status), Some(431));
    }

    #[test]
    fn a_stalled_request_gets_408_and_an_idle_connection_stays() {
        let t = converse(&[b"GET / HTTP/1.1\r\n\r\nGET / HT"], Ending::Stall, None);
        assert_eq!(t.exchanges.len(), 1);
        assert_eq!(t.refusal().map(|r| r.status), Some(408));
        let t = converse(&[b"GET / HTTP/1.1\r\n\r\n"], Ending::Stall, None);
        assert!(!t.closed);
        assert_eq!(t.responses.len(), 1);
    }

    #[test]
    fn continue_then_body() {
        let head = b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let t = converse(&[head, b"hi"], Ending::Close, None);
        assert_eq!(t.continues, 1);
        assert_eq!(t.responses[0].body, b"hi");
    }

    #[test]
    fn out_of_range_status_and_http10() {
        let t = converse(
            &[b"GET /weird HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n"],
            Ending::Stall,
            None,
        );
        assert_eq!(t.responses.len(), 1);
        assert_eq!(t.responses[0].status, 500);
        assert!(t.closed);
    }

    #[test]
    fn a_slow_reader_gets_everything() {
        let one = b"PUT /a HTTP/1.1\r\nContent-Length: 1000\r\n\r\n";
        let mut text = Vec::new();
        for _ in 0..200 {
            text.extend_from_slice(one);
            text.extend_from_slice(&[b'z'; 1000]);
        }
        let t = converse(&[&text], Ending::Close, Some(256));
        assert_eq!(t.responses.len(), 200);
    }
}
