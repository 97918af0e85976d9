//! What an `exhaust` run measured, and how it is told: refusals counted by kind, the JSON
//! document and the report.
//!
//! Invariants:
//! - Every figure in the report is one the JSON carries.
//! - A refusal is counted once, under one kind; `Tally::total` is the sum of the kinds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::probe::{Refusal, Reply};
use super::{ExhaustArgs, DELIVERY_BOUND, KNOCKERS};
use crate::bench::report::{self, breakdown, round};
use crate::bench::{host, Outcome, Target};

/// Refusals by kind (a 503 by its `Retry-After`).
#[derive(Debug, Default)]
pub struct Tally {
    retry_after: BTreeMap<String, u64>,
    status: BTreeMap<u16, u64>,
    reset: u64,
    closed: u64,
    hang: u64,
    connect_timeout: u64,
    connect_error: u64,
}

impl Tally {
    pub fn add(&mut self, refusal: &Refusal) {
        match refusal {
            Refusal::Unavailable { retry_after } => *self.retry_after.entry(retry_after.clone()).or_default() += 1,
            Refusal::Status(status) => *self.status.entry(*status).or_default() += 1,
            Refusal::Reset => self.reset += 1,
            Refusal::Closed => self.closed += 1,
            Refusal::Hang => self.hang += 1,
            Refusal::ConnectTimeout => self.connect_timeout += 1,
            Refusal::ConnectError => self.connect_error += 1,
        }
    }

    /// The kinds counted without detail.
    fn plain(&self) -> [(u64, Refusal); 5] {
        [
            (self.reset, Refusal::Reset),
            (self.closed, Refusal::Closed),
            (self.hang, Refusal::Hang),
            (self.connect_timeout, Refusal::ConnectTimeout),
            (self.connect_error, Refusal::ConnectError),
        ]
    }

    fn unavailable(&self) -> u64 {
        self.retry_after.values().sum()
    }

    pub fn total(&self) -> u64 {
        self.unavailable() + self.status.values().sum::<u64>() + self.plain().iter().map(|(n, _)| n).sum::<u64>()
    }

    /// `48 503 (Retry-After: 1 x48), 2 closed without an answer`, or `none`.
    pub fn breakdown(&self) -> String {
        let after: Vec<String> = self.retry_after.iter().map(|(value, n)| format!("{value} x{n}")).collect();
        let unavailable = (self.unavailable(), format!("503 (Retry-After: {})", after.join(", ")));
        let statuses = self.status.iter().map(|(status, n)| (*n, status.to_string()));
        let plain = self.plain().map(|(n, kind)| (n, kind.describe().to_string()));
        let text = breakdown(std::iter::once(unavailable).chain(statuses).chain(plain));
        Some(text).filter(|text| !text.is_empty()).unwrap_or_else(|| "none".into())
    }

    /// Refusals of newcomers that never connected: nothing of the server's was seen.
    pub fn unconnected(&self) -> u64 {
        self.connect_timeout + self.connect_error
    }

    pub fn to_json(&self) -> Value {
        let retry_after: Value = self.retry_after.iter().map(|(value, n)| (value.clone(), *n)).collect();
        let status: Value = self.status.iter().map(|(status, n)| (status.to_string(), *n)).collect();
        json!({
            "total": self.total(), "status_503": self.unavailable(), "retry_after": retry_after,
            "other_status": status, "reset": self.reset, "closed": self.closed, "hang": self.hang,
            "connect_timeout": self.connect_timeout, "connect_error": self.connect_error,
        })
    }
}

/// The first refusal: the lowest-numbered newcomer refused (with up to `WINDOW` in flight,
/// answers are read in no particular order, but the server accepts in the order of the
/// connects), its kind, and how many newcomers opened before it were held.
#[derive(Debug)]
pub struct FirstRefusal {
    pub held: usize,
    pub newcomer: usize,
    pub kind: Refusal,
}

/// What the fill counted, kept after its sockets are closed.
#[derive(Debug, Default)]
pub struct Counts {
    pub opened: usize,
    pub refused: Tally,
    pub knocked: Tally,
    pub first_refusal: Option<FirstRefusal>,
    pub held_peak: usize,
    /// Held polls that ended without an answer.
    pub lost: Tally,
    /// Held polls answered before the publish (a hold that ended: `status: timeout`).
    pub answered_early: u64,
    pub delivered: u64,
    /// Held polls answered 200 after the publish without the marker.
    pub answered_other: u64,
    /// Held polls closed by the bench to make room for the publish.
    pub released: usize,
}

/// The message published at the limit, and the connection it went on.
pub struct Publish {
    pub via: &'static str,
    pub reply: Reply,
    /// The polls that could receive it: held when it was sent (or answered by it already).
    pub held: usize,
    pub sent_at: Instant,
}

