//! The `realtime` scenario: one publish schedule delivered by short polling, by long polling and
//! by event streams (`--modes`), one after the other, each on a topic of its own, and the
//! classic comparison table (purpose, connection, overhead, latency) filled in with what was
//! measured.
//!
//! ```text
//!   short-poll  each client asks every --interval, at its own slot; answered at once
//!   long-poll   each client asks once and is held until a message comes; asks again
//!   sse         each client opens one event stream; every message is an event of it
//!   each        --messages published one per --publish-interval (default 4 x --interval)
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
    /// The topic prefix [default: a new one per run]; the styles use PREFIX-short, PREFIX-long
    /// and PREFIX-sse.
    #[arg(long)]
    pub topic: Option<String>,
    /// The styles to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "short-poll,long-poll,sse")]
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
    let pids = host::server_pids(args.server_pid, target.addr);
    let mut deliveries = Vec::new();
    for (i, mode) in modes.into_iter().enumerate() {
        let mut control = target.control();
        let (name, style) = match mode {
            Mode::ShortPoll => ("short", Style::Short { every: args.interval }),
            Mode::LongPoll => ("long", Style::Long { hold: LONG_HOLD }),
            Mode::Sse => ("sse", Style::Sse),
        };
        progress.set_prefix(style.name());
        let plan =
            prepare(&target, &mut control, &format!("{prefix}-{name}"), args.clients, args.messages, publish_every)?;
        let mut follow = Follow::new(Plan { style, ..plan })?;
        let before = target.stats(&mut control)?;
        follow.wait_ready(&mut control, &before)?;
        let offset = (i * args.messages) as u64;
        follow.run_schedule(&pids, |published| progress.set_position(offset + published))?;
        deliveries.push((style, follow.finish()));
    }
    progress.finish_and_clear();
    Ok(outcome(args, publish_every, deliveries))
}

fn outcome(args: &RealtimeArgs, publish_every: Duration, deliveries: Vec<(Style, Followed)>) -> Outcome {
    let mut table = Table::text(&["", "Purpose", "Connection", "Overhead", "Latency"]);
    let (mut modes, mut notes) = (Vec::new(), String::new());
    let expected = (args.clients * args.messages) as u64;
    for (style, f) in &deliveries {
        let (name, s, errors, delivered) = (style.name(), f.latency.summary(), f.errors.total(), f.delivered);
        let (purpose, connection) = match style {
            Style::Short { every } => (format!("ask every {every:?}, answered at once"), "a request per poll"),
            Style::Long { .. } => ("ask once, held until news".to_string(), "each holds a request"),
            Style::Sse => ("ask once, each message an event".to_string(), "each holds a stream"),
        };
        let (requests, bytes) = (f.traffic.requests_per(delivered), f.traffic.bytes_per(delivered));
        let cpu = f.cpu_us_per_message();
        let cpu_text = cpu.map_or("CPU unknown".into(), |us| format!("{us:.1} µs CPU/msg"));
        let overhead = format!("{requests:.2} req/msg, {} empty, {bytes:.0} B/msg, {cpu_text}", f.empty);
        let [p50, _, p99, _] = s.human();
        let latency = format!("p50 {p50}, p99 {p99}");
        table.row(vec![name.to_string(), purpose, format!("{} opened, {connection}", f.opened), overhead, latency]);
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
        }));
    }
    let json = json!({
        "scenario": "realtime", "clients": args.clients, "messages": args.messages,
        "interval_ms": args.interval.as_millis() as u64, "publish_interval_ms": publish_every.as_millis() as u64,
        "modes": modes,
    });
    let (clients, messages) = (args.clients, args.messages);
    let table = format!(
        "realtime: {clients} clients, {messages} messages published every {publish_every:?}, in each style\n\n{}\n\
         latency: scheduled publish -> answer or event read by the client (no coordinated omission)\n\
         B/msg: HTTP request and response bytes of the clients per delivered message (no TCP/IP headers);\n\
         a short poll's answer repeats the last message it has, so that tether answers at once (docs/lab.md)\n\
         CPU/msg: the server's CPU time over the publish schedule per delivered message (/proc, in 1/CLK_TCK s)\n{notes}",
        table.render()
    );
    let distributions = deliveries.into_iter().map(|(style, f)| (style.name().to_string(), f.latency)).collect();
    let title = "realtime: delivery latency, short polling, long polling, event streams".into();
    Outcome { json, table, title, distributions, nothing_measured: None }
}
