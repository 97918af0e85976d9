//! The `slowloris` scenario: N connections each send a request head that never ends, one more
//! header byte every `--trickle`, while fresh requests on new connections measure what the
//! other clients get meanwhile. The report says how and when the server ended each slowloris.
//!
//! ```text
//!   open     N connections, OPEN_PER_TURN per turn; each writes once connected
//!              GET /plaintext HTTP/1.1\r\nHost: HOST\r\n             (no blank line)
//!   trickle  every --trickle: one byte of "X-a: b\r\n" on each slowloris not yet answered,
//!            slowloris i at i/N of the period
//!   fresh    once all N are open, every FRESH_EVERY: GET /plaintext, Connection: close, on
//!            a new connection; latency from connect() to the answer's last byte, an error
//!            after FRESH_TIMEOUT
//!   watch    a slowloris ends at the server's close or a reset, an answer before it noted
//!   end      every slowloris ended, or --duration; then the fresh requests in flight finish
//! ```
//!
//! The server's CPU is read from `/proc/PID/stat` (see `host`) at the start and the end of the
//! run.
//!
//! Invariants:
//! - Bounded in count: `--connections` slowloris (checked against the open-file limit, raised to
//!   its hard limit first) plus at most `FRESH_IN_FLIGHT` fresh requests.
//! - Bounded in time: `--duration`, then at most `FRESH_TIMEOUT`; a slowloris not connected
//!   within `CONNECT_BOUND` (checked at each trickle) has failed.
//! - On the lab's engine (`engine`), a connection is a `Role`: a slowloris (its index in
//!   `slow`) or a fresh request; the engine's keys are never what a slowloris is known by.
//! - A slowloris ends once; its socket is dropped then, which also ends a lingering close.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use super::conn::ConnError;
use super::engine::{Engine, Gone, Load, Open};
use super::frame::Frame;
use super::host::{self, CpuSample};
use super::report::{self, breakdown, nearest_rank, round, Errors, Latency};
use super::{check_fd_budget, timed_bar, Outcome, Target};
use crate::config::parse_duration;

/// What each slowloris trickles, one byte at a time, over and over: header lines, never the
/// blank line that would end the head.
const TRICKLE: &[u8] = b"X-a: b\r\n";
/// Connects started per turn (the engine's budget): faster could overflow a listen backlog.
const OPEN_PER_TURN: usize = 256;
/// A slowloris whose connect has not completed within this has failed.
const CONNECT_BOUND: Duration = Duration::from_secs(3);
/// A fresh request every this long, each answered within `FRESH_TIMEOUT` or an error; so at
/// most `FRESH_IN_FLIGHT` are open at once.
const FRESH_EVERY: Duration = Duration::from_millis(50);
const FRESH_TIMEOUT: Duration = Duration::from_secs(2);
const FRESH_IN_FLIGHT: usize = (FRESH_TIMEOUT.as_millis() / FRESH_EVERY.as_millis()) as usize + 1;
/// The longest the loop sleeps, so trickles and fresh requests go out on time.
const TICK: Duration = Duration::from_millis(10);
/// The `answer` of a slowloris that received bytes which do not frame as a response.
const UNFRAMED: u16 = 0;

#[derive(Args, Debug)]
pub struct SlowlorisArgs {
    /// The server's base URL, like http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    pub url: String,
    /// Slowloris connections.
    #[arg(long, default_value_t = 300)]
    pub connections: usize,
    /// One more header byte on each slowloris every this long (1ms to 60s).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub trickle: Duration,
    /// The run ends when every slowloris has been closed, or after this (100ms to 1h).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The server's process [default: the one holding the socket that listens on --url's port].
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<i32>,
    /// Print one JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &SlowlorisArgs) -> Result<Outcome, String> {
    let target = Target::parse(&args.url)?;
    check_arguments(args)?;
    target.check_listening()?;
    host::raise_open_file_limit();
    check_fd_budget("--connections", args.connections, args.connections + FRESH_IN_FLIGHT)?;
    let pids = host::server_pids(args.server_pid.as_slice(), &[target.addr]);
    let started = Instant::now();
    let mut run = Run::new(&target, args.connections)?;
    // By time, not by slowloris ended: they end together, at the header timeout.
    let progress = timed_bar(args.duration, "slowloris");

