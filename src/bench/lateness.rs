//! The `lateness` scenario: how close to its deadline the server ends a held poll. `--clients`
//! polls wait on a topic nobody publishes to, each asking for a hold time of its own, spread
//! evenly over `[1s, 1s + --spread]` and handed out in a shuffled order, so that deadlines do not
//! follow the order in which the connections opened. Each is answered `timeout` when its hold
//! ends; its lateness is when the answer was read less (when the request was written + hold).
//!
//! ```text
//!   open    N connections, CONNECTS_PER_TURN per turn; each writes, once connected,
//!             GET /poll/T?timeout=Hms            (no cursor: wait for the next message)
//!   wait    answers read as they come, each timed on its event
//!   end     every poll answered or failed, or the longest hold + the opening + GRACE
//! ```
//!
//! Invariants:
//! - A poll's connection is closed once it has ended, and never reopened: one answer each.
//! - A hold is timed from the moment its request was written whole. The server reads it later,
//!   never earlier, so the generator's own delays can make an answer look late but never early:
//!   an answer early by more than `EARLY_SLACK` is the server's doing.
//! - Lateness is kept exact and signed (one value per poll, sorted), not in a histogram.
//! - Bounded: N sockets (checked against the open-file limit); the run as above.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use super::conn::ConnError;
use super::engine::{self, Engine, Gone, Load};
use super::frame::Frame;
use super::longpoll::default_topic;
use super::report::{self, nearest_rank, round, Errors, Table};
use super::{check_fd_budget, stat, timed_bar, Outcome, Target};
use crate::backoff::XorShift;
use crate::config::parse_duration;

/// The shortest hold tether grants (`timeout=` is clamped to at least a second).
const MIN_HOLD: Duration = Duration::from_secs(1);
/// The longest `--spread`: the longest hold is then tether's default `--max-poll-timeout`, 120 s.
const MAX_SPREAD: Duration = Duration::from_secs(119);
/// Connections started per turn (the engine's budget). Between batches the loop reads the
/// answers already due, and the server has fewer newcomers to accept before it reaches its
/// timers: with 256 per turn (as `follow` opens), the polls whose deadline fell during the
/// opening of 15,000 were answered up to 180–500 ms late, against 78–84 ms with 64
/// (docs/lab.md, `lateness`).
const CONNECTS_PER_TURN: usize = 64;
/// After the longest hold, how long answers may still take.
const GRACE: Duration = Duration::from_secs(5);
/// tether's clock is whole milliseconds: an answer this early is within its rounding.
const EARLY_SLACK: Duration = Duration::from_millis(1);
/// The longest the loop sleeps, so the progress and the run's bound are seen on time.
const TICK: Duration = Duration::from_millis(100);
/// Fixed, so that every run hands out the same hold times in the same order.
const SHUFFLE_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Args, Debug)]
pub struct LatenessArgs {
    /// The server's base URL, like http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    pub url: String,
    /// Polls, each on a connection of its own (bounded by the open-file limit).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Hold times are spread evenly over 1s to 1s + this (at most 119s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub spread: Duration,
    /// The topic, on which nothing may be published [default: a new one per run,
    /// bench-lateness-PID-TIME].
    #[arg(long)]
    pub topic: Option<String>,
    /// Print one JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &LatenessArgs) -> Result<Outcome, String> {
    let target = Target::parse(&args.url)?;
    if args.clients == 0 || args.spread > MAX_SPREAD {
        return Err(format!("--clients must be at least 1 and --spread at most {MAX_SPREAD:?}"));
    }
    check_fd_budget("--clients", args.clients, args.clients)?;
    target.check_listening()?;
    let topic = args.topic.clone().unwrap_or_else(|| default_topic("lateness"));
    let holds = hold_times(args.clients, args.spread);
    let mut engine = Engine::new(target.addr, CONNECTS_PER_TURN)?;
    for (index, hold) in holds.iter().enumerate() {
        let path = format!("{}/poll/{topic}?timeout={}ms", target.base_path(), hold.as_millis());
        engine.open(index, target.get(&path, "").as_bytes());
    }
    let mut polls =
        Polls { holds: holds.iter().map(|&hold| Hold { hold, phase: Phase::Asking }).collect(), ..Polls::default() };
    let longest = MIN_HOLD + args.spread;
    let started = Instant::now();
    let deadline = started + engine::opening_bound(args.clients) + longest + GRACE;
    let progress = timed_bar(longest, "lateness");
    while polls.ended < holds.len() && Instant::now() < deadline {
        engine.turn(&mut polls, TICK.min(deadline.saturating_duration_since(Instant::now())))?;
        progress.set_position(started.elapsed().as_millis() as u64);
        progress.set_message(format!("{} of {} polls ended", polls.ended, holds.len()));
    }
    progress.finish_and_clear();
    let stats = target.stats(&mut target.control())?;
    Ok(outcome(args, &target, &topic, &polls, started, &stats))
}

