//! Table tests for `http::request` on chunked bodies (RFC 9112 §7.1): chunk sizes, chunk data
//! and its CRLF, extensions and trailers. A row is the encoding alone, sent after [`HEAD`], so
//! that it shows only what it is about; `every_table_row_keeps_the_invariants` runs every
//! prefix of every row through `check_invariants` like the other tables.

use crate::http::request::{parse, Limits};

/// The head of every row: a chunked POST.
const HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Encodings refused under the default limits: (encoding after [`HEAD`], status, part of the
/// message).
const REFUSED: &[(&[u8], u16, &str)] = &[
    // Hostile framing: chunk sizes (RFC 9112 §7.1).
    (b"10000000000000001\r\n", 400, "longer than 16 hex digits"),
    (b"00000000000000000\r\n\r\n", 400, "longer than 16 hex digits"),
    (b"FFFFFFFFFFFFFFFF\r\n", 413, "payload too large"),
    (b"10001\r\n", 413, "payload too large"),
    (b"\r\n", 400, "not a hex number"),
    (b" 5\r\nhello\r\n0\r\n\r\n", 400, "not a hex number"),
    (b"+5\r\nhello\r\n0\r\n\r\n", 400, "not a hex number"),
    (b"-5\r\nhello\r\n0\r\n\r\n", 400, "not a hex number"),
    // Whitespace after a chunk size with no extension after it: the grammar has none there
    // (BWS stands only before ";" and around "=", RFC 9112 §7.1.1), and parsers that skip it
    // and parsers that refuse it would frame the body differently.
    (b"5 \r\nhello\r\n0\r\n\r\n", 400, "whitespace at the end of a chunk size line"),
    (b"5\t\r\nhello\r\n0\r\n\r\n", 400, "whitespace at the end of a chunk size line"),
    (b"0 \r\n\r\n", 400, "whitespace at the end of a chunk size line"),
    (b"1;a \r\nx\r\n0\r\n\r\n", 400, "whitespace at the end of a chunk size line"),
    (b"1;a=\"b\"\t\r\nx\r\n0\r\n\r\n", 400, "whitespace at the end of a chunk size line"),
    (b"0x5\r\nhello\r\n0\r\n\r\n", 400, "invalid chunk extension"),
    (b"5\nhello\r\n0\r\n\r\n", 400, "chunk size line not ended by CRLF"),
    (b"5\rhello\r\n0\r\n\r\n", 400, "chunk size line not ended by CRLF"),
    (b"5;a=1\nhello\r\n0\r\n\r\n", 400, "chunk size line not ended by CRLF"),
    // Hostile framing: chunk data and its CRLF.
    (b"5\r\nhelloX0\r\n\r\n", 400, "chunk data not followed by CRLF"),
    (b"5\r\nhello\n0\r\n\r\n", 400, "chunk data not followed by CRLF"),
    (b"5\r\nhello\r0\r\n\r\n", 400, "chunk data not followed by CRLF"),
    (b"3\r\nhello\r\n0\r\n\r\n", 400, "chunk data not followed by CRLF"),
    // Hostile framing: chunk extensions (RFC 9112 §7.1.1).
    (b"1;\r\nx\r\n0\r\n\r\n", 400, "invalid chunk extension"),
    (b"1;a=\r\nx\r\n0\r\n\r\n", 400, "invalid chunk extension"),
    (b"1;a=b c\r\nx\r\n0\r\n\r\n", 400, "invalid chunk extension"),
    (b"1 x\r\nx\r\n0\r\n\r\n", 400, "invalid chunk extension"),
    (b"1;a=\"b\r\nx\r\n0\r\n\r\n", 400, "invalid chunk extension"),
    (b"1;a=\"b\\\"\r\nx\r\n0\r\n\r\n", 400, "invalid chunk extension"),
    (b"1;a\x00\r\nx\r\n0\r\n\r\n", 400, "invalid chunk extension"),
    // Hostile framing: trailers (RFC 9112 §7.1.2), checked like header lines.
    (b"0\r\nX: 1\r\n folded\r\n\r\n", 400, "invalid trailer field"),
    (b"0\r\nX : 1\r\n\r\n", 400, "invalid trailer field"),
    (b"0\r\nX: a\x00b\r\n\r\n", 400, "invalid trailer field"),
    (b"0\r\nno colon\r\n\r\n", 400, "invalid trailer field"),
    (b"0\r\nX: 1\n\r\n", 400, "trailer line not ended by CRLF"),
    (b"0\r\n\n", 400, "trailer line not ended by CRLF"),
    (b"0\r\nX: a\rb\r\n\r\n", 400, "trailer line not ended by CRLF"),
];

/// Every row as a whole request.
pub(super) fn refused_requests() -> impl Iterator<Item = Vec<u8>> {
    REFUSED.iter().map(|&(encoding, ..)| [HEAD, encoding].concat())
}

#[test]
fn refused_encodings() {
    for &(encoding, status, message) in REFUSED {
        let shown = String::from_utf8_lossy(encoding);
        let input = [HEAD, encoding].concat();
        let error = parse(&input, &Limits::default()).err().unwrap_or_else(|| panic!("{shown:?} accepted"));
        assert_eq!(error.status(), status, "{shown:?}: {error:?}");
        assert!(error.message().contains(message), "{shown:?}: {error:?}");
    }
}
