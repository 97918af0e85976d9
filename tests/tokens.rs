//! Who may publish and subscribe (docs/security.md): with `--jwt-secret`, a topic is published to,
//! polled and streamed only with a bearer token that covers it, and the cost view only with an
//! admin token; a held poll and a stream last no longer than their token. Every token case is
//! unit-tested in `src/token_tests.rs`; here the real server answers them.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{num, Response, Server};
use tether::token::{Claims, TokenKey};

const SECRET: &str = "an end-to-end secret of at least thirty-two bytes";

fn start() -> Server {
    Server::start(&["--jwt-secret", SECRET])
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A token for these claims, good for `secs` more seconds (at least `secs - 1`: `exp` is whole).
fn token(secs: u64, claims: Claims) -> String {
    TokenKey::new(SECRET.as_bytes()).unwrap().mint(&Claims { exp: unix_now() + secs, ..claims }).unwrap()
}

fn subscriber(patterns: &[&str]) -> String {
    token(600, Claims { subscribe: patterns.iter().map(|p| p.to_string()).collect(), ..Claims::default() })
}

fn publisher(patterns: &[&str]) -> String {
    token(600, Claims { publish: patterns.iter().map(|p| p.to_string()).collect(), ..Claims::default() })
}

fn admin() -> String {
    token(600, Claims { admin: true, ..Claims::default() })
}

/// One request on a new connection; `token` as `Authorization: Bearer`.
fn request(server: &Server, method: &str, target: &str, token: Option<&str>, body: &str) -> Response {
    let mut client = server.connect();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    client.send(
        format!(
            "{method} {target} HTTP/1.1\r\nHost: tether.test\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    client.read_response()
}

fn stats(server: &Server) -> serde_json::Value {
    let response = request(server, "GET", "/stats", Some(&admin()), "");
    assert_eq!(response.status, 200, "{response:?}");
    serde_json::from_slice(&response.body).expect("stats are JSON")
}

/// The admin's `/stats` once `condition` holds, asked every 10 ms for at most 10 s.
fn wait_for_stats(server: &Server, what: &str, condition: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    for _ in 0..1000 {
        let stats = stats(server);
        if condition(&stats) {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: not within 10 s");
}

#[test]
fn the_cost_view_needs_an_admin_token() {
    let server = start();
    for target in ["/stats", "/metrics", "/events/$stats"] {
        let refused = request(&server, "GET", target, None, "");
        assert_eq!(refused.status, 401, "{target}: {refused:?}");
        assert_eq!(refused.header("WWW-Authenticate"), Some("Bearer realm=\"tether\""));
        let refused = request(&server, "GET", target, Some(&subscriber(&["*"])), "");
        assert_eq!(refused.status, 403, "{target}: a token without admin: {refused:?}");
    }
    assert_eq!(request(&server, "GET", "/metrics", Some(&admin()), "").status, 200);
    let stats = stats(&server);
    assert_eq!(num(&stats, "totals.unauthorized"), 3);
    assert_eq!(num(&stats, "totals.forbidden"), 3);
    // Open to all: the benchmark endpoint, and the live page, which carries no figures itself.
    assert_eq!(request(&server, "GET", "/plaintext", None, "").status, 200);
    assert_eq!(request(&server, "GET", "/", None, "").status, 200);
    assert!(!stats.to_string().contains(SECRET));
}

#[test]
fn publishing_and_polling_need_a_token_that_covers_the_topic() {
    let server = start();
    let refused = request(&server, "POST", "/publish/chat.room1", None, "hi");
    assert_eq!(refused.status, 401, "{refused:?}");
    let refused = request(&server, "POST", "/publish/chat.room1", Some(&subscriber(&["*"])), "hi");
    assert_eq!(refused.status, 403, "subscribe does not give publish: {refused:?}");
    let refused = request(&server, "POST", "/publish/news", Some(&publisher(&["chat.*"])), "hi");
    assert_eq!(refused.status, 403, "a topic outside the claims: {refused:?}");
    assert_eq!(num(&stats(&server), "topics.count"), 0, "nothing stored, no topic created");

    let published = request(&server, "POST", "/publish/chat.room1", Some(&publisher(&["chat.*"])), "hi");
    assert_eq!(published.status, 200, "{published:?}");
    // From the query, as an EventSource sends it.
    let reader = subscriber(&["chat.room1", "news"]);
    let polled = request(&server, "GET", &format!("/poll/chat.room1?cursor=0&token={reader}"), None, "");
    assert_eq!(polled.status, 200, "{polled:?}");
    assert!(polled.text().contains("\"data\":\"hi\""), "{polled:?}");
    let refused = request(&server, "GET", &format!("/poll/sport?token={reader}"), None, "");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.header("WWW-Authenticate"), None, "the token is good, only not for this");
    // Several topics: every one must be covered.
    let refused = request(&server, "GET", &format!("/poll?topic=news&topic=sport&token={reader}"), None, "");
    assert_eq!(refused.status, 403, "{refused:?}");
    let refused = request(&server, "GET", &format!("/events?topic=sport&topic=news&token={reader}"), None, "");
    assert_eq!(refused.status, 403, "{refused:?}");
    let polled = request(
        &server,
        "GET",
        &format!("/poll?topic=chat.room1&topic=news&cursor=chat.room1:0&token={reader}"),
        None,
        "",
    );
    assert_eq!(polled.status, 200, "{polled:?}");
    assert_eq!(num(&stats(&server), "polls.held"), 0, "nothing was held for a refused poll");
}

#[test]
fn a_token_that_is_not_good_gets_401_and_says_why() {
    let server = start();
    let other = TokenKey::new(b"another secret, thirty-two bytes long").unwrap();
    let badly_signed = other.mint(&Claims { exp: unix_now() + 60, admin: true, ..Claims::default() }).unwrap();
    let key = TokenKey::new(SECRET.as_bytes()).unwrap();
    let expired = key.mint(&Claims { exp: unix_now() - 10, admin: true, ..Claims::default() }).unwrap();
    for (token, reason) in [
        (badly_signed.as_str(), "the token's signature is not valid\n"),
        (expired.as_str(), "the token has expired\n"),
        ("not.a.token", "the token is malformed\n"),
    ] {
        let refused = request(&server, "GET", "/stats", Some(token), "");
        assert_eq!(refused.status, 401, "{refused:?}");
        refused.assert_keeps_alive(); // the request itself was well framed
        assert_eq!(refused.text(), reason);
        assert_eq!(refused.header("WWW-Authenticate"), Some("Bearer realm=\"tether\", error=\"invalid_token\""));
        assert!(!refused.text().contains(token) && !refused.text().contains(SECRET));
    }
    let twice = request(&server, "GET", &format!("/stats?token={}", admin()), Some(&admin()), "");
    assert_eq!(twice.status, 400, "{twice:?}");
}

#[test]
fn a_token_past_the_head_limit_is_431_and_the_server_goes_on() {
    let server = Server::start(&["--jwt-secret", SECRET, "--max-head-bytes", "4096"]);
    let huge = "e".repeat(8192);
    let refused = request(&server, "GET", "/stats", Some(&huge), "");
    refused.assert_error(431);
    assert_eq!(request(&server, "GET", "/stats", Some(&admin()), "").status, 200);
}

/// A held poll lasts no longer than its token: with a 60 s timeout asked for and a token good
/// for 2 to 3 s more, it is answered `timeout` when the token expires. A stream is ended then,
/// with an `expired` event.
#[test]
fn a_held_poll_and_a_stream_end_when_their_token_expires() {
    let server = start();
    let short = token(3, Claims { subscribe: vec!["news".into()], ..Claims::default() });
    let mut poll = server.connect();
    poll.send(format!("GET /poll/news?timeout=60s&token={short} HTTP/1.1\r\nHost: tether.test\r\n\r\n").as_bytes());
    let mut stream = server.connect();
    stream.send(format!("GET /events/news?token={short} HTTP/1.1\r\nHost: tether.test\r\n\r\n").as_bytes());
    assert_eq!(stream.read_stream_head().status, 200);
    wait_for_stats(&server, "held and streaming", |s| num(s, "polls.held") == 1 && num(s, "streams.open") == 1);
    // Generous: the token's end is 3 s away at most, the poll's own timeout 60 s.
    poll.await_bytes(Duration::from_secs(30));
    let answer = poll.read_response();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.text().contains("\"status\":\"timeout\""), "{answer:?}");
    stream.await_bytes(Duration::from_secs(30));
    stream.read_stream_until("event: expired\ndata: {\"reason\":\"the token has expired\"}\n\n");
    stream.expect_eof();
    drop(stream); // the server lingers for our FIN before it counts the close
    let after = wait_for_stats(&server, "the close counted", |s| num(s, "totals.closed.token_expired") == 1);
    assert_eq!((num(&after, "polls.held"), num(&after, "streams.open")), (0, 0));
    // The same token, now expired, is refused.
    let again = request(&server, "GET", &format!("/poll/news?token={short}"), None, "");
    assert_eq!(again.status, 401, "{again:?}");
}
