//! The `longpoll` scenario: `--clients` followers hold polls on one topic, `--messages` are
//! published one per `--interval`, and every delivery is timed from its scheduled publish.
//! The server's `/stats` before the polls and once all are held says what a held poll costs;
//! with `--messages 1` the run is one fan-out, from the publish to the first and the last answer.
//! With `--transport sse` each follower holds an event stream instead, with `--transport ws` a
//! WebSocket subscribed to the topic, and the same figures say what an open stream or socket
//! costs. With `--also-url` the followers are spread round-robin over several servers that
//! share their topics (`--redis`), the publisher on `--url`: the server figures are their sums.
//!
//! ```text
//!   warm-up publish (the topic exists; its seq is every follower's starting cursor), and
//!   with --also-url, a wait until every other server has it too
//!   /stats "before"  ->  followers open and poll  ->  /stats until polls.held = N  ->  "held"
//!   publish i at t0 + i * interval  ->  every follower re-polls after each answer
//!   until every follower has every message, or the last publish + GRACE
//! ```
//!
//! `prepare`, `Follow::wait_ready` and `Follow::run_schedule` are shared with `realtime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use super::follow::{Follow, Followed, Plan, Style};
use super::host;
use super::report;
use super::servers::{Readings, Servers};
use super::{check_fd_budget, progress_bar, stat, Outcome, OutputArgs, Target};
use crate::config::parse_duration;

/// How long a long poll asks to be held: longer than any sensible publish interval, shorter
/// than tether's default `--max-poll-timeout` (120 s).
pub const LONG_HOLD: Duration = Duration::from_secs(60);
/// The longest publish schedule accepted: every run is bounded.
const MAX_SCHEDULE: Duration = Duration::from_secs(3600);

#[derive(Args, Debug)]
pub struct LongpollArgs {
    /// The server's base URL, like http://127.0.0.1:8080 (loopback only); every publish goes here.
    #[arg(long)]
    pub url: String,
    /// Another server's base URL (repeatable): the followers are spread round-robin over --url
    /// and these, which must share its topics (tether --redis on one Redis).
    #[arg(long, value_name = "URL")]
    pub also_url: Vec<String>,
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
    /// How followers wait for news: each holds a poll, an event stream (`GET /events/T`), or a
    /// WebSocket subscribed to the topic (`GET /ws`).
    #[arg(long, value_enum, default_value = "poll")]
    pub transport: Transport,
    /// The server's process, whose CPU time and peak RSS are read (repeatable: those of every
    /// server, and Redis's to count its CPU too) [default: the ones holding the sockets that
    /// listen on the URLs' ports].
    #[arg(long, value_name = "PID")]
    pub server_pid: Vec<i32>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Poll,
    Sse,
    Ws,
}

impl Transport {
    /// What the server holds for each follower, the JSON key of its cost in RSS, and the
    /// followers' style, in the report.
    fn held(self) -> (&'static str, &'static str, Style) {
        match self {
            Transport::Poll => ("held poll", "user_bytes_per_held_poll", Style::Long { hold: LONG_HOLD }),
            Transport::Sse => ("open stream", "user_bytes_per_open_stream", Style::Sse),
            Transport::Ws => ("open socket", "user_bytes_per_open_socket", Style::WebSocket),
        }
    }
}

