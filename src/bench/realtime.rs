//! The `realtime` scenario: one publish schedule delivered by short polling, by long polling, by
//! event streams and by WebSockets (`--modes`), one after the other, each on a topic of its own,
//! and the classic comparison table (purpose, connection, overhead, latency, cost per
//! connection), a column per style, filled in with what was measured.
//!
//! ```text
//!   short-poll  each client asks every --interval, at its own slot; answered at once
//!   long-poll   each client asks once and is held until a message comes; asks again
//!   sse         each client opens one event stream; every message is an event of it
//!   ws          each client opens one WebSocket and subscribes; every message is a frame
//!   each        --messages published over HTTP, one per --publish-interval (default 4 x
//!               --interval); the server's /stats before the clients open and once they are
//!               ready gives what a connection of the style costs it
//! ```
//!
//! Short polling is only worth comparing when clients ask more often than news comes: asking
//! exactly as often as messages are published, each poll finds about one message, and short
//! polling differs from long polling only in latency (half the interval). Hence the default
//! publish interval of four polls. How a short poll is made to answer at once on a server that
//! holds polls is in `follow`'s module doc.

use std::fmt::Write;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::follow::{Follow, Followed, Plan, Style};
use super::longpoll::{check_arguments, default_topic, prepare, LONG_HOLD};
use super::report::{self, Table};
use super::servers::{Readings, Servers};
use super::{host, progress_bar, Outcome, OutputArgs, Target};
use crate::config::parse_duration;

/// By default, messages are published once per this many short polls.
const POLLS_PER_PUBLISH: u32 = 4;

