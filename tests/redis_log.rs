//! The shared topic log against a real redis-server (docs/scale-out.md, "Topics in Redis"),
//! through the library (`tether::redis_log`): publishes are acked and reported in order; a
//! second log on the same Redis, standing for a second process, starts from a `Synced` and then
//! sees the first one's appends, and two logs publishing to one topic agree on one order; a
//! restarted process resumes the same epoch; the cap holds; a Redis that crashes, or freezes,
//! is reported `Lost` and publishes are refused while it is away, and once it is back `Synced`
//! has every acked message and seqs go on; an expired topic comes back with a new epoch; a
//! flushed script cache is loaded again; a bad URL is refused.
//!
//! Each test has its own redis-server (tests/common/redis.rs) and key prefix. Every wait is
//! bounded by `WAIT`, far beyond what any step needs, and no test asserts that anything is
//! fast: only that what must arrive does, in the right order, while Redis is in the state the
//! test put it in.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use tether::redis_log::{LinkState, LogSettings, RedisLog, Report, StartError, TopicLog};

/// The longest any report is waited for.
const WAIT: Duration = Duration::from_secs(30);

/// The reports one log sent to its sink, in order.
struct Reports(Receiver<Report>);

/// What a run of reports said, by kind.
#[derive(Debug, Default)]
struct Tally {
    /// ticket -> (epoch, seq)
    acked: BTreeMap<u64, (String, u64)>,
    refused: Vec<u64>,
    /// (topic, epoch, seq, data), in the order reported.
    appended: Vec<(String, String, u64, String)>,
    synced: Vec<Vec<TopicLog>>,
    lost: usize,
}

impl Reports {
    fn next(&self, what: &str) -> Report {
        self.0.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no report within {WAIT:?} while waiting for {what}"))
    }

    /// The next report, which must be `Synced`.
    fn synced(&self) -> Vec<TopicLog> {
        match self.next("Synced") {
            Report::Synced { topics } => topics,
            other => panic!("expected Synced, got {other:?}"),
        }
    }

    /// Adds reports to `tally` until `done` holds.
    fn tally_until(&self, what: &str, tally: &mut Tally, done: impl Fn(&Tally) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(tally) {
            let left = deadline.saturating_duration_since(Instant::now());
            let report =
                self.0.recv_timeout(left).unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}; so far {tally:?}"));
            match report {
                Report::Acked { ticket, epoch, seq } => {
                    assert!(
                        tally.acked.insert(ticket, (epoch.to_string(), seq)).is_none(),
                        "ticket {ticket} acked twice"
                    );
                }
                Report::Refused { ticket } => tally.refused.push(ticket),
                Report::Appended { topic, epoch, seq, data } => {
                    tally.appended.push((topic.to_string(), epoch.to_string(), seq, data.to_string()))
                }
                Report::Synced { topics } => tally.synced.push(topics),
                Report::Lost { .. } => tally.lost += 1,
            }
        }
    }

    /// Publishes `count` messages `{label}{i}` to `topic` (tickets from `first`) and waits for
    /// their acks and their appends; returns the tally.
    fn publish_and_wait(&self, log: &RedisLog, topic: &str, first: u64, count: u64, label: &str) -> Tally {
        for i in 0..count {
            log.publish(first + i, topic, Arc::from(format!("{label}{}", first + i)));
        }
        let mut tally = Tally::default();
        self.tally_until("acks and appends", &mut tally, |t| {
            t.acked.len() as u64 + t.refused.len() as u64 == count && t.appended.len() as u64 >= count
        });
        assert_eq!(tally.refused, Vec::<u64>::new(), "{tally:?}");
        tally
    }
}

fn settings(test: &str, capacity: usize, idle_timeout: Duration) -> LogSettings {
    LogSettings { prefix: format!("test:{test}"), ..LogSettings::new(capacity, idle_timeout) }
}

