//! What an `exhaust` run measured, and how it is told: refusals counted by kind, the JSON
//! document and the report.
//!
//! Invariants:
//! - Every figure in the report is one the JSON carries.
//! - A refusal is counted once, under one kind; `Tally::total` is the sum of the kinds.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::probe::{Refusal, Reply};
use super::{ExhaustArgs, DELIVERY_BOUND, KNOCKERS};
use crate::bench::report::{human_us, round};
use crate::bench::{Outcome, Target};

/// Refusals by kind.
#[derive(Debug, Default)]
pub struct Tally {
    unavailable: u64,
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
            Refusal::Unavailable { retry_after } => {
                self.unavailable += 1;
                *self.retry_after.entry(retry_after.clone()).or_default() += 1;
            }
            Refusal::Status(status) => *self.status.entry(*status).or_default() += 1,
            Refusal::Reset => self.reset += 1,
            Refusal::Closed => self.closed += 1,
            Refusal::Hang => self.hang += 1,
            Refusal::ConnectTimeout => self.connect_timeout += 1,
            Refusal::ConnectError => self.connect_error += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.unavailable
            + self.status.values().sum::<u64>()
            + self.reset
            + self.closed
            + self.hang
            + self.connect_timeout
            + self.connect_error
    }

    /// `48 503 (Retry-After: 1 x48), 2 closed without an answer`, or `none`.
    pub fn breakdown(&self) -> String {
        let mut kinds = Vec::new();
        if self.unavailable > 0 {
            let after: Vec<String> = self.retry_after.iter().map(|(value, n)| format!("{value} x{n}")).collect();
            kinds.push(format!("{} 503 (Retry-After: {})", self.unavailable, after.join(", ")));
        }
        kinds.extend(self.status.iter().map(|(status, n)| format!("{n} {status}")));
        for (n, kind) in [
            (self.reset, Refusal::Reset),
            (self.closed, Refusal::Closed),
            (self.hang, Refusal::Hang),
            (self.connect_timeout, Refusal::ConnectTimeout),
            (self.connect_error, Refusal::ConnectError),
        ] {
            if n > 0 {
                kinds.push(format!("{n} {}", kind.describe()));
            }
        }
        if kinds.is_empty() {
            "none".into()
        } else {
            kinds.join(", ")
        }
    }

    /// Refusals of newcomers that never connected: nothing of the server's was seen.
    pub fn unconnected(&self) -> u64 {
        self.connect_timeout + self.connect_error
    }

    pub fn to_json(&self) -> Value {
        let retry_after: serde_json::Map<String, Value> =
            self.retry_after.iter().map(|(value, n)| (value.clone(), json!(n))).collect();
        let status: serde_json::Map<String, Value> =
            self.status.iter().map(|(status, n)| (status.to_string(), json!(n))).collect();
        json!({
            "total": self.total(), "status_503": self.unavailable, "retry_after": retry_after,
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

/// The old keep-alive connection at the limit.
pub enum Keepalive {
    /// The server closed it while it sat idle: reclaimed to make room (docs/architecture.md,
    /// "Limits").
    ClosedWhileIdle,
    Asked(Reply),
}

pub struct Cpu {
    pub pids: Vec<i32>,
    pub percent: Option<f64>,
    pub window: Duration,
}

pub struct Measured {
    pub max: usize,
    pub open_file_limit: u64,
    pub fill_timed_out: bool,
    pub held_at_limit: usize,
    pub held_after_window: usize,
    pub keepalive: Keepalive,
    pub cpu: Cpu,
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
        Reply::Answer { status, took, .. } => {
            json!({"status": status, "ms": round(took.as_secs_f64() * 1e3, 2)})
        }
        Reply::Failed(refusal) => json!({"failed": refusal.describe()}),
    }
}

pub fn outcome(args: &ExhaustArgs, target: &Target, topic: &str, m: &Measured) -> Outcome {
    let c = &m.counts;
    let ms = |d: Duration| round(d.as_secs_f64() * 1e3, 2);
    let keepalive_json = match &m.keepalive {
        Keepalive::ClosedWhileIdle => json!({"outcome": "closed_while_idle"}),
        Keepalive::Asked(reply) => json!({"outcome": if reply.is_ok() { "answered" } else { "failed" },
                                          "reply": reply_json(reply)}),
    };
    let at_limit = match &m.keepalive {
        Keepalive::Asked(reply) => server_figures(reply),
        Keepalive::ClosedWhileIdle => None,
    };
    let json = json!({
        "scenario": "exhaust",
        "url": args.url,
        "topic": topic,
        "limit_reached": c.first_refusal.is_some(),
        "max": m.max,
        "max_requested": args.max,
        "open_file_limit": m.open_file_limit,
        "newcomers": c.opened,
        "fill_timed_out": m.fill_timed_out,
        "first_refusal": c.first_refusal.as_ref().map(|f| json!({
            "held": f.held, "newcomer": f.newcomer, "kind": f.kind.describe(),
        })),
        "refusals": c.refused.to_json(),
        "held": {
            "at_first_refusal": c.first_refusal.as_ref().map(|f| f.held),
            "peak": c.held_peak, "at_limit": m.held_at_limit, "after_window": m.held_after_window,
            "lost": c.lost.to_json(), "answered_early": c.answered_early,
        },
        "keepalive": keepalive_json,
        "cpu": {
            "pids": m.cpu.pids, "percent": m.cpu.percent.map(|p| round(p, 1)),
            "window_s": m.cpu.window.as_secs_f64(), "knockers": KNOCKERS, "knocker_refusals": c.knocked.to_json(),
        },
        "publish": {
            "via": m.publish.via, "reply": reply_json(&m.publish.reply), "released": c.released,
            "held_at_publish": m.publish.held, "delivered": c.delivered, "answered_other": c.answered_other,
            "last_delivery_ms": m.last_delivery.map(ms),
        },
        "after": {"ok": m.after.reply.is_ok(), "attempts": m.after.attempts, "ms": ms(m.after.took),
                  "reply": reply_json(&m.after.reply)},
        "server_stats": {"at_limit": at_limit, "after": server_figures(&m.after.reply)},
    });
    let nothing_measured = (c.held_peak == 0 && c.refused.total() == c.refused.unconnected())
        .then(|| format!("no newcomer connected to {}: nothing was measured", target.addr));
    Outcome {
        table: table(args, target, topic, m, at_limit.as_ref()),
        json,
        title: String::new(),
        distributions: vec![],
        nothing_measured,
    }
}

pub fn table(args: &ExhaustArgs, target: &Target, topic: &str, m: &Measured, at_limit: Option<&Value>) -> String {
    let c = &m.counts;
    // Without a refusal there was no limit: the figures are of wherever the fill stopped.
    let at = if c.first_refusal.is_some() { "at the limit" } else { "when the fill ended" };
    let mut rows: Vec<(&str, String)> = Vec::new();
    let first = match &c.first_refusal {
        Some(f) => format!("after {} held polls, at newcomer {}: {}", f.held, f.newcomer, f.kind.describe()),
        None if m.fill_timed_out => format!("none: {} newcomers opened before the fill's time bound", c.opened),
        None => format!("none: all {} newcomers were held (--max {})", c.opened, m.max),
    };
    rows.push(("first refusal", first));
    rows.push(("refused", format!("{} of {} newcomers: {}", c.refused.total(), c.opened, c.refused.breakdown())));
    rows.push((
        "held",
        format!("{} at most, {} {at}, {} after the window", c.held_peak, m.held_at_limit, m.held_after_window),
    ));
    if let Some(stats) = at_limit {
        let n = |key: &str| stats[key].to_string();
        rows.push((
            "server /stats",
            format!(
                "{at}: {} connections open, {} polls held, {} of {} fds",
                n("connections_open"),
                n("polls_held"),
                n("fds_open"),
                n("fds_limit")
            ),
        ));
    }
    rows.push((
        "keep-alive",
        match &m.keepalive {
            Keepalive::ClosedWhileIdle => "opened before filling: closed by the server while idle (reclaimed)".into(),
            Keepalive::Asked(reply) => {
                format!("GET /stats on a connection opened before filling: {}", reply.describe())
            }
        },
    ));
    let cpu = match (m.cpu.percent, m.cpu.pids.is_empty()) {
        (Some(percent), _) => format!("{percent:.1} % of one core"),
        (None, true) => "unknown (no pid: give --server-pid)".into(),
        (None, false) => "unknown (its /proc/PID/stat is unreadable)".into(),
    };
    let pids: Vec<String> = m.cpu.pids.iter().map(i32::to_string).collect();
    rows.push((
        "server CPU",
        format!(
            "{cpu} over {:.1} s {at}, {KNOCKERS} newcomers knocking (pid {})",
            m.cpu.window.as_secs_f64(),
            if pids.is_empty() { "unknown".into() } else { pids.join(", ") }
        ),
    ));
    rows.push(("knockers", c.knocked.breakdown()));
    rows.push(("lost", format!("{} held polls ended unanswered: {}", c.lost.total(), c.lost.breakdown())));
    let via = match (m.publish.via, c.released) {
        ("keepalive", _) => "on the keep-alive connection".to_string(),
        (_, released) => format!("on a new connection, after closing {released} held poll"),
    };
    rows.push(("publish", format!("{} {via}", m.publish.reply.describe())));
    let last =
        m.last_delivery.map_or(String::new(), |d| format!(" (the last after {})", human_us(d.as_secs_f64() * 1e6)));
    rows.push((
        "delivered",
        format!("{} of {} held polls within {} s{last}", c.delivered, m.publish.held, DELIVERY_BOUND.as_secs()),
    ));
    rows.push((
        "after",
        format!(
            "all closed; a fresh GET /stats: {} ({} in {})",
            m.after.reply.describe(),
            if m.after.attempts == 1 { "1 attempt".to_string() } else { format!("{} attempts", m.after.attempts) },
            human_us(m.after.took.as_secs_f64() * 1e6)
        ),
    ));
    if let Some(stats) = server_figures(&m.after.reply) {
        let n = |key: &str| stats[key].to_string();
        rows.push((
            "server counted",
            format!(
                "accepted {}, rejected {}, reclaimed {}, polls rejected {} (its /stats)",
                n("accepted"),
                n("rejected"),
                n("reclaimed"),
                n("polls_rejected")
            ),
        ));
    }
    let clamped = if m.max < args.max {
        format!(" (--max {} lowered to this process's open-file limit {} less a margin)", args.max, m.open_file_limit)
    } else {
        String::new()
    };
    let mut text = format!(
        "exhaust: held polls on topic {topic} at {}, up to {} newcomers{clamped}\n\
         each newcomer: GET /plaintext then GET /poll in one write; no answer within {:?} is a hang\n",
        target.addr, m.max, args.hang
    );
    if m.fill_timed_out {
        text.push_str("the fill stopped at its time bound\n");
    }
    if c.first_refusal.is_none() {
        let _ = writeln!(
            text,
            "no limit reached: the server refused no newcomer; raise --max, or lower the server's --max-connections"
        );
    }
    for (name, value) in rows {
        let _ = writeln!(text, "{name:<16}{}", value.trim_end());
    }
    text
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
