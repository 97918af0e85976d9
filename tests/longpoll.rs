//! Long polling end to end (docs/long-polling.md; docs/architecture.md, "Graceful drain"): a held poll is
//! answered by a publish, by its hold time or by a drain; cursors resume without loss or
//! duplicates; answers are paged; loss from the ring is reported in `missed`; foreign cursors are
//! reset; bad input is refused; requests pipelined behind a hold wait their turn; many holds are
//! answered by one publish; a client that hangs up while held is freed at once.
//!
//! No test asserts that anything is fast. Where a test needs "the poll is held now", it asks
//! `/stats` (`polls.held`) instead of sleeping; where it needs "answered at once", the server's
//! hold time is far above the client's read timeout, so a poll wrongly held fails the read.

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{assert_accounting, num, Client, Response, Server};
use serde_json::Value;

/// The most messages one answer may carry (docs/long-polling.md, "Limits").
const PAGE: usize = 100;

/// How long the process may take to exit after a drain started. Far below the hold times used
/// with it (60 s), so only the drain can explain an exit within it.
const EXIT_WAIT: Duration = Duration::from_secs(10);

// ---- requests -------------------------------------------------------------------------------

/// `GET target` with extra header lines (each ending in CRLF).
fn get_request(target: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: tether.test\r\n{extra_headers}\r\n").into_bytes()
}

fn publish_request(topic: &str, data: &[u8]) -> Vec<u8> {
    let mut request =
        format!("POST /publish/{topic} HTTP/1.1\r\nHost: tether.test\r\nContent-Length: {}\r\n\r\n", data.len())
            .into_bytes();
    request.extend_from_slice(data);
    request
}