#[derive(Args, Debug)]
pub struct RealtimeArgs {
    /// The server's base URL, like http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    pub url: String,
    /// Clients, in each style.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Messages published, in each style.
    #[arg(long, default_value_t = 10)]
    pub messages: usize,
    /// How often a short-polling client asks.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Time between two publishes [default: 4 x --interval].
    #[arg(long, value_parser = parse_duration)]
    pub publish_interval: Option<Duration>,
    /// The topic prefix [default: a new one per run]; the styles use PREFIX-short, PREFIX-long,
    /// PREFIX-sse and PREFIX-ws.
    #[arg(long)]
    pub topic: Option<String>,
    /// The styles to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "short-poll,long-poll,sse,ws")]
    pub modes: Vec<Mode>,
    /// The server's process, whose CPU time is read [default: the one holding the socket that
    /// listens on --url's port].
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<i32>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A style as `--modes` spells it (`Style::name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    ShortPoll,
    LongPoll,
    Sse,
    Ws,
}

/// What one style's connections cost the server, per connection: from its `/stats` before they
/// opened and once they were ready, and the host's `Slab` growth meanwhile.
struct PerConnection {
    fds: f64,
    user_bytes: f64,
    kernel_bytes: f64,
    slab_bytes: f64,
}

impl PerConnection {
    fn between(before: &Readings, ready: &Readings, slab_growth: i64, clients: usize) -> PerConnection {
        let each = |growth: i64| growth as f64 / clients.max(1) as f64;
        let growth = |pointer: &str| each(ready.sum(pointer) as i64 - before.sum(pointer) as i64);
        PerConnection {
            fds: growth("/fds/open"),
            user_bytes: growth("/memory/rss_bytes"),
            kernel_bytes: growth("/kernel/tcp_mem_bytes"),
            slab_bytes: each(slab_growth),
        }
    }
}

pub fn run(args: &RealtimeArgs) -> Result<Outcome, String> {
    let target = Target::parse(&args.url)?;
    if args.interval.is_zero() {
        return Err("--interval must be greater than zero".into());
    }
    let publish_every = args.publish_interval.unwrap_or(args.interval * POLLS_PER_PUBLISH);
    check_arguments(args.clients, args.messages, publish_every)?;
    let prefix = args.topic.clone().unwrap_or_else(|| default_topic("realtime"));
    // Each mode once, where it was first given.
    let modes: Vec<Mode> =
        args.modes.iter().enumerate().filter(|(i, m)| !args.modes[..*i].contains(m)).map(|(_, m)| *m).collect();
    let total = publish_every * (args.messages * modes.len()) as u32;
    let progress = progress_bar((args.messages * modes.len()) as u64, total, "realtime");
    let pids = host::server_pids(args.server_pid.as_slice(), &[target.addr]);
    // `Slab:` of /proc/meminfo: the kernel's object caches, host-wide (0 if unreadable).
    let slab = || host::meminfo_bytes("Slab:").map_or(0, |bytes| bytes as i64);
    let mut deliveries = Vec::new();
    for (i, mode) in modes.into_iter().enumerate() {
        let mut servers = Servers::new(target.clone(), Vec::new());
        let (name, style) = match mode {
            Mode::ShortPoll => ("short", Style::Short { every: args.interval }),
            Mode::LongPoll => ("long", Style::Long { hold: LONG_HOLD }),
            Mode::Sse => ("sse", Style::Sse),
            Mode::Ws => ("ws", Style::WebSocket),
        };
        progress.set_prefix(style.name());
        let plan = prepare(&mut servers, &format!("{prefix}-{name}"), args.clients, args.messages, publish_every)?;
        let mut follow = Follow::new(Plan { style, ..plan })?;
        // A barrier: once it is answered, the server has accepted the publisher, which is part
        // of the baseline, as in `longpoll`.
        servers.stats()?;
        let (before, slab_before) = (servers.stats()?, slab());
        follow.wait_ready(&mut servers, &before)?;
        // The same barrier: short polls are ready when connected, perhaps not yet accepted.
        servers.stats()?;
        let ready = servers.stats()?;
        let per_connection = PerConnection::between(&before, &ready, slab() - slab_before, args.clients);
        let offset = (i * args.messages) as u64;
        follow.run_schedule(&pids, |published| progress.set_position(offset + published))?;
        deliveries.push((style, follow.finish(), per_connection));
    }
    progress.finish_and_clear();
    Ok(outcome(args, publish_every, deliveries))
}

fn outcome(args: &RealtimeArgs, publish_every: Duration, deliveries: Vec<(Style, Followed, PerConnection)>) -> Outcome {
    let names: Vec<&str> = deliveries.iter().map(|(style, ..)| style.name()).collect();
    let mut table = Table::text(&[&[""][..], &names].concat());
    let (mut modes, mut notes) = (Vec::new(), String::new());
    let mut rows: Vec<(&str, Vec<String>)> = [
        "Purpose",
        "Connection",
        "requests/msg",
        "empty answers",
        "wire B/msg",
        "server CPU/msg",
        "latency p50",
        "latency p99",
        "fds/connection",
        "user B/conn",
        "kernel B/conn",
        "kernel slab/conn",
        "other load",
    ]
    .map(|name| (name, Vec::new()))
    .into();
    let expected = (args.clients * args.messages) as u64;
    for (style, f, each) in &deliveries {
        let (name, s, errors, delivered) = (style.name(), f.latency.summary(), f.errors.total(), f.delivered);
        let (purpose, connection) = match style {
            Style::Short { every } => (format!("ask every {every:?}, answered at once"), "a request per poll"),
            Style::Long { .. } => ("ask once, held until news".to_string(), "each holds a request"),
            Style::Sse => ("ask once, each message an event".to_string(), "each holds a stream"),
            Style::WebSocket => ("subscribe once, each message a frame".to_string(), "each holds a socket"),
        };
        let (requests, bytes) = (f.traffic.requests_per(delivered), f.traffic.bytes_per(delivered));
        let cpu = f.cpu_us_per_message();
        let [p50, _, p99, _] = s.human();
        let other = f.other_cpu_percent.map_or("unknown".into(), |percent| format!("{percent:.1} % of a core"));
        let cells = [
            purpose,
            format!("{} opened, {connection}", f.opened),
            format!("{requests:.3}"),
            f.empty.to_string(),
            format!("{bytes:.0}"),
            cpu.map_or("unknown".into(), |us| format!("{us:.1} µs")),
            p50,
            p99,
            format!("{:.2}", each.fds),
            format!("{:.0}", each.user_bytes),
            format!("{:.0}", each.kernel_bytes),
            format!("{:.0}", each.slab_bytes),
            other,
        ];
        for ((_, row), cell) in rows.iter_mut().zip(cells) {
            row.push(cell);
        }
        if delivered != expected || errors > 0 || f.reconnects > 0 {
            let breakdown = f.errors.breakdown();
            let reconnects = f.reconnects;
            let _ = writeln!(
                notes,
                "{name}: delivered {delivered} of {expected}, errors {errors} {breakdown}, {reconnects} reconnects"
            );
        }
        modes.push(json!({
            "mode": name, "delivered": f.delivered, "requests": f.traffic.requests,
            "requests_per_message": report::round(requests, 3), "empty_responses": f.empty,
            "bytes_per_message": report::round(bytes, 1), "latency_us": s.to_json(),
            "connections_opened": f.opened, "errors": errors, "reconnects": f.reconnects,
            "server_cpu_us_per_message": cpu,
            "fds_per_connection": report::round(each.fds, 2),
            "user_bytes_per_connection": report::round(each.user_bytes, 1),
            "kernel_bytes_per_connection": report::round(each.kernel_bytes, 1),
            "kernel_slab_bytes_per_connection": report::round(each.slab_bytes, 1),
            "other_cpu_percent": f.other_cpu_percent.map(|percent| report::round(percent, 1)),
        }));
    }
    for (name, cells) in rows {
        table.row([vec![name.to_string()], cells].concat());
    }
    let json = json!({
        "scenario": "realtime", "clients": args.clients, "messages": args.messages,
        "interval_ms": args.interval.as_millis() as u64, "publish_interval_ms": publish_every.as_millis() as u64,
        "modes": modes,
    });
    let (clients, messages) = (args.clients, args.messages);
    let after_the_first = if deliveries.len() > 1 {
        "user B/conn of a style after the first reads low: the server keeps the capacity an earlier style grew\n\
         (run --modes STYLE alone against a fresh server for it)\n"
    } else {
        ""
    };
    let table = format!(
        "realtime: {clients} clients, {messages} messages published over HTTP every {publish_every:?}, in each style\n\n\
         {}\n\
         latency: scheduled publish -> answer, event or frame read by the client (no coordinated omission)\n\
         requests/msg: HTTP requests per delivered message; for ws, the upgrade and every frame sent (subscribe, pongs)\n\
         wire B/msg: the clients' HTTP and WebSocket bytes, both directions, per delivered message (no TCP/IP headers);\n\
         a short poll's answer repeats the last message it has, so that tether answers at once (docs/lab.md)\n\
         server CPU/msg: the server's CPU time over the publish schedule per delivered message (/proc, in 1/CLK_TCK s)\n\
         per connection: growth of the server's fds.open, memory.rss_bytes, kernel.tcp_mem_bytes (/stats) and of\n\
         the host's Slab (/proc/meminfo, both ends) from before the clients opened to once they were ready\n\
         {after_the_first}\
         other load: the rest of the host's CPU over the schedule (/proc/stat): a few % at most is quiet\n{notes}",
        table.render(),
    );
    let distributions = deliveries.into_iter().map(|(style, f, _)| (style.name().to_string(), f.latency)).collect();
    let title = "realtime: delivery latency, short polling, long polling, event streams, WebSockets".into();
    Outcome { json, table, title, distributions, nothing_measured: None }
}