pub fn run(args: &LongpollArgs) -> Result<Outcome, String> {
    let target = Target::parse(&args.url)?;
    let also = args.also_url.iter().map(|url| Target::parse(url)).collect::<Result<Vec<_>, _>>()?;
    check_arguments(args.clients, args.messages, args.interval)?;
    let mut servers = Servers::new(target, also);
    let topic = args.topic.clone().unwrap_or_else(|| default_topic("longpoll"));
    let plan = prepare(&mut servers, &topic, args.clients, args.messages, args.interval)?;
    let (_, user_bytes, style) = args.transport.held();
    let mut follow = Follow::new(Plan { style, ..plan })?;
    // The control and publisher connections and the topic are part of the baseline. The first
    // /stats is a barrier: once it is answered, the server has accepted the publisher.
    servers.stats()?;
    let before = servers.stats()?;
    // `Slab:` of /proc/meminfo: the kernel's object caches, host-wide (0 if unreadable).
    let slab = || host::meminfo_bytes("Slab:").map_or(0, |bytes| bytes as i64);
    let slab_before = slab();
    follow.wait_ready(&mut servers, &before)?;
    let held = servers.stats()?;
    let slab_growth = slab() - slab_before;
    let addrs: Vec<_> = servers.targets().iter().map(|target| target.addr).collect();
    let pids = host::server_pids(&args.server_pid, &addrs);
    let peak_held = host::status_bytes(&pids, "VmHWM:");
    let progress = progress_bar(args.messages as u64, args.interval * args.messages as u32, "publishing");
    follow.run_schedule(&pids, |published| progress.set_position(published))?;
    progress.finish_and_clear();
    let followed = follow.finish();
    let after = servers.stats()?;

    // What the held polls (or open streams) cost the server, from its /stats before and once
    // they were held; the server's own time for the last publish's fan-out (parsing it to the
    // last answer handed to the kernel: beside the client's latency it shows which side is
    // slower); its peak resident memory (VmHWM) once the polls were held and at the end: what
    // answering them cost beyond holding them; its CPU time per delivery over the schedule.
    // With several servers each figure is their sum, the fan-out the longest of theirs (they
    // fan out side by side) and its time per answer their total over every answer.
    let growth = |pointer: &str| held.sum(pointer) as i64 - before.sum(pointer) as i64;
    let per_client = |bytes: i64| report::round(bytes as f64 / args.clients as f64, 1);
    let (fanout_us, woken) = (after.max("/polls/last_fanout_us"), after.sum("/polls/last_fanout_woken"));
    let fanout_total_us = after.sum("/polls/last_fanout_us");
    let peak_end = host::status_bytes(&pids, "VmHWM:");
    let cpu_us = followed.cpu_us_per_message();
    let server = json!({
        "fds_held": growth("/fds/open"), user_bytes: per_client(growth("/memory/rss_bytes")),
        "kernel_bytes_per_connection": per_client(growth("/kernel/tcp_mem_bytes")),
        "kernel_slab_bytes_per_connection": per_client(slab_growth),
        "last_fanout_us": fanout_us, "last_fanout_woken": woken,
        "fanout_us_per_answer": report::round(report::ratio(fanout_total_us, woken), 2),
        "peak_rss_bytes": {"pids": pids, "held": peak_held, "end": peak_end}, "cpu_us_per_message": cpu_us,
        "other_cpu_percent": followed.other_cpu_percent.map(|percent| report::round(percent, 1)),
    });
    let (pid, cpu) = (host::pid_list(&pids), followed.server_cpu.zip(cpu_us));
    let peak_rss = match (peak_held.map(|b| b / 1024), peak_end.map(|b| b / 1024)) {
        (Some(held), Some(end)) => format!("{held} KiB once all waited, {end} KiB at the end (VmHWM, pid {pid})"),
        _ => host::unknown(&pids, "status"),
    };
    let cpu = cpu.map_or_else(
        || host::unknown(&pids, "stat"),
        |(cpu, us)| {
            format!("{} over the schedule, {us:.1} µs per delivery (pid {pid}, in /proc's ticks)", report::human(cpu))
        },
    );
    let spread = spread(&servers, style, [&before, &held, &after]);
    Ok(outcome(args, &topic, followed, &server, spread, [peak_rss, cpu]))
}

/// Each server's share, in order: its URL, what it held for the followers (the growth of the
/// style's `/stats` figure from `before` to `held`) and its own last fan-out, `after`.
fn spread(servers: &Servers, style: Style, [before, held, after]: [&Readings; 3]) -> Vec<Value> {
    let pointer = style.held().unwrap_or("/polls/held");
    let each = (servers.targets().iter()).zip(before.each().iter().zip(held.each()).zip(after.each()));
    let share = |(target, ((before, held), after)): (&Target, ((&Value, &Value), &Value))| {
        json!({
            "url": format!("http://{}{}", target.url.authority(), target.base_path()),
            "held": stat(held, pointer).saturating_sub(stat(before, pointer)),
            "last_fanout_us": stat(after, "/polls/last_fanout_us"),
            "last_fanout_woken": stat(after, "/polls/last_fanout_woken"),
        })
    };
    each.map(share).collect()
}

/// `N held polls on URL (publishes, fan-out T), N on URL (fan-out T)`.
fn shares(spread: &[Value], held: &str) -> String {
    let share = |(i, server): (usize, &Value)| {
        let (count, url) = (&server["held"], server["url"].as_str().unwrap_or("?"));
        let took = report::human_us(server["last_fanout_us"].as_f64().unwrap_or(0.0));
        let (what, publishes) = if i == 0 { (format!(" {held}s"), "publishes, ") } else { (String::new(), "") };
        format!("{count}{what} on {url} ({publishes}fan-out {took})")
    };
    spread.iter().enumerate().map(share).collect::<Vec<_>>().join(", ")
}

/// What `requests` counts beside requests, for a style that sends frames too.
pub(super) fn counted(style: Style) -> &'static str {
    match style {
        Style::WebSocket => ": the upgrades, and the frames sent (subscribes, pongs)",
        _ => "",
    }
}

