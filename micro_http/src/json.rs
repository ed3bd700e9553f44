//! The little JSON the server writes itself: error bodies.
//!
//! An error body is a JSON array of strings, the error chain from the top message to its
//! root cause, as Cloud Hypervisor's server sends it. Cloud Hypervisor's `ch-remote` reads
//! that array as borrowed strings (`Vec<&str>`), which cannot hold a JSON escape: a string
//! with `\"` or `\n` in it makes it print "Can't get remote's error messages" instead of the
//! message. So each message is written with nothing that needs escaping: a double quote
//! becomes a single quote, a backslash a slash, and a control character a space.

/// `["<message>", "<cause>", ...]`, each made escape-free as the module says.
pub(crate) fn error_body<S: AsRef<str>>(chain: &[S]) -> String {
    let mut body = String::from("[");
    for (i, message) in chain.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        push_plain_string(&mut body, message.as_ref());
    }
    body.push(']');
    body
}

/// Appends `text` to `out` as a quoted JSON string that contains no escape sequence.
fn push_plain_string(out: &mut String, text: &str) {
    out.push('"');
    out.extend(text.chars().map(|c| match c {
        '"' => '\'',
        '\\' => '/',
        c if c.is_control() => ' ',
        c => c,
    }));
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::error_body;

    #[test]
    fn chains_are_arrays_of_escape_free_strings() {
        assert_eq!(error_body(&["plain"]), r#"["plain"]"#);
        assert_eq!(error_body(&["top", "cause"]), r#"["top","cause"]"#);
        assert_eq!(error_body::<&str>(&[]), "[]");
        assert_eq!(
            error_body(&["say \"hi\" \\ now\n\t\r\u{1}\u{8}\u{c}\u{7f}"]),
            r#"["say 'hi' / now       "]"#
        );
        assert_eq!(error_body(&["žluťoučký /"]), "[\"žluťoučký /\"]");
    }

    #[test]
    fn every_message_reads_back_as_a_borrowed_string() {
        // What ch-remote does with the body.
        let body = error_body(&["a \"quoted\" path\\x", "line\nbreak", "\u{0}"]);
        let messages: Vec<&str> = serde_json::from_str(&body).expect("borrowed strings");
        assert_eq!(messages, ["a 'quoted' path/x", "line break", " "]);
    }
}
