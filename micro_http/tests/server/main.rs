//! The server over real unix sockets: a server thread per test, raw clients.

mod common;
mod connections;
mod framing;
mod timeouts;
