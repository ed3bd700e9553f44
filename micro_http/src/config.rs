//! The server's limits.

use std::time::Duration;

/// Limits of an [`crate::HttpServer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Most bytes of request line and headers, up to and including the blank line, before
    /// the server answers 431 and closes. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Largest `Content-Length` accepted; a larger one is answered 413 at once, without
    /// reading the body, and the connection closed. Default 256 KiB.
    pub max_body_bytes: usize,
    /// Time from the first byte of a request until it must be complete; then the server
    /// answers 408 and closes. Also the time a new connection has to send its first byte;
    /// then the server closes it without a word. Default 5 s.
    pub request_timeout: Duration,
    /// How long a keep-alive connection with nothing pending is kept before the server
    /// closes it silently. Default 120 s.
    pub idle_timeout: Duration,
    /// Most open connections. When a new one comes in at the limit, the server closes the
    /// connection with nothing under way (a keep-alive connection between requests, or one
    /// that has sent nothing yet) that has been quiet longest; if every connection has a
    /// request or an answer under way, it answers the new one 503 and closes it. Default 256.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            max_connections: 256,
        }
    }
}