/// A log on `redis` whose reports go to the returned receiver.
fn open(redis: &RedisServer, settings: LogSettings) -> (RedisLog, Reports) {
    let (sender, receiver) = mpsc::channel();
    let sink = Arc::new(move |report| {
        let _ = sender.send(report);
    });
    let log = RedisLog::start(&redis.url(), settings, sink).expect("a valid URL");
    (log, Reports(receiver))
}

/// `seqs` is exactly 1..=last; a failure names the first place it is not (not two long lists).
fn assert_runs_from_one(seqs: &[u64], last: u64, what: &str) {
    if let Some((i, seq)) = seqs.iter().enumerate().find(|&(i, &seq)| seq != i as u64 + 1) {
        panic!(
            "{what}: at {i} seq {seq}, expected {} (around: {:?})",
            i + 1,
            &seqs[i.saturating_sub(3)..(i + 3).min(seqs.len())]
        );
    }
    assert_eq!(seqs.len() as u64, last, "{what}: {} seqs", seqs.len());
}

fn seqs(tally: &Tally) -> Vec<u64> {
    tally.appended.iter().map(|(_, _, seq, _)| *seq).collect()
}

#[test]
fn publishes_are_acked_with_seqs_from_one_and_reported_in_order() {
    let redis = RedisServer::start();
    let (log, reports) = open(&redis, settings("order", 100, Duration::from_secs(60)));
    assert_eq!(reports.synced(), vec![], "an empty Redis has no topics");

    let tally = reports.publish_and_wait(&log, "news", 1, 50, "m");
    let epoch = tally.acked[&1].0.clone();
    for ticket in 1..=50 {
        assert_eq!(tally.acked[&ticket], (epoch.clone(), ticket), "ticket {ticket}: one epoch, seq in publish order");
    }
    let expected: Vec<_> = (1..=50).map(|i| ("news".to_string(), epoch.clone(), i, format!("m{i}"))).collect();
    assert_eq!(tally.appended, expected);

    let status = log.status();
    assert_eq!(status.state, LinkState::Up);
    assert_eq!(
        (status.published, status.acked, status.refused, status.appended, status.reconnects),
        (50, 50, 0, 50, 0)
    );

    let mut connection = redis.connection();
    let length: u64 = redis::cmd("XLEN").arg("test:order:{news}:log").query(&mut connection).expect("XLEN");
    assert_eq!(length, 50);
    let ttl: i64 = redis::cmd("PTTL").arg("test:order:{news}:meta").query(&mut connection).expect("PTTL");
    assert!(ttl > 0 && ttl <= 60_000, "the keys expire after the idle timeout: {ttl}");

    // A name the topic table would refuse never reaches Redis (its keys and its notice would
    // be malformed): refused, and the next publish goes on.
    log.publish(51, "not a topic}", Arc::from("x"));
    log.publish(52, "news", Arc::from("m52"));
    let mut rest = Tally::default();
    reports.tally_until("the refusal and the next ack", &mut rest, |t| {
        t.refused.len() + t.acked.len() == 2 && !t.appended.is_empty()
    });
    assert_eq!((rest.refused, rest.acked[&52].1), (vec![51], 51));
}

#[test]
fn a_second_process_syncs_the_topic_then_sees_every_append() {
    let redis = RedisServer::start();
    let (first, first_reports) = open(&redis, settings("second", 100, Duration::from_secs(60)));
    first_reports.synced();
    let before = first_reports.publish_and_wait(&first, "t", 1, 3, "a");
    let epoch = before.acked[&1].0.clone();

    let (second, second_reports) = open(&redis, settings("second", 100, Duration::from_secs(60)));
    let topics = second_reports.synced();
    let messages: Vec<(u64, Arc<str>)> = (1..=3).map(|i| (i, Arc::from(format!("a{i}")))).collect();
    assert_eq!(
        topics,
        vec![TopicLog { name: Arc::from("t"), epoch: Arc::from(epoch.as_str()), last_seq: 3, messages }]
    );

    let after = first_reports.publish_and_wait(&first, "t", 4, 3, "a");
    assert_eq!(seqs(&after), [4, 5, 6]);
    let mut seen = Tally::default();
    second_reports.tally_until("the first process's appends", &mut seen, |t| t.appended.len() >= 3);
    assert_eq!(seen.appended, after.appended, "the second process sees the same appends, same epoch and seqs");

    // And the other way round.
    let mine = second_reports.publish_and_wait(&second, "t", 100, 1, "b");
    assert_eq!(mine.acked[&100], (epoch.clone(), 7));
    let mut seen = Tally::default();
    first_reports.tally_until("the second process's append", &mut seen, |t| !t.appended.is_empty());
    assert_eq!(seen.appended, vec![("t".to_string(), epoch, 7, "b100".to_string())]);
}