    let cpu_start = CpuSample::take(&pids);
    let (mut now, mut next_fresh, mut ramped) = (started, started, false);
    while now < started + args.duration && !run.all_ended() {
        run.trickle(now, now.saturating_duration_since(started), args.trickle);
        // Fresh requests once every slowloris is connecting (the ramp is the generator's own
        // work); each connects in the next turn, after the trickle, so that its clock does not
        // run while the generator writes.
        ramped = ramped || run.engine.waiting() == 0;
        if ramped && now >= next_fresh {
            run.open_fresh();
            next_fresh = (next_fresh + FRESH_EVERY).max(now); // behind: no burst to catch up
        }
        run.turn(next_fresh.saturating_duration_since(Instant::now()).min(TICK))?;
        now = Instant::now();
        progress.set_position((now - started).as_millis() as u64);
        progress.set_message(run.status(now - started, args.duration));
    }
    let cpu = cpu_start.percent_until(&CpuSample::take(&pids));
    progress.finish_and_clear();
    let ran = Ran { took: started.elapsed(), all_closed: run.all_ended(), cpu, pids };
    let tally = run.watch.tally();
    // The fresh requests in flight are answered or time out; the slowloris stay open meanwhile.
    let last = Instant::now() + FRESH_TIMEOUT + TICK;
    while run.watch.fresh > 0 && Instant::now() < last {
        run.turn(TICK)?;
    }
    Ok(outcome(args, &target, &tally, &run, &ran))
}

/// The run as a whole: how long, why it ended, the server's CPU meanwhile.
struct Ran {
    took: Duration,
    all_closed: bool,
    pids: Vec<i32>,
    cpu: Option<f64>,
}

fn check_arguments(args: &SlowlorisArgs) -> Result<(), String> {
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&args.trickle) {
        return Err("--trickle must lie between 1ms and 60s".into());
    }
    if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&args.duration) {
        return Err("--duration must lie between 100ms and 1h".into());
    }
    Ok(())
}

/// How a slowloris ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The server closed (its FIN).
    Closed,
    /// A reset, or another read or write failure.
    Reset,
    /// No socket, a refused connect, or none within `CONNECT_BOUND`.
    ConnectFailed,
}

impl Ending {
    fn of(error: &ConnError) -> Ending {
        match error {
            ConnError::Connect(_) => Ending::ConnectFailed,
            ConnError::Closed { .. } => Ending::Closed,
            ConnError::Io(_) | ConnError::Frame(_) => Ending::Reset,
        }
    }
}

struct Slow {
    /// Its connection's key in the engine until it ends.
    key: Option<usize>,
    /// Its connect completed; one that never did has failed.
    connected: bool,
    opened: Instant,
    /// The status of what the server answered before its close (`UNFRAMED` for bytes that are
    /// not a response).
    answer: Option<u16>,
    trickled: usize,
}

/// A slowloris' request head, without the blank line that would end it.
fn head(target: &Target) -> Vec<u8> {
    format!("GET {}/plaintext HTTP/1.1\r\nHost: {}\r\n", target.base_path(), target.url.authority()).into_bytes()
}

/// What a connection is: a slowloris (its index in `slow`) or a fresh request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Slow(usize),
    Fresh,
}

/// The slowloris and the fresh requests, on the lab's engine.
struct Run {
    engine: Engine<Role>,
    request: Vec<u8>,
    /// Trickled bytes due so far, over all slowloris: the next goes to slowloris `cursor % N`.
    trickle_cursor: u128,
    fresh_opened: u64,
    watch: Watch,
}

/// What became of the connections: the scenario's side of the engine.
#[derive(Default)]
struct Watch {
    slow: Vec<Slow>,
    ended: usize,
    /// Fresh requests in flight.
    fresh: usize,
    latency: Latency,
    errors: Errors,
    tally: Tally,
}

impl Run {
    /// Queues `connections` slowloris, which connect `OPEN_PER_TURN` per turn from the first.
    fn new(target: &Target, connections: usize) -> Result<Run, String> {
        let head = head(target);
        let mut engine = Engine::new(target.addr, OPEN_PER_TURN)?;
        let now = Instant::now();
        let slow = (0..connections)
            .map(|index| Slow {
                key: Some(engine.open(Role::Slow(index), &head)),
                connected: false,
                opened: now,
                answer: None,
                trickled: 0,
            })
            .collect();
        Ok(Run {
            engine,
            request: target.get(&format!("{}/plaintext", target.base_path()), "Connection: close\r\n").into_bytes(),
            trickle_cursor: 0,
            fresh_opened: 0,
            watch: Watch { slow, ..Watch::default() },
        })
    }

