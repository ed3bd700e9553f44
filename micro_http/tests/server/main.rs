//! The server over real unix sockets: a server thread per test, raw clients.

mod common;
mod connections;
mod deferred;
mod framing;
mod timeouts;
