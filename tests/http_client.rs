//! An ordinary HTTP client against tether: ureq's agent keeps a pool of connections, and
//! `/stats` confirms from the outside that it reused one connection for every request.

mod common;

use std::time::Duration;

use common::{num, Server};

#[test]
fn a_pooling_client_reuses_one_connection() {
    let server = Server::start(&[]);
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let url = format!("http://{}/plaintext", server.addr);
    for i in 0..50 {
        let response = agent.get(&url).call().unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(response.status(), 200);
        assert_eq!(response.header("Server"), Some("tether"));
        assert!(response.header("Keep-Alive").is_some(), "request {i} keeps the connection alive");
        // Reading the body to its end is what returns the connection to the pool.
        assert_eq!(response.into_string().expect("body"), "Hello, World!");
    }
    let stats = server.stats();
    assert_eq!(num(&stats, "totals.accepted"), 2, "the agent's one connection and this /stats one: {stats}");
    assert_eq!(num(&stats, "totals.requests"), 51, "{stats}");
    assert_eq!(
        num(&stats, "totals.reused"),
        49,
        "every request after the agent's first reused its connection: {stats}"
    );
    assert_eq!(num(&stats, "connections.idle"), 1, "the agent's connection waits in its pool: {stats}");
}

#[test]
fn a_client_sees_errors_as_statuses() {
    let server = Server::start(&[]);
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let base = format!("http://{}", server.addr);
    match agent.get(&format!("{base}/nowhere")).call() {
        // Reading an error's body to its end returns the connection to the pool too.
        Err(ureq::Error::Status(404, response)) => assert!(response.into_string().expect("body").ends_with('\n')),
        other => panic!("expected 404, got {other:?}"),
    }
    match agent.post(&format!("{base}/plaintext")).send_string("data") {
        Err(ureq::Error::Status(405, response)) => {
            assert_eq!(response.header("Allow"), Some("GET, HEAD, OPTIONS"));
            response.into_string().expect("body");
        }
        other => panic!("expected 405, got {other:?}"),
    }
    let stats = agent.get(&format!("{base}/stats")).call().expect("/stats");
    assert_eq!(stats.content_type(), "application/json");
    let stats: serde_json::Value = serde_json::from_str(&stats.into_string().expect("body")).expect("JSON");
    assert_eq!(num(&stats, "totals.requests"), 3, "{stats}");
    assert_eq!(num(&stats, "totals.accepted"), 1, "404 and 405 keep the connection, so all three share it: {stats}");
}
