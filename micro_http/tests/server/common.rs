//! A server on a thread, and a raw client to talk to it.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use micro_http::{HttpServer, Request, Response, ServerConfig, ServerError, StatusCode};
use vmm_sys_util::eventfd::EventFd;

/// How long a test client waits for anything before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system's temporary directory.
fn unique_dir() -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("micro_http-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the test directory");
    dir
}

/// A server running [`echo`] (or another handler) on its own thread.
pub struct TestServer {
    dir: PathBuf,
    pub path: PathBuf,
    stop: EventFd,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
    /// How many requests the handler has seen.
    pub calls: Arc<AtomicUsize>,
}

impl TestServer {
    pub fn start(config: ServerConfig) -> Self {
        Self::with_handler(config, echo)
    }

    pub fn with_handler(
        config: ServerConfig,
        mut handler: impl FnMut(Request) -> Response + Send + 'static,
    ) -> Self {
        let dir = unique_dir();
        let path = dir.join("api.sock");
        let listener = UnixListener::bind(&path).expect("binding the test socket");
        let mut server = HttpServer::new(listener, config).expect("creating the server");
        let stop = EventFd::new(0).expect("creating the stop event");
        let stop_for_server = stop.try_clone().expect("cloning the stop event");
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let thread = std::thread::spawn(move || {
            server.run(&stop_for_server, &mut |request| {
                counter.fetch_add(1, Ordering::SeqCst);
                handler(request)
            })
        });
        TestServer {
            dir,
            path,
            stop,
            thread: Some(thread),
            calls,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.path)
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Waits until the handler has been entered `n` times (at most [`PATIENCE`]).
    pub fn wait_calls(&self, n: usize) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while self.calls() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the handler ran {} times, not {n}",
                self.calls()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the server and returns what `run` returned.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.shut_down().expect("the server thread was running")
    }

    fn shut_down(&mut self) -> Option<Result<(), ServerError>> {
        let thread = self.thread.take()?;
        self.stop.write(1).expect("signalling stop");
        Some(thread.join().expect("the server thread panicked"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = self.shut_down();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The default handler: `/empty` is 204, `/big` is 4 MiB of `x`, `/allow` is 405 with
/// Allow, anything else echoes `METHOD path?query body`.
pub fn echo(request: Request) -> Response {
    match request.path.as_str() {
        "/empty" => Response::new(StatusCode::NO_CONTENT),
        "/big" => Response::json(StatusCode::OK, vec![b'x'; BIG]),
        "/allow" => {
            Response::error(StatusCode::METHOD_NOT_ALLOWED, "GET only").with_header("Allow", "GET")
        }
        path => {
            let query = request.query.map(|q| format!("?{q}")).unwrap_or_default();
            let body = String::from_utf8_lossy(&request.body);
            Response::json(
                StatusCode::OK,
                format!("{} {path}{query} {body}", request.method),
            )
        }
    }
}

/// Size of the `/big` response body.
pub const BIG: usize = 4 * 1024 * 1024;

/// A response as read off the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

/// A raw client: writes bytes, reads responses one at a time.
pub struct Client {
    pub stream: UnixStream,
    pending: Vec<u8>,
}

impl Client {
    pub fn connect(path: &std::path::Path) -> Self {
        let stream = UnixStream::connect(path).expect("connecting to the test server");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(PATIENCE))
            .expect("write timeout");
        Client {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("sending");
    }

    /// Sends `GET path` on HTTP/1.1 and reads the response.
    pub fn get(&mut self, path: &str) -> Reply {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"));
        self.reply()
    }

    /// More bytes from the socket; false at end of file.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).expect("reading a response");
        self.pending.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one response (framed by Content-Length, which every response here has).
    pub fn reply(&mut self) -> Reply {
        let (status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) =
                parsed.parse(&self.pending).expect("a well-formed response")
            {
                let headers = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (parsed.code.expect("a status"), headers, len);
            }
            assert!(
                self.fill(),
                "the server closed before a whole response head"
            );
        };
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        let length: usize = if matches!(reply.status, 204 | 304) {
            assert_eq!(
                reply.header("content-length"),
                None,
                "204 with a Content-Length"
            );
            0
        } else {
            reply
                .header("content-length")
                .expect("every response but 204 has a Content-Length")
                .parse()
                .expect("a numeric Content-Length")
        };
        while self.pending.len() < head_len + length {
            assert!(
                self.fill(),
                "the server closed before a whole response body"
            );
        }
        reply.body = self.pending[head_len..head_len + length].to_vec();
        self.pending.drain(..head_len + length);
        reply
    }

    /// Asserts the server closed the connection without sending anything more.
    pub fn expect_closed(&mut self) {
        assert!(!self.fill(), "expected end of file, got {:?}", self.pending);
        assert!(self.pending.is_empty(), "unread bytes {:?}", self.pending);
    }

    /// Whether the server sent anything (or closed) within `wait`.
    pub fn quiet_for(&mut self, wait: Duration) -> bool {
        self.stream
            .set_read_timeout(Some(wait))
            .expect("read timeout");
        let mut byte = [0u8; 1];
        let quiet = matches!(self.stream.read(&mut byte), Err(e)
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        self.stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        quiet
    }
}

/// Asserts `reply` is a JSON error with `status` and that it announces the close.
pub fn assert_error_and_close(client: &mut Client, status: u16) -> Reply {
    let reply = client.reply();
    assert_eq!(reply.status, status, "body {:?}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(reply.text().starts_with("[\""), "{}", reply.text());
    client.expect_closed();
    reply
}
