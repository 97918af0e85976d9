//! The `exhaust` scenario: newcomers hold long polls until the server refuses one; the report
//! says where and how it refused, whether what it held before still works, and what being at
//! the limit costs it in CPU.
//!
//! ```text
//!   before     keep-alive connection K: GET /stats; POST /publish/T "warm-up" -> cursor C
//!   fill       newcomers, WINDOW in flight, each writing at once
//!                GET /plaintext  +  GET /poll/T?cursor=C&timeout=120s
//!              200 to /plaintext: held. 503, another status, reset, close, no connect or no
//!              answer within --hang: refused. Until the first refusal, then until --refusals
//!              refusals in all; never more than --max newcomers
//!   at limit   K: GET /stats (or K was closed while idle: the server reclaimed it)
//!              --window: KNOCKERS newcomers knock; the server's CPU from /proc/PID/stat
//!              POST /publish/T "MARKER" on K (else close one held poll and publish on a new
//!              connection); count the held polls answered with it within DELIVERY_BOUND
//!   after      close everything; a fresh GET /stats, retried for up to RETRY_BOUND
//! ```
//!
//! `probe` is one newcomer and how it ended; `summary` counts and tells; `host` reads the
//! server's pid and CPU time from `/proc` and raises this process's open-file limit.
//!
//! Invariants:
//! - Bounded in count: at most `--max` newcomers plus `KNOCKERS`, and never more sockets than
//!   this process's open-file limit (raised to its hard limit at start) less `SPARE_FDS`. One
//!   process holds them all: `--max` above that is lowered, and the report says so.
//! - Bounded in time: the fill by `engine::opening_bound` of `--max`; every newcomer by
//!   `--hang`; the window by `--window`; every blocking request by `CONTROL_TIMEOUT`.
//! - A newcomer is known by its index in `probes`, never reused; its connection is closed when
//!   it ends.

mod probe;
mod summary;

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use self::probe::{End, Probe, Refusal, Reply, Stage};
use self::summary::{outcome, After, Counts, FirstRefusal, Measured, Publish};
use super::conn::ConnError;
use super::engine::{self, Engine, Gone, Load};
use super::frame::Frame;
use super::host::{self, CpuSample};
use super::longpoll::default_topic;
use super::{progress_bar, Outcome, Target, SPARE_FDS};
use crate::config::parse_duration;

/// Newcomers waiting for their connect or their probe's answer at once: enough to fill fast,
/// few enough that a burst never overflows a listen backlog.
const WINDOW: usize = 64;
/// Newcomers opened at the start of the CPU window, left waiting until its end: a server that
/// cannot accept them shows here whether it spins.
const KNOCKERS: usize = 16;
/// How long the loop sleeps at most, so deadlines are seen within this.
const TICK: Duration = Duration::from_millis(20);
/// How long a blocking request (the keep-alive connection, a publish, the last check) may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the held polls have to receive the message published at the limit.
const DELIVERY_BOUND: Duration = Duration::from_secs(5);
/// How long a publish on a new connection, and the fresh request after the close, are retried.
const RETRY_BOUND: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_millis(100);
/// The hold a poll asks for: tether's default `--max-poll-timeout`, longer than any run here.
const HOLD: &str = "120s";

