//! `--redis` end to end (docs/scale-out.md): tether processes that name the same Redis serve the
//! same topics with the same cursors; a restarted tether resumes without a reset; while Redis is
//! out of reach publishes are answered 503 with `Retry-After`, held polls stay held, and once it
//! is back nothing acknowledged is missing.
//!
//! Each test starts its own `redis-server` (tests/common/redis.rs; tests/run installs it) and
//! real `tether serve` processes. Every wait is bounded and generous; nothing is timed.

mod common;

use std::time::Duration;

use common::polls::{answer_of, get_request, poll, publish, publish_request, wait_until};
use common::redis::RedisServer;
use common::{num, Client, Server};

/// How long a tether gets to come in step with Redis (it retries every 100 ms to 5 s).
const SYNC: Duration = Duration::from_secs(30);

fn start_tether(redis: &RedisServer) -> Server {
    let server = Server::start(&["--redis", &redis.url()]);
    wait_in_step(&server);
    server
}

fn wait_in_step(server: &Server) {
    wait_until(server, SYNC, "backplane.up == 1", |s| num(s, "backplane.up") == 1);
}

/// A publish on one tether reaches a poll held on the other; both number the topic alike.
#[test]
fn two_processes_share_a_topic() {
    let redis = RedisServer::start();
    let (a, b) = (start_tether(&redis), start_tether(&redis));
    let mut held = b.connect();
    held.send(&get_request("/poll/news?cursor=0&timeout=60s", ""));
    wait_until(&b, SYNC, "one poll held", |s| num(s, "polls.held") == 1);
    assert_eq!(publish(&mut a.connect(), "news", "m1").0, 1);
    let first = answer_of(&held.read_response());
    first.assert_ok(1..=1, 0);
    assert_eq!(publish(&mut b.connect(), "news", "m2").0, 2, "one sequence whichever process publishes");
    let from_a = poll(&mut a.connect(), &format!("/poll/news?cursor=1&epoch={}", first.epoch), "");
    from_a.assert_ok(2..=2, 0);
    assert_eq!(from_a.epoch, first.epoch, "one life of the topic on both");
    let stats = a.stats();
    assert_eq!((num(&stats, "backplane.redis"), num(&stats, "backplane.acked")), (1, 1), "{stats}");
}

/// A tether killed and started again on its port: a subscriber's cursor and epoch still hold.
#[test]
fn a_restarted_tether_resumes_without_a_reset() {
    let redis = RedisServer::start();
    let mut server = start_tether(&redis);
    let mut client = server.connect();
    for seq in 1..=3 {
        assert_eq!(publish(&mut client, "news", &format!("m{seq}")).0, seq);
    }
    let seen = poll(&mut client, "/poll/news?cursor=0", "");
    seen.assert_ok(1..=3, 0);
    let addr = server.addr;
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(10)).expect("tether did not die");
    let restarted = Server::start_at(&addr.to_string(), &["--redis", &redis.url()]);
    wait_in_step(&restarted);
    let resumed = poll(&mut restarted.connect(), &format!("/poll/news?cursor=2&epoch={}", seen.epoch), "");
    resumed.assert_ok(3..=3, 0);
    assert_eq!(resumed.epoch, seen.epoch, "no reset");
    assert_eq!(publish(&mut restarted.connect(), "news", "m4").0, 4, "the sequence goes on");
}

/// Redis stops mid-run: publishes are refused (503, `Retry-After`) and counted, a held poll
/// stays held; Redis starts again: publishing goes on from where it was, the poll gets the next
/// message, and every acknowledged message is there.
#[test]
fn redis_stopped_and_started_loses_no_acknowledged_message() {
    let mut redis = RedisServer::start();
    let server = start_tether(&redis);
    let mut client = server.connect();
    for seq in 1..=5 {
        assert_eq!(publish(&mut client, "news", &format!("m{seq}")).0, seq);
    }
    let mut held = server.connect();
    held.send(&get_request("/poll/news?cursor=5&timeout=120s", ""));
    wait_until(&server, SYNC, "one poll held", |s| num(s, "polls.held") == 1);

    redis.stop();
    wait_until(&server, SYNC, "backplane.up == 0", |s| num(s, "backplane.up") == 0);
    client.send(&publish_request("news", b"lost?"));
    let refused = client.read_response();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.header("Retry-After").is_some(), "{refused:?}");
    let stats = server.stats();
    assert_eq!(num(&stats, "polls.held"), 1, "the held poll stays held: {stats}");
    assert!(num(&stats, "backplane.refused") >= 1, "{stats}");

    redis.restart();
    wait_in_step(&server);
    assert_eq!(publish(&mut client, "news", "m6").0, 6, "numbered after every acknowledged one");
    answer_of(&held.read_response()).assert_ok(6..=6, 0);
    poll(&mut client, "/poll/news?from=oldest", "").assert_ok(1..=6, 0);
}

