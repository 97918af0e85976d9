//! The `longpoll` scenario: `--clients` followers hold polls on one topic, `--messages` are
//! published one per `--interval`, and every delivery is timed from its scheduled publish.
//! The server's `/stats` before the polls and once all are held says what a held poll costs;
//! with `--messages 1` the run is one fan-out, from the publish to the first and the last answer.
//!
//! ```text
//!   warm-up publish (the topic exists; its seq is every follower's starting cursor)
//!   /stats "before"  ->  followers open and poll  ->  /stats until polls.held = N  ->  "held"
//!   publish i at t0 + i * interval  ->  every follower re-polls after each answer
//!   until every follower has every message, or the last publish + GRACE
//! ```
//!
//! `prepare`, `Follow::wait_ready` and `Follow::run_schedule` are shared with `realtime`.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{json, Value};

use super::follow::{Follow, Followed, Plan, Style};
use super::host;
use super::report;
use super::{check_fd_budget, stat, Outcome, OutputArgs, Progress, Target};
use crate::client::Client;
use crate::config::parse_duration;

/// How long a long poll asks to be held: longer than any sensible publish interval, shorter
/// than tether's default `--max-poll-timeout` (120 s).
pub const LONG_HOLD: Duration = Duration::from_secs(60);
/// The longest publish schedule accepted: every run is bounded.
const MAX_SCHEDULE: Duration = Duration::from_secs(3600);

#[derive(Args, Debug)]
pub struct LongpollArgs {
    /// The server's base URL, like http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    pub url: String,
    /// Followers, each holding one poll (one connection each, bounded by the open-file limit).
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Messages published.
    #[arg(long, default_value_t = 20)]
    pub messages: usize,
    /// The topic [default: a new one per run, bench-longpoll-PID-TIME].
    #[arg(long)]
    pub topic: Option<String>,
    /// Time between two publishes.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// The server's process, whose peak RSS is read [default: the one holding the socket that
    /// listens on --url's port].
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<i32>,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: &LongpollArgs) -> Result<Outcome, String> {
    let target = Target::parse(&args.url)?;
    check_arguments(args.clients, args.messages, args.interval)?;
    let mut control = target.control();
    let topic = args.topic.clone().unwrap_or_else(|| default_topic("longpoll"));
    let plan = prepare(&target, &mut control, &topic, args.clients, args.messages, args.interval)?;
    let plan = Plan { style: Style::Long { hold: LONG_HOLD }, ..plan };
    let mut follow = Follow::new(plan)?;
    // The control and publisher connections and the topic are part of the baseline. The first
    // /stats is a barrier: once it is answered, the server has accepted the publisher.
    target.stats(&mut control)?;
    let before = target.stats(&mut control)?;
    let slab_before = meminfo_slab_bytes();
    follow.wait_ready(stat(&before, "/polls/held"), || Ok(stat(&target.stats(&mut control)?, "/polls/held")))?;
    let held = target.stats(&mut control)?;
    let slab_held = meminfo_slab_bytes();
    let pids = args.server_pid.map_or_else(|| host::listening_pids(target.addr), |pid| vec![pid]);
    let peak_held = host::peak_rss_bytes(&pids);
    let progress = Progress::new(args.messages as u64, args.interval * args.messages as u32, "publishing");
    follow.run_schedule(|published| progress.set(published))?;
    progress.finish();
    let followed = follow.finish();
    let after = target.stats(&mut control)?;
    let mut cost = ServerCost::between(&before, &held, slab_held - slab_before, args.clients);
    cost.last_fanout_us = stat(&after, "/polls/last_fanout_us");
    cost.last_fanout_woken = stat(&after, "/polls/last_fanout_woken");
    let peak_end = host::peak_rss_bytes(&pids);
    cost.peak_rss = PeakRss { pids, held: peak_held, end: peak_end };
    Ok(outcome(args, &topic, followed, &cost))
}