#[derive(Args, Debug)]
pub struct ExhaustArgs {
    /// The server's base URL, like http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    pub url: String,
    /// Newcomers opened in all, held or refused [at most this process's open-file limit, raised
    /// to its hard limit, less a margin].
    #[arg(long, default_value_t = 20_000)]
    pub max: usize,
    /// After the first refusal, newcomers go on until this many have been refused.
    #[arg(long, default_value_t = 50)]
    pub refusals: usize,
    /// A newcomer not connected, or its probe not answered, within this is refused by a hang.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub hang: Duration,
    /// How long the server's CPU is measured at the limit.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub window: Duration,
    /// The server's process [default: the one holding the socket that listens on --url's port].
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<i32>,
    /// The topic [default: a new one per run, bench-exhaust-PID-TIME].
    #[arg(long)]
    pub topic: Option<String>,
    /// Print one JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ExhaustArgs) -> Result<Outcome, String> {
    let target = Target::parse(&args.url)?;
    check_arguments(args)?;
    target.check_listening()?;
    let open_file_limit = host::raise_open_file_limit();
    let budget = usize::try_from(open_file_limit).unwrap_or(usize::MAX).saturating_sub(SPARE_FDS + KNOCKERS);
    let max = args.max.min(budget);
    if max == 0 {
        return Err(format!("an open-file limit of {open_file_limit} leaves no room for newcomers"));
    }
    let pids = host::server_pids(args.server_pid.as_slice(), &[target.addr]);
    let topic = args.topic.clone().unwrap_or_else(|| default_topic("exhaust"));
    let stats = target.get(&format!("{}/stats", target.base_path()), "");

    // Before: the keep-alive connection, a /stats baseline, the topic's cursor.
    let mut fill =
        Fill { engine: Engine::new(target.addr, WINDOW)?, request: Vec::new(), newcomers: Newcomers::default() };
    let reply = fill.exchange(true, &stats);
    if !reply.is_ok() || fill.newcomers.control_key.is_none() {
        return Err(format!("GET {}/stats on {}: {}", target.base_path(), target.addr, reply.describe()));
    }
    let cursor = match fill.exchange(false, &target.publish(&topic, "warm-up")) {
        Reply::Answer { status: 200, body, .. } => {
            serde_json::from_slice::<Value>(&body).ok().and_then(|reply| reply["seq"].as_u64())
        }
        reply => return Err(format!("the warm-up publish: {}", reply.describe())),
    };
    fill.request = poll_request(&target, &topic, cursor).into_bytes();
    let progress = progress_bar(max as u64, args.hang + args.window, "filling");
    let deadline = Instant::now() + engine::opening_bound(max) + args.hang;
    let more = |n: &Newcomers| n.counts.opened < max && !n.enough_refusals(args.refusals);
    let fill_timed_out = loop {
        if !more(&fill.newcomers) && fill.newcomers.waiting.is_empty() {
            break false;
        }
        if Instant::now() >= deadline {
            break true;
        }
        while more(&fill.newcomers) && fill.newcomers.waiting.len() < WINDOW {
            fill.open(false, Instant::now() + args.hang);
        }
        fill.turn(TICK)?;
        progress.set_position(fill.newcomers.counts.opened as u64);
    };
    progress.finish_and_clear();
    let held_at_limit = fill.newcomers.held;

    // At the limit: the old keep-alive connection (unless the server closed it while it sat
    // idle), the CPU window, a publish to the held polls.
    let keepalive = fill.newcomers.control_key.is_some().then(|| fill.exchange(false, &stats));
    let window_end = Instant::now() + args.window;
    for _ in 0..KNOCKERS {
        fill.open(true, window_end);
    }
    let cpu_start = CpuSample::take(&pids);
    while Instant::now() < window_end {
        fill.turn(window_end.saturating_duration_since(Instant::now()).min(TICK))?;
    }
    let cpu = cpu_start.percent_until(&CpuSample::take(&pids));
    fill.turn(Duration::ZERO)?; // the knockers still waiting are past their deadline
    let held_after_window = fill.newcomers.held;

    let marker = format!("exhaust: published at the limit by {}", std::process::id());
    let early_works = keepalive.as_ref().is_some_and(Reply::is_ok);
    let publish = publish(&mut fill, early_works, &target.publish(&topic, &marker), marker);
    if publish.reply.is_ok() {
        while fill.newcomers.held > 0 && publish.sent_at.elapsed() < DELIVERY_BOUND {
            fill.turn(TICK)?;
        }
    }
    let last_delivery = fill.newcomers.last_delivery.map(|at| at.saturating_duration_since(publish.sent_at));

