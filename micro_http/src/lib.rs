//! A small HTTP/1.1 server over a unix socket, for the VMM's REST API.
//!
//! The server runs on one thread with nonblocking sockets and an epoll loop
//! ([`HttpServer::run`]). Requests are parsed with `httparse`; bodies are framed by
//! `Content-Length` only. The handler sees only complete, valid requests, one call per
//! request, in order per connection; the server answers malformed or oversized requests
//! itself (400, 413, 431, 501) and closes those connections, times out stalled ones (408)
//! and bounds how many connections it keeps.
//!
//! ```no_run
//! use micro_http::{HttpServer, Response, ServerConfig, StatusCode};
//! use std::os::unix::net::UnixListener;
//! use vmm_sys_util::eventfd::EventFd;
//!
//! let listener = UnixListener::bind("/tmp/api.sock")?;
//! let mut server = HttpServer::new(listener, ServerConfig::default())?;
//! let stop = EventFd::new(0)?;
//! server.run(&stop, &mut |request| match request.path.as_str() {
//!     "/api/v1/vmm.ping" => Response::json(StatusCode::OK, r#"{"version":"0.1.0"}"#),
//!     _ => Response::error(StatusCode::NOT_FOUND, "no such endpoint"),
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod config;
mod connection;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod json;
mod method;
mod parse;
mod reply;
mod request;
mod response;
mod server;
mod status;

pub use config::ServerConfig;
pub use method::Method;
pub use reply::{Deferred, Reply};
pub use request::Request;
pub use response::Response;
pub use server::{HttpServer, ServerError};
pub use status::StatusCode;