/// Publishes `data` on `topic` over `client` and returns `(seq, woken)`, checking the answer.
fn publish(client: &mut Client, topic: &str, data: &str) -> (u64, u64) {
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
fn publish_many(client: &mut Client, topic: &str, first_seq: u64, count: u64) {
    for seq in first_seq..first_seq + count {
        assert_eq!(publish(client, topic, &format!("m{seq}")).0, seq, "sequence numbers are consecutive");
    }
}

// ---- answers --------------------------------------------------------------------------------

/// A poll answer, parsed and checked against the rules every answer follows.
#[derive(Debug)]
struct Answer {
    status: String,
    topic: String,
    epoch: String,
    cursor: u64,
    missed: u64,
    /// `(seq, data)` in the order sent.
    messages: Vec<(u64, String)>,
}

impl Answer {
    fn seqs(&self) -> Vec<u64> {
        self.messages.iter().map(|(seq, _)| *seq).collect()
    }

    /// `ok` carrying exactly the messages `m<seq>` for `seqs`, with `missed` as given.
    fn assert_ok(&self, seqs: std::ops::RangeInclusive<u64>, missed: u64) {
        assert_eq!(self.status, "ok", "{self:?}");
        let expected: Vec<(u64, String)> = seqs.map(|seq| (seq, format!("m{seq}"))).collect();
        assert_eq!(self.messages, expected, "{self:?}");
        assert_eq!(self.missed, missed, "{self:?}");
    }

    /// `status` (timeout or reset) with no messages and the given cursor.
    fn assert_empty(&self, status: &str, cursor: u64) {
        assert_eq!((self.status.as_str(), self.cursor, self.missed), (status, cursor, 0), "{self:?}");
        assert!(self.messages.is_empty(), "{self:?}");
    }
}

/// Parses a poll answer. Every answer is 200, JSON, `Cache-Control: no-store`; `ok` carries 1 to
/// 100 messages in increasing seq order and its cursor is the last one; `timeout` and `reset`
/// carry none.
fn answer_of(response: &Response) -> Answer {
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
fn poll(client: &mut Client, target: &str, extra_headers: &str) -> Answer {
    client.send(&get_request(target, extra_headers));
    let response = client.read_response();
    response.assert_keeps_alive();
    answer_of(&response)
}

// ---- waiting --------------------------------------------------------------------------------

/// Polls `/stats` until `condition` holds, for at most `within`; returns the snapshot that
/// satisfied it. (`Server::wait_for_stats` with a bound chosen by the test.)
fn wait_until(server: &Server, within: Duration, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
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
fn wait_held(server: &Server, n: u64) -> Value {
    server.wait_for_stats(&format!("polls.held == {n}"), |s| num(s, "polls.held") == n)
}

/// Asserts that not one byte has arrived on `client`. Meaningful after a `/stats` round trip
/// that shows the server has processed this client's request: anything the server wrote for it
/// in that turn is already in our receive queue, since loopback delivers a write at once.
fn assert_nothing_received(client: &Client, what: &str) {
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
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---- the tests ------------------------------------------------------------------------------

#[test]
fn a_publish_wakes_a_held_poll() {
    let server = Server::start(&["--poll-timeout", "60s"]);
    let mut poller = server.connect();
    poller.send(&get_request("/poll/news?cursor=0", ""));
    let stats = wait_held(&server, 1);
    assert_eq!(num(&stats, "connections.held"), 1, "{stats}");
    assert_nothing_received(&poller, "a poll on an empty topic is held");

    // JSON-significant characters and non-ASCII text survive the round trip.
    let data = "say \"hi\"\\\n\ttab, ünïcödé €, 🦀";
    let mut publisher = server.connect();
    assert_eq!(publish(&mut publisher, "news", data), (1, 1), "seq 1, and it woke the one held poll");

    let response = poller.read_response();
    // The connection served one request so far; Keep-Alive counts this answer as that one.
    assert_eq!(response.keep_alive().map(|(_, max)| max), Some(999), "{response:?}");
    let answer = answer_of(&response);
    assert_eq!((answer.status.as_str(), answer.topic.as_str()), ("ok", "news"), "{answer:?}");
    assert_eq!(answer.messages, [(1, data.to_string())], "{answer:?}");
    assert_eq!((answer.cursor, answer.missed), (1, 0), "{answer:?}");

    let stats = server.stats();
    assert_eq!(
        (num(&stats, "polls.held"), num(&stats, "polls.answered"), num(&stats, "polls.timed_out")),
        (0, 1, 0),
        "{stats}"
    );
    assert_eq!(num(&stats, "connections.held"), 0, "{stats}");
    assert_eq!((num(&stats, "topics.count"), num(&stats, "topics.messages")), (1, 1), "{stats}");

    // The connection is kept and the next poll continues from the cursor.
    poller.send(&get_request(&format!("/poll/news?cursor=1&epoch={}", answer.epoch), ""));
    wait_held(&server, 1);
    assert_eq!(publish(&mut publisher, "news", "m2"), (2, 1));
    let next = answer_of(&poller.read_response());
    next.assert_ok(2..=2, 0);
    assert_eq!(next.epoch, answer.epoch, "one server life, one epoch");
    assert_accounting(&server.stats());
}

#[test]
fn a_poll_times_out_after_its_hold_time_with_the_cursor_unchanged() {
    let server = Server::start(&[]); // default hold time 30 s: longer than any read here
    let mut publisher = server.connect();
    publish_many(&mut publisher, "quiet", 1, 3);

    // Three polls at once: `timeout=1s`, bare seconds, and 0 (clamped up to the 1 s minimum).
    // Each must be held at least its hold time (the timer wheel never fires early; 10 ms covers
    // rounding to whole milliseconds) and then answered `timeout` with the cursor unchanged.
    let targets = ["/poll/quiet?cursor=3&timeout=1s", "/poll/quiet?timeout=1", "/poll/quiet?cursor=3&timeout=0"];
    let addr = server.addr;
    thread::scope(|scope| {
        let runs: Vec<_> = targets
            .iter()
            .map(|&target| {
                scope.spawn(move || {
                    let mut client = Client::connect(addr);
                    let sent = Instant::now();
                    let answer = poll(&mut client, target, "");
                    let held = sent.elapsed();
                    assert!(held >= Duration::from_millis(990), "{target} was answered after {held:?}, before 1 s");
                    // Without a cursor the poll waited for the message after the newest (3).
                    answer.assert_empty("timeout", 3);
                    assert_eq!(answer.topic, "quiet", "{target}");
                })
            })
            .collect();
        for run in runs {
            run.join().expect("a poll thread failed");
        }
    });
    let stats = server.stats();
    assert_eq!(
        (num(&stats, "polls.held"), num(&stats, "polls.timed_out"), num(&stats, "polls.answered")),
        (0, 3, 0),
        "{stats}"
    );
    assert_accounting(&stats);
}

#[test]
fn a_timeout_above_max_poll_timeout_is_clamped_to_it() {
    // Asked for 60 s, clamped to 2 s: held at least 2 s (not the 1 s default), and answered long
    // before 60 s (the client's read gives up after 5 s).
    let server = Server::start(&["--poll-timeout", "1s", "--max-poll-timeout", "2s"]);
    let mut client = server.connect();
    let sent = Instant::now();
    let answer = poll(&mut client, "/poll/slow?cursor=0&timeout=60s", "");
    let held = sent.elapsed();
    assert!(held >= Duration::from_millis(1990), "held {held:?}, less than --max-poll-timeout 2s");
    answer.assert_empty("timeout", 0);
    assert_eq!(num(&server.stats(), "polls.timed_out"), 1);
}

#[test]
fn cursor_and_last_event_id_resume_without_loss_or_duplicates() {
    let server = Server::start(&["--poll-timeout", "60s"]);
    let mut publisher = server.connect();
    let mut client = server.connect();
    publish_many(&mut publisher, "feed", 1, 5);

    let mut seen = Vec::new();
    let first = poll(&mut client, "/poll/feed?cursor=2", "");
    first.assert_ok(3..=5, 0);
    let epoch = first.epoch.clone();
    seen.extend(first.seqs());

    // Last-Event-ID stands in for a missing cursor (as EventSource sends it).
    let by_header = poll(&mut client, "/poll/feed", "Last-Event-ID: 3\r\n");
    by_header.assert_ok(4..=5, 0);
    // With both, the query's cursor wins.
    let both = poll(&mut client, &format!("/poll/feed?cursor=4&epoch={epoch}"), "Last-Event-ID: 1\r\n");
    both.assert_ok(5..=5, 0);

    // Resuming at the head: held until the next message, which then comes exactly once.
    client.send(&get_request(&format!("/poll/feed?epoch={epoch}"), "Last-Event-ID: 5\r\n"));
    wait_held(&server, 1);
    assert_eq!(publish(&mut publisher, "feed", "m6"), (6, 1));
    let woken = answer_of(&client.read_response());
    woken.assert_ok(6..=6, 0);
    seen.extend(woken.seqs());

    // Messages published while no poll is held are picked up by the next poll with the cursor.
    publish_many(&mut publisher, "feed", 7, 2);
    let caught_up = poll(&mut client, &format!("/poll/feed?cursor={}&epoch={epoch}", woken.cursor), "");
    caught_up.assert_ok(7..=8, 0);
    seen.extend(caught_up.seqs());

    // A fresh connection resuming with the cursor and epoch continues just as well.
    let mut other = server.connect();
    publish_many(&mut publisher, "feed", 9, 1);
    let resumed = poll(&mut other, &format!("/poll/feed?cursor={}&epoch={epoch}", caught_up.cursor), "");
    resumed.assert_ok(9..=9, 0);
    seen.extend(resumed.seqs());

    assert_eq!(seen, (3..=9).collect::<Vec<_>>(), "following the cursor from 2 sees every message once");
    for answer in [&by_header, &both, &woken, &caught_up, &resumed] {
        assert_eq!(answer.epoch, epoch);
    }
}

#[test]
fn from_oldest_starts_at_the_oldest_retained_and_no_cursor_waits_for_the_next() {
    let server = Server::start(&["--poll-timeout", "60s"]);
    let mut publisher = server.connect();
    let mut client = server.connect();

    // On a topic with nothing yet, from=oldest waits for the first message.
    client.send(&get_request("/poll/fresh?from=oldest", ""));
    wait_held(&server, 1);
    assert_eq!(publish(&mut publisher, "fresh", "m1"), (1, 1));
    answer_of(&client.read_response()).assert_ok(1..=1, 0);

    publish_many(&mut publisher, "fresh", 2, 2);
    poll(&mut client, "/poll/fresh?from=oldest", "").assert_ok(1..=3, 0);

    // Without a cursor the poll ignores what is retained and waits for the next message.
    client.send(&get_request("/poll/fresh", ""));
    wait_held(&server, 1);
    assert_nothing_received(&client, "a poll without a cursor is held although messages exist");
    assert_eq!(publish(&mut publisher, "fresh", "m4"), (4, 1));
    answer_of(&client.read_response()).assert_ok(4..=4, 0);
}

#[test]
fn answers_carry_at_most_100_messages_and_the_cursor_pages_through() {
    let server = Server::start(&["--poll-timeout", "60s"]);
    let mut publisher = server.connect();
    publish_many(&mut publisher, "bulk", 1, 250);

    let mut client = server.connect();
    let mut cursor = 0;
    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    while cursor < 250 {
        assert!(page_sizes.len() < 10, "paging does not end: {page_sizes:?}");
        let page = poll(&mut client, &format!("/poll/bulk?cursor={cursor}"), "");
        page.assert_ok(cursor + 1..=page.cursor, 0);
        page_sizes.push(page.messages.len());
        seen.extend(page.seqs());
        cursor = page.cursor;
    }
    assert_eq!(page_sizes, [100, 100, 50]);
    assert_eq!(seen, (1..=250).collect::<Vec<_>>());

    // Past the last page there is nothing more: the next poll is held.
    client.send(&get_request("/poll/bulk?cursor=250", ""));
    wait_held(&server, 1);
    assert_nothing_received(&client, "the poll after the last page");
}

#[test]
fn messages_that_fell_out_of_the_ring_are_counted_as_missed() {
    let server = Server::start(&["--topic-capacity", "10"]);
    let mut publisher = server.connect();
    publish_many(&mut publisher, "ring", 1, 25);
    assert_eq!(num(&server.stats(), "topics.messages"), 10, "the ring retains 10");

    let mut client = server.connect();
    poll(&mut client, "/poll/ring?cursor=0", "").assert_ok(16..=25, 15);
    poll(&mut client, "/poll/ring?cursor=10", "").assert_ok(16..=25, 5);
    poll(&mut client, "/poll/ring?cursor=15", "").assert_ok(16..=25, 0);
    poll(&mut client, "/poll/ring?cursor=20", "").assert_ok(21..=25, 0);
    // Starting at the oldest retained misses nothing by definition.
    poll(&mut client, "/poll/ring?from=oldest", "").assert_ok(16..=25, 0);
}

#[test]
fn a_foreign_epoch_or_a_cursor_ahead_of_the_log_is_reset_at_once() {
    // Hold time 60 s: a reset that were held instead would fail the 5 s read.
    let server = Server::start(&["--poll-timeout", "60s"]);
    let mut publisher = server.connect();
    publish_many(&mut publisher, "r", 1, 3);
    let mut client = server.connect();
    let epoch = poll(&mut client, "/poll/r?cursor=2", "").epoch;
    let foreign = if epoch == "0" { "1" } else { "0" };

    let cases = [
        (format!("/poll/r?cursor=2&epoch={foreign}"), "", 3),
        (format!("/poll/r?epoch={foreign}"), "", 3),
        (format!("/poll/r?from=oldest&epoch={foreign}"), "", 3),
        (format!("/poll/r?epoch={foreign}"), "Last-Event-ID: 3\r\n", 3),
        (format!("/poll/r?cursor=7&epoch={epoch}"), "", 3),
        ("/poll/r?cursor=4".to_string(), "", 3),
        ("/poll/r".to_string(), "Last-Event-ID: 9\r\n", 3),
        ("/poll/empty?cursor=1".to_string(), "", 0),
    ];
    for (target, headers, current) in &cases {
        let answer = poll(&mut client, target, headers);
        if target.starts_with("/poll/r") {
            // Each topic has its own epoch, made when the topic was created.
            assert_eq!(answer.epoch, epoch, "a reset carries the topic's epoch: {target}");
        }
        answer.assert_empty("reset", *current);
    }

    // Starting over from the reset's cursor works: held, then the next message.
    client.send(&get_request(&format!("/poll/r?cursor=3&epoch={epoch}"), ""));
    wait_held(&server, 1);
    assert_eq!(publish(&mut publisher, "r", "m4"), (4, 1));
    answer_of(&client.read_response()).assert_ok(4..=4, 0);
    let stats = server.stats();
    assert_eq!(num(&stats, "polls.answered"), cases.len() as u64 + 2, "resets count as answered: {stats}");
}

/// A header a refusal must carry, and the check of its value.
type HeaderCheck = (&'static str, fn(&str) -> bool);

/// One row of the bad-input table: sent in one write on a fresh connection.
struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    header: Option<HeaderCheck>,
}

fn bad_inputs() -> Vec<Case> {
    let get = |name, target: &str, status| Case { name, request: get_request(target, ""), status, header: None };
    let long_topic = "x".repeat(65);
    vec![
        get("an empty topic", "/poll/", 400),
        get("a topic with a slash", "/poll/a/b", 400),
        get("a topic with a percent escape", "/poll/a%20b", 400),
        get("a topic with a character outside the set", "/poll/a+b", 400),
        get("a topic of 65 characters", &format!("/poll/{long_topic}"), 400),
        Case {
            name: "a non-ASCII topic",
            request: b"GET /poll/\xc3\xbc HTTP/1.1\r\nHost: tether.test\r\n\r\n".to_vec(),
            status: 400,
            header: None,
        },
        Case { name: "publish to a bad topic", request: publish_request("a/b", b"x"), status: 400, header: None },
        Case { name: "publish to an empty topic", request: publish_request("", b"x"), status: 400, header: None },
        get("a negative cursor", "/poll/t?cursor=-1", 400),
        get("an empty cursor", "/poll/t?cursor=", 400),
        get("a cursor that is not a number", "/poll/t?cursor=abc", 400),
        get("a cursor in exponent notation", "/poll/t?cursor=1e3", 400),
        get("a cursor beyond u64", "/poll/t?cursor=18446744073709551616", 400),
        get("from with another value", "/poll/t?from=newest", 400),
        get("a timeout that is not a duration", "/poll/t?timeout=soon", 400),
        get("a fractional timeout", "/poll/t?timeout=1.5s", 400),
        get("a negative timeout", "/poll/t?timeout=-1s", 400),
        get("a timeout with an unknown unit", "/poll/t?timeout=5d", 400),
        Case {
            name: "a Last-Event-ID that is not a number",
            request: get_request("/poll/t", "Last-Event-ID: abc\r\n"),
            status: 400,
            header: None,
        },
        Case {
            name: "a message that is not UTF-8",
            request: publish_request("t", b"caf\xe9 \xff\xfe"),
            status: 400,
            header: None,
        },
        Case {
            name: "GET on /publish",
            request: get_request("/publish/t", ""),
            status: 405,
            header: Some(("Allow", |v| v == "POST, OPTIONS")),
        },
        Case {
            name: "POST on /poll",
            request: b"POST /poll/t HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 1\r\n\r\nx".to_vec(),
            status: 405,
            header: Some(("Allow", |v| v.split(',').any(|m| m.trim() == "GET") && !v.contains("POST"))),
        },
    ]
}

#[test]
fn bad_input_is_refused_with_its_status() {
    let server = Server::start(&["--max-message-bytes", "64", "--poll-timeout", "60s"]);
    let cases = bad_inputs();
    let check = |case: &Case| -> Result<(), String> {
        let mut client = server.connect();
        client.send(&case.request);
        let response = client.try_read_response(false).map_err(|e| format!("no answer: {e}"))?;
        let text = String::from_utf8_lossy(&response.body);
        let one_line = text.len() > 1 && text.ends_with('\n') && text.matches('\n').count() == 1;
        if response.status != case.status || !one_line {
            return Err(format!("expected {} with a one-line body, got {response:?}", case.status));
        }
        if let Some((name, valid)) = case.header {
            if !response.header(name).is_some_and(valid) {
                return Err(format!("missing or wrong {name}: {response:?}"));
            }
        }
        Ok(())
    };
    // One thread per case, so that a case the server holds instead of refusing costs one read
    // timeout for the whole table. Every case runs; all failures are reported together.
    let failures: Vec<String> = thread::scope(|scope| {
        let runs: Vec<_> = cases.iter().map(|case| (case, scope.spawn(|| check(case)))).collect();
        runs.into_iter()
            .filter_map(|(case, run)| match run.join() {
                Ok(Ok(())) => None,
                Ok(Err(failure)) => Some(format!("{}: {failure}", case.name)),
                Err(_) => Some(format!("{}: panicked", case.name)),
            })
            .collect()
    });
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    let stats = server.stats();
    assert_eq!(num(&stats, "polls.held"), 0, "no refused poll is held: {stats}");
    assert_eq!(num(&stats, "topics.messages"), 0, "no refused message is kept: {stats}");

    // The message size limit at its boundary: 64 bytes are published, 65 are 413 and close.
    let mut client = server.connect();
    let (seq, _) = publish(&mut client, "t", &"x".repeat(64));
    assert_eq!(seq, 1);
    client.send(&publish_request("t", &[b'x'; 65]));
    client.read_response().assert_error(413);
    client.expect_eof();
    assert_eq!(num(&server.stats(), "topics.messages"), 1, "the 413 message was not kept");
}

#[test]
fn beyond_max_topics_a_new_topic_is_503_and_existing_ones_keep_working() {
    let server = Server::start(&["--max-topics", "2", "--poll-timeout", "60s"]);
    let mut client = server.connect();
    publish(&mut client, "a", "m1");
    publish(&mut client, "b", "m1");
    for request in [publish_request("c", b"m1"), get_request("/poll/c?cursor=0", "")] {
        client.send(&request);
        let response = client.read_response();
        assert_eq!(response.status, 503, "{response:?}");
        assert!(response.header("Retry-After").is_some_and(|v| v.parse::<u64>().is_ok()), "{response:?}");
    }
    assert_eq!(publish(&mut client, "a", "m2").0, 2, "an existing topic still takes messages");
    poll(&mut client, "/poll/b?cursor=0", "").assert_ok(1..=1, 0);
    assert_eq!(num(&server.stats(), "topics.count"), 2);
}

#[test]
fn a_request_pipelined_behind_a_held_poll_is_answered_after_it_in_order() {
    let server = Server::start(&["--poll-timeout", "60s"]);
    let mut client = server.connect();
    let mut pipeline = get_request("/poll/t", "");
    pipeline.extend_from_slice(&get_request("/plaintext", ""));
    client.send(&pipeline);
    wait_held(&server, 1);
    // The server has read both requests (one write, one segment on loopback); the plaintext one
    // must wait behind the poll.
    assert_nothing_received(&client, "requests behind a held poll");

    let mut publisher = server.connect();
    assert_eq!(publish(&mut publisher, "t", "m1"), (1, 1));

    let first = client.read_response();
    first.assert_keeps_alive();
    answer_of(&first).assert_ok(1..=1, 0);
    let second = client.read_response();
    assert_eq!((second.status, second.text()), (200, "Hello, World!"), "{second:?}");
    second.assert_keeps_alive();
    // Keep-Alive's max counts the two requests in the order they were sent.
    assert_eq!((first.keep_alive().map(|k| k.1), second.keep_alive().map(|k| k.1)), (Some(999), Some(998)));

    // The connection goes on serving.
    let third = client.get("/plaintext");
    assert_eq!(third.status, 200);
    assert_eq!(num(&server.stats(), "polls.held"), 0);
}

#[test]
fn one_publish_answers_5000_held_polls() {
    const CROWD: u64 = 5000;
    // The server's listen queue holds 128 connections (mio's backlog, as std's); connecting
    // faster than the server accepts would overflow it and cost a 1 s SYN retransmit per dropped
    // connect. So the crowd arrives in batches, each held before the next one connects.
    const BATCH: u64 = 100;
    let server = Server::start(&["--poll-timeout", "60s"]);
    let request = get_request("/poll/crowd", "");
    let mut clients = Vec::new();
    while (clients.len() as u64) < CROWD {
        for _ in 0..BATCH {
            let mut client = server.connect();
            client.send(&request);
            clients.push(client);
        }
        let n = clients.len() as u64;
        wait_until(&server, Duration::from_secs(10), &format!("{n} polls held"), |s| num(s, "polls.held") == n);
    }
    let stats = server.stats();
    assert_eq!((num(&stats, "polls.held"), num(&stats, "connections.held")), (CROWD, CROWD), "{stats}");

    let mut publisher = server.connect();
    assert_eq!(publish(&mut publisher, "crowd", "m1"), (1, CROWD), "one publish wakes every held poll");
    // The publisher heard first; the answers follow a slice per reactor turn.
    let stats = wait_until(&server, Duration::from_secs(30), "every poll answered", |s| num(s, "polls.held") == 0);
    assert_eq!(num(&stats, "polls.answered"), CROWD, "{stats}");

    for (i, client) in clients.iter_mut().enumerate() {
        let response = client.try_read_response(false).unwrap_or_else(|e| panic!("client {i}: {e}"));
        answer_of(&response).assert_ok(1..=1, 0);
    }
    drop(clients);
    let stats = wait_until(&server, Duration::from_secs(30), "every client closed", |s| {
        num(s, "connections.open") == 2 // the publisher and this /stats connection
    });
    // Everyone but the two still open (the crowd and the earlier /stats connections) left of
    // their own accord.
    assert_eq!(num(&stats, "totals.closed.by_client"), num(&stats, "totals.accepted") - 2, "{stats}");
    assert_accounting(&stats);
}

#[test]
fn a_client_that_hangs_up_while_held_is_freed_at_once() {
    // Hold time 60 s: only noticing the hang-up can free the holds within the 2 s bound below.
    let server = Server::start(&["--poll-timeout", "60s"]);
    let hold = |n: usize, target: &str| -> Vec<Client> {
        (0..n)
            .map(|_| {
                let mut client = server.connect();
                client.send(&get_request(target, ""));
                client
            })
            .collect()
    };
    let mut staying = hold(25, "/poll/h?cursor=0");
    let leaving = hold(25, "/poll/h?cursor=0");
    wait_held(&server, 50);
    drop(leaving);
    let freed = Duration::from_secs(2);
    let stats = wait_until(&server, freed, "the 25 departed holds freed", |s| num(s, "polls.held") == 25);
    assert_eq!(num(&stats, "connections.held"), 25, "{stats}");
    assert_eq!((num(&stats, "polls.answered"), num(&stats, "polls.timed_out")), (0, 0), "nothing answered them");

    // The departed are gone from the topic, not only from the counter: the publish wakes 25.
    let mut publisher = server.connect();
    assert_eq!(publish(&mut publisher, "h", "m1"), (1, 25));
    for client in &mut staying {
        answer_of(&client.read_response()).assert_ok(1..=1, 0);
    }

    // Everyone held again, and everyone hangs up.
    for client in &mut staying {
        client.send(&get_request("/poll/h?cursor=1", ""));
    }
    let more = hold(25, "/poll/h?cursor=1");
    wait_held(&server, 50);
    drop(staying);
    drop(more);
    let stats = wait_until(&server, freed, "every hold freed", |s| num(s, "polls.held") == 0);
    assert_eq!(num(&stats, "connections.held"), 0, "{stats}");
    assert_eq!((num(&stats, "polls.answered"), num(&stats, "polls.timed_out")), (25, 0), "{stats}");
    assert_eq!(publish(&mut publisher, "h", "m2"), (2, 0), "no hold is left on the topic");
    let stats = wait_until(&server, Duration::from_secs(5), "only the publisher and /stats open", |s| {
        num(s, "connections.open") == 2
    });
    assert_accounting(&stats);
}

#[test]
fn beyond_max_held_a_poll_is_503_with_retry_after_and_the_connection_stays_open() {
    let server = Server::start(&["--max-held", "2", "--poll-timeout", "60s"]);
    let mut held: Vec<Client> = (0..2)
        .map(|_| {
            let mut client = server.connect();
            client.send(&get_request("/poll/m?cursor=0", ""));
            client
        })
        .collect();
    wait_held(&server, 2);

    // Refusals on one keep-alive connection, on the full topic and on another one (the limit
    // is server-wide). Retry-After is jittered over 1..=3 s so that refused clients spread out;
    // 30 draws all alike would happen with probability 3^-29.
    let mut client = server.connect();
    let mut retry_after = BTreeSet::new();
    for i in 0..30 {
        let target = if i % 2 == 0 { "/poll/m?cursor=0" } else { "/poll/other" };
        let response = client.get(target);
        assert_eq!(response.status, 503, "{response:?}");
        response.assert_keeps_alive();
        assert!(response.text().ends_with('\n') && response.text().matches('\n').count() == 1, "{response:?}");
        let secs: u64 = response.header("Retry-After").and_then(|v| v.parse().ok()).expect("a numeric Retry-After");
        assert!((1..=3).contains(&secs), "Retry-After {secs} outside 1..=3");
        retry_after.insert(secs);
    }
    assert!(retry_after.len() > 1, "Retry-After never varies: {retry_after:?}");
    assert_eq!(client.get("/plaintext").status, 200, "the refused client's connection still serves");
    let stats = server.stats();
    assert_eq!((num(&stats, "polls.held"), num(&stats, "polls.rejected")), (2, 30), "{stats}");

    // Once the holds are answered there is room again.
    let mut publisher = server.connect();
    assert_eq!(publish(&mut publisher, "m", "m1"), (1, 2));
    for client in &mut held {
        answer_of(&client.read_response()).assert_ok(1..=1, 0);
    }
    client.send(&get_request("/poll/m?cursor=1", ""));
    wait_held(&server, 1);
    assert_eq!(publish(&mut publisher, "m", "m2"), (2, 1));
    answer_of(&client.read_response()).assert_ok(2..=2, 0);
    assert_accounting(&server.stats());
}

#[test]
fn no_message_is_lost_while_clients_hang_up_at_random_and_resume() {
    const CLIENTS: u64 = 8;
    const MESSAGES: u64 = 2000;
    const SEED: u64 = 0x7e7e_2024;
    // A failure bound, not a speed expectation: the work takes a small fraction of it.
    const LIMIT: Duration = Duration::from_secs(15);
    // The ring holds every message, so any gap is the server's fault, never the ring's.
    let server = Server::start(&["--topic-capacity", "4096", "--poll-timeout", "30s"]);
    let addr = server.addr;
    let started = Instant::now();

    let (received, hangups) = thread::scope(|scope| {
        let publisher = scope.spawn(move || {
            let mut rng = Prng(SEED);
            let mut client = Client::connect(addr);
            for seq in 1..=MESSAGES {
                assert!(started.elapsed() < LIMIT, "publisher: out of time at {seq}");
                // Now and then a new connection: a publish does not depend on the connection.
                if rng.below(500) == 0 {
                    client = Client::connect(addr);
                }
                assert_eq!(publish(&mut client, "live", &format!("m{seq}")).0, seq);
                // Now and then a pause, so that pollers catch up and get held between messages.
                if rng.below(4) == 0 {
                    thread::sleep(Duration::from_micros(200 + rng.below(800)));
                }
            }
        });
        let clients: Vec<_> = (1..=CLIENTS)
            .map(|id| scope.spawn(move || follow(addr, SEED ^ id, id, MESSAGES, started, LIMIT)))
            .collect();
        publisher.join().expect("the publisher failed");
        clients.into_iter().map(|c| c.join().expect("a client failed")).unzip::<_, _, Vec<_>, Vec<_>>()
    });

    let expected: Vec<u64> = (1..=MESSAGES).collect();
    for (i, seqs) in received.iter().enumerate() {
        assert!(seqs == &expected, "client {}: got {} messages, not 1..={MESSAGES} exactly once", i + 1, seqs.len());
    }
    // The test exercised what it is about (with this seed, a few hundred hang-ups).
    assert!(hangups.iter().sum::<u64>() >= CLIENTS, "too few hang-ups: {hangups:?}");

    let stats = wait_until(&server, Duration::from_secs(5), "every hold freed and every client gone", |s| {
        num(s, "polls.held") == 0 && num(s, "connections.open") == 1
    });
    assert_eq!(num(&stats, "polls.rejected"), 0, "{stats}");
    assert_eq!(num(&stats, "topics.messages"), MESSAGES, "{stats}");
    assert_accounting(&stats);
}

/// One follower: polls `live` from the start with its cursor (and, once known, the epoch) and,
/// at random, hangs up without reading an answer (while held, while it is written, or after),
/// or between polls; then reconnects and resumes. Returns every seq it read, in order, and how
/// often it hung up.
fn follow(addr: SocketAddr, seed: u64, id: u64, messages: u64, started: Instant, limit: Duration) -> (Vec<u64>, u64) {
    let mut rng = Prng(seed);
    let mut cursor = 0;
    let mut epoch: Option<String> = None;
    let mut received = Vec::with_capacity(messages as usize);
    let mut hangups = 0;
    let mut connection: Option<Client> = None;
    while cursor < messages {
        assert!(started.elapsed() < limit, "client {id}: out of time at cursor {cursor} (seed {seed:#x})");
        let client = connection.get_or_insert_with(|| Client::connect(addr));
        let target = match &epoch {
            Some(epoch) => format!("/poll/live?cursor={cursor}&epoch={epoch}"),
            None => format!("/poll/live?cursor={cursor}"),
        };
        client.send(&get_request(&target, ""));
        if rng.below(10) < 3 {
            // Hang up without reading: the answer may not exist yet, be on its way, or be
            // waiting unread (then our close is a reset). Either way the cursor stays.
            if rng.below(2) == 0 {
                thread::sleep(Duration::from_micros(rng.below(2000)));
            }
            connection = None;
            hangups += 1;
            continue;
        }
        let response = client.read_response();
        let answer = answer_of(&response);
        match answer.status.as_str() {
            "ok" => {
                assert_eq!(answer.missed, 0, "client {id}: nothing may fall out of the ring: {answer:?}");
                for (seq, data) in &answer.messages {
                    assert_eq!(data, &format!("m{seq}"), "client {id}");
                }
                received.extend(answer.seqs());
                cursor = answer.cursor;
            }
            "timeout" => assert_eq!(answer.cursor, cursor, "client {id}: a timeout keeps the cursor"),
            _ => panic!("client {id}: a cursor of this server's own log was not accepted: {answer:?}"),
        }
        match &epoch {
            Some(known) => assert_eq!(&answer.epoch, known, "client {id}: the epoch changed"),
            None => epoch = Some(answer.epoch),
        }
        if response.closes() || rng.below(10) == 0 {
            // The server ended the connection (--max-requests), or we leave between polls.
            connection = None;
            hangups += 1;
        }
    }
    (received, hangups)
}

#[test]
fn a_drain_answers_every_held_poll_with_timeout_and_close_then_exits_0() {
    // Hold and drain times of 60 s: only answering the holds at once lets the process exit
    // within EXIT_WAIT.
    let mut server = Server::start(&["--poll-timeout", "60s", "--drain-timeout", "60s"]);
    let mut publisher = server.connect();
    publish_many(&mut publisher, "d", 1, 2);
    drop(publisher);
    let targets = ["/poll/d?cursor=2", "/poll/d", "/poll/other?cursor=0"];
    let mut held: Vec<(Client, u64)> = targets
        .iter()
        .zip([2, 2, 0])
        .map(|(target, cursor)| {
            let mut client = server.connect();
            client.send(&get_request(target, ""));
            (client, cursor)
        })
        .collect();
    wait_held(&server, 3);

    server.signal(libc::SIGTERM);
    for (client, cursor) in &mut held {
        let response = client.read_response();
        response.assert_closes();
        answer_of(&response).assert_empty("timeout", *cursor);
        client.expect_eof();
    }
    drop(held);
    let status = server.wait_exit(EXIT_WAIT).expect("the server exits once its held polls are answered");
    assert_eq!(status.code(), Some(0), "a graceful drain exits 0");
    assert_eq!(server.stdout_after_banner(), "", "nothing on stdout but the listening line");
}