/// Before the first sync (no Redis yet) a publish and a new poll are 503; then Redis comes.
#[test]
fn nothing_is_taken_before_redis_is_reached() {
    let mut redis = RedisServer::start();
    redis.stop();
    let server = Server::start(&["--redis", &redis.url()]);
    let mut client = server.connect();
    client.send(&publish_request("news", b"early"));
    let publish_refused = client.read_response();
    assert_eq!(publish_refused.status, 503, "{publish_refused:?}");
    assert!(publish_refused.header("Retry-After").is_some());
    let poll_refused = client.get("/poll/news");
    assert_eq!(poll_refused.status, 503, "a new topic cannot be known new yet: {poll_refused:?}");
    let stats = server.stats();
    assert_eq!((num(&stats, "backplane.redis"), num(&stats, "backplane.up")), (1, 0), "{stats}");
    redis.restart();
    wait_in_step(&server);
    assert_eq!(publish(&mut Client::connect(server.addr), "news", "m1").0, 1);
}

#[test]
fn a_bad_redis_url_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", "rediss://127.0.0.1:6379"])
        .output()
        .expect("run tether");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--redis"), "{stderr}");
}

/// Redis loses a topic (here `FLUSHALL`; a Redis restarted without persistence does the same)
/// and a publish makes it again: a new life, numbered from 1. A poll held with a cursor of the
/// old life is answered `reset` with the new epoch, never the new life's message 1 as if it
/// followed the old cursor; an event stream gets a `reset` and then the new message.
#[test]
fn a_topic_redis_lost_begins_a_new_life_and_its_waiters_are_reset() {
    let redis = RedisServer::start();
    let server = start_tether(&redis);
    let mut client = server.connect();
    for seq in 1..=3 {
        assert_eq!(publish(&mut client, "news", &format!("m{seq}")).0, seq);
    }
    let old = poll(&mut client, "/poll/news?cursor=0", "");
    let mut held = server.connect();
    held.send(&get_request(&format!("/poll/news?cursor=3&epoch={}&timeout=60s", old.epoch), ""));
    let mut stream = server.connect();
    stream.send(&get_request("/events/news?cursor=3", ""));
    assert_eq!(stream.read_stream_head().status, 200);
    wait_until(&server, SYNC, "a poll and a stream waiting", |s| {
        num(s, "polls.held") == 1 && num(s, "streams.open") == 1
    });

    let _: () = redis::cmd("FLUSHALL").query(&mut redis.connection()).expect("FLUSHALL");
    assert_eq!(publish(&mut client, "news", "new life").0, 1, "Redis numbers the new life from 1");
    let reset = answer_of(&held.read_response());
    assert_eq!((reset.status.as_str(), reset.cursor), ("reset", 0), "{reset:?}");
    assert_ne!(reset.epoch, old.epoch, "{reset:?}");
    let events = stream.read_stream_until("new life");
    assert!(events.contains("event: reset"), "{events}");
    let next = poll(&mut client, &format!("/poll/news?cursor=0&epoch={}", reset.epoch), "");
    assert_eq!(next.messages, [(1, "new life".to_string())], "{next:?}");
    assert_eq!(num(&server.stats(), "streams.open"), 1, "the stream goes on with the new life");
}

/// Several workers and Redis together: the publish on one process reaches polls on every
/// worker of the other.
#[test]
fn workers_and_redis_together() {
    let redis = RedisServer::start();
    let a = start_tether(&redis);
    let b = Server::start(&["--redis", &redis.url(), "--workers", "2"]);
    wait_in_step(&b);
    let mut pollers: Vec<Client> = (0..8)
        .map(|_| {
            let mut client = b.connect();
            client.send(&get_request("/poll/news?cursor=0&timeout=60s", ""));
            client
        })
        .collect();
    wait_until(&b, SYNC, "8 polls held", |s| num(s, "polls.held") == 8);
    assert_eq!(publish(&mut a.connect(), "news", "m1").0, 1);
    for poller in &mut pollers {
        answer_of(&poller.read_response()).assert_ok(1..=1, 0);
    }
}

/// With `--redis` a second process may listen on the first one's port (`SO_REUSEPORT`); when
/// the first goes, the second serves the port on, with the same topics. (While both listen, a
/// connection reaches either, so each step that must reach one is taken while it is alone.)
#[test]
fn processes_share_one_port_and_outlive_each_other() {
    let redis = RedisServer::start();
    let mut first = start_tether(&redis);
    assert_eq!(publish(&mut first.connect(), "news", "m1").0, 1);
    let second = Server::start_at(&first.addr.to_string(), &["--redis", &redis.url()]);
    assert_eq!(second.addr, first.addr);
    first.signal(libc::SIGTERM);
    first.wait_exit(Duration::from_secs(10)).expect("the first tether did not drain and exit");
    // Whatever connects now reaches the second.
    wait_in_step(&second);
    for seq in 2..=4 {
        assert_eq!(publish(&mut Client::connect(second.addr), "news", &format!("m{seq}")).0, seq);
    }
    poll(&mut second.connect(), "/poll/news?from=oldest", "").assert_ok(1..=4, 0);
}
