//! Requests the server must refuse: each gets its status, `Connection: close`, a one-line body
//! that names the reason, and then the connection ends (after a framing doubt, where the next
//! request starts is not known, so nothing more may be read from it).
//!
//! Most rows end with a pipelined `GET` ([`NEXT`]) placed where a second reading of the framing
//! would find a request. The connection must close after the one error answer, so a server that
//! read the bytes either way and answered that `GET` as well fails the row.

mod common;

use std::thread;

use common::{num, Server};

/// One row of the table: what is sent, in one write, on a fresh connection.
struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    /// Part of the one-line body: the row is refused for the reason it is there for.
    because: &'static str,
}

fn case(name: &'static str, request: impl Into<Vec<u8>>, status: u16, because: &'static str) -> Case {
    Case { name, request: request.into(), status, because }
}

/// The request after each hostile one: answering it would mean the framing was read two ways.
const NEXT: &str = "GET /plaintext HTTP/1.1\r\nHost: tether.test\r\n\r\n";

/// A POST with `fields` (each ending in CRLF) and `body`, then [`NEXT`].
fn post(fields: &str, body: &str) -> String {
    format!("POST /plaintext HTTP/1.1\r\nHost: tether.test\r\n{fields}\r\n{body}{NEXT}")
}

/// A chunked POST whose body is `chunks` (the encoding, as sent), then [`NEXT`].
fn chunked(chunks: &str) -> String {
    post("Transfer-Encoding: chunked\r\n", chunks)
}

