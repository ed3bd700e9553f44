//! Parsing a request head (request line and header fields) from the front of a
//! connection's input, and checking it against the server's limits.

use crate::{Method, Request, Response, ServerConfig, StatusCode};

/// Most header fields in one request; more is answered 431.
pub(crate) const MAX_HEADERS: usize = 100;

/// A request line and headers that passed every check; the body is still to come.
#[derive(Debug)]
pub(crate) struct Head {
    /// Bytes of request line and headers, blank line included.
    pub len: usize,
    /// The `Content-Length`, 0 without one.
    pub body_len: usize,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// HTTP/1.0 rather than 1.1.
    pub http10: bool,
    /// The client sent `Expect: 100-continue`.
    pub expects_continue: bool,
    method: Method,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
}

impl Head {
    /// Whether this is a `HEAD` request, answered without a body.
    pub fn is_head(&self) -> bool {
        self.method == Method::Head
    }

    /// The request, with its body.
    pub fn into_request(self, body: Vec<u8>) -> Request {
        Request {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: self.headers,
            body,
        }
    }
}

/// What the front of a connection's input holds.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not yet a whole head, and nothing wrong so far.
    Partial,
    /// A whole, valid head.
    Complete(Head),
    /// A request the server refuses: send this and close the connection.
    Rejected(Response),
}

/// Parses the head at the front of `input`.
pub(crate) fn parse_head(input: &[u8], config: &ServerConfig) -> Parsed {
    // Never look past the limit: a head that does not end within it is too large.
    let window = &input[..input.len().min(config.max_header_bytes)];
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let len = match request.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() < config.max_header_bytes => {
            return Parsed::Partial;
        }
        Ok(httparse::Status::Partial) => {
            let message = format!(
                "request line and headers exceed {} bytes",
                config.max_header_bytes
            );
            return reject(StatusCode::HEADER_FIELDS_TOO_LARGE, &message);
        }
        Err(httparse::Error::TooManyHeaders) => {
            let message = format!("more than {MAX_HEADERS} header fields");
            return reject(StatusCode::HEADER_FIELDS_TOO_LARGE, &message);
        }
        Err(e) => return reject(StatusCode::BAD_REQUEST, &format!("malformed request: {e}")),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return reject(StatusCode::BAD_REQUEST, "malformed request line");
    };

    let mut headers = Vec::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let Ok(value) = std::str::from_utf8(field.value) else {
            let message = format!("header {} is not UTF-8", field.name);
            return reject(StatusCode::BAD_REQUEST, &message);
        };
        headers.push((field.name.to_owned(), value.to_owned()));
    }
    if has_field(&headers, "transfer-encoding") {
        return reject(
            StatusCode::NOT_IMPLEMENTED,
            "Transfer-Encoding is not supported; send the body with a Content-Length",
        );
    }
    let body_len = match content_length(&headers, config.max_body_bytes) {
        Ok(len) => len,
        Err(response) => return Parsed::Rejected(response),
    };

    let http10 = version == 0;
    let keep_alive = if has_token(&headers, "connection", "close") {
        false
    } else {
        !http10 || has_token(&headers, "connection", "keep-alive")
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    };
    Parsed::Complete(Head {
        len,
        body_len,
        keep_alive,
        http10,
        expects_continue: !http10 && has_token(&headers, "expect", "100-continue"),
        method: Method::from_token(method),
        path,
        query,
        headers,
    })
}

/// The body length the headers give: 0 without `Content-Length`, an error response for a
/// repeated, malformed or too large one.
fn content_length(headers: &[(String, String)], max: usize) -> Result<usize, Response> {
    let mut values = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim());
    let Some(value) = values.next() else {
        return Ok(0);
    };
    if values.next().is_some() {
        return Err(Response::error(
            StatusCode::BAD_REQUEST,
            "more than one Content-Length header",
        ));
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        let message = format!("Content-Length {value:?} is not a number");
        return Err(Response::error(StatusCode::BAD_REQUEST, &message));
    }
    match value.parse::<usize>() {
        Ok(len) if len <= max => Ok(len),
        // All digits, so a parse failure is an overflow: too large as well.
        _ => {
            let message = format!("body of {value} bytes exceeds the limit of {max} bytes");
            Err(Response::error(StatusCode::PAYLOAD_TOO_LARGE, &message))
        }
    }
}

