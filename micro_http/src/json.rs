//! The little JSON the server writes itself: error bodies.

use std::fmt::Write;

/// `{"error":"<message>"}` with `message` escaped as a JSON string.
pub(crate) fn error_body(message: &str) -> String {
    let mut body = String::with_capacity(message.len() + 12);
    body.push_str("{\"error\":");
    push_string(&mut body, message);
    body.push('}');
    body
}

/// Appends `text` to `out` as a quoted JSON string.
fn push_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::error_body;

    #[test]
    fn escapes_what_json_requires() {
        assert_eq!(error_body("plain"), r#"{"error":"plain"}"#);
        assert_eq!(
            error_body("say \"hi\" \\ now\n\t\r\u{1}\u{8}\u{c}"),
            r#"{"error":"say \"hi\" \\ now\n\t\r\u0001\b\f"}"#
        );
        assert_eq!(error_body("žluťoučký /"), "{\"error\":\"žluťoučký /\"}");
    }
}