    // After: everything closed, a fresh request.
    fill.close_all();
    let started = Instant::now();
    let (reply, _, attempts) =
        fill.retry(&target.get(&format!("{}/stats", target.base_path()), "Connection: close\r\n"));
    let after = After { reply, attempts, took: started.elapsed() };
    let counts = fill.counts();
    let measured = Measured {
        max,
        open_file_limit,
        fill_timed_out,
        held_at_limit,
        held_after_window,
        keepalive,
        pids,
        cpu,
        publish,
        last_delivery,
        after,
        counts,
    };
    Ok(outcome(args, &target, &topic, &measured))
}

fn check_arguments(args: &ExhaustArgs) -> Result<(), String> {
    if args.max == 0 || args.refusals == 0 {
        return Err("--max and --refusals must be at least 1".into());
    }
    let bounds = Duration::from_millis(100)..=Duration::from_secs(60);
    if !bounds.contains(&args.hang) || !bounds.contains(&args.window) {
        return Err("--hang and --window must lie between 100ms and 60s".into());
    }
    Ok(())
}

/// What each newcomer writes: the probe and the poll, in one write. Without a cursor (a server
/// whose publish answer has no `seq`) the poll waits for the next message
/// (docs/long-polling.md, "What cursors and epochs guarantee").
fn poll_request(target: &Target, topic: &str, cursor: Option<u64>) -> String {
    let base = target.base_path();
    let cursor = cursor.map_or(String::new(), |c| format!("cursor={c}&"));
    target.get(&format!("{base}/plaintext"), "")
        + &target.get(&format!("{base}/poll/{topic}?{cursor}timeout={HOLD}"), "")
}

/// What a connection is: a newcomer (its index in `probes`), or the keep-alive connection or
/// another of the blocking exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Newcomer(usize),
    /// The control connection, and when the exchange in flight on it was sent.
    Control {
        sent: Instant,
    },
}

/// The newcomers and the control connections, on the lab's engine.
struct Fill {
    engine: Engine<Peer>,
    /// What each newcomer writes once connected.
    request: Vec<u8>,
    newcomers: Newcomers,
}

/// What became of each newcomer: the scenario's side of the engine.
#[derive(Default)]
struct Newcomers {
    marker: String,
    /// By index, in the order opened; never removed, so an index is never reused.
    probes: Vec<Probe>,
    /// Probes connecting or asking: their deadlines are checked every turn.
    waiting: Vec<usize>,
    held: usize,
    /// Once the message is published, an answer to a held poll is a delivery.
    delivering: bool,
    last_delivery: Option<Instant>,
    counts: Counts,
    /// The control connection, while it is open.
    control_key: Option<usize>,
    /// The answer to the control exchange in flight, or how it failed.
    control: Option<Reply>,
}

impl Fill {
    /// Sends `request` on the control connection (kept open between exchanges: the keep-alive
    /// connection opened before filling), or on a new one when `fresh` or when it is gone, and
    /// waits up to `CONTROL_TIMEOUT` for the answer, turning the newcomers meanwhile.
    fn exchange(&mut self, fresh: bool, request: &str) -> Reply {
        if fresh {
            self.close_control();
        }
        let peer = Peer::Control { sent: Instant::now() };
        let key = *self.newcomers.control_key.get_or_insert_with(|| self.engine.open(peer, b""));
        if let Some(open) = self.engine.get_mut(key) {
            open.state = peer;
        }
        self.newcomers.control = None;
        if let Err(e) = self.engine.send(key, request.as_bytes()) {
            self.close_control();
            return Reply::Failed(probe::refusal(&e));
        }
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        while self.newcomers.control.is_none() && Instant::now() < deadline {
            let _ = self.turn(deadline.saturating_duration_since(Instant::now()).min(TICK));
        }
        self.newcomers.control.take().unwrap_or_else(|| {
            let connected = self.engine.get(key).is_some_and(|open| open.conn.is_connected());
            self.close_control();
            Reply::Failed(if connected { Refusal::Hang } else { Refusal::ConnectTimeout })
        })
    }