/// Whether a header `name` is present.
fn has_field(headers: &[(String, String)], name: &str) -> bool {
    headers
        .iter()
        .any(|(field, _)| field.eq_ignore_ascii_case(name))
}

/// Whether one of the comma-separated values of the `name` headers is `token`, both
/// compared case-insensitively.
fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case(name))
        .flat_map(|(_, value)| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

fn reject(status: StatusCode, message: &str) -> Parsed {
    Parsed::Rejected(Response::error(status, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed {
        parse_head(text.as_bytes(), &ServerConfig::default())
    }

    fn complete(text: &str) -> Head {
        match parse(text) {
            Parsed::Complete(head) => head,
            other => panic!("expected a complete head for {text:?}, got {other:?}"),
        }
    }

    fn rejected(text: &str) -> StatusCode {
        match parse(text) {
            Parsed::Rejected(response) => response.status,
            other => panic!("expected a rejection for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_request_with_query_and_body_length() {
        let text = "PUT /api/v1/vm.resize?x=1&y HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n";
        let head = complete(text);
        assert_eq!(head.len, text.len());
        assert_eq!(head.body_len, 12);
        assert!(head.keep_alive);
        assert!(!head.http10);
        let request = head.into_request(b"{\"size\": 1}\n".to_vec());
        assert_eq!(request.method, Method::Put);
        assert_eq!(request.path, "/api/v1/vm.resize");
        assert_eq!(request.query.as_deref(), Some("x=1&y"));
        assert_eq!(request.header("content-length"), Some("12"));
    }

    #[test]
    fn partial_until_the_blank_line() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: h\r\n"),
            Parsed::Partial
        ));
        assert!(matches!(parse("GET / HT"), Parsed::Partial));
    }

    #[test]
    fn connection_persistence() {
        assert!(!complete("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!complete("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n").keep_alive);
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").keep_alive);
        let head = complete("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(head.keep_alive && head.http10);
    }

    #[test]
    fn expect_continue() {
        let head = complete("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(head.expects_continue);
        assert!(!complete("PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").expects_continue);
    }

    #[test]
    fn bad_content_lengths() {
        for value in ["abc", "-1", "1.5", "", "5, 5", "0x10"] {
            let text = format!("PUT / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(rejected(&text), StatusCode::BAD_REQUEST, "{value:?}");
        }
        let twice = "PUT / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n";
        assert_eq!(rejected(twice), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn too_large_bodies() {
        let limit = ServerConfig::default().max_body_bytes;
        let ok = format!("PUT / HTTP/1.1\r\nContent-Length: {limit}\r\n\r\n");
        assert_eq!(complete(&ok).body_len, limit);
        for value in [
            (limit + 1).to_string(),
            "99999999999999999999999".to_owned(),
        ] {
            let text = format!("PUT / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(rejected(&text), StatusCode::PAYLOAD_TOO_LARGE);
        }
    }

    #[test]
    fn transfer_encoding_is_not_implemented() {
        let text = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(rejected(text), StatusCode::NOT_IMPLEMENTED);
    }

    #[test]
    fn malformed_requests() {
        assert_eq!(
            rejected("GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(rejected("GET / HTTP/2.0\r\n\r\n"), StatusCode::BAD_REQUEST);
        assert_eq!(
            rejected("\x01GET / HTTP/1.1\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        let bytes = b"GET / HTTP/1.1\r\nX: \xff\xfe\r\n\r\n";
        assert!(matches!(
            parse_head(bytes, &ServerConfig::default()),
            Parsed::Rejected(r) if r.status == StatusCode::BAD_REQUEST
        ));
    }

    #[test]
    fn header_limits() {
        let config = ServerConfig {
            max_header_bytes: 64,
            ..ServerConfig::default()
        };
        let fits = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64 - 23));
        assert_eq!(fits.len(), 64);
        assert!(matches!(
            parse_head(fits.as_bytes(), &config),
            Parsed::Complete(_)
        ));
        let over = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64 - 22));
        assert!(matches!(
            parse_head(over.as_bytes(), &config),
            Parsed::Rejected(r) if r.status == StatusCode::HEADER_FIELDS_TOO_LARGE
        ));
        // Also while still incomplete.
        assert!(matches!(
            parse_head(&over.as_bytes()[..64], &config),
            Parsed::Rejected(r) if r.status == StatusCode::HEADER_FIELDS_TOO_LARGE
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: v\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(rejected(&text), StatusCode::HEADER_FIELDS_TOO_LARGE);
    }
}