/// The CPU the rest of the host used over the schedule, for the report.
pub(super) fn other_load(percent: Option<f64>) -> String {
    percent.map_or("unknown (no server pid, or /proc/stat unreadable)".into(), |percent| {
        format!("{percent:.1} % of a core beside the server and the generator (/proc/stat; a few % at most: quiet)")
    })
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

/// Publishes a warm-up message to the publisher's server, so that the topic exists and every
/// follower can start after a known sequence number (a short poll asks from one before it), and
/// waits until every other server has it. The plan asks by long polling.
pub(super) fn prepare(
    servers: &mut Servers,
    topic: &str,
    clients: usize,
    messages: usize,
    interval: Duration,
) -> Result<Plan, String> {
    let (target, control) = servers.publisher();
    let path = format!("{}/publish/{topic}", target.base_path());
    let reply = control.post(&path, b"warm-up").map_err(|e| format!("POST {path}: {e}"))?;
    if reply.status != 200 {
        return Err(format!("POST {path} answered {} {}: {}", reply.status, reply.reason, reply.text().trim()));
    }
    let json: Value = serde_json::from_slice(&reply.body).map_err(|e| format!("POST {path}: not JSON: {e}"))?;
    let after = json["seq"].as_u64().ok_or_else(|| format!("POST {path}: no seq in {json}"))?;
    servers.wait_in_step(topic, after)?;
    let (servers, topic, style) = (servers.targets().to_vec(), topic.to_string(), Style::Long { hold: LONG_HOLD });
    Ok(Plan { servers, topic, clients, messages, interval, style, after })
}

/// The report, with the server's figures as `run` put them in the JSON, and its peak RSS and CPU
/// told.
fn outcome(
    args: &LongpollArgs,
    topic: &str,
    followed: Followed,
    server: &Value,
    spread: Vec<Value>,
    told: [String; 2],
) -> Outcome {
    let ([peak_rss, cpu], (held, user_bytes, style)) = (told, args.transport.held());
    let shares = (spread.len() > 1).then(|| shares(&spread, held));
    let expected = (args.clients * args.messages) as u64;
    let summary = followed.latency.summary();
    let mut latency_us = summary.to_json();
    // The first delivery: with one message, how soon the fan-out's first answer arrived.
    latency_us["min"] = json!(report::round(followed.latency.min_us(), 1));
    let json = json!({
        "scenario": "longpoll", "transport": args.transport.to_possible_value().map(|v| v.get_name().to_owned()),
        "topic": topic, "clients": args.clients, "messages": args.messages, "reconnects": followed.reconnects,
        "interval_ms": args.interval.as_millis() as u64, "delivered": followed.delivered,
        "errors": followed.errors.total(), "latency_us": latency_us, "requests": followed.traffic.requests,
        "empty_responses": followed.empty, "connections_opened": followed.opened, "server": server,
        "servers": spread,
    });
    let figure = |key: &str| server[key].as_f64().unwrap_or(0.0);
    let bytes = |key: &str, what: &str| format!("{:.0} B per {what}", figure(key));
    let (delivered, clients, messages) = (followed.delivered, args.clients, args.messages);
    let (requests, empty, reconnects) = (followed.traffic.requests, followed.empty, followed.reconnects);
    let in_order = if delivered == expected { "all, in order" } else { "MISSING OR OUT OF ORDER" };
    let [p50, p90, p99, max] = summary.human();
    let (took, woken, each) = (figure("last_fanout_us"), &server["last_fanout_woken"], figure("fanout_us_per_answer"));
    let fanout =
        format!("{} for the last publish, to {woken} {held}s: {each:.1} µs per answer", report::human_us(took));
    let slab = bytes("kernel_slab_bytes_per_connection", "connection (/proc/meminfo Slab: host-wide, both ends)");
    let rows = [
        ("delivered", format!("{delivered} of {expected} ({clients} x {messages}): {in_order}")),
        ("errors", format!("{} {}", followed.errors.total(), followed.errors.breakdown())),
        ("latency min", report::human_us(followed.latency.min_us())),
        ("latency p50", p50),
        ("latency p90", p90),
        ("latency p99", p99),
        ("latency max", max),
        ("server fan-out", format!("{fanout} (its polls.last_fanout_us)")),
        ("servers", shares.unwrap_or_default()),
        ("requests", format!("{requests} ({empty} empty answers, {reconnects} reconnects){}", counted(style))),
        ("fds held", format!("{} by the server for {clients} {held}s", server["fds_held"])),
        ("user bytes", bytes(user_bytes, &format!("{held} (server RSS growth / clients)"))),
        ("kernel bytes", bytes("kernel_bytes_per_connection", "connection in socket buffers (sockstat TCP mem)")),
        ("kernel slab", slab),
        ("server peak RSS", peak_rss),
        ("server CPU", cpu),
        ("other load", other_load(followed.other_cpu_percent)),
    ];
    let table = format!(
        "longpoll: {clients} {} clients on topic {topic}, {messages} messages, one every {:?}\n\
         latency: scheduled publish -> answer or event read by the client (no coordinated omission)\n{}",
        style.name(),
        args.interval,
        report::lines(rows.into_iter().filter(|(_, value)| !value.is_empty()))
    );
    let title = "longpoll: delivery latency".into();
    let distributions = vec![(style.name().to_string(), followed.latency)];
    Outcome { json, table, title, distributions, nothing_measured: None }
}
