//! Stalled and idle clients.

use std::time::{Duration, Instant};

use micro_http::ServerConfig;

use crate::common::{assert_error_and_close, TestServer};

fn config(request_timeout: Duration, idle_timeout: Duration) -> ServerConfig {
    ServerConfig {
        request_timeout,
        idle_timeout,
        ..ServerConfig::default()
    }
}

#[test]
fn stalled_request_gets_408_and_close() {
    let timeout = Duration::from_millis(300);
    let server = TestServer::start(config(timeout, Duration::from_secs(60)));
    let mut client = server.client();
    let start = Instant::now();
    client.send("GET /slow HTTP/1.1\r\nHost: te");
    let reply = assert_error_and_close(&mut client, 408);
    assert!(
        start.elapsed() >= timeout,
        "408 after {:?}",
        start.elapsed()
    );
    assert!(reply.text().contains("in time"), "{}", reply.text());
    assert_eq!(server.calls(), 0);
}

#[test]
fn timeout_counts_from_the_first_byte_of_the_request() {
    let timeout = Duration::from_millis(400);
    let server = TestServer::start(config(timeout, Duration::from_secs(60)));
    let mut client = server.client();
    let start = Instant::now();
    // Trickling bytes does not extend the deadline.
    for piece in ["PUT /x HTTP/1.1\r\n", "Content-Length: 5\r\n\r\n", "a", "b"] {
        client.send(piece);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_error_and_close(&mut client, 408);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= timeout && elapsed < timeout * 5,
        "408 after {elapsed:?}"
    );
}

#[test]
fn stalled_client_does_not_delay_others() {
    let server = TestServer::start(config(Duration::from_secs(5), Duration::from_secs(60)));
    let mut stalled = server.client();
    stalled.send("PUT /x HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly part");
    let mut other = server.client();
    let start = Instant::now();
    assert_eq!(other.get("/fast").text(), "GET /fast ");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "served after {:?}",
        start.elapsed()
    );
    assert!(stalled.quiet_for(Duration::from_millis(50)));
}

#[test]
fn idle_connection_is_closed_silently() {
    let idle = Duration::from_millis(300);
    let server = TestServer::start(config(Duration::from_secs(5), idle));
    let mut client = server.client();
    assert_eq!(client.get("/").status, 200);
    let start = Instant::now();
    client.expect_closed();
    assert!(start.elapsed() >= idle - Duration::from_millis(50));
}

#[test]
fn active_connection_outlives_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let server = TestServer::start(config(Duration::from_secs(5), idle));
    let mut client = server.client();
    for _ in 0..6 {
        assert_eq!(client.get("/").status, 200);
        std::thread::sleep(idle / 3);
    }
}

#[test]
fn slow_handler_does_not_time_out_requests_that_arrived() {
    // The handler blocks the loop past the request timeout while another client's request
    // arrives; that request was complete in time and must be served, not answered 408.
    let timeout = Duration::from_millis(300);
    let server = TestServer::with_handler(config(timeout, Duration::from_secs(60)), |request| {
        if request.path == "/slow" {
            std::thread::sleep(Duration::from_millis(700));
        }
        crate::common::echo(request)
    });
    let mut waiting = server.client();
    waiting.send("PUT /late HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
    // A round trip on another connection: the server has taken `waiting` and its first
    // bytes (they were there before this client connected), so its request timer runs.
    assert_eq!(server.client().get("/barrier").text(), "GET /barrier ");
    let mut slow = server.client();
    slow.send("GET /slow HTTP/1.1\r\n\r\n");
    // The rest arrives while the handler blocks the loop, in time.
    server.wait_calls(2);
    waiting.send("cd");
    assert_eq!(slow.reply().text(), "GET /slow ");
    assert_eq!(waiting.reply().text(), "PUT /late abcd");
}

#[test]
fn slow_handler_does_not_close_connections_whose_first_request_arrived() {
    // While the handler blocks the loop past the request timeout, new clients connect and
    // send their requests at once; the server has not read them when their time as silent
    // connections runs out, and must serve them rather than close (and reset) them.
    let timeout = Duration::from_millis(200);
    let server = TestServer::with_handler(config(timeout, Duration::from_secs(60)), |request| {
        if request.path == "/slow" {
            std::thread::sleep(Duration::from_millis(500));
        }
        crate::common::echo(request)
    });
    // Connected, and taken in by the server, before the slow request.
    let mut others: Vec<_> = (0..4).map(|_| server.client()).collect();
    // A round trip on a later connection: the server has accepted the four before it.
    assert_eq!(server.client().get("/barrier").text(), "GET /barrier ");
    let mut slow = server.client();
    slow.send("GET /slow HTTP/1.1\r\n\r\n");
    server.wait_calls(2);
    for (i, client) in others.iter_mut().enumerate() {
        client.send(format!("GET /other/{i} HTTP/1.1\r\n\r\n"));
    }
    assert_eq!(slow.reply().text(), "GET /slow ");
    for (i, client) in others.iter_mut().enumerate() {
        assert_eq!(client.reply().text(), format!("GET /other/{i} "));
    }
}