    /// `exchange` on a new connection, again every `RETRY_EVERY` (the newcomers turning
    /// meanwhile) until answered 200 or `RETRY_BOUND` has passed. Returns the last reply, what
    /// could be delivered and when, as the last attempt went out, and the attempts made.
    fn retry(&mut self, request: &str) -> (Reply, (usize, Instant), u32) {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = (self.newcomers.deliverable(), Instant::now());
            let reply = self.exchange(true, request);
            self.close_control();
            if reply.is_ok() || started.elapsed() >= RETRY_BOUND {
                return (reply, sent, attempts);
            }
            let _ = self.turn(RETRY_EVERY);
        }
    }

    fn close_control(&mut self) {
        if let Some(key) = self.newcomers.control_key.take() {
            self.engine.close(key);
        }
    }

    /// Opens one newcomer (a knocker during the CPU window), refused at `deadline` if it is
    /// not held by then.
    fn open(&mut self, knocker: bool, deadline: Instant) {
        let n = &mut self.newcomers;
        let index = n.probes.len();
        n.probes.push(Probe::new(knocker, deadline));
        if !knocker {
            n.counts.opened += 1;
        }
        n.probes[index].key = Some(self.engine.open(Peer::Newcomer(index), &self.request));
        n.waiting.push(index);
    }

    /// One turn: poll, dispatch, expire.
    fn turn(&mut self, wait: Duration) -> Result<(), String> {
        self.engine.turn(&mut self.newcomers, wait)?;
        let n = &mut self.newcomers;
        let now = Instant::now();
        for i in 0..n.waiting.len() {
            let index = n.waiting[i];
            if let Some(end) = n.probes[index].expire(now) {
                n.end(&mut self.engine, index, end);
            }
        }
        let probes = &n.probes;
        n.waiting.retain(|&index| matches!(probes[index].stage, Stage::Connecting | Stage::Asking));
        Ok(())
    }

    /// Closes one held poll, so that a server at its limit has room for one more connection.
    fn release_one(&mut self) -> bool {
        let n = &mut self.newcomers;
        let Some(probe) = n.probes.iter_mut().find(|p| p.stage == Stage::Held) else {
            return false;
        };
        probe.stage = Stage::Done;
        if let Some(key) = probe.key.take() {
            self.engine.close(key);
        }
        n.held -= 1;
        n.counts.released += 1;
        true
    }

    /// Closes every connection; what was counted stays.
    fn close_all(&mut self) {
        self.engine.close_all();
        for probe in &mut self.newcomers.probes {
            probe.key = None;
        }
        self.newcomers.control_key = None;
    }

    fn counts(self) -> Counts {
        let mut counts = self.newcomers.counts;
        if let Some(first) = &mut counts.first_refusal {
            let before = &self.newcomers.probes[..first.newcomer - 1];
            first.held = before.iter().filter(|probe| probe.was_held).count();
        }
        counts
    }
}

impl Newcomers {
    /// Counts how a probe ended, and closes its connection.
    fn end(&mut self, engine: &mut Engine<Peer>, index: usize, end: End) {
        let probe = &mut self.probes[index];
        if let Some(key) = probe.key.take() {
            engine.close(key);
        }
        if probe.was_held {
            self.held -= 1;
        }
        let c = &mut self.counts;
        match end {
            End::Refused(refusal) if probe.knocker => c.knocked.add(&refusal),
            End::Refused(refusal) => {
                // Newcomers are numbered from 1 in the order opened.
                if c.first_refusal.as_ref().is_none_or(|first| index + 1 < first.newcomer) {
                    c.first_refusal = Some(FirstRefusal { held: 0, newcomer: index + 1, kind: refusal.clone() });
                }
                c.refused.add(&refusal);
            }
            End::Lost(refusal) => c.lost.add(&refusal),
            End::Answered { marked: true } if self.delivering => {
                c.delivered += 1;
                self.last_delivery = Some(Instant::now());
            }
            End::Answered { .. } if self.delivering => c.answered_other += 1,
            End::Answered { .. } => c.answered_early += 1,
        }
    }

