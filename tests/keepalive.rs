//! Persistent connections: reuse, the HTTP/1.0 and HTTP/1.1 defaults, `Connection: close`,
//! pipelining, and request bodies that must be consumed to keep the framing in sync.

mod common;

use common::{num, Server};

const GET_PLAINTEXT: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\n\r\n";

#[test]
fn one_connection_serves_hundreds_of_requests() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    for i in 0..300u64 {
        let response = client.get("/plaintext");
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "Hello, World!");
        // The default --max-requests is 1000: `max` counts down the requests still accepted.
        assert_eq!(response.keep_alive(), Some((75, 999 - i)), "response {i}: {response:?}");
    }
    // The 301st request on the same connection reads the counters.
    let stats = client.stats();
    assert_eq!(num(&stats, "totals.accepted"), 1, "{stats}");
    assert_eq!(num(&stats, "totals.requests"), 301, "{stats}");
    assert_eq!(num(&stats, "totals.reused"), 300, "every request after the first reuses the connection: {stats}");
}

#[test]
fn plaintext_get_and_head() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    let get = client.get("/plaintext");
    assert_eq!((get.status, get.text()), (200, "Hello, World!"));
    assert_eq!(get.header("Content-Type"), Some("text/plain"));
    assert_eq!(get.header("Content-Length"), Some("13"));

    // HEAD: the same headers, no body. The GET pipelined behind it is read right after the
    // HEAD answer's blank line, so a body sent by mistake would corrupt its status line.
    client.send(
        b"HEAD /plaintext HTTP/1.1\r\nHost: tether.test\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: tether.test\r\n\r\n",
    );
    let head = client.read_head_response();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Type"), Some("text/plain"));
    assert_eq!(head.header("Content-Length"), Some("13"));
    head.assert_keeps_alive();
    let after = client.read_response();
    assert_eq!((after.status, after.text()), (200, "Hello, World!"));
}

#[test]
fn http11_connection_close_is_honoured() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    // A request pipelined after the closing one is never answered.
    client.send(b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\nConnection: close\r\n\r\nGET /plaintext HTTP/1.1\r\nHost: tether.test\r\n\r\n");
    let response = client.read_response();
    assert_eq!((response.status, response.text()), (200, "Hello, World!"));
    response.assert_closes();
    client.expect_eof();
    drop(client);
    server.wait_for_stats("the connection closed by_client", |s| num(s, "totals.closed.by_client") >= 1);
}

#[test]
fn http10_closes_unless_keep_alive_is_requested() {
    let server = Server::start(&[]);

    // Without `Connection: keep-alive`, HTTP/1.0 closes after one answer.
    let mut plain = server.connect();
    plain.send(b"GET /plaintext HTTP/1.0\r\n\r\n");
    let response = plain.read_response();
    assert_eq!((response.status, response.text()), (200, "Hello, World!"));
    response.assert_closes();
    plain.expect_eof();

    // With it, the connection persists and each answer says so explicitly.
    let mut kept = server.connect();
    for max in [999, 998] {
        kept.send(b"GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = kept.read_response();
        assert_eq!((response.status, response.text()), (200, "Hello, World!"));
        assert_eq!(response.header("Connection"), Some("keep-alive"), "{response:?}");
        assert_eq!(response.keep_alive(), Some((75, max)), "{response:?}");
    }
    // A later HTTP/1.0 request without the header ends it.
    kept.send(b"GET /plaintext HTTP/1.0\r\n\r\n");
    kept.read_response().assert_closes();
    kept.expect_eof();
}

#[test]
fn a_hundred_pipelined_requests_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    // Three kinds of request in turn, the last one asking to close, all in one write.
    let mut batch = Vec::new();
    for i in 0..100 {
        let (method, path) = match i % 3 {
            0 => ("GET", "/plaintext".to_string()),
            1 => ("GET", format!("/missing/{i}")),
            _ => ("HEAD", "/plaintext".to_string()),
        };
        let close = if i == 99 { "Connection: close\r\n" } else { "" };
        batch.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: tether.test\r\n{close}\r\n").as_bytes());
    }
    client.send(&batch);
    for i in 0..100u64 {
        let response = if i % 3 == 2 { client.read_head_response() } else { client.read_response() };
        let expected_status = if i % 3 == 1 { 404 } else { 200 };
        assert_eq!(response.status, expected_status, "response {i}: {response:?}");
        if i == 99 {
            response.assert_closes();
        } else {
            // `max` counts down by one per answer, so it also proves the order.
            assert_eq!(response.keep_alive(), Some((75, 999 - i)), "response {i}: {response:?}");
        }
    }
    client.expect_eof();
    let stats = server.stats();
    assert_eq!(num(&stats, "totals.requests"), 101, "100 pipelined and this /stats: {stats}");
    assert_eq!(num(&stats, "totals.reused"), 99, "{stats}");
}