#[test]
fn a_process_that_syncs_while_another_publishes_misses_nothing_and_repeats_nothing() {
    const ROUNDS: u64 = 40;
    const PER_ROUND: u64 = 50;
    const TOTAL: u64 = ROUNDS * PER_ROUND;
    let redis = RedisServer::start();
    let (writer, writer_reports) = open(&redis, settings("midway", 10_000, Duration::from_secs(60)));
    writer_reports.synced();
    let (reader, reader_reports) = std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0..ROUNDS {
                for i in 1..=PER_ROUND {
                    let ticket = round * PER_ROUND + i;
                    writer.publish(ticket, "t", Arc::from(format!("m{ticket}")));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        // Starts while the writer is (most likely) still publishing; whatever the interleaving,
        // the reader must end up with 1..=TOTAL exactly once.
        std::thread::sleep(Duration::from_millis(20));
        open(&redis, settings("midway", 10_000, Duration::from_secs(60)))
    });
    let synced = reader_reports.synced();
    let mut seen: Vec<u64> = synced.iter().flat_map(|topic| topic.messages.iter().map(|(seq, _)| *seq)).collect();
    let synced_last = synced.first().map_or(0, |topic| topic.last_seq);
    assert_runs_from_one(&seen, synced_last, "Synced holds a contiguous log");
    let mut rest = Tally::default();
    reader_reports
        .tally_until("the appends after the sync", &mut rest, |t| seen.len() as u64 + t.appended.len() as u64 >= TOTAL);
    seen.extend(seqs(&rest));
    assert_runs_from_one(&seen, TOTAL, &format!("synced up to {synced_last}, then every later append once, in order"));
    for (_, _, seq, data) in &rest.appended {
        assert_eq!(data, &format!("m{seq}"));
    }
    drop(reader);
}

#[test]
fn two_processes_publishing_to_one_topic_agree_on_one_order() {
    let redis = RedisServer::start();
    let (a, a_reports) = open(&redis, settings("agree", 1000, Duration::from_secs(60)));
    let (b, b_reports) = open(&redis, settings("agree", 1000, Duration::from_secs(60)));
    a_reports.synced();
    b_reports.synced();
    const EACH: u64 = 200;
    for i in 1..=EACH {
        a.publish(i, "shared", Arc::from(format!("a{i}")));
        b.publish(i, "shared", Arc::from(format!("b{i}")));
    }
    let done = |t: &Tally| t.acked.len() as u64 == EACH && t.appended.len() as u64 == 2 * EACH;
    let (mut at, mut bt) = (Tally::default(), Tally::default());
    a_reports.tally_until("a's acks and every append", &mut at, done);
    b_reports.tally_until("b's acks and every append", &mut bt, done);

    assert_eq!(at.appended, bt.appended, "both see one order");
    assert_eq!(seqs(&at), (1..=2 * EACH).collect::<Vec<_>>());
    let mut acked: Vec<u64> = at.acked.values().chain(bt.acked.values()).map(|(_, seq)| *seq).collect();
    acked.sort_unstable();
    assert_eq!(acked, (1..=2 * EACH).collect::<Vec<_>>(), "every seq acked once");
    for (seq, data) in at.appended.iter().map(|(_, _, seq, data)| (seq, data)) {
        let (process, ticket) = data.split_at(1);
        let tally = if process == "a" { &at } else { &bt };
        assert_eq!(tally.acked[&ticket.parse::<u64>().expect("a ticket")].1, *seq, "{data} appended as {seq}");
    }
}

