//! The request method.

use std::fmt;

/// An HTTP request method. Methods other than the ones the API uses are kept by name in
/// [`Method::Other`], so the handler can answer them with 405.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `PUT`
    Put,
    /// `POST`
    Post,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `HEAD`: answered without a body (the `Content-Length` of the body it would have had).
    Head,
    /// Any other method token, as the client spelled it.
    Other(String),
}

impl Method {
    /// The method for a request-line token. Method names are case-sensitive, so `get` is
    /// `Other("get")`.
    pub fn from_token(token: &str) -> Self {
        match token {
            "GET" => Method::Get,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method's token, as it stands in a request line.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Other(token) => token,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Method;

    #[test]
    fn tokens_round_trip() {
        for token in [
            "GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS", "get",
        ] {
            let method = Method::from_token(token);
            assert_eq!(method.to_string(), token);
        }
        assert_eq!(Method::from_token("PUT"), Method::Put);
        assert_eq!(Method::from_token("get"), Method::Other("get".into()));
    }
}
