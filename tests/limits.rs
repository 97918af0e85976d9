//! Per-connection and server-wide limits: `--max-requests`, `--max-connections` (reclaiming
//! idle connections, then 503), and the size limits at their boundaries (just inside is
//! served, just outside refused).

mod common;

use std::thread;
use std::time::Duration;

use common::{num, Server};

#[test]
fn max_requests_ends_the_connection_on_the_nth_answer() {
    let server = Server::start(&["--max-requests", "3"]);
    let mut client = server.connect();
    for remaining in [2, 1] {
        let response = client.get("/plaintext");
        assert_eq!(response.status, 200);
        assert_eq!(response.keep_alive().map(|(_, max)| max), Some(remaining), "{response:?}");
        response.assert_keeps_alive();
    }
    let last = client.get("/plaintext");
    assert_eq!((last.status, last.text()), (200, "Hello, World!"));
    last.assert_closes();
    client.expect_eof();
    drop(client);
    server.wait_for_stats("a max_requests close", |s| num(s, "totals.closed.max_requests") == 1);
}

#[test]
fn max_requests_cuts_a_pipeline_short() {
    let server = Server::start(&["--max-requests", "3"]);
    let mut client = server.connect();
    client.send(&b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\n\r\n".repeat(5));
    for _ in 0..2 {
        client.read_response().assert_keeps_alive();
    }
    client.read_response().assert_closes();
    client.expect_eof(); // requests 4 and 5 are never answered
}

#[test]
fn beyond_max_connections_a_newcomer_gets_503_and_the_others_keep_working() {
    let server = Server::start(&["--max-connections", "2"]);
    // Two busy connections, each in the middle of a request head, so that neither is idle: an
    // idle one could be closed to make room instead (docs/architecture.md, "Limits").
    let mut first = server.connect();
    let mut second = server.connect();
    first.send(b"GET /plaintext HTTP/1.1\r\n");
    second.send(b"GET /plaintext HTTP/1.1\r\n");

    let mut third = server.connect();
    let refused = third.get("/plaintext");
    refused.assert_error(503);
    let retry_after: u64 = refused.header("Retry-After").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((1..=3).contains(&retry_after), "a 503 says when to retry, in 1 to 3 s: {refused:?}");
    third.expect_eof();
    drop(third);

    // The two admitted connections finish their requests and stay usable.
    for client in [&mut first, &mut second] {
        client.send(b"Host: tether.test\r\n\r\n");
        let response = client.read_response();
        assert_eq!((response.status, response.text()), (200, "Hello, World!"));
        response.assert_keeps_alive();
    }
    // Asking on an admitted connection: the rejected one was counted and closed as such.
    let stats = first.wait_for_stats("the rejected connection closed", |s| num(s, "totals.closed.rejected") == 1);
    assert_eq!(num(&stats, "totals.rejected"), 1, "{stats}");
    assert_eq!(num(&stats, "connections.open"), 2, "{stats}");

    // The limit counts open connections: once one closes, a newcomer is served.
    drop(second);
    first.wait_for_stats("the second connection closed", |s| num(s, "connections.open") == 1);
    let mut fourth = server.connect();
    let response = fourth.get("/plaintext");
    assert_eq!((response.status, response.text()), (200, "Hello, World!"));
}

#[test]
fn at_max_connections_stats_and_metrics_are_still_answered_then_closed() {
    let server = Server::start(&["--max-connections", "1"]);
    let mut busy = server.connect();
    busy.send(b"GET /plaintext HTTP/1.1\r\n");
    for path in ["/stats", "/metrics"] {
        let mut newcomer = server.connect();
        let response = newcomer.get(path);
        assert_eq!(response.status, 200, "{path} at the limit: {response:?}");
        response.assert_closes();
        newcomer.expect_eof();
    }
    let stats = server.stats();
    assert_eq!(num(&stats, "totals.rejected"), 3, "two refused newcomers and this one: {stats}");
}

#[test]
fn at_max_connections_the_longest_idle_connection_makes_room() {
    let server = Server::start(&["--max-connections", "3"]);
    let mut oldest = server.connect();
    let mut newer = server.connect();
    let mut busy = server.connect();
    oldest.get("/plaintext").assert_keeps_alive();
    thread::sleep(Duration::from_millis(100));
    newer.get("/plaintext").assert_keeps_alive();
    // In the middle of a request: never reclaimed.
    busy.send(b"GET /plaintext HTTP/1.1\r\n");
    // Idle connections younger than a second are in use, not reclaimable.
    thread::sleep(Duration::from_millis(1200));

    let mut newcomer = server.connect();
    let response = newcomer.get("/plaintext");
    assert_eq!((response.status, response.text()), (200, "Hello, World!"), "room was made");
    oldest.expect_eof();

    busy.send(b"Host: tether.test\r\n\r\n");
    assert_eq!(busy.read_response().status, 200);
    newer.get("/plaintext").assert_keeps_alive();
    let stats = newer.stats();
    assert_eq!(num(&stats, "totals.closed.reclaimed"), 1, "{stats}");
    assert_eq!(num(&stats, "totals.rejected"), 0, "{stats}");
}

#[test]
fn a_connection_idle_for_less_than_a_second_is_not_reclaimed_until_it_is() {
    let server = Server::start(&["--max-connections", "1"]);
    let mut in_use = server.connect();
    in_use.get("/plaintext").assert_keeps_alive();
    let mut newcomer = server.connect();
    newcomer.get("/plaintext").assert_error(503);
    in_use.get("/plaintext").assert_keeps_alive();

    thread::sleep(Duration::from_millis(1200));
    let mut later = server.connect();
    let response = later.get("/plaintext");
    assert_eq!((response.status, response.text()), (200, "Hello, World!"), "room was made");
    in_use.expect_eof();
}

#[test]
fn a_body_of_exactly_max_message_bytes_is_accepted_one_more_is_413() {
    let server = Server::start(&["--max-message-bytes", "1024"]);
    let mut client = server.connect();
    let mut request = b"POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 1024\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'x'; 1024]);
    client.send(&request);
    let response = client.read_response();
    assert_eq!(response.status, 405, "the body fits, so the request reaches routing: {response:?}");
    response.assert_keeps_alive();

    let mut request = b"POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 1025\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'x'; 1025]);
    client.send(&request);
    client.read_response().assert_error(413);
    client.expect_eof();
}

#[test]
fn a_chunked_body_above_max_message_bytes_is_413() {
    let server = Server::start(&["--max-message-bytes", "1024"]);
    let mut client = server.connect();
    // Two chunks of 600 bytes: each fits, their sum (1200) does not.
    let mut request = b"POST /plaintext HTTP/1.1\r\nHost: tether.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        request.extend_from_slice(b"258\r\n");
        request.extend_from_slice(&[b'x'; 600]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    client.send(&request);
    client.read_response().assert_error(413);
    client.expect_eof();
}

#[test]
fn a_request_target_of_8192_bytes_is_served_one_more_is_414() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    let target = format!("/{}", "a".repeat(8191));
    assert_eq!(target.len(), 8192);
    let response = client.get(&target);
    assert_eq!(response.status, 404, "a long but allowed target reaches routing: {response:?}");
    response.assert_keeps_alive();

    client.send(format!("GET {target}a HTTP/1.1\r\nHost: tether.test\r\n\r\n").as_bytes());
    client.read_response().assert_error(414);
    client.expect_eof();
}

#[test]
fn a_head_under_max_head_bytes_is_served_one_over_is_431() {
    let server = Server::start(&["--max-head-bytes", "1024"]);
    let mut client = server.connect();
    // Well inside and well outside the limit: where exactly the head's last CRLF is counted is
    // the parser's business, not this test's.
    let padded =
        |size: usize| format!("GET /plaintext HTTP/1.1\r\nHost: tether.test\r\nX-Pad: {}\r\n\r\n", "p".repeat(size));
    client.send(padded(800).as_bytes());
    let response = client.read_response();
    assert_eq!((response.status, response.text()), (200, "Hello, World!"));
    client.send(padded(1100).as_bytes());
    client.read_response().assert_error(431);
    client.expect_eof();
}
