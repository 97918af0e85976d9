//! Long polling end to end, one poll's life (docs/long-polling.md): a held poll is answered by a
//! publish or by its hold time; cursors resume without loss or duplicates; answers are paged;
//! loss from the ring is reported in `missed`; foreign cursors are reset; bad input is refused;
//! requests pipelined behind a hold wait their turn. Many holds at once are in `holds.rs`.
//!
//! No test asserts that anything is fast. Where a test needs "the poll is held now", it asks
//! `/stats` (`polls.held`) instead of sleeping; where it needs "answered at once", the server's
//! hold time is far above the client's read timeout, so a poll wrongly held fails the read.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::polls::*;
use common::{assert_accounting, num, Client, Server};

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
