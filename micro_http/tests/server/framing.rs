//! Requests and responses on the wire: parsing, framing, keep-alive, rejections.

use micro_http::ServerConfig;

use crate::common::{assert_error_and_close, TestServer};

#[test]
fn response_has_standard_headers() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    let reply = client.get("/api/v1/vm.info?full=1");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "GET /api/v1/vm.info?full=1 ");
    assert_eq!(reply.header("server"), Some("Accordion"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("content-length"), Some("27"));
    assert_eq!(reply.header("connection"), None);
}

#[test]
fn body_reaches_the_handler() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    client.send("PUT /api/v1/vm.resize HTTP/1.1\r\nContent-Length: 14\r\n\r\n{\"size\": 4096}");
    let reply = client.reply();
    assert_eq!(reply.text(), "PUT /api/v1/vm.resize {\"size\": 4096}");
}

#[test]
fn body_split_across_writes() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    client.send("POST /x HTTP/1.1\r\nConte");
    client.send("nt-Length: 10\r\n\r\n01234");
    client.send("56789");
    // A handler run on the first half would have answered first, with half the body.
    assert_eq!(client.reply().text(), "POST /x 0123456789");
    assert_eq!(server.calls(), 1);
}

#[test]
fn empty_response_has_no_length_and_no_type() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    let reply = client.get("/empty");
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("content-length"), None);
    assert_eq!(reply.header("content-type"), None);
    // The connection is still usable.
    assert_eq!(client.get("/again").status, 200);
}

#[test]
fn head_gets_no_body() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    client.send("HEAD /thing HTTP/1.1\r\n\r\n");
    // Read the head only: the raw reader would wait for the announced body.
    let mut buf = vec![0u8; 256];
    let n = std::io::Read::read(&mut client.stream, &mut buf).expect("reading");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 \r\n"), "{text}");
    assert!(text.contains("Content-Length: 12\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "{text}");
    assert_eq!(client.get("/next").text(), "GET /next ");
}

#[test]
fn method_not_allowed_carries_allow() {
    let server = TestServer::start(ServerConfig::default());
    let reply = server.client().get("/allow");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
    assert_eq!(reply.text(), r#"["GET only"]"#);
}

#[test]
fn chunked_is_not_implemented() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    client.send("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    assert_error_and_close(&mut client, 501);
    assert_eq!(server.calls(), 0);
}

#[test]
fn bad_content_length_is_rejected() {
    let server = TestServer::start(ServerConfig::default());
    for fields in [
        "Content-Length: ten\r\n",
        "Content-Length: -1\r\n",
        "Content-Length: 2\r\nContent-Length: 2\r\n",
    ] {
        let mut client = server.client();
        client.send(format!("PUT /x HTTP/1.1\r\n{fields}\r\nab"));
        assert_error_and_close(&mut client, 400);
    }
    assert_eq!(server.calls(), 0);
}

#[test]
fn malformed_request_is_rejected() {
    let server = TestServer::start(ServerConfig::default());
    for request in [
        "GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET / HTTP/3.0\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
    ] {
        let mut client = server.client();
        client.send(request);
        let reply = assert_error_and_close(&mut client, 400);
        assert!(reply.text().contains("malformed"), "{}", reply.text());
    }
    assert_eq!(server.calls(), 0);
}

#[test]
fn keep_alive_by_default_on_http11() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    for i in 0..5 {
        assert_eq!(client.get(&format!("/{i}")).text(), format!("GET /{i} "));
    }
}

#[test]
fn connection_close_is_honoured() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    client.send("GET /bye HTTP/1.1\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.text(), "GET /bye ");
    assert_eq!(reply.header("connection"), Some("close"));
    client.expect_closed();
    assert_eq!(server.calls(), 1);
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    client.send("GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(client.reply().header("connection"), Some("close"));
    client.expect_closed();

    let mut client = server.client();
    client.send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let reply = client.reply();
    assert_eq!(reply.header("connection"), Some("keep-alive"));
    client.send("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(client.reply().text(), "GET /b ");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    client.send(concat!(
        "GET /1 HTTP/1.1\r\n\r\n",
        "PUT /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        "GET /empty HTTP/1.1\r\n\r\n",
        "DELETE /4?q HTTP/1.1\r\n\r\n",
    ));
    assert_eq!(client.reply().text(), "GET /1 ");
    assert_eq!(client.reply().text(), "PUT /2 abc");
    assert_eq!(client.reply().status, 204);
    assert_eq!(client.reply().text(), "DELETE /4?q ");
    assert!(client.quiet_for(std::time::Duration::from_millis(100)));
}

#[test]
fn pipelined_request_after_a_bad_one_is_not_served() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    client.send("GET /1 HTTP/1.1\r\n\r\nBAD\x01 / HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n");
    assert_eq!(client.reply().text(), "GET /1 ");
    assert_error_and_close(&mut client, 400);
    assert_eq!(server.calls(), 1);
}

#[test]
fn expect_continue_gets_100_before_the_body() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    client.send("PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    let mut interim = [0u8; 25];
    std::io::Read::read_exact(&mut client.stream, &mut interim).expect("reading 100");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.send("ok");
    assert_eq!(client.reply().text(), "PUT /x ok");
}

#[test]
fn half_closed_client_still_gets_its_answer() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    client.send("GET /last HTTP/1.1\r\n\r\n");
    client
        .stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutting down the write side");
    assert_eq!(client.reply().text(), "GET /last ");
    client.expect_closed();
}

#[test]
fn stop_ends_run_cleanly() {
    let server = TestServer::start(ServerConfig::default());
    let mut client = server.client();
    assert_eq!(client.get("/").status, 200);
    server.stop().expect("run returned an error");
}