#[test]
fn not_found_and_method_not_allowed_keep_the_connection() {
    let server = Server::start(&[]);
    let mut client = server.connect();

    let missing = client.get("/nowhere");
    assert_eq!(missing.status, 404);
    missing.assert_keeps_alive();
    assert_eq!(client.get("/plaintext/").status, 404, "paths match exactly");

    for (method, path) in [("POST", "/plaintext"), ("DELETE", "/stats"), ("PUT", "/metrics")] {
        client.send(format!("{method} {path} HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 0\r\n\r\n").as_bytes());
        let response = client.read_response();
        assert_eq!(response.status, 405, "{method} {path}: {response:?}");
        assert_eq!(response.header("Allow"), Some("GET, HEAD, OPTIONS"), "{response:?}");
        response.assert_keeps_alive();
    }
    // An unknown path is 404 whatever the method.
    client.send(b"POST /nowhere HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(client.read_response().status, 404);

    let ok = client.get("/plaintext");
    assert_eq!((ok.status, ok.text()), (200, "Hello, World!"));
}

/// Sends `request` (whose body must be skipped) and a GET in one write; the GET must be
/// answered as itself. A body that was not consumed, or consumed too far, derails the second.
fn assert_body_skipped(server: &Server, request: &[u8]) {
    let mut client = server.connect();
    let mut batch = request.to_vec();
    batch.extend_from_slice(GET_PLAINTEXT);
    client.send(&batch);
    let first = client.read_response();
    assert_eq!(first.status, 405, "{first:?}");
    first.assert_keeps_alive();
    let second = client.read_response();
    assert_eq!((second.status, second.text()), (200, "Hello, World!"), "{second:?}");
    second.assert_keeps_alive();
}

#[test]
fn content_length_body_is_consumed_before_the_next_request() {
    let server = Server::start(&[]);
    // The body looks like a request for a missing path: if it were parsed as one, a 404 would
    // come back instead of the 200.
    let body = b"GET /missing HTTP/1.1\r\nHost: tether.test\r\n\r\n";
    let mut request =
        format!("POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(body);
    assert_body_skipped(&server, &request);

    // A body of nearly --max-message-bytes (65536), larger than one read.
    let big = vec![b'x'; 60_000];
    let mut request =
        format!("POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
    request.extend_from_slice(&big);
    assert_body_skipped(&server, &request);
}

#[test]
fn chunked_body_with_extensions_and_trailers_is_consumed() {
    let server = Server::start(&[]);
    let request = b"POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n\
        A;name=value\r\n0123456789\r\n\
        19\r\nGET /missing HTTP/1.1\r\n\r\n\r\n\
        0\r\nX-Trailer: yes\r\nX-Other: also\r\n\r\n";
    assert_body_skipped(&server, request);

    // No trailers at all: the last chunk is followed by the blank line alone.
    assert_body_skipped(
        &server,
        b"POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
}

#[test]
fn a_body_split_across_writes_is_reassembled() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.send(b"POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 10\r\n\r\nhello");
    server.barrier(); // the server has read the head and half the body
    let mut rest = b"world".to_vec();
    rest.extend_from_slice(GET_PLAINTEXT);
    client.send(&rest);
    assert_eq!(client.read_response().status, 405);
    assert_eq!(client.read_response().text(), "Hello, World!");

    client.send(b"POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    server.barrier(); // the server has read the head and part of a chunk
    let mut rest = b"lo\r\n0\r\n\r\n".to_vec();
    rest.extend_from_slice(GET_PLAINTEXT);
    client.send(&rest);
    assert_eq!(client.read_response().status, 405);
    assert_eq!(client.read_response().text(), "Hello, World!");
}

#[test]
fn expect_100_continue_gets_the_interim_answer_then_the_final_one() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    for round in 0..2 {
        // The second round checks the interim answer is sent again for the next request.
        client.send(
            b"POST /publish/up HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        );
        let mut interim = [0u8; 25];
        std::io::Read::read_exact(&mut client.stream(), &mut interim).expect("an interim answer before the body");
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n", "round {round}");
        client.send(b"hello");
        let response = client.read_response();
        assert_eq!(response.status, 200, "round {round}: {response:?}");
        response.assert_keeps_alive();
    }
    // Not asked for, not sent: the answer to a GET comes first.
    assert_eq!(client.get("/plaintext").status, 200);
}