/// `n` hold times, evenly spaced over `[MIN_HOLD, MIN_HOLD + spread]` in whole milliseconds,
/// shuffled (Fisher–Yates on a fixed seed).
fn hold_times(n: usize, spread: Duration) -> Vec<Duration> {
    let step = spread.as_millis() as u64;
    let last = (n as u64).saturating_sub(1).max(1);
    let mut holds: Vec<Duration> = (0..n as u64).map(|i| MIN_HOLD + Duration::from_millis(i * step / last)).collect();
    let mut rng = XorShift::new(SHUFFLE_SEED);
    for i in (1..holds.len()).rev() {
        holds.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    holds
}

/// Where one poll is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting to connect, connecting, or its request not yet written whole.
    Asking,
    /// Its request written whole at `sent`: the hold runs.
    Held { sent: Instant },
    /// Answered `timeout`, read whole at `at`.
    Answered { sent: Instant, at: Instant },
    /// Ended otherwise: counted in `errors`.
    Failed,
}

struct Hold {
    hold: Duration,
    phase: Phase,
}

/// What became of each poll: the scenario's side of the engine, where a connection's state is
/// its poll's index.
#[derive(Default)]
struct Polls {
    holds: Vec<Hold>,
    /// Polls answered or failed.
    ended: usize,
    /// When the last request was written whole: deadlines before it fell while connections were
    /// still being opened, when the server had accepting and parsing to do as well.
    all_sent: Option<Instant>,
    sent: usize,
    errors: Errors,
}

impl Load<usize> for Polls {
    /// The request of a poll is out whole: its hold runs from `now`.
    fn written(&mut self, engine: &mut Engine<usize>, key: usize, now: Instant) {
        let Some(hold) = engine.get(key).map(|open| &mut self.holds[open.state]) else {
            return;
        };
        if hold.phase == Phase::Asking {
            hold.phase = Phase::Held { sent: now };
            self.sent += 1;
            if self.sent == self.holds.len() {
                self.all_sent = Some(now);
            }
        }
    }

    /// The one answer a poll gets: a `timeout` at its deadline, or anything else, a failure.
    fn answered(&mut self, engine: &mut Engine<usize>, key: usize, frame: &Frame, now: Instant) {
        let timed_out = frame.status == 200 && is_timeout_answer(engine.bytes(key, &frame.body));
        let Some(index) = engine.close(key).map(|open| open.state) else {
            return;
        };
        let hold = &mut self.holds[index];
        self.ended += 1;
        match (hold.phase, timed_out) {
            (Phase::Held { sent }, true) => hold.phase = Phase::Answered { sent, at: now },
            (_, _) => {
                hold.phase = Phase::Failed;
                if frame.status == 200 {
                    self.errors.delivery += 1; // a message, or an answer that is not a poll's
                } else {
                    self.errors.status += 1;
                }
            }
        }
    }