#[test]
fn a_restarted_process_resumes_the_same_epoch() {
    let redis = RedisServer::start();
    let (log, reports) = open(&redis, settings("resume", 100, Duration::from_secs(60)));
    reports.synced();
    let before = reports.publish_and_wait(&log, "t", 1, 5, "m");
    let epoch = before.acked[&1].0.clone();
    drop(log);

    let (log, reports) = open(&redis, settings("resume", 100, Duration::from_secs(60)));
    let topics = reports.synced();
    assert_eq!(topics.len(), 1, "{topics:?}");
    assert_eq!((&*topics[0].epoch, topics[0].last_seq, topics[0].messages.len()), (epoch.as_str(), 5, 5));
    let after = reports.publish_and_wait(&log, "t", 6, 1, "m");
    assert_eq!(after.acked[&6], (epoch, 6), "seq goes on in the same life");
}

#[test]
fn the_stream_is_capped_and_synced_holds_the_newest() {
    const PUBLISHES: u64 = 300;
    let redis = RedisServer::start();
    let (log, reports) = open(&redis, settings("cap", 4, Duration::from_secs(60)));
    reports.synced();
    reports.publish_and_wait(&log, "t", 1, PUBLISHES, "m");

    let (_reader, reader_reports) = open(&redis, settings("cap", 4, Duration::from_secs(60)));
    let topics = reader_reports.synced();
    let messages: Vec<(u64, Arc<str>)> = (PUBLISHES - 3..=PUBLISHES).map(|i| (i, Arc::from(format!("m{i}")))).collect();
    assert_eq!((topics[0].last_seq, &topics[0].messages), (PUBLISHES, &messages));
    // MAXLEN ~ trims whole stream nodes: Redis may keep up to one node (100 entries at most by
    // default) beyond the cap, never the whole history.
    let length: u64 = redis::cmd("XLEN").arg("test:cap:{t}:log").query(&mut redis.connection()).expect("XLEN");
    assert!((4..=4 + 100).contains(&length), "XLEN {length}");
}

#[test]
fn a_crashed_redis_is_lost_refuses_publishes_and_comes_back_with_every_acked_message() {
    let mut redis = RedisServer::start();
    let (log, reports) = open(&redis, settings("crash", 100, Duration::from_secs(60)));
    reports.synced();
    let before = reports.publish_and_wait(&log, "t", 1, 10, "m");
    let epoch = before.acked[&1].0.clone();

    redis.kill();
    let mut away = Tally::default();
    reports.tally_until("Lost", &mut away, |t| t.lost > 0);
    assert!(matches!(log.status().state, LinkState::Down { .. }), "{:?}", log.status());
    log.publish(11, "t", Arc::from("while away"));
    reports.tally_until("the refusal while Redis is away", &mut away, |t| t.refused.contains(&11));
    assert!(away.acked.is_empty() && away.synced.is_empty(), "{away:?}");

    redis.restart();
    let mut back = Tally::default();
    reports.tally_until("Synced after the restart", &mut back, |t| !t.synced.is_empty());
    let topics = &back.synced[0];
    let messages: Vec<(u64, Arc<str>)> = (1..=10).map(|i| (i, Arc::from(format!("m{i}")))).collect();
    assert_eq!(
        topics,
        &vec![TopicLog { name: Arc::from("t"), epoch: Arc::from(epoch.as_str()), last_seq: 10, messages }],
        "nothing acked is lost"
    );

    let after = reports.publish_and_wait(&log, "t", 12, 1, "m");
    assert_eq!(after.acked[&12], (epoch, 11));
    let status = log.status();
    assert_eq!((status.state, status.reconnects, status.refused), (LinkState::Up, 1, 1));
}

