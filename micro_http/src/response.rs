//! Responses: what the handler builds, and how the server puts them on the wire.

use crate::json;
use crate::StatusCode;

/// The `Content-Type` sent with a body unless the handler picks another.
const JSON: &str = "application/json";

/// Header fields the server writes itself; [`Response::with_header`] cannot add them.
const MANAGED: [&str; 5] = [
    "content-length",
    "content-type",
    "connection",
    "server",
    "transfer-encoding",
];

/// A response to one request.
///
/// The server adds `Server: Accordion`, `Content-Length` (0 without a body; none at all on a
/// 204, which cannot have one),
/// `Content-Type` (with a body) and `Connection: close` when it will close the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: StatusCode,
    /// The body, if any. A 204 or 304 response is always sent without one.
    pub body: Option<Vec<u8>>,
    /// The `Content-Type` sent with a body: `application/json` unless changed.
    pub content_type: String,
    /// Further header fields, e.g. `Allow` for 405.
    pub headers: Vec<(String, String)>,
}

/// What the `Connection` header of a response says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// HTTP/1.1 keep-alive: no `Connection` header.
    Implied,
    /// `Connection: keep-alive`, for an HTTP/1.0 client that asked for it.
    KeepAlive,
    /// `Connection: close`: the server closes the connection after this response.
    Close,
}

impl Response {
    /// A response without a body.
    pub fn new(status: StatusCode) -> Self {
        Response {
            status,
            body: None,
            content_type: JSON.to_owned(),
            headers: Vec::new(),
        }
    }

    /// A response with a JSON body.
    pub fn json(status: StatusCode, body: impl Into<Vec<u8>>) -> Self {
        Response {
            body: Some(body.into()),
            ..Response::new(status)
        }
    }

    /// An error response whose body is the one-element chain `["<message>"]`.
    pub fn error(status: StatusCode, message: &str) -> Self {
        Response::error_chain(status, &[message])
    }

    /// An error response whose body is the error chain, top message first and root cause
    /// last: a JSON array of strings, as Cloud Hypervisor answers (see the `json` module for
    /// how the strings are kept readable by its `ch-remote`).
    pub fn error_chain<S: AsRef<str>>(status: StatusCode, chain: &[S]) -> Self {
        Response::json(status, json::error_body(chain))
    }

    /// Adds a header field. `Content-Type` replaces [`Response::content_type`]; the fields
    /// the server manages itself (`Content-Length`, `Connection`, `Server`,
    /// `Transfer-Encoding`) and fields that are not valid HTTP are left out when sending.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        if name.eq_ignore_ascii_case("content-type") {
            self.content_type = value.into();
        } else {
            self.headers.push((name, value.into()));
        }
        self
    }

    /// Appends the response to `out` as HTTP/1.1. `head_only` leaves the body out (for
    /// `HEAD`) but keeps its `Content-Length`.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>, head_only: bool, persistence: Persistence) {
        let status = if (200..=599).contains(&self.status.0) {
            self.status
        } else {
            log::warn!("handler returned status {}; sending 500", self.status.0);
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let body = match &self.body {
            Some(body) if !body.is_empty() && status.allows_body() => body.as_slice(),
            _ => &[],
        };
        // The reason phrase is left empty, as Cloud Hypervisor's server does (HTTP/1.1
        // allows it): Cloud Hypervisor's client reads everything between "HTTP/1.1 " and
        // the CR as the status code.
        let mut head = format!("HTTP/1.1 {} \r\nServer: Accordion\r\n", status.0);
        // RFC 9110 §8.6: no Content-Length on a response that cannot have a body (204).
        if status.allows_body() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if !body.is_empty() {
            push_field(&mut head, "Content-Type", &self.content_type);
        }
        match persistence {
            Persistence::Implied => {}
            Persistence::KeepAlive => head.push_str("Connection: keep-alive\r\n"),
            Persistence::Close => head.push_str("Connection: close\r\n"),
        }
        for (name, value) in &self.headers {
            if MANAGED
                .iter()
                .any(|managed| name.eq_ignore_ascii_case(managed))
            {
                log::warn!("response header {name} is set by the server; left out");
            } else {
                push_field(&mut head, name, value);
            }
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        if !head_only {
            out.extend_from_slice(body);
        }
    }
}

/// Appends `name: value\r\n` if both are valid HTTP, and logs and skips the field if not.
fn push_field(head: &mut String, name: &str, value: &str) {
    if is_token(name) && is_field_value(value) {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    } else {
        log::warn!("response header {name:?}: {value:?} is not valid HTTP; left out");
    }
}

/// Whether `name` is an HTTP token (RFC 9110, section 5.6.2).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` can stand in a header field: no control characters but tab.
fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(response: &Response, head_only: bool, persistence: Persistence) -> String {
        let mut out = Vec::new();
        response.write_to(&mut out, head_only, persistence);
        String::from_utf8(out).expect("responses are ASCII here")
    }

    #[test]
    fn json_body_gets_length_and_type() {
        let text = wire(
            &Response::json(StatusCode::OK, "{\"a\":1}"),
            false,
            Persistence::Implied,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 \r\nServer: Accordion\r\nContent-Length: 7\r\n\
             Content-Type: application/json\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn no_body_has_zero_length_and_no_type() {
        let text = wire(
            &Response::new(StatusCode::NO_CONTENT),
            false,
            Persistence::Close,
        );
        assert_eq!(
            text,
            "HTTP/1.1 204 \r\nServer: Accordion\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn no_content_drops_a_body() {
        let text = wire(
            &Response::json(StatusCode::NO_CONTENT, "x"),
            false,
            Persistence::Implied,
        );
        assert!(!text.contains("Content-Length"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn head_keeps_length_without_body() {
        let text = wire(
            &Response::json(StatusCode::OK, "hello"),
            true,
            Persistence::KeepAlive,
        );
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.contains("Connection: keep-alive\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn error_body_is_json() {
        let response = Response::error(StatusCode::BAD_REQUEST, "bad \"x\"");
        assert_eq!(response.body.as_deref(), Some(&br#"["bad 'x'"]"#[..]));
    }

    #[test]
    fn extra_headers_are_checked() {
        let response = Response::error(StatusCode::METHOD_NOT_ALLOWED, "no")
            .with_header("Allow", "GET, PUT")
            .with_header("Content-Length", "99")
            .with_header("X-Bad", "a\r\nInjected: yes")
            .with_header("Bad Name", "v")
            .with_header("content-type", "text/plain");
        let text = wire(&response, false, Persistence::Implied);
        assert!(text.contains("\r\nAllow: GET, PUT\r\n"));
        assert!(text.contains("Content-Type: text/plain\r\n"));
        assert!(!text.contains("99"));
        assert!(!text.contains("Injected"));
        assert!(!text.contains("Bad Name"));
    }

    #[test]
    fn out_of_range_status_becomes_500() {
        let text = wire(
            &Response::new(StatusCode(1000)),
            false,
            Persistence::Implied,
        );
        assert!(text.starts_with("HTTP/1.1 500 \r\n"));
        let text = wire(&Response::new(StatusCode(101)), false, Persistence::Implied);
        assert!(text.starts_with("HTTP/1.1 500 "));
    }
}
