//! The bytes of a request, and making sense of the head of a response.

use crate::Error;

/// Most header fields in a response.
const MAX_HEADERS: usize = 64;

/// Builds the bytes of a request. `Content-Length` goes with a body, and with an empty one
/// for methods that normally carry one, so that a server never has to guess.
pub(crate) fn request_bytes(
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(Error::InvalidRequest(format!("method {method:?}")));
    }
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidRequest(format!("path {path:?}")));
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    match body {
        Some(body) => head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )),
        None if matches!(method, "PUT" | "POST" | "PATCH") => {
            head.push_str("Content-Length: 0\r\n");
        }
        None => {}
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    Ok(bytes)
}

/// Whether `b` may stand in an HTTP token, such as a method.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD request, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(usize),
    /// Everything until the server closes the connection.
    UntilClose,
}

/// The head of a response.
#[derive(Debug)]
pub(crate) struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Bytes of status line and headers, blank line included.
    pub len: usize,
    /// HTTP/1.0 rather than 1.1.
    http10: bool,
}

impl Head {
    /// Parses the head at the front of `buf`; `None` until it is all there.
    pub fn parse(buf: &[u8]) -> Result<Option<Head>, Error> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        let len = match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(Error::BadResponse(format!("malformed head: {e}"))),
        };
        let (Some(status), Some(version)) = (response.code, response.version) else {
            return Err(Error::BadResponse("malformed status line".into()));
        };
        let headers = response
            .headers
            .iter()
            .map(|field| {
                let value = String::from_utf8_lossy(field.value).into_owned();
                (field.name.to_owned(), value)
            })
            .collect();
        Ok(Some(Head {
            status,
            headers,
            len,
            http10: version == 0,
        }))
    }

    /// Whether this is an interim (1xx) response to skip. 101 is refused: this client
    /// never asks to switch protocols.
    pub fn is_interim(&self) -> Result<bool, Error> {
        match self.status {
            101 => Err(Error::BadResponse(
                "unexpected 101 Switching Protocols".into(),
            )),
            100..=199 => Ok(true),
            _ => Ok(false),
        }
    }

    /// How the body is delimited, for a response to a request that was `HEAD` or not.
    pub fn framing(&self, head_request: bool) -> Result<Framing, Error> {
        if head_request || matches!(self.status, 204 | 304) {
            return Ok(Framing::Empty);
        }
        if self.values("transfer-encoding").next().is_some() {
            return Err(Error::BadResponse(
                "Transfer-Encoding is not supported".into(),
            ));
        }
        let mut lengths = self.values("content-length").map(str::trim);
        let Some(first) = lengths.next() else {
            return Ok(Framing::UntilClose);
        };
        if lengths.any(|other| other != first) {
            return Err(Error::BadResponse("conflicting Content-Length".into()));
        }
        if !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::BadResponse(format!("Content-Length {first:?}")));
        }
        first
            .parse()
            .map(Framing::Length)
            .map_err(|_| Error::BadResponse(format!("Content-Length {first:?}")))
    }

    /// Whether the server keeps the connection open after this response.
    pub fn keeps_open(&self, framing: Framing) -> bool {
        let says = |token: &str| {
            self.values("connection")
                .flat_map(|value| value.split(','))
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        };
        framing != Framing::UntilClose && !says("close") && (!self.http10 || says("keep-alive"))
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        Head::parse(text.as_bytes())
            .expect("a valid head")
            .expect("a complete head")
    }

    #[test]
    fn request_with_and_without_body() {
        let bytes = request_bytes("PUT", "/api/v1/vm.boot", Some(b"{}")).expect("valid");
        assert_eq!(
            bytes,
            b"PUT /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        let bytes = request_bytes("GET", "/api/v1/vm.info", None).expect("valid");
        assert_eq!(
            bytes,
            b"GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\n\r\n"
        );
        let bytes = request_bytes("PUT", "/api/v1/vm.shutdown", None).expect("valid");
        assert!(bytes.ends_with(b"Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn refuses_what_does_not_fit_a_request_line() {
        for (method, path) in [
            ("GET X", "/"),
            ("", "/"),
            ("GET", "/a b"),
            ("GET", "/a\r\nX: y"),
            ("GET", "relative"),
        ] {
            assert!(matches!(
                request_bytes(method, path, None),
                Err(Error::InvalidRequest(_))
            ));
        }
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert!(matches!(Head::parse(b"HTTP/1.1 200 OK\r\nCont"), Ok(None)));
        assert!(matches!(
            Head::parse(b"HTTP/1.1 2x0 OK\r\n\r\n"),
            Err(Error::BadResponse(_))
        ));
        assert!(matches!(
            Head::parse(b"SSH-2.0\r\n\r\n"),
            Err(Error::BadResponse(_))
        ));
    }

    #[test]
    fn framing_rules() {
        let ok = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(ok.framing(false).ok(), Some(Framing::Length(5)));
        assert_eq!(ok.framing(true).ok(), Some(Framing::Empty));
        assert!(ok.keeps_open(Framing::Length(5)));
        let none = head("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(none.framing(false).ok(), Some(Framing::Empty));
        let close = head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert_eq!(close.framing(false).ok(), Some(Framing::UntilClose));
        assert!(!close.keeps_open(Framing::UntilClose));
        let old = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!old.keeps_open(Framing::Length(0)));
        let old = head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
        assert!(old.keeps_open(Framing::Length(0)));
        let same = head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(same.framing(false).ok(), Some(Framing::Length(2)));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(head(bad).framing(false), Err(Error::BadResponse(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn interim_responses() {
        assert!(head("HTTP/1.1 100 Continue\r\n\r\n")
            .is_interim()
            .expect("fine"));
        assert!(!head("HTTP/1.1 200 OK\r\n\r\n").is_interim().expect("fine"));
        assert!(head("HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .is_interim()
            .is_err());
    }
}
