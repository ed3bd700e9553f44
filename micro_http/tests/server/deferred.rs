//! Answers that come later (`Reply::Later`): the server serves other connections meanwhile,
//! holds the waiting connection's next request, and applies no timeout to it.

use std::os::unix::net::UnixListener;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_http::{Deferred, HttpServer, Reply, Response, ServerConfig, StatusCode};
use vmm_sys_util::eventfd::EventFd;

use crate::common::Client;

#[test]
fn a_late_answer_holds_only_its_own_connection() {
    let dir = std::env::temp_dir().join(format!("micro_http-deferred-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("api.sock");
    let config = ServerConfig {
        request_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(400),
        ..ServerConfig::default()
    };
    let mut server = HttpServer::new(UnixListener::bind(&path).unwrap(), config).unwrap();
    let waker = server.waker().unwrap();
    let stop = EventFd::new(0).unwrap();
    let stop_for_server = stop.try_clone().unwrap();
    // Where the handler leaves the sender of the late answer.
    let later: Arc<Mutex<Option<Sender<Response>>>> = Arc::default();
    let later_for_handler = later.clone();
    let thread = std::thread::spawn(move || {
        server.run_replying(&stop_for_server, &mut |request| {
            if request.path == "/slow" {
                let (tx, rx) = channel();
                *later_for_handler.lock().unwrap() = Some(tx);
                Reply::Later(Deferred::new(move || rx.try_recv().ok()))
            } else {
                Reply::Now(Response::json(StatusCode::OK, request.path.clone()))
            }
        })
    });

    let mut slow = Client::connect(&path);
    // The slow request, and one behind it on the same connection.
    slow.send("GET /slow HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
    while later.lock().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Others are served meanwhile, past both timeouts of the waiting connection.
    for _ in 0..5 {
        let mut other = Client::connect(&path);
        assert_eq!(other.get("/ping").text(), "/ping");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(slow.quiet_for(Duration::from_millis(50)), "answered early");
    // A wake without the answer changes nothing.
    waker.write(1).unwrap();
    assert!(
        slow.quiet_for(Duration::from_millis(50)),
        "answered without an answer"
    );
    let tx = later.lock().unwrap().take().unwrap();
    tx.send(Response::json(StatusCode::OK, "done")).unwrap();
    waker.write(1).unwrap();
    assert_eq!(slow.reply().text(), "done");
    // Then the request that waited behind it.
    assert_eq!(slow.reply().text(), "/after");

    stop.write(1).unwrap();
    thread.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
