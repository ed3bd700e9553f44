//! A fake API server: answers each request with canned bytes, written piece by piece.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

/// The pieces of one answer, written with a short pause between them.
pub type Answer = Vec<&'static [u8]>;

pub struct Fake {
    dir: PathBuf,
    pub path: PathBuf,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl Fake {
    /// Accepts one connection per entry of `connections`, in order; on each reads one
    /// request per answer and writes the answer, then closes the connection.
    pub fn start(connections: Vec<Vec<Answer>>) -> Self {
        let dir = crate::socket_dir();
        let path = dir.join("fake.sock");
        let listener = UnixListener::bind(&path).expect("binding the fake server");
        let thread = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answers in connections {
                let (mut stream, _) = listener.accept().expect("accepting");
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("read timeout");
                for answer in answers {
                    requests.push(read_request(&mut stream));
                    for piece in answer {
                        stream.write_all(piece).expect("writing an answer");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            requests
        });
        Fake {
            dir,
            path,
            thread: Some(thread),
        }
    }

    /// The requests the fake received, once it has given every answer.
    pub fn requests(mut self) -> Vec<Vec<u8>> {
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("the fake server panicked")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads one request: head, then `Content-Length` bytes of body.
pub fn read_request(stream: &mut UnixStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut slots);
        if let httparse::Status::Complete(head) = request.parse(&bytes).expect("a valid request") {
            let length = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map_or(0, |h| {
                    std::str::from_utf8(h.value)
                        .expect("ASCII")
                        .parse()
                        .expect("a number")
                });
            if bytes.len() >= head + length {
                return bytes;
            }
        }
        let n = stream.read(&mut chunk).expect("reading a request");
        assert!(n > 0, "the client closed midway: {bytes:?}");
        bytes.extend_from_slice(&chunk[..n]);
    }
}
