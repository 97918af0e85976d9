//! Server-Sent Events end to end (docs/browser.md): `GET /events/{topic}` is an open stream of
//! the topic's messages, resumable from `Last-Event-ID`; heartbeats keep an idle one alive; a
//! client that leaves frees it at once; a drain ends it; `--max-held` counts it; the cost view
//! streams as `/events/$stats`. And the browser's side of the contract: CORS for allowed origins,
//! and the live page at `GET /`. How each state moves is tested without sockets in
//! `src/connection/tests.rs`.

mod common;

use std::time::Duration;

use common::{num, Client, Server};

fn open_stream(server: &Server, target: &str, extra: &str) -> Client {
    let mut client = server.connect();
    client.send(format!("GET {target} HTTP/1.1\r\nHost: tether.test\r\n{extra}\r\n").as_bytes());
    let head = client.read_stream_head();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("Content-Type"), Some("text/event-stream"));
    assert_eq!(head.header("Cache-Control"), Some("no-store"));
    assert_eq!(head.header("Content-Length"), None, "the body runs until the close");
    assert_eq!(client.read_stream_until("\n\n"), "retry: 2000\n\n");
    client
}

#[test]
fn a_stream_carries_each_message_with_its_id_and_resumes_from_last_event_id() {
    let server = Server::start(&[]);
    let mut stream = open_stream(&server, "/events/news", "");
    server.wait_for_stats("the stream is listed", |s| num(s, "streams.open") == 1);
    server.publish("news", "first");
    server.publish("news", "two\nlines");
    assert_eq!(stream.read_stream_until("lines\n\n"), "id: 1\ndata: first\n\nid: 2\ndata: two\ndata: lines\n\n");
    drop(stream);
    server.wait_for_stats("the stream ended", |s| num(s, "streams.open") == 0);

    // What a browser's EventSource sends when it reconnects: the last id it saw.
    server.publish("news", "third");
    let mut again = open_stream(&server, "/events/news", "Last-Event-ID: 1\r\n");
    let text = again.read_stream_until("third\n\n");
    assert_eq!(text, "id: 2\ndata: two\ndata: lines\n\nid: 3\ndata: third\n\n", "nothing lost, nothing twice");
    // A browser's reconnect keeps the address's cursor and adds the newer Last-Event-ID.
    let mut reconnect = open_stream(&server, "/events/news?cursor=0", "Last-Event-ID: 2\r\n");
    assert_eq!(reconnect.read_stream_until("third\n\n"), "id: 3\ndata: third\n\n", "the header wins");
    let mut blank = open_stream(&server, "/events/news?from=oldest", "Last-Event-ID:\r\n");
    assert!(blank.read_stream_until("first\n\n").starts_with("id: 1\n"), "an empty id is none");
    let mut oldest = open_stream(&server, "/events/news?from=oldest", "");
    assert!(oldest.read_stream_until("third\n\n").starts_with("id: 1\ndata: first\n\n"));
}

#[test]
fn a_foreign_epoch_starts_a_stream_with_a_reset() {
    let server = Server::start(&[]);
    server.publish("t", "one");
    let mut stream = open_stream(&server, "/events/t?cursor=0&epoch=not-this-one", "");
    let text = stream.read_stream_until("}\n\n");
    assert!(text.starts_with("event: reset\nid: 1\ndata: {\"topic\":\"t\",\"cursor\":1,\"epoch\":\""), "{text}");
    server.publish("t", "two");
    assert_eq!(stream.read_stream_until("two\n\n"), "id: 2\ndata: two\n\n");
}

#[test]
fn an_idle_stream_gets_heartbeats_and_a_client_that_leaves_frees_it() {
    let server = Server::start(&["--sse-heartbeat", "200ms"]);
    let mut stream = open_stream(&server, "/events/quiet", "");
    assert_eq!(stream.read_stream_until("\n\n"), ": heartbeat\n\n");
    assert_eq!(stream.read_stream_until("\n\n"), ": heartbeat\n\n");
    let stats = server.stats();
    assert_eq!((num(&stats, "streams.open"), num(&stats, "connections.streaming")), (1, 1), "{stats}");
    drop(stream);
    let stats = server.wait_for_stats("the stream freed", |s| num(s, "streams.open") == 0);
    assert_eq!(num(&stats, "connections.open"), 1, "only the /stats connection: {stats}");
}

#[test]
fn max_held_counts_streams_and_polls_alike() {
    let server = Server::start(&["--max-held", "1"]);
    let _stream = open_stream(&server, "/events/a", "");
    let mut poll = server.connect();
    let refused = poll.get("/poll/b");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.header("Retry-After").is_some());
    let mut second = server.connect();
    second.send(b"GET /events/c HTTP/1.1\r\nHost: tether.test\r\n\r\n");
    assert_eq!(second.read_response().status, 503);
}

