//! `--workers N` end to end (docs/scale-out.md): several reactors on one port, each with its own
//! listener (the kernel spreads connections over them), sharing the topics. A publish on any
//! worker reaches the waiters of every worker, in one order; `/stats` on any worker sums them
//! all and lists each; a signal drains them all.
//!
//! Which worker a connection lands on is the kernel's choice (a hash of its address), so a test
//! that needs waiters on every worker opens connections until `/stats` shows each worker has
//! some, rather than assuming a split.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::polls::{answer_of, get_request, publish};
use common::{assert_accounting, num, Client, Server};
use serde_json::Value;

/// Waiters each worker must have before a test goes on.
const PER_WORKER: u64 = 3;
/// Connections a test opens at most to get them: far more than a fair split needs.
const MAX_POLLERS: usize = 64;

/// Each worker's `waiting` figure.
fn waiting_per_worker(stats: &Value) -> Vec<u64> {
    let workers = stats["workers"].as_array().unwrap_or_else(|| panic!("no workers array: {stats}"));
    workers.iter().map(|w| w["waiting"].as_u64().unwrap_or_else(|| panic!("no waiting: {w}"))).collect()
}

/// Opens connections holding a poll on `topic` from cursor 0 until every one of `workers` has
/// `PER_WORKER` of them (each hold seen in `/stats` before the next connects).
fn pollers_on_every_worker(server: &Server, topic: &str, workers: usize) -> Vec<Client> {
    let mut pollers = Vec::new();
    while pollers.len() < MAX_POLLERS {
        let mut client = server.connect();
        client.send(&get_request(&format!("/poll/{topic}?cursor=0&timeout=60s"), ""));
        pollers.push(client);
        let held = pollers.len() as u64;
        let stats = server.wait_for_stats(&format!("{held} polls held"), |s| num(s, "polls.held") == held);
        let waiting = waiting_per_worker(&stats);
        assert_eq!(waiting.len(), workers, "one line per worker: {stats}");
        if waiting.iter().all(|&n| n >= PER_WORKER) {
            return pollers;
        }
    }
    panic!("{MAX_POLLERS} connections did not reach every worker: {}", server.stats());
}

/// Reads a poller's answers, polling on from each cursor, until it has message `last`: every
/// `(seq, data)` in the order received, and the epoch every answer named.
fn read_through(poller: &mut Client, topic: &str, last: u64) -> (Vec<(u64, String)>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut received = Vec::new();
    let mut epoch: Option<String> = None;
    loop {
        let answer = answer_of(&poller.read_response());
        assert_eq!(answer.status, "ok", "{answer:?}");
        assert_eq!(answer.missed, 0, "{answer:?}");
        assert_eq!(epoch.get_or_insert_with(|| answer.epoch.clone()), &answer.epoch, "one epoch on every worker");
        received.extend(answer.messages);
        if answer.cursor == last {
            return (received, answer.epoch);
        }
        assert!(Instant::now() < deadline, "message {last} not received within 60 s; got {received:?}");
        poller.send(&get_request(&format!("/poll/{topic}?cursor={}&timeout=60s", answer.cursor), ""));
    }
}

/// Publishes from three threads at once, each message on a fresh connection (so on whichever
/// worker the kernel picks): every poll, on every worker, receives every message in the same
/// order, the order of the sequence numbers the publishers were given.
#[test]
fn publishes_on_any_worker_reach_every_worker_in_order() {
    let server = Server::start(&["--workers", "2"]);
    let mut pollers = pollers_on_every_worker(&server, "t", 2);
    const THREADS: usize = 3;
    const EACH: usize = 40;
    let addr = server.addr;
    let publishers: Vec<_> = (0..THREADS)
        .map(|thread| {
            thread::spawn(move || {
                (0..EACH)
                    .map(|i| {
                        let data = format!("p{thread}-{i}");
                        let (seq, _woken) = publish(&mut Client::connect(addr), "t", &data);
                        (seq, data)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut published = BTreeMap::new();
    for publisher in publishers {
        for (seq, data) in publisher.join().expect("a publisher failed") {
            assert!(published.insert(seq, data).is_none(), "seq {seq} given twice");
        }
    }
    let total = (THREADS * EACH) as u64;
    assert_eq!(published.keys().copied().collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    let expected: Vec<(u64, String)> = published.into_iter().collect();
    let mut epochs = Vec::new();
    for poller in &mut pollers {
        let (received, epoch) = read_through(poller, "t", total);
        assert_eq!(received, expected, "a poll received another order");
        epochs.push(epoch);
    }
    epochs.dedup();
    assert_eq!(epochs.len(), 1, "every worker names the topic's life alike: {epochs:?}");
    assert_accounting(&server.stats());
}

/// `/stats` on any worker sums every worker's figures and lists each.
#[test]
fn stats_sum_the_workers_and_list_each() {
    let server = Server::start(&["--workers", "2"]);
    let pollers = pollers_on_every_worker(&server, "t", 2);
    // Several snapshots, each on a fresh connection, so on either worker.
    for _ in 0..6 {
        let stats = server.stats();
        assert_accounting(&stats);
        let workers = stats["workers"].as_array().expect("workers");
        let sum = |field: &str| workers.iter().map(|w| w[field].as_u64().expect(field)).sum::<u64>();
        assert_eq!(num(&stats, "polls.held"), pollers.len() as u64, "{stats}");
        assert_eq!(sum("waiting"), pollers.len() as u64, "{stats}");
        assert_eq!(num(&stats, "connections.held"), pollers.len() as u64, "{stats}");
        // The snapshot's own connection is open on one of them.
        assert_eq!(sum("connections"), num(&stats, "connections.open"), "{stats}");
        assert_eq!(sum("accepted"), num(&stats, "totals.accepted"), "{stats}");
        assert_eq!(num(&stats, "topics.count"), 1, "one topic, however many workers copy it: {stats}");
    }
}

/// A signal reaches every worker: each answers its held polls and closes, and the process exits.
#[test]
fn a_signal_drains_every_worker() {
    let mut server = Server::start(&["--workers", "2"]);
    let mut pollers = pollers_on_every_worker(&server, "t", 2);
    server.signal(libc::SIGTERM);
    for poller in &mut pollers {
        let response = poller.read_response();
        response.assert_closes();
        answer_of(&response).assert_empty("timeout", 0);
        poller.expect_eof();
    }
    let status = server.wait_exit(Duration::from_secs(10)).expect("the server did not exit after draining");
    assert!(status.success(), "{status:?}");
}

#[test]
fn workers_out_of_range_are_refused() {
    for workers in ["0", "65"] {
        let output = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", workers])
            .output()
            .expect("run tether");
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--workers must lie between 1 and 64"), "{stderr}");
    }
}