#[test]
fn a_frozen_redis_is_noticed_and_publishes_are_refused_not_held() {
    let redis = RedisServer::start();
    let (log, reports) = open(&redis, settings("frozen", 100, Duration::from_secs(60)));
    reports.synced();
    let before = reports.publish_and_wait(&log, "t", 1, 1, "m");
    let epoch = before.acked[&1].0.clone();

    // Its connections stay open but nothing answers: only the deadlines can tell.
    redis.freeze();
    log.publish(2, "t", Arc::from("into the void"));
    let mut away = Tally::default();
    reports
        .tally_until("Lost and the refusal while Redis is frozen", &mut away, |t| t.lost > 0 && t.refused.contains(&2));
    assert!(away.acked.is_empty(), "{away:?}");

    redis.thaw();
    let mut back = Tally::default();
    reports.tally_until("Synced after the thaw", &mut back, |t| !t.synced.is_empty());
    let topic = &back.synced[0][0];
    // The refused publish may have run once Redis woke up (its fate was unknown): at least once.
    assert!(topic.epoch.as_ref() == epoch && (1..=2).contains(&topic.last_seq), "{topic:?}");
    let after = reports.publish_and_wait(&log, "t", 3, 1, "m");
    assert_eq!(after.acked[&3], (epoch, topic.last_seq + 1));
}

#[test]
fn a_log_started_before_redis_connects_once_it_is_there() {
    let mut redis = RedisServer::start();
    redis.stop();
    let (log, reports) = open(&redis, settings("early", 100, Duration::from_secs(60)));
    log.publish(1, "t", Arc::from("too early"));
    let mut early = Tally::default();
    reports.tally_until("the refusal before Redis is there", &mut early, |t| t.refused.contains(&1));

    redis.restart();
    let mut up = Tally::default();
    reports.tally_until("Synced once Redis is there", &mut up, |t| !t.synced.is_empty());
    assert_eq!(up.synced[0], vec![]);
    assert_eq!(up.lost, 0, "nothing was lost: it was never up");
    let tally = reports.publish_and_wait(&log, "t", 2, 1, "m");
    assert_eq!(tally.acked[&2].1, 1);
}