/// A fresh `GET /stats` after everything closed, retried for up to `RETRY_BOUND`.
pub struct After {
    pub reply: Reply,
    pub attempts: u32,
    pub took: Duration,
}

pub struct Measured {
    pub max: usize,
    pub open_file_limit: u64,
    pub fill_timed_out: bool,
    pub held_at_limit: usize,
    pub held_after_window: usize,
    /// The answer on the keep-alive connection opened before filling, at the limit; `None`
    /// when the server closed it while it sat idle: reclaimed to make room
    /// (docs/architecture.md, "Limits").
    pub keepalive: Option<Reply>,
    /// The server's processes, and their CPU over the window in percent of one core.
    pub pids: Vec<i32>,
    pub cpu: Option<f64>,
    pub publish: Publish,
    pub last_delivery: Option<Duration>,
    pub after: After,
    pub counts: Counts,
}

/// The figures of a tether `/stats` answer worth printing beside the run, if it is one.
pub fn server_figures(reply: &Reply) -> Option<Value> {
    let Reply::Answer { status: 200, body, .. } = reply else {
        return None;
    };
    let stats: Value = serde_json::from_slice(body).ok()?;
    let figure = |pointer: &str| stats.pointer(pointer).cloned().unwrap_or(Value::Null);
    Some(json!({
        "connections_open": figure("/connections/open"), "polls_held": figure("/polls/held"),
        "fds_open": figure("/fds/open"), "fds_limit": figure("/fds/limit"),
        "accepted": figure("/totals/accepted"), "rejected": figure("/totals/rejected"),
        "reclaimed": figure("/totals/closed/reclaimed"), "polls_rejected": figure("/polls/rejected"),
    }))
}

pub fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Answer { status, took, .. } => json!({"status": status, "ms": report::ms(*took, 2)}),
        Reply::Failed(refusal) => json!({"failed": refusal.describe()}),
    }
}

pub fn outcome(args: &ExhaustArgs, target: &Target, topic: &str, m: &Measured) -> Outcome {
    let c = &m.counts;
    let asked = |reply: &Reply| if reply.is_ok() { "answered" } else { "failed" };
    let keepalive_json = m.keepalive.as_ref().map_or(
        json!({"outcome": "closed_while_idle"}),
        |reply| json!({"outcome": asked(reply), "reply": reply_json(reply)}),
    );
    let stats = [m.keepalive.as_ref().and_then(server_figures), server_figures(&m.after.reply)];
    let first = c.first_refusal.as_ref();
    let json = json!({
        "scenario": "exhaust", "url": args.url, "topic": topic, "limit_reached": first.is_some(),
        "max": m.max, "max_requested": args.max, "open_file_limit": m.open_file_limit,
        "newcomers": c.opened, "fill_timed_out": m.fill_timed_out,
        "first_refusal": first.map(|f| json!({"held": f.held, "newcomer": f.newcomer, "kind": f.kind.describe()})),
        "refusals": c.refused.to_json(), "keepalive": keepalive_json,
        "held": {
            "at_first_refusal": first.map(|f| f.held),
            "peak": c.held_peak, "at_limit": m.held_at_limit, "after_window": m.held_after_window,
            "lost": c.lost.to_json(), "answered_early": c.answered_early,
        },
        "cpu": {
            "pids": m.pids, "percent": m.cpu.map(|p| round(p, 1)),
            "window_s": args.window.as_secs_f64(), "knockers": KNOCKERS, "knocker_refusals": c.knocked.to_json(),
        },
        "publish": {
            "via": m.publish.via, "reply": reply_json(&m.publish.reply), "released": c.released,
            "held_at_publish": m.publish.held, "delivered": c.delivered, "answered_other": c.answered_other,
            "last_delivery_ms": m.last_delivery.map(|d| report::ms(d, 2)),
        },
        "after": {"ok": m.after.reply.is_ok(), "attempts": m.after.attempts, "ms": report::ms(m.after.took, 2),
                  "reply": reply_json(&m.after.reply)},
        "server_stats": {"at_limit": stats[0], "after": stats[1]},
    });
    let nothing_measured = (c.held_peak == 0 && c.refused.total() == c.refused.unconnected())
        .then(|| format!("no newcomer connected to {}: nothing was measured", target.addr));
    Outcome { table: table(args, target, topic, m, &stats), json, nothing_measured, ..Outcome::default() }
}