    fn ended(&mut self, _engine: &mut Engine<usize>, _key: usize, gone: Gone<usize>, why: ConnError, _now: Instant) {
        log::debug!("poll {}: {why}", gone.state);
        self.errors.count(&why);
        self.holds[gone.state].phase = Phase::Failed;
        self.ended += 1;
    }
}

/// `at - deadline` in microseconds: negative when `at` came first.
fn signed_us(at: Instant, deadline: Instant) -> i64 {
    let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    us(at.saturating_duration_since(deadline)) - us(deadline.saturating_duration_since(at))
}

/// A 200 that is a poll's `timeout` with no message.
fn is_timeout_answer(body: &[u8]) -> bool {
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    answer["status"] == "timeout" && answer["messages"].as_array().is_some_and(Vec::is_empty)
}

/// The lateness of a set of polls, in microseconds, sorted.
struct Group {
    name: &'static str,
    late_us: Vec<i64>,
}

impl Group {
    /// All answered polls, those whose deadline fell while polls were still being opened, and
    /// the rest.
    fn split(late: &[(i64, bool)]) -> Vec<Group> {
        let pick = |name, filter: &dyn Fn(bool) -> bool| {
            let mut late_us: Vec<i64> = late.iter().filter(|(_, during)| filter(*during)).map(|(us, _)| *us).collect();
            late_us.sort_unstable();
            Group { name, late_us }
        };
        vec![
            pick("all", &|_| true),
            pick("deadline while opening", &|during| during),
            pick("deadline after opening", &|during| !during),
        ]
    }

    /// Answers earlier than the deadline by more than `EARLY_SLACK`.
    fn early(&self) -> usize {
        let slack = EARLY_SLACK.as_micros() as i64;
        self.late_us.iter().take_while(|&&us| us < -slack).count()
    }

    /// min, p50, p90, p99, max.
    fn percentiles(&self) -> Option<[i64; 5]> {
        let at = |q| nearest_rank(&self.late_us, q);
        Some([*self.late_us.first()?, at(0.5)?, at(0.9)?, at(0.99)?, *self.late_us.last()?])
    }

    fn to_json(&self) -> Value {
        let ms = |us: i64| round(us as f64 / 1e3, 3);
        let mut value = json!({"count": self.late_us.len(), "early": self.early()});
        // None of them when nothing was answered.
        for (key, us) in ["min", "p50", "p90", "p99", "max"].into_iter().zip(self.percentiles().into_iter().flatten()) {
            value[key] = json!(ms(us));
        }
        value
    }
}

