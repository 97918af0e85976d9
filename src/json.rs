//! Writing JSON by hand: the few shapes tether answers with are built with `write!`, and this
//! module owns the one part that is easy to get wrong, escaping a string (RFC 8259 section 7).
//!
//! Invariant: `push_string` always emits a valid JSON string literal, whatever the input.

use std::fmt::Write;

/// Appends `text` as a quoted, escaped JSON string.
pub fn push_string(out: &mut String, text: &str) {
    #[cfg(test)]
    ESCAPED.with(|calls| calls.set(calls.get() + 1));
    out.reserve(text.len() + 2);
    out.push('"');
    let mut plain_from = 0;
    for (i, c) in text.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if c < ' ' => "",
            _ => continue,
        };
        out.push_str(&text[plain_from..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escaped);
        }
        plain_from = i + c.len_utf8();
    }
    out.push_str(&text[plain_from..]);
    out.push('"');
}

#[cfg(test)]
thread_local! {
    /// `push_string` calls on this thread, so a test can show that a path escapes nothing
    /// (a test thread's own count, whatever other tests do meanwhile).
    static ESCAPED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many strings this thread has escaped so far (tests only).
#[cfg(test)]
pub fn escaped_on_this_thread() -> u64 {
    ESCAPED.with(std::cell::Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(text: &str) -> String {
        let mut out = String::new();
        push_string(&mut out, text);
        out
    }

    #[test]
    fn escapes_what_json_requires_and_nothing_else() {
        assert_eq!(quoted(""), r#""""#);
        assert_eq!(quoted("plain text"), r#""plain text""#);
        assert_eq!(quoted(r#"say "hi" \ bye"#), r#""say \"hi\" \\ bye""#);
        assert_eq!(quoted("a\nb\r\tc"), r#""a\nb\r\tc""#);
        assert_eq!(quoted("\u{0}\u{1f}"), r#""\u0000\u001f""#);
        assert_eq!(quoted("ünïcödé ✓ \u{7f}"), "\"ünïcödé ✓ \u{7f}\"");
    }
}
