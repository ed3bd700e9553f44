//! A response as the client returns it.

/// A whole response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields in the order they came.
    pub headers: Vec<(String, String)>,
    /// The body; empty without one.
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the first header field called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The message of an error response. Accordion and Cloud Hypervisor answer errors with
    /// a JSON array of strings, the error chain from the top message to its root cause;
    /// its parts are joined with ": ". A JSON object's `error` field and plain text are
    /// taken as they are, for other servers.
    pub fn error_message(&self) -> String {
        match serde_json::from_slice::<serde_json::Value>(&self.body) {
            Ok(serde_json::Value::Array(chain)) => {
                let parts: Vec<String> = chain
                    .iter()
                    .map(|part| match part {
                        serde_json::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                return parts.join(": ");
            }
            Ok(serde_json::Value::Object(fields)) => match fields.get("error") {
                Some(serde_json::Value::String(message)) => return message.clone(),
                Some(other) => return other.to_string(),
                None => {}
            },
            _ => {}
        }
        String::from_utf8_lossy(&self.body).trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::Response;

    fn with_body(body: &str) -> Response {
        Response {
            status: 400,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(with_body(r#"["x"]"#).error_message(), "x");
        assert_eq!(
            with_body(r#"["top", "cause", 3]"#).error_message(),
            "top: cause: 3"
        );
        assert_eq!(with_body("[]").error_message(), "");
        assert_eq!(with_body(r#"{"error":"x"}"#).error_message(), "x");
        assert_eq!(
            with_body(r#"{"error": "a \"b\"\n"}"#).error_message(),
            "a \"b\"\n"
        );
        assert_eq!(
            with_body(r#"{"error": {"code": 3}}"#).error_message(),
            r#"{"code":3}"#
        );
        assert_eq!(
            with_body(r#"{"other": 1}"#).error_message(),
            r#"{"other": 1}"#
        );
        assert_eq!(with_body("plain words\n").error_message(), "plain words");
        assert_eq!(with_body("").error_message(), "");
    }

    #[test]
    fn header_lookup() {
        let response = with_body("");
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.header("content-length"), None);
        assert!(!response.is_success());
    }
}
