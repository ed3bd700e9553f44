//! Talking to `accordion`'s API the two ways a user does: the `accordion-remote` CLI, and
//! plain HTTP on the unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{guest, TempDir, Vmm, BOOT_TIMEOUT, READY};

pub const REMOTE: &str = env!("CARGO_BIN_EXE_accordion-remote");
/// How long a fresh VMM may take to accept connections on its socket.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

/// The test guest booted from the command line, with an API socket in `dir`.
pub fn booted_with_api(tag: &str, dir: &TempDir) -> Vmm {
    let socket = socket_in(&dir.0);
    let api = format!("path={}", socket.display());
    let mut vmm = Vmm::boot_guest(tag, &guest().vmlinux, "", &["--api-socket", &api]);
    vmm.wait_for(READY, BOOT_TIMEOUT);
    wait_for_socket(&socket, SOCKET_TIMEOUT);
    vmm
}

/// `accordion --api-socket path=DIR/api.sock EXTRA...`, once its socket accepts
/// connections.
pub fn spawn_with_api(tag: &str, dir: &TempDir, extra: &[&str]) -> Vmm {
    let socket = socket_in(&dir.0);
    let api = format!("path={}", socket.display());
    let mut args = vec!["--api-socket", api.as_str()];
    args.extend_from_slice(extra);
    let vmm = Vmm::spawn(tag, &args);
    wait_for_socket(&socket, SOCKET_TIMEOUT);
    vmm
}

/// Waits until `path` accepts connections.
pub fn wait_for_socket(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while UnixStream::connect(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} did not accept connections within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `accordion-remote --api-socket SOCKET ARGS...`.
pub fn remote(socket: &Path, args: &[&str]) -> Output {
    Command::new(REMOTE)
        .arg("--api-socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("cannot run accordion-remote")
}

/// Runs accordion-remote, asserts success, and returns stdout.
pub fn remote_ok(socket: &Path, args: &[&str]) -> String {
    let out = remote(socket, args);
    assert!(
        out.status.success(),
        "accordion-remote {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs accordion-remote, asserts it fails, and returns stderr.
pub fn remote_err(socket: &Path, args: &[&str]) -> String {
    let out = remote(socket, args);
    assert!(
        !out.status.success(),
        "accordion-remote {args:?} should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs accordion-remote and parses its JSON output.
pub fn remote_json(socket: &Path, args: &[&str]) -> serde_json::Value {
    let out = remote_ok(socket, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// An HTTP answer: status code, headers (lower-case names) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The message of a JSON error body: the error chain (a JSON array of strings, top
    /// message first, as Cloud Hypervisor answers) joined with ": ".
    pub fn error(&self) -> String {
        let chain = self.json();
        let parts = chain
            .as_array()
            .unwrap_or_else(|| panic!("the error body is not a JSON array: {:?}", self.body));
        assert!(!parts.is_empty(), "an empty error chain: {:?}", self.body);
        parts
            .iter()
            .map(|part| {
                part.as_str()
                    .unwrap_or_else(|| panic!("a non-string in the error chain: {:?}", self.body))
            })
            .collect::<Vec<_>>()
            .join(": ")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP response off `stream` (Content-Length framed, or to EOF).
pub fn read_answer(stream: &mut UnixStream) -> HttpAnswer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).unwrap_or_else(|e| {
            panic!(
                "reading the response: {e} ({:?}) after {} bytes: {:?}",
                e.kind(),
                buf.len(),
                String::from_utf8_lossy(&buf)
            )
        });
        assert!(n > 0, "connection closed before a full response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse::<usize>().expect("content-length"));
    let mut body = buf[head_end..].to_vec();
    let length = if matches!(status, 204 | 304) {
        Some(0)
    } else {
        length
    };
    match length {
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).expect("reading the body");
                assert!(n > 0, "connection closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => {
            stream.read_to_end(&mut body).expect("reading to EOF");
        }
    }
    HttpAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Sends `METHOD path` with an optional JSON body on a new connection and reads the answer.
pub fn http(socket: &Path, method: &str, path: &str, body: Option<&[u8]>) -> HttpAnswer {
    let mut stream = UnixStream::connect(socket).expect("connecting to the API socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if !body.is_empty() {
        request.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    // A server that refuses a large body answers early and closes: sending may then fail
    // part way, and the answer is still there to read.
    if let Err(e) = stream.write_all(&request) {
        eprintln!("sending {method} {path}: {e} (reading the early answer)");
    }
    read_answer(&mut stream)
}

/// `vmm.ping` over HTTP; returns how long it took, asserting a 200.
pub fn timed_ping(socket: &Path) -> Duration {
    let start = Instant::now();
    let answer = http(socket, "GET", "/api/v1/vmm.ping", None);
    let took = start.elapsed();
    assert_eq!(answer.status, 200, "{answer:?}");
    took
}

/// The memory device `id` (a virtio-mem device of zone `id`) as `vm.info` lists it.
pub fn memory_device(socket: &Path, id: &str) -> serde_json::Value {
    let info = remote_json(socket, &["info"]);
    info["memory"]["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["id"] == id).cloned())
        .unwrap_or_else(|| panic!("no memory device {id} in {info}"))
}

/// A private socket path inside `dir`.
pub fn socket_in(dir: &Path) -> PathBuf {
    dir.join("api.sock")
}

/// Asserts that `value` is valid against the schema `schema` (VmInfo, VmCounters, ...) of
/// docs/api/accordion.yaml, with scripts/lib/validate-against-openapi.py run by the Python
/// that `ACCORDION_OPENAPI_PYTHON` names (scripts/run-tests.sh sets it to the venv that
/// scripts/api-conformance.sh installs). Says it was skipped without it.
pub fn assert_matches_schema(schema: &str, value: &serde_json::Value) {
    let Some(python) = std::env::var_os("ACCORDION_OPENAPI_PYTHON") else {
        eprintln!("SKIPPED: checking {schema} against the OpenAPI file (ACCORDION_OPENAPI_PYTHON is not set)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python)
        .arg(root.join("scripts/lib/validate-against-openapi.py"))
        .arg("--spec")
        .arg(root.join("docs/api/accordion.yaml"))
        .arg(schema)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run the OpenAPI validator");
    child
        .stdin
        .take()
        .expect("the validator's stdin")
        .write_all(value.to_string().as_bytes())
        .expect("writing to the validator");
    let out = child.wait_with_output().expect("waiting for the validator");
    assert!(
        out.status.success(),
        "{schema} does not match docs/api/accordion.yaml ({}):\n{}{}\n{value}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