/// Every error status a request can earn, at the server's default limits
/// (--max-message-bytes 65536, --max-head-bytes 16384, request targets up to 8192 bytes).
fn cases() -> Vec<Case> {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: tether.test\r\n\r\n", "a".repeat(8200));
    let huge_header = format!("GET /plaintext HTTP/1.1\r\nHost: tether.test\r\nX-Big: {}\r\n\r\n", "b".repeat(17_000));
    // Twenty 1 KB fields and no blank line: too large long before it could end (and few
    // enough fields that no limit on their count is reached first).
    let endless_head = format!(
        "GET /plaintext HTTP/1.1\r\nHost: tether.test\r\n{}",
        format!("X-More: {}\r\n", "m".repeat(1000)).repeat(20)
    );
    // One chunk extension of 1,100 bytes (the cap is 1,024), and a trailer section of 17,000
    // bytes (the cap is --max-head-bytes).
    let long_extension = chunked(&format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(1100)));
    let long_trailers = chunked(&format!("0\r\nX-Trailer: {}\r\n\r\n", "t".repeat(17_000)));
    vec![
        // 400: Content-Length with Transfer-Encoding, in either order: the CL.TE / TE.CL
        // smuggling pattern (RFC 9112 section 6.3 rule 3, section 6.1).
        case(
            "Content-Length and Transfer-Encoding together",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            400,
            "both Content-Length and Transfer-Encoding",
        ),
        case(
            "Transfer-Encoding and Content-Length together",
            post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"),
            400,
            "both Content-Length and Transfer-Encoding",
        ),
        // 400: a Content-Length that is not one 1*DIGIT (RFC 9110 section 8.6, RFC 9112 section
        // 6.3 rule 5). Lists and repeats are refused even when they agree: merging is a guess.
        case(
            "two differing Content-Lengths",
            post("Content-Length: 1\r\nContent-Length: 2\r\n", "ab"),
            400,
            "two Content-Length headers",
        ),
        case(
            "two equal Content-Lengths",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            400,
            "two Content-Length headers",
        ),
        case(
            "a listed Content-Length that agrees",
            post("Content-Length: 5, 5\r\n", "hello"),
            400,
            "a list in Content-Length",
        ),
        case(
            "a listed Content-Length that differs",
            post("Content-Length: 5, 6\r\n", "hello!"),
            400,
            "a list in Content-Length",
        ),
        case("a Content-Length that is not a number", post("Content-Length: abc\r\n", ""), 400, "not a decimal number"),
        case("a Content-Length with a plus sign", post("Content-Length: +5\r\n", "hello"), 400, "not a decimal number"),
        case("a negative Content-Length", post("Content-Length: -1\r\n", ""), 400, "not a decimal number"),
        case("a Content-Length with an exponent", post("Content-Length: 1e3\r\n", "x"), 400, "not a decimal number"),
        case(
            "a Content-Length that overflows",
            post("Content-Length: 99999999999999999999999\r\n", ""),
            400,
            "Content-Length overflows",
        ),
        // 400: a Transfer-Encoding list whose last coding is not chunked: the length cannot be
        // determined (RFC 9112 section 6.3 rule 4, for requests).
        case(
            "Transfer-Encoding: chunked, gzip",
            post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
            400,
            "does not end with chunked",
        ),
        case(
            "Transfer-Encoding: chunked, identity",
            post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
            400,
            "does not end with chunked",
        ),
        // 400: chunked applied twice, in one line or two (RFC 9112 section 6.1).
        case(
            "Transfer-Encoding: chunked, chunked",
            post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
            400,
            "chunked applied twice",
        ),
        case(
            "Transfer-Encoding: chunked in two lines",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            400,
            "chunked applied twice",
        ),
        // 400: Transfer-Encoding in HTTP/1.0, which an HTTP/1.0 hop could not have understood
        // (RFC 9112 section 6.1).
        case(
            "Transfer-Encoding in an HTTP/1.0 request",
            format!("POST /plaintext HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{NEXT}"),
            400,
            "Transfer-Encoding in an HTTP/1.0 request",
        ),
        // 400: chunked framing (RFC 9112 section 7.1): sizes are 1*HEXDIG that fit in 64 bits,
        // data is followed by CRLF, extensions (7.1.1) and trailers (7.1.2) are bounded.
        case("a chunk size that is not hexadecimal", chunked("zz\r\nhello\r\n0\r\n\r\n"), 400, "not a hex number"),
        case(
            "a chunk size that overflows",
            chunked("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            400,
            "chunk size longer than 16 hex digits",
        ),
        case("chunk data not followed by CRLF", chunked("5\r\nhello0\r\n\r\n"), 400, "chunk data not followed by CRLF"),
        case(
            "chunk data followed by a bare LF",
            chunked("5\r\nhello\n0\r\n\r\n"),
            400,
            "chunk data not followed by CRLF",
        ),
        // Whitespace after a chunk size is in no production: BWS stands only before ";" and
        // around "=" (RFC 9112 section 7.1.1). Skipping it would be a reading; refuse it.
        case(
            "a chunk size followed by whitespace",
            chunked("5 \r\nhello\r\n0\r\n\r\n"),
            400,
            "whitespace at the end of a chunk size line",
        ),
        case(
            "a chunk extension followed by whitespace",
            chunked("5;a=b\t\r\nhello\r\n0\r\n\r\n"),
            400,
            "whitespace at the end of a chunk size line",
        ),
        case("a chunk extension over 1024 bytes", long_extension, 400, "chunk extension too long"),
        case("a trailer section over --max-head-bytes", long_trailers, 400, "trailer section too large"),
        // 400: field lines that another parser could read differently: whitespace before the
        // colon (RFC 9112 section 5.1), obs-fold (5.2), NUL and bare CR in a value (RFC 9110
        // section 5.5), and a bare LF that a proxy might keep inside the value, hiding the
        // Transfer-Encoding after it (RFC 9112 section 2.2).
        case(
            "whitespace between a field name and its colon",
            "GET /plaintext HTTP/1.1\r\nHost : tether.test\r\n\r\n",
            400,
            "whitespace between a field name and its colon",
        ),
        case(
            "an obs-fold continuation line",
            "GET /plaintext HTTP/1.1\r\nHost: tether.test\r\nX-Folded: a\r\n b\r\n\r\n",
            400,
            "obs-fold",
        ),
        case("a NUL in a field value", post("X-Note: a\0b\r\n", ""), 400, "control character in a header field value"),
        case(
            "a bare CR in a field value",
            post("X-Note: a\rb\r\n", ""),
            400,
            "control character in a header field value",
        ),
        case(
            "a bare LF in a field value",
            post("X-Note: a\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            400,
            "bare LF as a line ending",
        ),
        // 400: Host (RFC 9112 section 3.2): required in HTTP/1.1, never twice.
        case("HTTP/1.1 without Host", "GET /plaintext HTTP/1.1\r\n\r\n", 400, "missing Host header"),
        case(
            "two Host fields",
            "GET /plaintext HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
            400,
            "two Host headers",
        ),
        // 400: malformed request-targets (RFC 9112 section 3: an invalid request-line gets 400).
        // The asterisk-form is for OPTIONS alone (3.2.4); no form has a fragment (3.2); a URI is
        // ASCII, anything else percent-encoded (RFC 3986 section 2).
        case(
            "GET with the asterisk-form",
            format!("GET * HTTP/1.1\r\nHost: tether.test\r\n\r\n{NEXT}"),
            400,
            "asterisk-form",
        ),
        case(
            "a fragment in the target",
            format!("GET /plaintext#top HTTP/1.1\r\nHost: tether.test\r\n\r\n{NEXT}"),
            400,
            "fragment (#) in the request-target",
        ),
        case(
            "raw UTF-8 in the target",
            format!("GET /caf\u{e9} HTTP/1.1\r\nHost: tether.test\r\n\r\n{NEXT}"),
            400,
            "non-ASCII byte in the request-target",
        ),
        case(
            "a byte that is not UTF-8 in the target",
            [&b"GET /\xe9 HTTP/1.1\r\nHost: tether.test\r\n\r\n"[..], NEXT.as_bytes()].concat(),
            400,
            "invalid request-target",
        ),
        // 400: not HTTP at all.
        case(
            "a TLS handshake on the plain port",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n".to_vec(),
            400,
            "invalid method",
        ),
        // Limits.
        case(
            "a Content-Length above --max-message-bytes",
            "POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 65537\r\n\r\n",
            413,
            "payload too large",
        ),
        case("a request target above 8192 bytes", long_target, 414, "URI too long"),
        case("a head above --max-head-bytes", huge_header, 431, "header fields too large"),
        case("a head that never ends", endless_head, 431, "header fields too large"),
        // What the server does not speak: a coding before the final chunked that it does not
        // implement (RFC 9112 section 6.1), a version other than 1.x (RFC 9110 section 15.6.6).
        case(
            "an unknown transfer coding",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            501,
            "a transfer coding other than chunked",
        ),
        case(
            "HTTP/2.0 in the request line",
            "GET /plaintext HTTP/2.0\r\nHost: tether.test\r\n\r\n",
            505,
            "HTTP version not supported",
        ),
    ]
}

/// Runs one case; panics (with the case's name) on the first check that fails.
fn check(server: &Server, case: &Case) {
    let mut client = server.connect();
    client.send(&case.request);
    let response = client.try_read_response(false).unwrap_or_else(|e| panic!("no answer: {e}"));
    assert_eq!(response.status, case.status, "wrong status; response: {response:?}");
    response.assert_error(case.status);
    assert!(response.text().contains(case.because), "expected {:?} in {response:?}", case.because);
    client.expect_eof();
}

#[test]
fn every_error_status_is_answered_and_closes_the_connection() {
    let server = Server::start(&[]);
    let cases = cases();
    // One thread per case, so that a case the server never answers costs one read timeout for
    // the whole table, not one per case. Every case runs; all failures are reported together.
    let failures: Vec<String> = thread::scope(|scope| {
        let runs: Vec<_> = cases.iter().map(|case| (case, scope.spawn(|| check(&server, case)))).collect();
        runs.into_iter()
            .filter_map(|(case, run)| {
                let panic = run.join().err()?;
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                Some(format!("{} (expected {}): {}", case.name, case.status, message.unwrap_or_default()))
            })
            .collect()
    });
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    server.wait_for_stats("every refused connection closed as an error", |s| {
        num(s, "totals.closed.error") == cases.len() as u64
    });
}

#[test]
fn answers_before_an_error_are_delivered_and_nothing_after_it() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.send(
        b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\n\r\n\
          GET /plaintext HTTP/1.1\r\nHost : tether.test\r\n\r\n\
          GET /plaintext HTTP/1.1\r\nHost: tether.test\r\n\r\n",
    );
    let first = client.read_response();
    assert_eq!((first.status, first.text()), (200, "Hello, World!"));
    first.assert_keeps_alive();
    client.read_response().assert_error(400);
    client.expect_eof(); // the request after the error is never answered
}
