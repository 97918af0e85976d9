//! Tests for `http::request` at its limits: each limit refused with its status however much of
//! the request has arrived, every limit inclusive, and limits at the extremes (zero, unlimited)
//! neither panicking nor misframing.

use super::{bound, check_invariants, SMALL, VALID};
use crate::http::chunked::MAX_CHUNK_EXT;
use crate::http::request::{parse, HttpError, Limits, MAX_HEADERS};

/// Inputs that break a limit of `SMALL`: (input, status, part of the message).
pub(super) const OVER_LIMITS: &[(&[u8], u16, &str)] = &[
    // 414: a target over 32 bytes, complete or not (RFC 9112 §3).
    (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI too long"),
    (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 414, "URI too long"),
    (b"GET http://example.com/aaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI too long"),
    (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/9.9\r\n\r\n", 414, "URI too long"),
    // 431: a head over 128 bytes, complete or not.
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 431, "header fields too large"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 431, "header fields too large"),
    (b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n", 431, "header fields too large"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Method-Name-Is-Long-And-Never-Ends-Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 431, "header fields too large"),
    // A bearer token past the limit: refused here, before anything reads it (docs/security.md).
    (b"GET /stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjQwMDAwMDAwMDB9.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 431, "header fields too large"),
    // 413: bodies over 64 bytes, refused before they arrive.
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n", 413, "payload too large"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n", 413, "payload too large"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n1\r\n", 413, "payload too large"),
    // 413: an encoding over max_body + max_head = 192 bytes, from framing overhead alone.
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n1\r\nx\r\n", 413, "payload too large"),
    // 400: a trailer section over 128 bytes.
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-1: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nX-2: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 400, "trailer section too large"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-1: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 400, "trailer section too large"),
    // Found by fuzzing: one trailer line over the limit whose CR is the last byte of the capped
    // encoding (192 bytes) waited for its LF, then met the cap: 413, where its prefixes had 400.
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 400, "trailer section too large"),
];

#[test]
fn requests_over_limits() {
    for &(input, status, message) in OVER_LIMITS {
        let shown = String::from_utf8_lossy(input);
        let error = parse(input, &SMALL).err().unwrap_or_else(|| panic!("{shown:?} accepted"));
        assert_eq!(error.status(), status, "{shown:?}: {error:?}");
        assert!(error.message().contains(message), "{shown:?}: {error:?}");
    }
}

#[test]
fn limits_are_inclusive() {
    let target = format!("/{}", "a".repeat(31));
    let head = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    let padded = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(128 - 32));
    let body = "b".repeat(64);
    let cl = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n{body}");
    let chunked = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{body}\r\n0\r\n\r\n");
    let trailer = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: {}\r\n\r\n",
        "t".repeat(128 - 5)
    );
    let ext = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n",
        "e".repeat(MAX_CHUNK_EXT - 1)
    );
    let big = Limits { max_body_bytes: 2048, ..SMALL };
    for (input, limits) in
        [(&head, SMALL), (&padded, SMALL), (&cl, SMALL), (&chunked, SMALL), (&trailer, SMALL), (&ext, big)]
    {
        assert_eq!(padded.len(), 128);
        let request = parse(input.as_bytes(), &limits);
        assert!(matches!(request, Ok(Some(ref r)) if r.len == input.len()), "{input:?}: {request:?}");
        check_invariants(input.as_bytes(), &limits);
    }
    // One byte more of each is refused.
    let over = [
        (head.replacen("/a", "/aa", 1), SMALL, 414),
        (padded.replacen("X: ", "X: a", 1), SMALL, 431),
        (cl.replacen("64", "65", 1) + "b", SMALL, 413),
        (chunked.replacen("40\r\n", "41\r\nb", 1), SMALL, 413),
        (trailer.replacen("X: ", "X: t", 1), SMALL, 400),
        (ext.replacen("1;", "1;e", 1), big, 400),
    ];
    for (input, limits, status) in over {
        let error = parse(input.as_bytes(), &limits).map(|_| ()).map_err(|e| e.status());
        assert_eq!(error, Err(status), "{input:?}");
    }
    let headers: String = (0..MAX_HEADERS - 1).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    assert!(matches!(parse(many.as_bytes(), &Limits::default()), Ok(Some(_))));
    let too_many = format!("GET / HTTP/1.1\r\nHost: x\r\nX: 1\r\n{headers}\r\n");
    assert_eq!(parse(too_many.as_bytes(), &Limits::default()).map(|_| ()), Err(HttpError::HeaderFieldsTooLarge));
}

#[test]
fn a_slow_chunked_body_stays_within_the_bound() {
    // One byte per chunk with long extensions: the framing grows much faster than the body.
    let mut input = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let limits = Limits { max_head_bytes: 256, max_uri_bytes: 64, max_body_bytes: 256 };
    loop {
        match parse(&input, &limits) {
            Ok(None) => assert!(input.len() <= bound(&limits)),
            Ok(Some(r)) => panic!("accepted {r:?}"),
            Err(e) => break assert_eq!(e, HttpError::PayloadTooLarge),
        }
        input.extend_from_slice(b"1;ext=aaaaaaaa\r\nx\r\n");
    }
}

#[test]
fn extreme_limits_neither_panic_nor_misframe() {
    let unlimited = Limits { max_head_bytes: usize::MAX, max_uri_bytes: usize::MAX, max_body_bytes: usize::MAX };
    let huge_chunk =
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n";
    let huge_length = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\nabc";
    for input in [&huge_chunk[..], &huge_length[..]] {
        assert!(matches!(parse(input, &unlimited), Ok(None)));
    }
    let nothing = Limits { max_head_bytes: 0, max_uri_bytes: 0, max_body_bytes: 0 };
    for &(input, _) in VALID {
        assert!(parse(input, &nothing).is_err());
    }
}