    fn all_ended(&self) -> bool {
        self.watch.ended == self.watch.slow.len()
    }

    /// The progress line: `5.0 s of 20 s: 1500 bytes trickled, 0 of 300 ended`.
    fn status(&self, elapsed: Duration, duration: Duration) -> String {
        let (slow, elapsed) = (&self.watch.slow, elapsed.as_secs_f64());
        let (trickled, ended, n) = (slow.iter().map(|slow| slow.trickled).sum::<usize>(), self.watch.ended, slow.len());
        format!("{elapsed:.1} s of {duration:?}: {trickled} bytes trickled, {ended} of {n} ended")
    }

    fn open_fresh(&mut self) {
        if self.watch.fresh >= FRESH_IN_FLIGHT {
            return; // every one in flight ends by its timeout: the next tick finds room
        }
        self.fresh_opened += 1;
        self.watch.fresh += 1;
        self.engine.open(Role::Fresh, &self.request);
    }

    /// The bytes due by `elapsed`, spread evenly: slowloris i sends at i/N of each `period`, as
    /// independent clients would, not all at once. Those still connecting after `CONNECT_BOUND`
    /// have failed. A generator that falls behind skips a round rather than catch up in a burst.
    fn trickle(&mut self, now: Instant, elapsed: Duration, period: Duration) {
        let n = self.watch.slow.len() as u128;
        let due = elapsed.as_nanos() * n / period.as_nanos();
        self.trickle_cursor = self.trickle_cursor.max(due.saturating_sub(n));
        while self.trickle_cursor < due {
            let index = (self.trickle_cursor % n) as usize;
            self.trickle_cursor += 1;
            let slow = &mut self.watch.slow[index];
            let Some(key) = slow.key else {
                continue; // ended
            };
            if !slow.connected {
                if now.saturating_duration_since(slow.opened) >= CONNECT_BOUND {
                    self.watch.end(&mut self.engine, index, Ending::ConnectFailed, now);
                }
                continue;
            }
            let idle = self.engine.get(key).is_some_and(|open| !open.conn.wants_write());
            if !idle || slow.answer.is_some() {
                continue; // the head is still going out, or the server has answered
            }
            let byte = &TRICKLE[slow.trickled % TRICKLE.len()..][..1];
            slow.trickled += 1;
            if let Err(e) = self.engine.send(key, byte) {
                self.watch.end(&mut self.engine, index, Ending::of(&e), now);
            }
        }
    }

    /// One turn of the engine, then the fresh requests past their timeout end.
    fn turn(&mut self, wait: Duration) -> Result<(), String> {
        self.engine.turn(&mut self.watch, wait)?;
        let now = Instant::now();
        for key in self.engine.keys(|open| open.state == Role::Fresh && now - open.opened_at >= FRESH_TIMEOUT) {
            self.engine.close(key);
            self.watch.fresh -= 1;
            self.watch.errors.timeout += 1;
        }
        Ok(())
    }
}

impl Watch {
    /// Counts a slowloris' end, once, and closes its socket.
    fn end(&mut self, engine: &mut Engine<Role>, index: usize, ending: Ending, now: Instant) {
        let slow = &mut self.slow[index];
        let Some(key) = slow.key.take() else {
            return; // ended already
        };
        engine.close(key);
        self.ended += 1;
        let tally = &mut self.tally;
        match (ending, slow.answer) {
            (Ending::Closed, Some(_)) => tally.answer_then_close += 1,
            (Ending::Closed, None) => tally.close_without_answer += 1,
            (Ending::Reset, _) => tally.reset += 1,
            (Ending::ConnectFailed, _) => return tally.connect_failed += 1,
        }
        tally.closed_after.push(now.saturating_duration_since(slow.opened));
    }

    /// The ends counted so far, with the slowloris still open as they stand.
    fn tally(&self) -> Tally {
        let mut tally = self.tally.clone();
        for slow in &self.slow {
            if let Some(status) = slow.answer {
                *tally.answers.entry(status).or_default() += 1;
            }
            tally.trickled += slow.trickled as u64;
            match (slow.key, slow.connected) {
                (None, _) => {}
                (Some(_), true) => tally.still_open += 1,
                (Some(_), false) => tally.connect_failed += 1,
            }
        }
        tally.closed_after.sort();
        tally
    }
}

