//! Requests the server must refuse: each gets its status, `Connection: close`, a one-line body,
//! and then the connection ends (after a framing doubt, where the next request starts is not
//! known, so nothing more may be read from it).

mod common;

use std::thread;

use common::{num, Server};

/// One row of the table: what is sent, in one write, on a fresh connection.
struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
}

fn case(name: &'static str, request: impl Into<Vec<u8>>, status: u16) -> Case {
    Case { name, request: request.into(), status }
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
    vec![
        // 400: framing doubts (RFC 9112 sections 6.1 and 6.3).
        case(
            "Content-Length and Transfer-Encoding together",
            "POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        case(
            "two differing Content-Lengths",
            "POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
        case("a Content-Length that is not a number", "POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: abc\r\n\r\n", 400),
        case("a negative Content-Length", "POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: -1\r\n\r\n", 400),
        case(
            "a chunk size that is not hexadecimal",
            "POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        // 400: malformed heads.
        case("an obs-fold continuation line", "GET /plaintext HTTP/1.1\r\nHost: tether.test\r\nX-Folded: a\r\n b\r\n\r\n", 400),
        case("whitespace between a field name and its colon", "GET /plaintext HTTP/1.1\r\nHost : tether.test\r\n\r\n", 400),
        case("HTTP/1.1 without Host", "GET /plaintext HTTP/1.1\r\n\r\n", 400),
        case("two Host fields", "GET /plaintext HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400),
        case("a TLS handshake on the plain port", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n".to_vec(), 400),
        // Limits.
        case("a Content-Length above --max-message-bytes", "POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 65537\r\n\r\n", 413),
        case("a request target above 8192 bytes", long_target, 414),
        case("a head above --max-head-bytes", huge_header, 431),
        case("a head that never ends", endless_head, 431),
        // What the server does not speak.
        case(
            "an unknown transfer coding",
            "POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        case("HTTP/2.0 in the request line", "GET /plaintext HTTP/2.0\r\nHost: tether.test\r\n\r\n", 505),
    ]
}

/// Runs one case; panics (with the case's name) on the first check that fails.
fn check(server: &Server, case: &Case) {
    let mut client = server.connect();
    client.send(&case.request);
    let response = client.try_read_response(false).unwrap_or_else(|e| panic!("no answer: {e}"));
    assert_eq!(response.status, case.status, "wrong status; response: {response:?}");
    response.assert_error(case.status);
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
