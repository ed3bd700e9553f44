//! What can go wrong talking to the API server.

use std::io;
use std::path::PathBuf;

/// An error from [`crate::ApiClient`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be connected.
    #[error("connecting to the API socket {}: {source}", path.display())]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Sending or receiving failed (a timeout is an `io::Error` of kind `WouldBlock`).
    #[error("{what}: {source}")]
    Io {
        /// What the client was doing, e.g. "reading the response".
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The method or path cannot be put in a request line.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The server's answer is not HTTP this client understands.
    #[error("bad response from the API server: {0}")]
    BadResponse(String),
    /// The server answered with a status other than 2xx ([`crate::ApiClient::command`]).
    #[error("{}", describe_server_error(*status, message))]
    Server {
        /// The status code.
        status: u16,
        /// The error chain of a JSON body joined with ": " (see [`crate::Response::error_message`]), else the body text.
        message: String,
    },
}

fn describe_server_error(status: u16, message: &str) -> String {
    if message.is_empty() {
        format!("the API server answered {status}")
    } else {
        format!("the API server answered {status}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn messages_carry_context() {
        let error = Error::Connect {
            path: "/run/api.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(error
            .to_string()
            .starts_with("connecting to the API socket /run/api.sock: "));
        let error = Error::Server {
            status: 404,
            message: "no such VM".into(),
        };
        assert_eq!(error.to_string(), "the API server answered 404: no such VM");
        let error = Error::Server {
            status: 500,
            message: String::new(),
        };
        assert_eq!(error.to_string(), "the API server answered 500");
    }
}