impl Load<Role> for Watch {
    fn connected(&mut self, engine: &mut Engine<Role>, key: usize, _now: Instant) {
        if let Some(&Open { state: Role::Slow(index), opened_at, .. }) = engine.get(key) {
            (self.slow[index].connected, self.slow[index].opened) = (true, opened_at);
        }
    }

    /// A slowloris' answer is noted (the close that follows ends it); a fresh request's is timed.
    fn answered(&mut self, engine: &mut Engine<Role>, key: usize, frame: &Frame, now: Instant) {
        match engine.get(key).map(|open| (open.state, open.opened_at)) {
            Some((Role::Slow(index), _)) => {
                self.slow[index].answer.get_or_insert(frame.status);
            }
            Some((Role::Fresh, started)) => {
                if frame.status == 200 {
                    self.latency.record(now.saturating_duration_since(started));
                } else {
                    self.errors.status += 1;
                }
                engine.close(key);
                self.fresh -= 1;
            }
            None => {}
        }
    }

    fn ended(&mut self, engine: &mut Engine<Role>, _key: usize, gone: Gone<Role>, why: ConnError, now: Instant) {
        let Role::Slow(index) = gone.state else {
            self.fresh -= 1;
            return self.errors.count(&why);
        };
        // Bytes that are not a response, whole or cut short by the close, were an answer too.
        if matches!(why, ConnError::Frame(_) | ConnError::Closed { partial: true }) {
            self.slow[index].answer.get_or_insert(UNFRAMED);
        }
        self.end(engine, index, Ending::of(&why), now);
    }
}

/// How the slowloris ended, each counted once under one kind.
#[derive(Debug, Default, Clone)]
struct Tally {
    answer_then_close: u64,
    close_without_answer: u64,
    reset: u64,
    still_open: u64,
    connect_failed: u64,
    /// Answers by status, whatever came after them.
    answers: BTreeMap<u16, u64>,
    /// From connect() to the server's close or reset, sorted.
    closed_after: Vec<Duration>,
    trickled: u64,
}

impl Tally {
    /// `300 answered then closed, 2 reset`.
    fn breakdown(&self) -> String {
        breakdown([
            (self.answer_then_close, "answered then closed"),
            (self.close_without_answer, "closed without an answer"),
            (self.reset, "reset"),
            (self.still_open, "still open at the end"),
            (self.connect_failed, "never connected"),
        ])
    }

    fn answers(&self) -> Vec<(String, u64)> {
        let name = |status: u16| if status == UNFRAMED { "unframed".to_string() } else { status.to_string() };
        self.answers.iter().map(|(&status, &n)| (name(status), n)).collect()
    }

    /// Min, p50 and max of `closed_after` (the p50 by nearest rank).
    fn close_spread(&self) -> Option<[Duration; 3]> {
        let times = &self.closed_after;
        Some([*times.first()?, nearest_rank(times, 0.5)?, *times.last()?])
    }
}