/// The report of a run that began at `start`: every poll still open is counted as unanswered in
/// time.
fn outcome(args: &LatenessArgs, target: &Target, topic: &str, polls: &Polls, start: Instant, stats: &Value) -> Outcome {
    let (mut late, mut errors) = (Vec::new(), polls.errors);
    for hold in &polls.holds {
        match hold.phase {
            Phase::Answered { sent, at } => {
                let deadline = sent + hold.hold;
                let during_opening = polls.all_sent.is_none_or(|all| deadline < all);
                late.push((signed_us(at, deadline), during_opening));
            }
            Phase::Failed => {}
            Phase::Asking | Phase::Held { .. } => errors.timeout += 1,
        }
    }
    // From the start to the last request written, if every one was.
    let opening = polls.all_sent.map(|all| all.saturating_duration_since(start));
    let groups = Group::split(&late);
    let (answered, e, clients) = (groups[0].late_us.len(), &errors, args.clients);
    let groups_json: Value = groups.iter().map(|g| (g.name.replace(' ', "_"), g.to_json())).collect();
    let timed_out = stat(stats, "/polls/timed_out");
    let mut error_kinds = e.to_json(&["connect", "io", "malformed", "timeout", "status"]);
    error_kinds["not_a_timeout"] = json!(e.delivery);
    let json = json!({
        "scenario": "lateness", "url": args.url, "topic": topic, "clients": clients,
        "spread_ms": args.spread.as_millis() as u64, "opening_ms": opening.map(|d| report::ms(d, 1)),
        "answered": answered, "errors": e.total(), "error_kinds": error_kinds,
        "lateness_ms": groups_json, "server": {"polls_timed_out": timed_out},
    });
    let mut table = Table::new(&["polls", "count", "min", "p50", "p90", "p99", "max", "early"]);
    for group in &groups {
        let ms = |us: i64| format!("{:.2} ms", us as f64 / 1e3);
        let figures = group.percentiles().map_or(vec![String::new(); 5], |p| p.map(ms).to_vec());
        let (name, count, early) = (group.name.to_string(), group.late_us.len().to_string(), group.early().to_string());
        table.row([vec![name, count], figures, vec![early]].concat());
    }
    let opening = opening.map_or("not every request was written".into(), |d| {
        format!("every request written {:.2} s after the start", d.as_secs_f64())
    });
    let errors = if e.total() == 0 { "0".into() } else { e.breakdown().replace("delivery", "not a timeout") };
    let longest = MIN_HOLD + args.spread;
    let text = format!(
        "lateness: {clients} polls to {} on topic {topic}, holds {MIN_HOLD:?} to {longest:?} in shuffled order, \
         nothing published\n\
         lateness = answer read - (request written + hold); early = more than {EARLY_SLACK:?} before the deadline\n\
         {}{}",
        target.addr,
        report::lines([
            ("opened", format!("{clients} connections; {opening}")),
            ("answered", format!("{answered} of {clients} with timeout; errors: {errors}")),
            ("server", format!("polls.timed_out {timed_out} (its /stats, since it started)")),
        ]),
        table.render()
    );
    let nothing_measured = (answered == 0).then(|| format!("no poll was answered `timeout` by {}", target.addr));
    Outcome { json, table: text, nothing_measured, ..Outcome::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_times_cover_the_spread_evenly_in_shuffled_order() {
        let holds = hold_times(5, Duration::from_secs(4));
        let mut sorted = holds.clone();
        sorted.sort();
        assert_eq!(sorted, [1, 2, 3, 4, 5].map(Duration::from_secs));
        assert_ne!(holds, sorted, "shuffled");
        assert_eq!(holds, hold_times(5, Duration::from_secs(4)), "the same order every run");
        assert_eq!(hold_times(1, Duration::from_secs(4)), [MIN_HOLD]);
        assert_eq!(hold_times(3, Duration::ZERO), [MIN_HOLD; 3]);
    }

    #[test]
    fn lateness_is_signed_and_groups_count_the_early() {
        let now = Instant::now();
        let later = now + Duration::from_micros(2500);
        assert_eq!((signed_us(later, now), signed_us(now, later)), (2500, -2500));
        let groups = Group::split(&[(-2000, true), (-500, true), (300, false), (40_000, false)]);
        let summary: Vec<(&str, usize, usize)> = groups.iter().map(|g| (g.name, g.late_us.len(), g.early())).collect();
        assert_eq!(summary, [("all", 4, 1), ("deadline while opening", 2, 1), ("deadline after opening", 2, 0)]);
        assert_eq!(groups[0].percentiles(), Some([-2000, -500, 40_000, 40_000, 40_000]));
        assert_eq!(groups[0].to_json()["min"], json!(-2.0));
        assert_eq!(Group::split(&[])[0].percentiles(), None);
    }

    #[test]
    fn only_an_empty_timeout_is_a_timeout() {
        assert!(is_timeout_answer(br#"{"status":"timeout","cursor":0,"messages":[]}"#));
        assert!(!is_timeout_answer(br#"{"status":"ok","cursor":1,"messages":[{"seq":1,"data":"x"}]}"#));
        assert!(!is_timeout_answer(b"Hello, World!"));
    }
}
