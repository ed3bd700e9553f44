//! A complete request as the handler sees it.

use crate::Method;

/// A complete, valid request: the server only hands these to the handler once the whole
/// body has arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The request method.
    pub method: Method,
    /// The request target up to (not including) the first `?`.
    pub path: String,
    /// What follows the first `?` of the request target, if it has one.
    pub query: Option<String>,
    /// The header fields in the order they came, names as the client spelled them.
    pub headers: Vec<(String, String)>,
    /// The body: exactly `Content-Length` bytes, empty without one.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first header field called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case() {
        let request = Request {
            method: Method::Get,
            path: "/".into(),
            query: None,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("X-Twice".into(), "first".into()),
                ("x-twice".into(), "second".into()),
            ],
            body: Vec::new(),
        };
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(request.header("x-TWICE"), Some("first"));
        assert_eq!(request.header("Host"), None);
    }
}
