//! Many clients, the connection limit, clients that do not read, and hang-ups.

use std::io::Read;
use std::time::{Duration, Instant};

use micro_http::ServerConfig;

use crate::common::{Client, TestServer, BIG};

/// Sends the head of a request whose body is still to come and waits for the server's
/// `100 Continue`, so the server is known to hold the connection busy.
fn busy_client(server: &TestServer) -> Client {
    let mut client = server.client();
    client.send("PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    let mut interim = [0u8; 25];
    client.stream.read_exact(&mut interim).expect("reading 100");
    client
}

#[test]
fn fifty_concurrent_clients_all_get_answers() {
    let server = TestServer::start(ServerConfig::default());
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let path = server.path.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&path);
                client.send(format!(
                    "POST /client/{i} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{i}",
                    i.to_string().len()
                ));
                client.reply().text().to_owned()
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let answer = client.join().expect("a client thread panicked");
        assert_eq!(answer, format!("POST /client/{i} {i}"));
    }
    assert_eq!(server.calls(), 50);
}

#[test]
fn over_the_limit_gets_503() {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config);
    let mut first = busy_client(&server);
    let mut second = busy_client(&server);
    for _ in 0..3 {
        let mut extra = server.client();
        let reply = extra.reply();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("connection"), Some("close"));
        extra.expect_closed();
    }
    // The busy ones are unharmed; once answered they are idle, and a newcomer takes the
    // place of one of them.
    first.send("abcd");
    assert_eq!(first.reply().text(), "PUT /x abcd");
    second.send("efgh");
    assert_eq!(second.reply().text(), "PUT /x efgh");
    assert_eq!(server.client().get("/in").status, 200);
}

#[test]
fn at_the_limit_the_oldest_idle_connection_makes_room() {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config);
    let mut oldest = server.client();
    assert_eq!(oldest.get("/a").status, 200);
    std::thread::sleep(Duration::from_millis(20));
    let mut newer = server.client();
    assert_eq!(newer.get("/b").status, 200);
    let mut newcomer = server.client();
    assert_eq!(newcomer.get("/c").text(), "GET /c ");
    oldest.expect_closed();
    assert_eq!(newer.get("/d").text(), "GET /d ");
}

#[test]
fn a_silent_connection_is_closed_after_the_request_timeout() {
    let config = ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = TestServer::start(config);
    let start = Instant::now();
    let mut silent = server.client();
    // Closed without a word: end of file, no response bytes.
    silent.expect_closed();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.calls(), 0);
}

#[test]
fn silent_connections_at_the_limit_lock_nobody_out() {
    let config = ServerConfig {
        max_connections: 8,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config);
    // A client that holds the limit in sockets that never send a byte, and keeps
    // reconnecting as they are closed.
    let mut hoard: Vec<Client> = (0..8).map(|_| server.client()).collect();
    for round in 0..20 {
        let mut newcomer = server.client();
        assert_eq!(
            newcomer.get(&format!("/round/{round}")).text(),
            format!("GET /round/{round} ")
        );
        // The silent socket that waited longest made room.
        hoard.remove(0).expect_closed();
        hoard.push(server.client());
    }
    assert_eq!(server.calls(), 20);
}

#[test]
fn client_that_does_not_read_blocks_nobody() {
    let server = TestServer::start(ServerConfig::default());
    let mut hoarder = server.client();
    hoarder.send("GET /big HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
    // The big answer is being written to a client that does not read.
    server.wait_calls(1);
    let mut other = server.client();
    let start = Instant::now();
    assert_eq!(other.get("/quick").text(), "GET /quick ");
    assert!(start.elapsed() < Duration::from_secs(1));
    // The hoarder gets everything once it reads.
    let reply = hoarder.reply();
    assert_eq!(reply.body.len(), BIG);
    assert!(reply.body.iter().all(|&b| b == b'x'));
    assert_eq!(hoarder.reply().text(), "GET /after ");
}

#[test]
fn hang_up_mid_request_is_harmless() {
    let server = TestServer::start(ServerConfig::default());
    for partial in [
        "GET /x HTTP/1.1\r\nHost",
        "PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
    ] {
        let mut client = server.client();
        client.send(partial);
        drop(client);
    }
    let mut client = server.client();
    assert_eq!(client.get("/still-here").text(), "GET /still-here ");
    assert_eq!(server.calls(), 1, "the handler saw a partial request");
    // A client that leaves without reading its (large) response.
    let mut rude = server.client();
    rude.send("GET /big HTTP/1.1\r\n\r\n");
    drop(rude);
    assert_eq!(client.get("/after").text(), "GET /after ");
}

#[test]
fn oversized_head_gets_431() {
    let config = ServerConfig {
        max_header_bytes: 1024,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config);
    let mut client = server.client();
    // No blank line yet: the limit applies while the head is still arriving.
    client.send(format!(
        "GET / HTTP/1.1\r\nX-Long: {}\r\n",
        "a".repeat(2000)
    ));
    crate::common::assert_error_and_close(&mut client, 431);
    assert_eq!(server.calls(), 0);
}

#[test]
fn oversized_body_gets_413_before_it_is_sent() {
    let config = ServerConfig {
        max_body_bytes: 1000,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config);
    let mut client = server.client();
    client.send("PUT /x HTTP/1.1\r\nContent-Length: 1001\r\n\r\n");
    let reply = crate::common::assert_error_and_close(&mut client, 413);
    assert!(reply.text().contains("1000"), "{}", reply.text());

    let mut client = server.client();
    client.send(format!(
        "PUT /x HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{}",
        "b".repeat(1000)
    ));
    assert_eq!(client.reply().body.len(), "PUT /x ".len() + 1000);
}

#[test]
fn a_client_that_sends_a_refused_body_anyway_reads_its_413() {
    let config = ServerConfig {
        max_body_bytes: 1000,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config);
    for _ in 0..20 {
        let mut client = server.client();
        let mut writer = client.stream.try_clone().expect("cloning the stream");
        // The whole body goes out without waiting for the early answer; once the server
        // stops reading, the write fails, which is fine.
        let sender = std::thread::spawn(move || {
            let mut request = b"PUT /x HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n".to_vec();
            request.resize(request.len() + (1 << 20), b'b');
            let _ = std::io::Write::write_all(&mut writer, &request);
        });
        let reply = crate::common::assert_error_and_close(&mut client, 413);
        assert!(reply.text().contains("1000"), "{}", reply.text());
        sender.join().expect("the sender panicked");
    }
    assert_eq!(server.calls(), 0);
}

#[test]
fn slow_reader_is_not_a_stalled_request() {
    let config = ServerConfig {
        request_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let server = TestServer::start(config);
    let mut reader = server.client();
    reader.send("GET /big HTTP/1.1\r\n\r\nGET /queued HTTP/1.1\r\n\r\n");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(reader.reply().body.len(), BIG);
    assert_eq!(reader.reply().text(), "GET /queued ");
}
