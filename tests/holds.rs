//! Many long polls at once, end to end (docs/long-polling.md; docs/architecture.md, "Graceful
//! drain"): one publish answers thousands of holds; a client that hangs up while held is freed at
//! once; `--max-held` refuses with 503; no message is lost while clients hang up at random and
//! resume; a drain answers every hold. One poll's life is in `longpoll.rs`.
//!
//! No test asserts that anything is fast: waits ask `/stats`, with generous bounds.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::polls::*;
use common::{assert_accounting, num, Client, Server};

/// How long the process may take to exit after a drain started. Far below the hold times used
/// with it (60 s), so only the drain can explain an exit within it.
const EXIT_WAIT: Duration = Duration::from_secs(10);

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