/// The report; `stats` are the server's figures at the limit and after.
fn table(args: &ExhaustArgs, target: &Target, topic: &str, m: &Measured, stats: &[Option<Value>; 2]) -> String {
    let c = &m.counts;
    // Without a refusal there was no limit: the figures are of wherever the fill stopped.
    let at = if c.first_refusal.is_some() { "at the limit" } else { "when the fill ended" };
    let first = match &c.first_refusal {
        Some(f) => format!("after {} held polls, at newcomer {}: {}", f.held, f.newcomer, f.kind.describe()),
        None if m.fill_timed_out => format!("none: {} newcomers opened before the fill's time bound", c.opened),
        None => format!("none: all {} newcomers were held (--max {})", c.opened, m.max),
    };
    let (peak, at_limit, after_window) = (c.held_peak, m.held_at_limit, m.held_after_window);
    let mut rows = vec![
        ("first refusal", first),
        ("refused", format!("{} of {} newcomers: {}", c.refused.total(), c.opened, c.refused.breakdown())),
        ("held", format!("{peak} at most, {at_limit} {at}, {after_window} after the window")),
    ];
    if let Some(s) = &stats[0] {
        let (open, held, fds, limit) = (&s["connections_open"], &s["polls_held"], &s["fds_open"], &s["fds_limit"]);
        rows.push(("server /stats", format!("{at}: {open} connections open, {held} polls held, {fds} of {limit} fds")));
    }
    let keepalive = match &m.keepalive {
        None => "opened before filling: closed by the server while idle (reclaimed)".into(),
        Some(reply) => format!("GET /stats on a connection opened before filling: {}", reply.describe()),
    };
    rows.push(("keep-alive", keepalive));
    let cpu = m.cpu.map_or_else(|| host::unknown(&m.pids, "stat"), |percent| format!("{percent:.1} % of one core"));
    let (window, pids) = (args.window.as_secs_f64(), host::pid_list(&m.pids));
    rows.push(("server CPU", format!("{cpu} over {window:.1} s {at}, {KNOCKERS} newcomers knocking (pid {pids})")));
    rows.push(("knockers", c.knocked.breakdown()));
    rows.push(("lost", format!("{} held polls ended unanswered: {}", c.lost.total(), c.lost.breakdown())));
    let via = match m.publish.via {
        "keepalive" => "on the keep-alive connection".to_string(),
        _ => format!("on a new connection, after closing {} held poll", c.released),
    };
    rows.push(("publish", format!("{} {via}", m.publish.reply.describe())));
    let last = m.last_delivery.map_or(String::new(), |d| format!(" (the last after {})", report::human(d)));
    let (delivered, held, bound) = (c.delivered, m.publish.held, DELIVERY_BOUND.as_secs());
    rows.push(("delivered", format!("{delivered} of {held} held polls within {bound} s{last}")));
    let (reply, attempts, took) = (m.after.reply.describe(), m.after.attempts, report::human(m.after.took));
    let plural = if attempts == 1 { "" } else { "s" };
    rows.push(("after", format!("all closed; a fresh GET /stats: {reply} ({attempts} attempt{plural} in {took})")));
    if let Some(s) = &stats[1] {
        let (accepted, rejected, reclaimed) = (&s["accepted"], &s["rejected"], &s["reclaimed"]);
        let counted = format!("accepted {accepted}, rejected {rejected}, reclaimed {reclaimed}");
        rows.push(("server counted", format!("{counted}, polls rejected {} (its /stats)", s["polls_rejected"])));
    }
    let (limit, addr, max, hang) = (m.open_file_limit, target.addr, m.max, args.hang);
    let lowered = format!(" (--max {} lowered to this process's open-file limit {limit} less a margin)", args.max);
    let clamped = if max < args.max { lowered } else { String::new() };
    let mut text = format!(
        "exhaust: held polls on topic {topic} at {addr}, up to {max} newcomers{clamped}\n\
         each newcomer: GET /plaintext then GET /poll in one write; no answer within {hang:?} is a hang\n"
    );
    if m.fill_timed_out {
        text.push_str("the fill stopped at its time bound\n");
    }
    if c.first_refusal.is_none() {
        text +=
            "no limit reached: the server refused no newcomer; raise --max, or lower the server's --max-connections\n";
    }
    text + &report::lines(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_names_each_kind_and_its_retry_after() {
        let mut tally = Tally::default();
        assert_eq!((tally.total(), tally.breakdown().as_str()), (0, "none"));
        for refusal in [
            Refusal::Unavailable { retry_after: "1".into() },
            Refusal::Unavailable { retry_after: "1".into() },
            Refusal::Unavailable { retry_after: "2".into() },
            Refusal::Closed,
            Refusal::Hang,
            Refusal::Status(400),
        ] {
            tally.add(&refusal);
        }
        assert_eq!(tally.total(), 6);
        assert_eq!(
            tally.breakdown(),
            "3 503 (Retry-After: 1 x2, 2 x1), 1 400, 1 closed without an answer, 1 no answer (hang)"
        );
        let json = tally.to_json();
        assert_eq!((json["status_503"].as_u64(), json["retry_after"]["1"].as_u64()), (Some(3), Some(2)));
    }
}
