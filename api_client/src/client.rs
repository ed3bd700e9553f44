//! The client: one connection, one request at a time.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::wire::{self, Framing, Head};
use crate::{Error, Response};

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// What reads and response errors are about.
const READING: &str = "reading the response";

/// A client of the REST API on a unix socket.
#[derive(Debug)]
pub struct ApiClient {
    stream: UnixStream,
    /// Bytes received and not yet returned in a response.
    buf: Vec<u8>,
    /// Where to reconnect, for a client made by [`ApiClient::connect`].
    path: Option<PathBuf>,
    timeout: Option<Duration>,
    /// The server closes (or closed) the connection after the last response, or the last
    /// exchange failed midway: the connection cannot carry another request.
    closed: bool,
    /// Responses received on this connection.
    answered: u64,
}

/// How an exchange failed.
enum Failure {
    /// Before any byte of the response came back on a connection the server may have
    /// closed as idle: the request can be sent again on a new connection.
    Stale(Error),
    /// Anything else.
    Fatal(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::Stale(error) | Failure::Fatal(error) => error,
        }
    }
}

impl ApiClient {
    /// Connects to the API socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, Error> {
        let stream = UnixStream::connect(path).map_err(|source| Error::Connect {
            path: path.to_owned(),
            source,
        })?;
        let mut client = ApiClient::from_stream(stream);
        client.path = Some(path.to_owned());
        Ok(client)
    }

    /// A client on a connected stream. It cannot reconnect once the server closes it.
    pub fn from_stream(stream: UnixStream) -> Self {
        ApiClient {
            stream,
            buf: Vec::new(),
            path: None,
            timeout: None,
            closed: false,
            answered: 0,
        }
    }

    /// Sets how long one read or write may block; `None` waits forever. A timeout shows as
    /// [`Error::Io`] with an `io::Error` of kind `WouldBlock`.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), Error> {
        apply_timeout(&self.stream, timeout)?;
        self.timeout = timeout;
        Ok(())
    }

    /// Sends `METHOD path HTTP/1.1` with `Host: localhost`, and `Content-Type:
    /// application/json` and `Content-Length` with a body, then reads one whole response:
    /// framed by `Content-Length`, or without one read until the server closes. Interim
    /// (1xx) responses are skipped. The connection is kept for the next request; if the
    /// server closed it, a client made by [`ApiClient::connect`] connects again, and
    /// sends a request again once if a kept connection turns out to have been closed
    /// before any answer came.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, Error> {
        let bytes = wire::request_bytes(method, path, body)?;
        let head_request = method == "HEAD";
        if self.closed {
            self.reconnect()?;
        }
        match self.exchange(&bytes, head_request) {
            Ok(response) => Ok(response),
            Err(Failure::Stale(_)) if self.answered > 0 && self.path.is_some() => {
                self.reconnect()?;
                self.exchange(&bytes, head_request)
                    .map_err(Failure::into_error)
            }
            Err(failure) => Err(failure.into_error()),
        }
    }

    /// Cloud Hypervisor style: `method` on `/api/v1/{command}` with an optional JSON body.
    /// `Ok(Some(body))` on 2xx with a body, `Ok(None)` on 2xx without one (204); any other
    /// status is [`Error::Server`] with the `error` field of a JSON body, else the body text.
    pub fn command(
        &mut self,
        method: &str,
        command: &str,
        body: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let path = format!("/api/v1/{command}");
        let response = self.request(method, &path, body.map(str::as_bytes))?;
        if !response.is_success() {
            return Err(Error::Server {
                status: response.status,
                message: response.error_message(),
            });
        }
        if response.body.is_empty() {
            return Ok(None);
        }
        String::from_utf8(response.body)
            .map(Some)
            .map_err(|_| Error::BadResponse("the body is not UTF-8".into()))
    }

    /// Replaces a connection the server closed with a new one.
    fn reconnect(&mut self) -> Result<(), Error> {
        let Some(path) = &self.path else {
            return Err(Error::Io {
                what: "sending the request",
                source: io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the server closed the connection",
                ),
            });
        };
        let stream = UnixStream::connect(path).map_err(|source| Error::Connect {
            path: path.clone(),
            source,
        })?;
        apply_timeout(&stream, self.timeout)?;
        self.stream = stream;
        self.buf.clear();
        self.closed = false;
        self.answered = 0;
        Ok(())
    }

    /// Sends one request and reads its response. Any failure leaves the connection closed.
    fn exchange(&mut self, bytes: &[u8], head_request: bool) -> Result<Response, Failure> {
        self.buf.clear();
        let result = match self.stream.write_all(bytes) {
            Ok(()) => self.read_response(head_request),
            Err(source) if is_reset(&source) => {
                // The server may have answered before it closed, e.g. 413 to a body it
                // would not read: that answer is still there to read.
                self.closed = true;
                let response = self.read_response(head_request);
                self.closed = true;
                match response {
                    Ok(response) => Ok(response),
                    Err(Failure::Stale(_)) => Err(Failure::Stale(Error::Io {
                        what: "sending the request",
                        source,
                    })),
                    Err(failure) => Err(failure),
                }
            }
            Err(source) => Err(Failure::Fatal(Error::Io {
                what: "sending the request",
                source,
            })),
        };
        if result.is_err() {
            self.closed = true;
        }
        result
    }

    fn read_response(&mut self, head_request: bool) -> Result<Response, Failure> {
        let mut received_any = false;
        let head = loop {
            match Head::parse(&self.buf).map_err(Failure::Fatal)? {
                Some(head) if head.is_interim().map_err(Failure::Fatal)? => {
                    self.buf.drain(..head.len);
                }
                Some(head) => break head,
                None if self.buf.len() > MAX_HEAD => {
                    let message = format!("response head exceeds {MAX_HEAD} bytes");
                    return Err(Failure::Fatal(Error::BadResponse(message)));
                }
                None => match self.fill() {
                    Ok(0) => {
                        let error = eof("the server closed the connection before answering");
                        return Err(if received_any {
                            Failure::Fatal(error)
                        } else {
                            Failure::Stale(error)
                        });
                    }
                    Ok(_) => received_any = true,
                    Err(error) if !received_any && is_reset_error(&error) => {
                        return Err(Failure::Stale(error));
                    }
                    Err(error) => return Err(Failure::Fatal(error)),
                },
            }
        };
        let framing = head.framing(head_request).map_err(Failure::Fatal)?;
        let end = self.read_body(head.len, framing).map_err(Failure::Fatal)?;
        let body = self.buf[head.len..end].to_vec();
        self.buf.drain(..end);
        self.closed = !head.keeps_open(framing);
        self.answered += 1;
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// Reads the body that starts at `start` in the buffer; returns where it ends.
    fn read_body(&mut self, start: usize, framing: Framing) -> Result<usize, Error> {
        match framing {
            Framing::Empty => Ok(start),
            Framing::Length(len) if len > MAX_BODY => Err(too_large(len)),
            Framing::Length(len) => {
                while self.buf.len() - start < len {
                    if self.fill()? == 0 {
                        let got = self.buf.len() - start;
                        let message = format!(
                            "the server closed the connection after {got} of {len} body bytes"
                        );
                        return Err(eof(&message));
                    }
                }
                Ok(start + len)
            }
            Framing::UntilClose => {
                while self.fill()? > 0 {
                    if self.buf.len() - start > MAX_BODY {
                        return Err(too_large(self.buf.len() - start));
                    }
                }
                Ok(self.buf.len())
            }
        }
    }

    /// Reads what the socket has into the buffer; 0 at end of file.
    fn fill(&mut self) -> Result<usize, Error> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        what: READING,
                        source,
                    })
                }
            }
        }
    }
}

fn apply_timeout(stream: &UnixStream, timeout: Option<Duration>) -> Result<(), Error> {
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|source| Error::Io {
            what: "setting the socket timeout",
            source,
        })
}

/// Whether a send or read failed because the server had closed the connection.
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

fn is_reset_error(error: &Error) -> bool {
    matches!(error, Error::Io { source, .. } if is_reset(source))
}

fn eof(message: &str) -> Error {
    Error::Io {
        what: READING,
        source: io::Error::new(io::ErrorKind::UnexpectedEof, message.to_owned()),
    }
}

fn too_large(len: usize) -> Error {
    Error::BadResponse(format!(
        "body of {len} bytes exceeds the limit of {MAX_BODY}"
    ))
}