    /// What a publish sent now may still deliver to: the polls held, and any already answered
    /// by an earlier attempt that the server did take.
    fn deliverable(&self) -> usize {
        self.held + self.counts.delivered as usize
    }

    /// After the first refusal, enough newcomers are refused or on their way to an answer.
    fn enough_refusals(&self, wanted: usize) -> bool {
        self.counts.first_refusal.is_some() && self.counts.refused.total() as usize + self.waiting.len() >= wanted
    }
}

impl Load<Peer> for Newcomers {
    fn connected(&mut self, engine: &mut Engine<Peer>, key: usize, _now: Instant) {
        if let Some(Peer::Newcomer(index)) = engine.get(key).map(|open| open.state) {
            self.probes[index].connected();
        }
    }

    fn answered(&mut self, engine: &mut Engine<Peer>, key: usize, frame: &Frame, now: Instant) {
        match engine.get(key).map(|open| open.state) {
            Some(Peer::Newcomer(index)) => {
                let retry_after = frame.retry_after.as_ref().map(|at| engine.bytes(key, at));
                let body = engine.bytes(key, &frame.body);
                let was_held = self.probes[index].was_held;
                match self.probes[index].answered(frame.status, retry_after, body, &self.marker) {
                    Some(end) => self.end(engine, index, end),
                    None if !was_held && self.probes[index].was_held => {
                        self.held += 1;
                        self.counts.held_peak = self.counts.held_peak.max(self.held);
                    }
                    None => {}
                }
            }
            Some(Peer::Control { sent }) => {
                let (status, body) = (frame.status, engine.bytes(key, &frame.body).to_vec());
                self.control = Some(Reply::Answer { status, body, took: now - sent });
            }
            None => {}
        }
    }

    fn ended(&mut self, engine: &mut Engine<Peer>, _key: usize, gone: Gone<Peer>, why: ConnError, _now: Instant) {
        match gone.state {
            Peer::Newcomer(index) => {
                let end = self.probes[index].ended(&why);
                self.end(engine, index, end);
            }
            Peer::Control { .. } => {
                self.control_key = None;
                self.control.get_or_insert(Reply::Failed(probe::refusal(&why)));
            }
        }
    }
}

/// Publishes the marker on the old keep-alive connection if it still works, else on a new
/// connection once one held poll has been closed to make room.
/// From here on an answer to a held poll is a delivery.
fn publish(fill: &mut Fill, early_works: bool, request: &str, marker: String) -> Publish {
    fill.newcomers.marker = marker;
    fill.newcomers.delivering = true;
    if early_works {
        let (held, sent_at) = (fill.newcomers.deliverable(), Instant::now());
        let reply = fill.exchange(false, request);
        if reply.is_ok() {
            return Publish { via: "keepalive", reply, held, sent_at };
        }
    }
    if !fill.release_one() {
        log::debug!("no held poll to close before publishing");
    }
    let (reply, (held, sent_at), _) = fill.retry(request);
    Publish { via: "new_connection", reply, held, sent_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_asks_from_the_cursor_or_waits_for_the_next_message() {
        let target = Target::parse("http://127.0.0.1:8080/").unwrap();
        let with = poll_request(&target, "t", Some(7));
        let probe = "GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
        assert!(with.starts_with(&format!("{probe}GET /poll/t?cursor=7&timeout=")), "{with}");
        let without = poll_request(&target, "t", None);
        assert!(without.contains("GET /poll/t?timeout=120s HTTP/1.1"), "{without}");
        assert!(target.publish("t", "hi").ends_with("Content-Length: 2\r\n\r\nhi"));
    }
}
