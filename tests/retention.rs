//! The global bounds on topics end to end (docs/long-polling.md "Limits"): `--max-retained-bytes`
//! evicts the oldest messages of the largest rings, and readers see the loss in `missed`;
//! `--topic-idle-timeout` forgets topics nobody holds a poll on or publishes to, so the topic
//! count goes back down, and a forgotten topic comes back with a new epoch that resets old
//! cursors. `/stats` shows both.
//!
//! No test asserts that anything is fast. Forgetting is waited for with `/stats`, for up to
//! `FORGET_WAIT` (far beyond the 1 s timeout and the sweep's 1 s period); a topic that must not
//! be forgotten meanwhile has a poll held on it, so a slow machine cannot forget it early.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{num, Client, Server};
use serde_json::Value;

/// How long a test waits for the server to forget idle topics.
const FORGET_WAIT: Duration = Duration::from_secs(30);

fn publish_request(topic: &str, data: &str) -> Vec<u8> {
    let mut request =
        format!("POST /publish/{topic} HTTP/1.1\r\nHost: tether.test\r\nContent-Length: {}\r\n\r\n", data.len())
            .into_bytes();
    request.extend_from_slice(data.as_bytes());
    request
}

/// Publishes `data` on `topic` and returns the answer's `seq`.
fn publish(client: &mut Client, topic: &str, data: &str) -> u64 {
    client.send(&publish_request(topic, data));
    let response = client.read_response();
    assert_eq!(response.status, 200, "publish to {topic}: {response:?}");
    let json: Value = serde_json::from_slice(&response.body).expect("a publish answer is JSON");
    json["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {json}"))
}

/// The JSON of a poll answered at once.
fn poll(client: &mut Client, target: &str) -> Value {
    let response = client.get(target);
    assert_eq!(response.status, 200, "{target}: {response:?}");
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("{target}: not JSON ({e}): {response:?}"))
}

fn seqs(answer: &Value) -> Vec<u64> {
    answer["messages"].as_array().expect("messages").iter().map(|m| m["seq"].as_u64().expect("seq")).collect()
}

fn text<'a>(answer: &'a Value, field: &str) -> &'a str {
    answer[field].as_str().unwrap_or_else(|| panic!("no {field} in {answer}"))
}

/// Sends a poll that the server will hold (60 s), and waits until `/stats` shows `held` polls.
fn hold_poll(server: &Server, target: &str, held: u64) -> Client {
    let mut client = server.connect();
    client.send(format!("GET {target} HTTP/1.1\r\nHost: tether.test\r\n\r\n").as_bytes());
    server.wait_for_stats(&format!("{held} polls held"), |s| num(s, "polls.held") == held);
    client
}