#[test]
fn a_drain_ends_every_stream_cleanly() {
    let mut server = Server::start(&["--drain-timeout", "10s"]);
    let mut stream = open_stream(&server, "/events/t", "");
    server.wait_for_stats("the stream is listed", |s| num(s, "streams.open") == 1);
    server.signal(libc::SIGTERM);
    stream.expect_eof();
    let status = server.wait_exit(Duration::from_secs(10)).expect("exits after the drain");
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_cost_view_streams_once_a_second() {
    let server = Server::start(&[]);
    let mut stream = open_stream(&server, "/events/$stats", "");
    for _ in 0..2 {
        let event = stream.read_stream_until("\n\n");
        let json = event.strip_prefix("data: ").unwrap_or_else(|| panic!("{event:?}")).trim_end();
        let stats: serde_json::Value = serde_json::from_str(json).expect("a /stats snapshot");
        assert_eq!(num(&stats, "streams.open"), 1, "{stats}");
    }
}

#[test]
fn bad_streams_are_refused_with_their_status() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    assert_eq!(client.get("/events/bad%20name").status, 400);
    assert_eq!(client.get("/events/t?cursor=x").status, 400);
    client.send(b"POST /events/t HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 0\r\n\r\n");
    let refused = client.read_response();
    assert_eq!((refused.status, refused.header("Allow")), (405, Some("GET, HEAD, OPTIONS")));
}

// ---- the browser's side: CORS and the live page -------------------------------------------

fn request_with(server: &Server, method: &str, path: &str, headers: &str) -> common::Response {
    let mut client = server.connect();
    client.send(format!("{method} {path} HTTP/1.1\r\nHost: tether.test\r\n{headers}\r\n").as_bytes());
    client.read_response()
}

#[test]
fn an_allowed_origin_may_read_polls_and_streams() {
    let server = Server::start(&["--allow-origin", "http://app.test:8000", "--allow-origin", "https://b.test"]);
    server.publish("t", "m");
    let answer = request_with(&server, "GET", "/poll/t?cursor=0", "Origin: http://app.test:8000\r\n");
    assert_eq!(answer.header("Access-Control-Allow-Origin"), Some("http://app.test:8000"));
    assert_eq!(answer.header("Vary"), Some("Origin"));

    let mut stream = server.connect();
    stream.send(b"GET /events/t?from=oldest HTTP/1.1\r\nHost: tether.test\r\nOrigin: https://b.test\r\n\r\n");
    let head = stream.read_stream_head();
    assert_eq!(head.header("Access-Control-Allow-Origin"), Some("https://b.test"));
    drop(stream.read_stream_until("data: m\n\n"));

    let elsewhere = request_with(&server, "GET", "/poll/t?cursor=0", "Origin: http://evil.test\r\n");
    assert_eq!((elsewhere.status, elsewhere.header("Access-Control-Allow-Origin")), (200, None));
    let plaintext = request_with(&server, "GET", "/plaintext", "Origin: http://app.test:8000\r\n");
    assert_eq!(plaintext.header("Access-Control-Allow-Origin"), None, "only polls, streams and OPTIONS");
}

#[test]
fn a_preflight_from_an_allowed_origin_is_answered_204_with_what_it_may_send() {
    let server = Server::start(&["--allow-origin", "*"]);
    let preflight = "Origin: http://app.test\r\nAccess-Control-Request-Method: GET\r\n\
                     Access-Control-Request-Headers: last-event-id\r\n";
    let answer = request_with(&server, "OPTIONS", "/events/t", preflight);
    assert_eq!(answer.status, 204);
    assert_eq!(answer.header("Access-Control-Allow-Origin"), Some("*"), "any origin: `*` (docs/browser.md)");
    assert_eq!(answer.header("Access-Control-Allow-Methods"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(answer.header("Access-Control-Allow-Headers"), Some("Authorization, Content-Type, Last-Event-ID"));
    assert!(answer.header("Access-Control-Max-Age").is_some());

    let none_allowed = Server::start(&[]);
    let answer = request_with(&none_allowed, "OPTIONS", "/events/t", preflight);
    assert_eq!((answer.status, answer.header("Access-Control-Allow-Origin")), (204, None));
    assert_eq!(answer.header("Allow"), Some("GET, HEAD, OPTIONS"));
}

#[test]
fn the_live_page_is_served_at_the_root() {
    let server = Server::start(&[]);
    let page = request_with(&server, "GET", "/", "");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert!(page.text().contains("<html") || page.text().contains("<!doctype html"), "{page:?}");
}