fn outcome(args: &SlowlorisArgs, target: &Target, tally: &Tally, run: &Run, ran: &Ran) -> Outcome {
    let ms = |d: Duration| report::ms(d, 1);
    let spread = tally.close_spread();
    let (e, latency) = (&run.watch.errors, &run.watch.latency);
    let json = json!({
        "scenario": "slowloris", "url": args.url, "connections": args.connections,
        "trickle_ms": ms(args.trickle), "duration_s": args.duration.as_secs_f64(),
        "ran_s": round(ran.took.as_secs_f64(), 3), "ended_by": if ran.all_closed { "all_closed" } else { "duration" },
        "slowloris": {
            "ended": {"answer_then_close": tally.answer_then_close, "close_without_answer": tally.close_without_answer,
                      "reset": tally.reset, "still_open": tally.still_open, "connect_failed": tally.connect_failed},
            "answers": tally.answers().into_iter().collect::<Value>(), "bytes_trickled": tally.trickled,
            "close_ms": spread.map(|[min, p50, max]| json!({
                "count": tally.closed_after.len(), "min": ms(min), "p50": ms(p50), "max": ms(max)})),
        },
        "fresh": {
            "requests": run.fresh_opened, "answered": latency.count(), "latency_us": latency.summary().to_json(),
            "errors": e.total(), "error_kinds": e.to_json(&["connect", "io", "malformed", "timeout", "status"]),
        },
        "cpu": {"pids": ran.pids, "percent": ran.cpu.map(|p| round(p, 1))},
    });

    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let none_connected = tally.connect_failed == args.connections as u64;
    let ended = match (none_connected, ran.all_closed) {
        (true, _) => format!("{}: no slowloris connected, so nothing was measured", secs(ran.took)),
        (false, true) => format!("{}: every slowloris ended", secs(ran.took)),
        (false, false) => format!("{}: --duration, {} slowloris had not ended", secs(ran.took), tally.still_open),
    };
    let answered: Vec<String> = tally.answers().iter().map(|(status, n)| format!("{status} x{n}")).collect();
    let closed_after = spread.map_or("none closed".into(), |[min, p50, max]| {
        format!("min {}, p50 {}, max {} (from connect to the close or reset)", secs(min), secs(p50), secs(max))
    });
    let [p50, _, p99, max] = latency.summary().human();
    let latencies = if latency.count() == 0 { String::new() } else { format!(", p50 {p50}, p99 {p99}, max {max}") };
    let errors = if e.total() == 0 { "0".into() } else { e.breakdown() };
    let (answered_fresh, opened) = (latency.count(), run.fresh_opened);
    let cpu = |p: f64| format!("{p:.1} % of one core over the run (pid {})", host::pid_list(&ran.pids));
    let rows = [
        ("ran", ended),
        ("ended", tally.breakdown()),
        ("answers", if answered.is_empty() { "none".into() } else { answered.join(", ") }),
        ("closed after", closed_after),
        ("fresh requests", format!("{answered_fresh} of {opened} answered 200{latencies}; errors: {errors}")),
        ("server CPU", ran.cpu.map_or(host::unknown(&ran.pids, "stat"), cpu)),
    ];
    let (connections, addr, trickle, duration) = (args.connections, target.addr, args.trickle, args.duration);
    let table = format!(
        "slowloris: {connections} connections to {addr}, each an unfinished GET head, then one byte every \
         {trickle:?}, for up to {duration:?}\nfresh requests: GET /plaintext on a new connection every \
         {FRESH_EVERY:?}\n{}",
        report::lines(rows)
    );
    let nothing_measured =
        none_connected.then(|| format!("no slowloris connected to {}: nothing was measured", target.addr));
    Outcome { json, table, nothing_measured, ..Outcome::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trickle_never_ends_the_head() {
        let target = Target::parse("http://127.0.0.1:8080").unwrap();
        let mut head = head(&target);
        assert!(head.ends_with(b"Host: 127.0.0.1:8080\r\n"));
        for i in 0..10 * TRICKLE.len() {
            head.push(TRICKLE[i % TRICKLE.len()]);
            assert!(!head.windows(4).any(|w| w == b"\r\n\r\n"), "after {i} bytes");
        }
    }

    #[test]
    fn a_tally_names_its_kinds_and_the_spread_of_the_closes() {
        let mut tally = Tally { answer_then_close: 3, reset: 1, ..Tally::default() };
        tally.answers.extend([(408, 3), (UNFRAMED, 1)]);
        assert_eq!(tally.breakdown(), "3 answered then closed, 1 reset");
        assert_eq!(tally.answers(), [("unframed".to_string(), 1), ("408".to_string(), 3)]);
        assert_eq!(tally.close_spread(), None);
        tally.closed_after = [1000, 1010, 1020, 1500].map(Duration::from_millis).to_vec();
        let spread = [1000, 1010, 1500].map(Duration::from_millis);
        assert_eq!(tally.close_spread(), Some(spread));
    }

    #[test]
    fn progress_moves_with_time_and_bytes_before_any_slowloris_ends() {
        let target = Target::parse("http://127.0.0.1:8080").unwrap();
        let mut run = Run::new(&target, 298).unwrap();
        let trickled = |n| Slow { key: None, connected: true, opened: Instant::now(), answer: None, trickled: n };
        run.watch.slow.extend([trickled(7000), trickled(500)]);
        let line = run.status(Duration::from_millis(5000), Duration::from_secs(20));
        assert_eq!(line, "5.0 s of 20s: 7500 bytes trickled, 0 of 300 ended");
    }

    #[test]
    fn fresh_requests_in_flight_are_bounded_by_their_timeout() {
        assert_eq!(FRESH_IN_FLIGHT, 41);
        assert!(FRESH_EVERY * FRESH_IN_FLIGHT as u32 > FRESH_TIMEOUT);
    }
}