/// Polls `/stats` until `condition` holds, for at most `FORGET_WAIT`.
fn wait_for(server: &Server, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let stats = server.stats();
        if condition(&stats) {
            return stats;
        }
        assert!(started.elapsed() < FORGET_WAIT, "/stats never showed {what} in {FORGET_WAIT:?}: {stats}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn messages_over_the_byte_bound_are_evicted_from_the_largest_ring_and_reported_as_missed() {
    // Room for 7 messages of 500 bytes: each counts its two forms (the quoted JSON literal and
    // the event stream's `data: ` line) and a small fixed overhead.
    let server = Server::start(&["--max-retained-bytes", "8KiB", "--max-message-bytes", "1KiB"]);
    let mut publisher = server.connect();
    let data = "m".repeat(500);
    for seq in 1..=10 {
        assert_eq!(publish(&mut publisher, "old", &data), seq);
    }
    let stats = server.stats();
    assert_eq!((num(&stats, "topics.messages"), num(&stats, "topics.evicted")), (7, 3), "{stats}");

    // Each message on `new` takes the place of one of `old`, the larger ring.
    for seq in 1..=3 {
        assert_eq!(publish(&mut publisher, "new", &data), seq);
    }
    let mut reader = server.connect();
    let old = poll(&mut reader, "/poll/old?cursor=0");
    assert_eq!((text(&old, "status"), old["missed"].as_u64()), ("ok", Some(6)), "{old}");
    assert_eq!(seqs(&old), [7, 8, 9, 10], "the oldest went first");
    assert_eq!(old["cursor"], 10);
    let behind = poll(&mut reader, "/poll/old?cursor=8");
    assert_eq!((seqs(&behind), behind["missed"].as_u64()), (vec![9, 10], Some(0)), "nothing lost after 8");
    let new = poll(&mut reader, "/poll/new?cursor=0");
    assert_eq!((seqs(&new), new["missed"].as_u64()), (vec![1, 2, 3], Some(0)), "{new}");

    let stats = server.stats();
    let (retained, bound) = (num(&stats, "topics.retained_bytes"), num(&stats, "topics.max_retained_bytes"));
    assert_eq!(bound, 8192, "{stats}");
    assert!(retained <= bound && retained >= 7 * (502 + 507), "7 messages of 500 bytes, in two forms: {stats}");
    assert_eq!(num(&stats, "topics.messages"), 7, "{stats}");
    assert_eq!(num(&stats, "topics.evicted"), 6, "{stats}");
    assert_eq!(num(&stats, "topics.forgotten"), 0, "the default idle timeout is an hour: {stats}");
}

#[test]
fn an_idle_topic_is_forgotten_and_comes_back_with_a_new_epoch() {
    let server = Server::start(&["--topic-idle-timeout", "1s", "--poll-timeout", "60s"]);
    let mut publisher = server.connect();
    // A poll held on `news` keeps it alive until the publish answers it, with its epoch.
    let mut first = hold_poll(&server, "/poll/news", 1);
    assert_eq!(publish(&mut publisher, "news", "hello"), 1);
    let answer: Value = serde_json::from_slice(&first.read_response().body).expect("JSON");
    assert_eq!((text(&answer, "status"), seqs(&answer)), ("ok", vec![1]), "{answer}");
    let old_epoch = text(&answer, "epoch").to_string();
    drop(first);

    // `kept` has a poll held on it all along, so it is never idle.
    let mut kept = hold_poll(&server, "/poll/kept", 1);
    let stats = wait_for(&server, "news forgotten", |s| num(s, "topics.forgotten") >= 1);
    assert_eq!(num(&stats, "topics.count"), 1, "only the held topic is left: {stats}");
    assert_eq!((num(&stats, "topics.messages"), num(&stats, "topics.retained_bytes")), (0, 0), "{stats}");

    // The old cursor and epoch of `news` now meet a new topic: reset to its start, new epoch.
    let mut reader = server.connect();
    let reset = poll(&mut reader, &format!("/poll/news?cursor=1&epoch={old_epoch}"));
    assert_eq!((text(&reset, "status"), reset["cursor"].as_u64()), ("reset", Some(0)), "{reset}");
    assert_ne!(text(&reset, "epoch"), old_epoch, "{reset}");
    assert_eq!(publish(&mut publisher, "news", "again"), 1, "a new life numbers from 1");

    // The held poll on `kept` is still there and answered by a publish.
    assert_eq!(publish(&mut publisher, "kept", "still here"), 1);
    let kept_answer: Value = serde_json::from_slice(&kept.read_response().body).expect("JSON");
    assert_eq!(seqs(&kept_answer), [1], "{kept_answer}");

    // Nothing held and nothing published any more: every topic goes.
    let stats = wait_for(&server, "no topics left", |s| num(s, "topics.count") == 0);
    assert_eq!(num(&stats, "topics.forgotten"), 3, "news twice and kept once: {stats}");
    assert_eq!((num(&stats, "topics.messages"), num(&stats, "topics.retained_bytes")), (0, 0), "{stats}");
}

#[test]
fn forgotten_topics_make_room_under_max_topics() {
    let server = Server::start(&["--topic-idle-timeout", "1s", "--max-topics", "2", "--poll-timeout", "60s"]);
    let a = hold_poll(&server, "/poll/a", 1);
    let b = hold_poll(&server, "/poll/b", 2);
    let mut publisher = server.connect();
    publisher.send(&publish_request("c", "x"));
    let refused = publisher.read_response();
    assert_eq!(refused.status, 503, "two topics held, so no third: {refused:?}");

    // Their clients leave; once idle for the timeout, both topics are forgotten.
    drop((a, b));
    wait_for(&server, "both topics forgotten", |s| num(s, "topics.count") == 0);
    let mut publisher = server.connect();
    assert_eq!(publish(&mut publisher, "c", "x"), 1, "room again");
}