/// Refuses what cannot run, before anything is opened.
pub(super) fn check_arguments(clients: usize, messages: usize, interval: Duration) -> Result<(), String> {
    if clients == 0 || messages == 0 {
        return Err("--clients and --messages must be at least 1".into());
    }
    if interval.is_zero() || interval * messages as u32 > MAX_SCHEDULE {
        return Err(format!("--messages x --interval must lie between 1ms and {MAX_SCHEDULE:?}"));
    }
    // Each follower needs a socket here and a descriptor in the server; the publisher one more.
    check_fd_budget("--clients", clients, clients + 1)
}

/// A topic name of its own for each run, so that runs never read each other's messages.
pub(super) fn default_topic(scenario: &str) -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() % 1_000_000_000);
    format!("bench-{scenario}-{}-{millis}", std::process::id())
}

/// Publishes a warm-up message, so that the topic exists and every follower can start after a
/// known sequence number (a short poll asks from one before it).
pub(super) fn prepare(
    target: &Target,
    control: &mut Client,
    topic: &str,
    clients: usize,
    messages: usize,
    interval: Duration,
) -> Result<Plan, String> {
    let path = format!("{}/publish/{topic}", target.base_path());
    let reply = control.post(&path, b"warm-up").map_err(|e| format!("POST {path}: {e}"))?;
    if reply.status != 200 {
        return Err(format!("POST {path} answered {} {}: {}", reply.status, reply.reason, reply.text().trim()));
    }
    let json: Value = serde_json::from_slice(&reply.body).map_err(|e| format!("POST {path}: not JSON: {e}"))?;
    let after = json["seq"].as_u64().ok_or_else(|| format!("POST {path}: no seq in {json}"))?;
    Ok(Plan {
        addr: target.addr,
        base_path: target.base_path().to_string(),
        authority: target.url.authority(),
        topic: topic.to_string(),
        clients,
        messages,
        interval,
        style: Style::Long { hold: LONG_HOLD },
        after,
    })
}

/// `Slab:` of `/proc/meminfo` in bytes: the kernel's object caches, host-wide (0 if unreadable).
fn meminfo_slab_bytes() -> i64 {
    host::meminfo_bytes("Slab:").map_or(0, |bytes| bytes as i64)
}

/// What the held polls cost the server, from its `/stats` before and after.
struct ServerCost {
    fds_held: i64,
    user_bytes_per_held_poll: f64,
    kernel_bytes_per_connection: f64,
    kernel_slab_bytes_per_connection: f64,
    /// The server's own time for the last publish's fan-out: parsing it to the last answer
    /// handed to the kernel. Beside the client's latency it shows which side is slower.
    last_fanout_us: u64,
    /// The polls that fan-out answered.
    last_fanout_woken: u64,
    peak_rss: PeakRss,
}

/// The server's peak resident memory (`VmHWM`) once the polls are held and at the end: what
/// answering them cost beyond holding them.
#[derive(Default)]
struct PeakRss {
    pids: Vec<i32>,
    held: Option<u64>,
    end: Option<u64>,
}

impl PeakRss {
    fn describe(&self) -> String {
        let kib = |bytes: u64| format!("{} KiB", bytes / 1024);
        match (self.held, self.end) {
            (Some(held), Some(end)) => {
                let pids: Vec<String> = self.pids.iter().map(i32::to_string).collect();
                format!("{} with the polls held, {} at the end (VmHWM, pid {})", kib(held), kib(end), pids.join(", "))
            }
            _ if self.pids.is_empty() => "unknown (no pid: give --server-pid)".into(),
            _ => "unknown (its /proc/PID/status is unreadable)".into(),
        }
    }
}

impl ServerCost {
    fn between(before: &Value, held: &Value, slab_growth: i64, clients: usize) -> ServerCost {
        let growth = |pointer: &str| stat(held, pointer) as i64 - stat(before, pointer) as i64;
        let per = |bytes: i64| report::round(bytes as f64 / clients as f64, 1);
        ServerCost {
            fds_held: growth("/fds/open"),
            user_bytes_per_held_poll: per(growth("/memory/rss_bytes")),
            kernel_bytes_per_connection: per(growth("/kernel/tcp_mem_bytes")),
            kernel_slab_bytes_per_connection: per(slab_growth),
            last_fanout_us: 0,
            last_fanout_woken: 0,
            peak_rss: PeakRss::default(),
        }
    }
}

