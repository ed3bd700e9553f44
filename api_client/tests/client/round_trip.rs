//! The client against the real server.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use api_client::{ApiClient, Error};
use micro_http::{HttpServer, Method, Request, Response, ServerConfig, StatusCode};
use vmm_sys_util::eventfd::EventFd;

struct Server {
    dir: PathBuf,
    path: PathBuf,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(config: ServerConfig) -> Self {
        let dir = crate::socket_dir();
        let path = dir.join("api.sock");
        let listener = UnixListener::bind(&path).expect("binding");
        let mut server = HttpServer::new(listener, config).expect("a server");
        let stop = EventFd::new(0).expect("an eventfd");
        let their_stop = stop.try_clone().expect("cloning the eventfd");
        let thread = std::thread::spawn(move || {
            server
                .run(&their_stop, &mut api)
                .expect("the server failed");
        });
        Server {
            dir,
            path,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A little API: ping, an echo, a command without answer, and errors.
fn api(request: Request) -> Response {
    match (&request.method, request.path.as_str()) {
        (Method::Get, "/api/v1/vmm.ping") => {
            Response::json(StatusCode::OK, r#"{"version":"0.1.0"}"#)
        }
        (Method::Put, "/api/v1/echo") => Response::json(StatusCode::OK, request.body),
        (Method::Put, "/api/v1/vm.pause") => Response::new(StatusCode::NO_CONTENT),
        (_, "/api/v1/vmm.ping" | "/api/v1/echo" | "/api/v1/vm.pause") => {
            Response::error(StatusCode::METHOD_NOT_ALLOWED, "wrong method")
        }
        (_, path) => Response::error(StatusCode::NOT_FOUND, &format!("no \"{path}\"")),
    }
}

#[test]
fn commands_round_trip() {
    let server = Server::start(ServerConfig::default());
    let mut client = ApiClient::connect(&server.path).expect("connecting");
    assert_eq!(
        client
            .command("GET", "vmm.ping", None)
            .expect("ping")
            .as_deref(),
        Some(r#"{"version":"0.1.0"}"#)
    );
    let body = r#"{"desired_ram": 1073741824, "note": "ünïcode"}"#;
    assert_eq!(
        client
            .command("PUT", "echo", Some(body))
            .expect("echo")
            .as_deref(),
        Some(body)
    );
    assert_eq!(
        client.command("PUT", "vm.pause", None).expect("pause"),
        None
    );
    match client.command("GET", "vm.nothing", None) {
        Err(Error::Server { status, message }) => {
            assert_eq!(status, 404);
            // Double quotes in a message come back as single ones (see micro_http::json).
            assert_eq!(message, "no '/api/v1/vm.nothing'");
        }
        other => panic!("expected 404, got {other:?}"),
    }
    let response = client
        .request("DELETE", "/api/v1/echo", None)
        .expect("a response");
    assert_eq!(response.status, 405);
    assert_eq!(response.header("server"), Some("Accordion"));
}

#[test]
fn client_survives_the_server_closing_an_idle_connection() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let server = Server::start(config);
    let mut client = ApiClient::connect(&server.path).expect("connecting");
    assert!(client
        .command("GET", "vmm.ping", None)
        .expect("first")
        .is_some());
    std::thread::sleep(Duration::from_millis(400));
    assert!(client
        .command("GET", "vmm.ping", None)
        .expect("after idle")
        .is_some());
}

#[test]
fn server_limits_reach_the_client_as_errors() {
    let config = ServerConfig {
        max_body_bytes: 16,
        ..ServerConfig::default()
    };
    let server = Server::start(config);
    let mut client = ApiClient::connect(&server.path).expect("connecting");
    match client.command("PUT", "echo", Some(&"x".repeat(17))) {
        Err(Error::Server {
            status: 413,
            message,
        }) => {
            assert!(message.contains("16"), "{message}");
        }
        other => panic!("expected 413, got {other:?}"),
    }
    // The server closed that connection; the client connects again.
    assert!(client
        .command("PUT", "echo", Some("{}"))
        .expect("small")
        .is_some());
}

#[test]
fn early_answer_to_a_large_body_is_read() {
    let config = ServerConfig {
        max_body_bytes: 1024,
        ..ServerConfig::default()
    };
    let server = Server::start(config);
    let mut client = ApiClient::connect(&server.path).expect("connecting");
    // Far more than the socket buffers hold: the server answers 413 and closes while the
    // client is still sending.
    let body = "y".repeat(8 * 1024 * 1024);
    match client.command("PUT", "echo", Some(&body)) {
        Err(Error::Server { status: 413, .. }) => {}
        other => panic!("expected 413, got {other:?}"),
    }
}
