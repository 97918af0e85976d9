//! Long-poll helpers shared by the end-to-end tests of polling (`longpoll.rs`, `holds.rs`):
//! requests, a checked reading of a poll's answer, waiting on `/stats`, and a small PRNG.

use std::io::ErrorKind;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{num, Client, Response, Server};

/// The most messages one answer may carry (docs/long-polling.md, "Limits").
pub const PAGE: usize = 100;

// ---- requests -------------------------------------------------------------------------------

/// `GET target` with extra header lines (each ending in CRLF).
pub fn get_request(target: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: tether.test\r\n{extra_headers}\r\n").into_bytes()
}

pub fn publish_request(topic: &str, data: &[u8]) -> Vec<u8> {
    let mut request =
        format!("POST /publish/{topic} HTTP/1.1\r\nHost: tether.test\r\nContent-Length: {}\r\n\r\n", data.len())
            .into_bytes();
    request.extend_from_slice(data);
    request
}

/// Publishes `data` on `topic` over `client` and returns `(seq, woken)`, checking the answer.
pub fn publish(client: &mut Client, topic: &str, data: &str) -> (u64, u64) {
    client.send(&publish_request(topic, data.as_bytes()));
    let response = client.read_response();
    assert_eq!(response.status, 200, "publish to {topic} failed: {response:?}");
    assert_eq!(response.header("Content-Type"), Some("application/json"), "{response:?}");
    response.assert_keeps_alive();
    let json: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("not JSON ({e}): {response:?}"));
    assert_eq!(json["topic"], topic, "{json}");
    let field = |name: &str| json[name].as_u64().unwrap_or_else(|| panic!("publish answer without {name}: {json}"));
    (field("seq"), field("woken"))
}

/// Publishes `count` messages `m<seq>` on `topic`, checking that they get the next seqs.
pub fn publish_many(client: &mut Client, topic: &str, first_seq: u64, count: u64) {
    for seq in first_seq..first_seq + count {
        assert_eq!(publish(client, topic, &format!("m{seq}")).0, seq, "sequence numbers are consecutive");
    }
}

// ---- answers --------------------------------------------------------------------------------

/// A poll answer, parsed and checked against the rules every answer follows.
#[derive(Debug)]
pub struct Answer {
    pub status: String,
    pub topic: String,
    pub epoch: String,
    pub cursor: u64,
    pub missed: u64,
    /// `(seq, data)` in the order sent.
    pub messages: Vec<(u64, String)>,
}

impl Answer {
    pub fn seqs(&self) -> Vec<u64> {
        self.messages.iter().map(|(seq, _)| *seq).collect()
    }

    /// `ok` carrying exactly the messages `m<seq>` for `seqs`, with `missed` as given.
    pub fn assert_ok(&self, seqs: std::ops::RangeInclusive<u64>, missed: u64) {
        assert_eq!(self.status, "ok", "{self:?}");
        let expected: Vec<(u64, String)> = seqs.map(|seq| (seq, format!("m{seq}"))).collect();
        assert_eq!(self.messages, expected, "{self:?}");
        assert_eq!(self.missed, missed, "{self:?}");
    }

    /// `status` (timeout or reset) with no messages and the given cursor.
    pub fn assert_empty(&self, status: &str, cursor: u64) {
        assert_eq!((self.status.as_str(), self.cursor, self.missed), (status, cursor, 0), "{self:?}");
        assert!(self.messages.is_empty(), "{self:?}");
    }
}

/// Parses a poll answer. Every answer is 200, JSON, `Cache-Control: no-store`; `ok` carries 1 to
/// 100 messages in increasing seq order and its cursor is the last one; `timeout` and `reset`
/// carry none.
pub fn answer_of(response: &Response) -> Answer {
    assert_eq!(response.status, 200, "a poll answer is 200: {response:?}");
    assert_eq!(response.header("Content-Type"), Some("application/json"), "{response:?}");
    assert_eq!(response.header("Cache-Control"), Some("no-store"), "{response:?}");
    let json: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("not JSON ({e}): {response:?}"));
    let text = |name: &str| json[name].as_str().unwrap_or_else(|| panic!("no string {name} in {json}")).to_string();
    let number =
        |value: &Value, name: &str| value[name].as_u64().unwrap_or_else(|| panic!("no number {name} in {json}"));
    let messages: Vec<(u64, String)> = json["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array in {json}"))
        .iter()
        .map(|m| (number(m, "seq"), m["data"].as_str().unwrap_or_else(|| panic!("no data in {m}")).to_string()))
        .collect();
    let answer = Answer {
        status: text("status"),
        topic: text("topic"),
        epoch: text("epoch"),
        cursor: number(&json, "cursor"),
        missed: number(&json, "missed"),
        messages,
    };
    assert!(!answer.epoch.is_empty(), "an epoch names this server's life: {json}");
    match answer.status.as_str() {
        "ok" => {
            assert!((1..=PAGE).contains(&answer.messages.len()), "ok carries 1 to {PAGE} messages: {json}");
            assert!(answer.seqs().windows(2).all(|w| w[1] == w[0] + 1), "messages are contiguous: {json}");
            assert_eq!(answer.seqs().last(), Some(&answer.cursor), "the cursor is the last message included: {json}");
        }
        "timeout" | "reset" => assert!(answer.messages.is_empty(), "{json}"),
        other => panic!("unknown status {other:?} in {json}"),
    }
    answer
}

/// Sends a poll for `target` (plus extra header lines) and reads its answer.
pub fn poll(client: &mut Client, target: &str, extra_headers: &str) -> Answer {
    client.send(&get_request(target, extra_headers));
    let response = client.read_response();
    response.assert_keeps_alive();
    answer_of(&response)
}

// ---- waiting --------------------------------------------------------------------------------

/// Polls `/stats` until `condition` holds, for at most `within`; returns the snapshot that
/// satisfied it. (`Server::wait_for_stats` with a bound chosen by the test.)
pub fn wait_until(server: &Server, within: Duration, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let stats = server.stats();
        if condition(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "/stats did not show {what} within {within:?}; last snapshot: {stats}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until exactly `n` polls are held (for at most 5 s).
pub fn wait_held(server: &Server, n: u64) -> Value {
    server.wait_for_stats(&format!("polls.held == {n}"), |s| num(s, "polls.held") == n)
}

/// Asserts that not one byte has arrived on `client`. Meaningful after a `/stats` round trip
/// that shows the server has processed this client's request: anything the server wrote for it
/// in that turn is already in our receive queue, since loopback delivers a write at once.
pub fn assert_nothing_received(client: &Client, what: &str) {
    let stream = client.stream();
    stream.set_nonblocking(true).expect("set_nonblocking");
    let mut byte = [0u8; 1];
    let peeked = stream.peek(&mut byte);
    stream.set_nonblocking(false).expect("set_nonblocking");
    match peeked {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("{what}: expected nothing yet, got {other:?}"),
    }
}

/// A seeded SplitMix64: the same decisions on every run, and no `rand` dependency.
pub struct Prng(pub u64);

impl Prng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