fn outcome(args: &LongpollArgs, topic: &str, followed: Followed, cost: &ServerCost) -> Outcome {
    let expected = (args.clients * args.messages) as u64;
    let summary = followed.latency.summary();
    let mut latency_us = summary.to_json();
    // The first delivery: with one message, how soon the fan-out's first answer arrived.
    latency_us["min"] = json!(report::round(followed.latency.min_us(), 1));
    let per_answer_us = report::ratio(cost.last_fanout_us, cost.last_fanout_woken);
    let json = json!({
        "scenario": "longpoll",
        "topic": topic,
        "clients": args.clients,
        "messages": args.messages,
        "interval_ms": args.interval.as_millis() as u64,
        "delivered": followed.delivered,
        "errors": followed.errors.total(),
        "latency_us": latency_us,
        "requests": followed.traffic.requests,
        "empty_responses": followed.empty,
        "connections_opened": followed.opened,
        "server": {
            "fds_held": cost.fds_held,
            "user_bytes_per_held_poll": cost.user_bytes_per_held_poll,
            "kernel_bytes_per_connection": cost.kernel_bytes_per_connection,
            "kernel_slab_bytes_per_connection": cost.kernel_slab_bytes_per_connection,
            "last_fanout_us": cost.last_fanout_us,
            "last_fanout_woken": cost.last_fanout_woken,
            "fanout_us_per_answer": report::round(per_answer_us, 2),
            "peak_rss_bytes": {"pids": cost.peak_rss.pids, "held": cost.peak_rss.held, "end": cost.peak_rss.end},
        },
    });
    let in_order = if followed.delivered == expected { "all, in order" } else { "MISSING OR OUT OF ORDER" };
    let rows = [
        (
            "delivered",
            format!("{} of {expected} ({} x {}): {in_order}", followed.delivered, args.clients, args.messages),
        ),
        ("errors", format!("{} {}", followed.errors.total(), followed.errors.breakdown())),
        ("latency min", report::human_us(followed.latency.min_us())),
        ("latency p50", report::human_us(summary.p50_us)),
        ("latency p90", report::human_us(summary.p90_us)),
        ("latency p99", report::human_us(summary.p99_us)),
        ("latency max", report::human_us(summary.max_us)),
        (
            "server fan-out",
            format!(
                "{} for the last publish, to {} held polls: {:.1} µs per answer (its polls.last_fanout_us)",
                report::human_us(cost.last_fanout_us as f64),
                cost.last_fanout_woken,
                per_answer_us
            ),
        ),
        ("requests", format!("{} ({} empty answers)", followed.traffic.requests, followed.empty)),
        ("fds held", format!("{} by the server for {} polls", cost.fds_held, args.clients)),
        ("user bytes", format!("{:.0} B per held poll (server RSS growth / clients)", cost.user_bytes_per_held_poll)),
        (
            "kernel bytes",
            format!("{:.0} B per connection in socket buffers (sockstat TCP mem)", cost.kernel_bytes_per_connection),
        ),
        (
            "kernel slab",
            format!(
                "{:.0} B per connection (/proc/meminfo Slab: host-wide, both ends)",
                cost.kernel_slab_bytes_per_connection
            ),
        ),
        ("server peak RSS", cost.peak_rss.describe()),
    ];
    let mut text = format!(
        "longpoll: {} clients on topic {topic}, {} messages, one every {:?}\n\
         latency: scheduled publish -> answer read by the client (no coordinated omission)\n",
        args.clients, args.messages, args.interval
    );
    for (name, value) in rows {
        let _ = writeln!(text, "{name:<16}{}", value.trim_end());
    }
    Outcome {
        json,
        table: text,
        title: "longpoll: delivery latency".into(),
        distributions: vec![("long-poll".into(), followed.latency)],
        nothing_measured: None,
    }
}
