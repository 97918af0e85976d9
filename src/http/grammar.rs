//! The byte classes and small productions of RFC 9110 §5.6 that request parsing checks by
//! hand (httparse checks the rest): OWS, token, quoted-string, field text, host bytes.
//!
//! Each function takes bytes and returns the rest after what it skipped, so the grammar reads
//! as a chain of calls; the byte classes are tables built at compile time.

/// Skips SP and HTAB (OWS and BWS, RFC 9110 §5.6.3).
pub(super) fn skip_ows(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    &s[n..]
}

/// Skips a token (RFC 9110 §5.6.2); `None` if `s` does not start with one.
pub(super) fn skip_token(s: &[u8]) -> Option<&[u8]> {
    let n = s.iter().take_while(|&&c| is_tchar(c)).count();
    (n > 0).then(|| &s[n..])
}

/// Skips the quoted-string (RFC 9110 §5.6.4) that `s` starts with; `None` if
/// it is malformed or unterminated.
pub(super) fn skip_quoted_string(s: &[u8]) -> Option<&[u8]> {
    let mut i = 1; // past the opening quote
    loop {
        match *s.get(i)? {
            b'"' => return s.get(i + 1..),
            b'\\' if s.get(i + 1).is_some_and(|&c| is_text(c)) => i += 2,
            c if c != b'\\' && is_text(c) => i += 1,
            _ => return None,
        }
    }
}

/// tchar (RFC 9110 §5.6.2).
pub(super) fn is_tchar(c: u8) -> bool {
    TCHAR[usize::from(c)]
}

/// HTAB, SP, VCHAR or obs-text: what a field value may hold (RFC 9110 §5.5).
pub(super) fn is_text(c: u8) -> bool {
    c == b'\t' || (c >= b' ' && c != 0x7f)
}

/// A byte of `uri-host [ ":" port ]` (RFC 3986 §3.2.2): reg-name, IP-literal or port.
pub(super) fn is_host_byte(c: u8) -> bool {
    HOST[usize::from(c)]
}

static TCHAR: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");
static HOST: [bool; 256] = alphanumeric_and(b"-._~!$&'()*+,;=:[]%");

/// A byte class as a table, built at compile time: one load per byte.
const fn alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}