#[test]
fn an_expired_topic_comes_back_with_a_new_epoch() {
    let redis = RedisServer::start();
    let (log, reports) = open(&redis, settings("expire", 100, Duration::from_millis(200)));
    reports.synced();
    let first = reports.publish_and_wait(&log, "t", 1, 1, "m");
    let old_epoch = first.acked[&1].0.clone();

    // Redis expires the keys on its own clock: wait until it says they are gone.
    let mut connection = redis.connection();
    let deadline = Instant::now() + WAIT;
    while redis::cmd("EXISTS").arg("test:expire:{t}:meta").query::<u64>(&mut connection).expect("EXISTS") != 0 {
        assert!(Instant::now() < deadline, "the topic did not expire within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let second = reports.publish_and_wait(&log, "t", 2, 1, "m");
    let (new_epoch, seq) = &second.acked[&2];
    assert_ne!(new_epoch, &old_epoch, "a new life, so that old cursors reset");
    assert_eq!(*seq, 1);
    assert_eq!(second.appended, vec![("t".to_string(), new_epoch.clone(), 1, "m2".to_string())]);
}

#[test]
fn garbage_on_the_channel_is_ignored_and_a_hole_in_the_notices_means_sync_again() {
    let redis = RedisServer::start();
    let (log, reports) = open(&redis, settings("hole", 100, Duration::from_secs(60)));
    reports.synced();
    let before = reports.publish_and_wait(&log, "t", 1, 2, "m");
    let epoch = before.acked[&1].0.clone();

    let mut connection = redis.connection();
    let mut forge = |payload: &str| {
        let _: u64 = redis::cmd("PUBLISH").arg("test:hole:news").arg(payload).query(&mut connection).expect("PUBLISH");
    };
    forge("not a notice");
    forge("t NOT-HEX 3\nx");
    // Seq 9 after 2: notices 3 to 8 were lost, so what this process has is no longer true.
    forge(&format!("t {epoch} 9\nforged"));
    match reports.next("Lost after the hole") {
        Report::Lost { reason } => assert!(reason.contains("lost"), "{reason}"),
        other => panic!("expected Lost (the garbage ignored), got {other:?}"),
    }
    let topics = reports.synced();
    assert_eq!((&*topics[0].epoch, topics[0].last_seq), (epoch.as_str(), 2), "Redis's truth, not the forgery");

    let after = reports.publish_and_wait(&log, "t", 3, 1, "m");
    assert_eq!(after.appended, vec![("t".to_string(), epoch, 3, "m3".to_string())]);
    assert_eq!(log.status().state, LinkState::Up);
}

#[test]
fn bad_urls_and_prefixes_are_refused_at_start() {
    let sink = Arc::new(|report| panic!("no report expected: {report:?}"));
    for url in [
        "rediss://127.0.0.1:6379",
        "redis://:secret@127.0.0.1:6379",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:port",
        "127.0.0.1:6379",
    ] {
        match RedisLog::start(url, LogSettings::new(10, Duration::from_secs(60)), sink.clone()) {
            Err(StartError::Url(error)) => assert!(error.to_string().contains(url), "{error}"),
            Err(other) => panic!("{url}: {other}"),
            Ok(_) => panic!("{url} accepted"),
        }
    }
    let settings = LogSettings { prefix: "a*".into(), ..LogSettings::new(10, Duration::from_secs(60)) };
    assert!(matches!(RedisLog::start("redis://127.0.0.1:6379", settings, sink), Err(StartError::Prefix(_))));
}

/// `SCRIPT FLUSH` (an operator, or a failover to a replica without the scripts) makes Redis
/// answer `NOSCRIPT`: those calls did not run, and are run again behind a reload, so nothing
/// is refused and the seqs go on without a hole, whichever pipelines in flight were hit.
#[test]
fn a_flushed_script_cache_is_loaded_again_and_no_publish_is_refused() {
    let redis = RedisServer::start();
    let (log, reports) = open(&redis, settings("noscript", 1_000, Duration::from_secs(60)));
    reports.synced();
    let before = reports.publish_and_wait(&log, "t", 1, 20, "m");
    let mut connection = redis.connection();
    let flushed: String = redis::cmd("SCRIPT").arg("FLUSH").query(&mut connection).expect("SCRIPT FLUSH");
    assert_eq!(flushed, "OK");
    let after = reports.publish_and_wait(&log, "t", 21, 200, "m");
    let mut all = before.appended.clone();
    all.extend(after.appended.iter().cloned());
    assert_runs_from_one(&all.iter().map(|(_, _, seq, _)| *seq).collect::<Vec<_>>(), 220, "appends");
    let epoch = &before.acked[&1].0;
    assert!(after.acked.values().all(|(e, _)| e == epoch), "one life: {after:?}");
    let status = log.status();
    assert_eq!((status.acked, status.refused), (220, 0));
}

/// A Redis that stops answering makes publishes wait in the link's queue; past
/// `max_queued_bytes` they are refused at once, by `publish` itself, instead of piling up.
/// Once Redis answers again every publish has had exactly one outcome, and the queue has room
/// again.
#[test]
fn publishes_beyond_the_queue_bound_are_refused_at_once() {
    const PUBLISHES: u64 = 100;
    let redis = RedisServer::start();
    // 10 publishes of 100 bytes (topic and data) fit.
    let settings = LogSettings { max_queued_bytes: 1_000, ..settings("bound", 1_000, Duration::from_secs(60)) };
    let (sender, receiver) = mpsc::channel();
    let publisher = std::thread::current().id();
    let sink = Arc::new(move |report| {
        let _ = sender.send((std::thread::current().id() == publisher, report));
    });
    let log = RedisLog::start(&redis.url(), settings, sink).expect("a valid URL");
    let next = || receiver.recv_timeout(WAIT).expect("a report within WAIT");
    assert!(matches!(next(), (false, Report::Synced { .. })));

    redis.freeze();
    for ticket in 1..=PUBLISHES {
        log.publish(ticket, "t", Arc::from("x".repeat(99)));
    }
    // The command thread holds at most three batches of 10 (one per pipeline in flight, one it
    // waits to send) while 10 more wait: the rest was refused here, on this thread.
    let mut outcomes = Outcomes::default();
    receiver.try_iter().for_each(|report| outcomes.take(report));
    assert!(outcomes.refused_here >= 50, "refused at once: {} of {PUBLISHES}", outcomes.refused_here);
    redis.thaw();

    let deadline = Instant::now() + WAIT;
    while (outcomes.by_ticket.len() as u64) < PUBLISHES {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(report) => outcomes.take(report),
            Err(_) => panic!("outcomes so far: {:?}", outcomes.by_ticket),
        }
    }
    let status = log.status();
    assert_eq!(status.acked + status.refused, PUBLISHES, "{status:?}");

    // The queue has room again: the next publishes are taken (after a `Synced`, if the freeze
    // outlasted a reply's deadline and the link was lost).
    let deadline = Instant::now() + WAIT;
    let mut ticket = PUBLISHES;
    loop {
        ticket += 1;
        log.publish(ticket, "t", Arc::from("after"));
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left).expect("an outcome within WAIT").1 {
                Report::Acked { ticket: acked, .. } if acked == ticket => break true,
                Report::Refused { ticket: refused } if refused == ticket => break false,
                _ => {}
            }
        };
        if outcome {
            break;
        }
        assert!(Instant::now() < deadline, "no publish acked after the thaw");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The outcome of each publish, and how many were refused on the publishing thread.
#[derive(Default)]
struct Outcomes {
    by_ticket: BTreeMap<u64, &'static str>,
    refused_here: usize,
}

impl Outcomes {
    /// A report, and whether the sink was called on the publishing thread.
    fn take(&mut self, (here, report): (bool, Report)) {
        let (ticket, outcome) = match report {
            Report::Acked { ticket, .. } => (ticket, "acked"),
            Report::Refused { ticket } if here => (ticket, "refused at once"),
            Report::Refused { ticket } => (ticket, "refused"),
            _ => return,
        };
        self.refused_here += usize::from(here);
        assert!(self.by_ticket.insert(ticket, outcome).is_none(), "ticket {ticket} had two outcomes");
    }
}

/// Publishes to several topics, interleaved, go to Redis as one call per topic and pipeline:
/// each topic's seqs still follow the order its publishes were made, each ack names its own
/// message, and each notice carries its own data.
#[test]
fn interleaved_topics_keep_each_topics_order() {
    const TOPICS: [&str; 3] = ["a", "b", "c"];
    const EACH: u64 = 40;
    let redis = RedisServer::start();
    let (log, reports) = open(&redis, settings("interleaved", 1_000, Duration::from_secs(60)));
    reports.synced();
    let total = EACH * TOPICS.len() as u64;
    for ticket in 1..=total {
        let topic = TOPICS[(ticket % 3) as usize];
        log.publish(ticket, topic, Arc::from(format!("{topic}-{ticket}")));
    }
    let mut tally = Tally::default();
    reports.tally_until("every ack and append", &mut tally, |t| {
        t.acked.len() as u64 + t.refused.len() as u64 == total && t.appended.len() as u64 >= total
    });
    assert_eq!(tally.refused, Vec::<u64>::new());
    for (i, topic) in TOPICS.iter().enumerate() {
        // Tickets published to this topic, in order, were given seqs 1, 2, 3...
        let tickets: Vec<u64> = (1..=total).filter(|ticket| (ticket % 3) as usize == i).collect();
        let seqs: Vec<u64> = tickets.iter().map(|ticket| tally.acked[ticket].1).collect();
        assert_runs_from_one(&seqs, EACH, &format!("acks of {topic}"));
        let appended: Vec<(u64, String)> = tally
            .appended
            .iter()
            .filter(|(name, _, _, _)| name == topic)
            .map(|(_, _, seq, data)| (*seq, data.clone()))
            .collect();
        let expected: Vec<(u64, String)> =
            tickets.iter().zip(1..).map(|(ticket, seq)| (seq, format!("{topic}-{ticket}"))).collect();
        assert_eq!(appended, expected, "the appends of {topic}");
    }
}
