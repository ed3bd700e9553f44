//! Canned responses: framing, splitting, errors, keep-alive and reconnecting.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use api_client::{ApiClient, Error};

use crate::fake::{read_request, Fake};

const OK_INFO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"a\": 1}\n";
const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";

#[test]
fn sends_the_documented_request_and_reads_a_split_response() {
    let fake = Fake::start(vec![vec![vec![
        b"HTTP/1.1 2",
        b"00 OK\r\nContent-Type: application/json\r\nContent-Le",
        b"ngth: 16\r\n\r\n{\"memory\"",
        b": 1024}",
    ]]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    let answer = client
        .command("PUT", "vm.resize", Some("{\"desired\": 2}"))
        .expect("a 200");
    assert_eq!(answer.as_deref(), Some("{\"memory\": 1024}"));
    let requests = fake.requests();
    assert_eq!(
        String::from_utf8_lossy(&requests[0]),
        "PUT /api/v1/vm.resize HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"desired\": 2}"
    );
}

#[test]
fn no_content_is_none() {
    let fake = Fake::start(vec![vec![vec![NO_CONTENT]]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    assert_eq!(
        client.command("PUT", "vm.shutdown", None).expect("a 204"),
        None
    );
    let requests = fake.requests();
    assert!(requests[0].ends_with(b"Content-Length: 0\r\n\r\n"));
}

#[test]
fn error_field_is_the_message() {
    let fake = Fake::start(vec![vec![vec![
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n",
        b"Content-Length: 13\r\n\r\n{\"error\":\"x\"}",
    ]]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    match client.command("PUT", "vm.boot", None) {
        Err(Error::Server { status, message }) => {
            assert_eq!(status, 400);
            assert_eq!(message, "x");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[test]
fn plain_error_body_is_the_message() {
    let fake = Fake::start(vec![vec![vec![
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 8\r\n\r\nit broke",
    ]]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    let error = client.command("GET", "vm.info", None).expect_err("a 500");
    assert!(matches!(&error, Error::Server { status: 500, message } if message == "it broke"));
    assert_eq!(error.to_string(), "the API server answered 500: it broke");
}

#[test]
fn body_without_length_is_read_until_close() {
    let fake = Fake::start(vec![vec![vec![
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"long\":",
        b" \"answer\"}",
    ]]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    let response = client
        .request("GET", "/api/v1/vm.info", None)
        .expect("a 200");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"{\"long\": \"answer\"}");
    assert_eq!(response.header("connection"), Some("close"));
}

#[test]
fn keep_alive_reuses_the_connection() {
    // One connection, three answers: the fake accepts no second connection.
    let fake = Fake::start(vec![vec![vec![OK_INFO], vec![NO_CONTENT], vec![OK_INFO]]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    assert!(client.command("GET", "vm.info", None).expect("1").is_some());
    assert!(client
        .command("PUT", "vm.pause", None)
        .expect("2")
        .is_none());
    assert!(client.command("GET", "vm.info", None).expect("3").is_some());
    assert_eq!(fake.requests().len(), 3);
}

#[test]
fn reconnects_after_the_server_closes() {
    let closing: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    let fake = Fake::start(vec![vec![vec![closing]], vec![vec![closing]]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    for _ in 0..2 {
        assert_eq!(
            client
                .command("GET", "vmm.ping", None)
                .expect("ok")
                .as_deref(),
            Some("ok")
        );
    }
    assert_eq!(fake.requests().len(), 2);
}

#[test]
fn interim_responses_are_skipped() {
    let fake = Fake::start(vec![vec![vec![b"HTTP/1.1 100 Continue\r\n\r\n", OK_INFO]]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    let response = client.request("PUT", "/x", Some(b"{}")).expect("a 200");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"{\"a\": 1}\n");
}

#[test]
fn truncated_body_is_an_io_error() {
    let fake = Fake::start(vec![vec![vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    ]]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    match client.request("GET", "/x", None) {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), ErrorKind::UnexpectedEof),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn garbage_is_a_bad_response() {
    let fake = Fake::start(vec![vec![vec![b"SSH-2.0-OpenSSH_9.2\r\n\r\n"]]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    let error = client.request("GET", "/x", None).expect_err("not HTTP");
    assert!(matches!(error, Error::BadResponse(_)), "{error:?}");
}

#[test]
fn head_response_has_no_body() {
    let fake = Fake::start(vec![vec![
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"],
        vec![OK_INFO],
    ]]);
    let mut client = ApiClient::connect(&fake.path).expect("connecting");
    let response = client.request("HEAD", "/x", None).expect("a 200");
    assert!(response.body.is_empty());
    assert_eq!(response.header("content-length"), Some("9"));
    assert_eq!(
        client.request("GET", "/x", None).expect("a 200").body.len(),
        9
    );
}

#[test]
fn missing_socket_is_a_connect_error() {
    let dir = crate::socket_dir();
    let path = dir.join("nobody.sock");
    match ApiClient::connect(&path) {
        Err(Error::Connect {
            path: reported,
            source,
        }) => {
            assert_eq!(reported, path);
            assert_eq!(source.kind(), ErrorKind::NotFound);
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn silent_server_times_out() {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    let mut client = ApiClient::from_stream(ours);
    client
        .set_timeout(Some(Duration::from_millis(200)))
        .expect("setting the timeout");
    let start = Instant::now();
    match client.request("GET", "/x", None) {
        Err(Error::Io { source, .. }) => assert!(matches!(
            source.kind(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut
        )),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(theirs);
}

#[test]
fn stream_client_cannot_reconnect() {
    let (ours, mut theirs) = UnixStream::pair().expect("a socket pair");
    let server = std::thread::spawn(move || {
        read_request(&mut theirs);
        std::io::Write::write_all(
            &mut theirs,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .expect("answering");
    });
    let mut client = ApiClient::from_stream(ours);
    assert_eq!(
        client.command("GET", "vmm.ping", None).expect("a 200"),
        None
    );
    server.join().expect("the server thread panicked");
    match client.command("GET", "vmm.ping", None) {
        Err(Error::Io { source, .. }) => assert_eq!(source.kind(), ErrorKind::NotConnected),
        other => panic!("expected not connected, got {other:?}"),
    }
}

#[test]
fn invalid_requests_are_refused_before_sending() {
    let (ours, _theirs) = UnixStream::pair().expect("a socket pair");
    let mut client = ApiClient::from_stream(ours);
    let error = client.command("GET", "vm info", None).expect_err("a space");
    assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
}
