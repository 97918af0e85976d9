//! The `realtime` scenario: one publish schedule delivered twice, by short polling and then by
//! long polling, each on a topic of its own, and the classic comparison table (purpose,
//! connection, overhead, latency) filled in with what was measured.
//!
//! ```text
//!   short-poll  each client asks every --interval, at its own slot; answered at once
//!   long-poll   each client asks once and is held until a message comes; asks again
//!   both        --messages published one per --publish-interval (default 4 x --interval)
//! ```
//!
//! Short polling is only worth comparing when clients ask more often than news comes: asking
//! exactly as often as messages are published, each poll finds about one message, and short
//! polling differs from long polling only in latency (half the interval). Hence the default
//! publish interval of four polls. How a short poll is made to answer at once on a server that
//! holds polls is in `follow`'s module doc.

use std::fmt::Write;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::follow::{Follow, Followed, Plan, Style};
use super::longpoll::{check_arguments, default_topic, prepare, LONG_HOLD};
use super::report::{self, Table};
use super::{progress_bar, Outcome, OutputArgs, Target};
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
    /// The topic prefix [default: a new one per run]; the styles use PREFIX-short and PREFIX-long.
    #[arg(long)]
    pub topic: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn run(args: &RealtimeArgs) -> Result<Outcome, String> {
    let target = Target::parse(&args.url)?;
    if args.interval.is_zero() {
        return Err("--interval must be greater than zero".into());
    }
    let publish_every = args.publish_interval.unwrap_or(args.interval * POLLS_PER_PUBLISH);
    check_arguments(args.clients, args.messages, publish_every)?;
    let prefix = args.topic.clone().unwrap_or_else(|| default_topic("realtime"));
    let total = publish_every * args.messages as u32 * 2;
    let progress = progress_bar(2 * args.messages as u64, total, "short-poll");
    let mut deliveries = Vec::new();
    for (i, style) in [Style::Short { every: args.interval }, Style::Long { hold: LONG_HOLD }].into_iter().enumerate() {
        let mut control = target.control();
        let name = if i == 0 { "short" } else { "long" };
        progress.set_prefix(style.name());
        let plan =
            prepare(&target, &mut control, &format!("{prefix}-{name}"), args.clients, args.messages, publish_every)?;
        let mut follow = Follow::new(Plan { style, ..plan })?;
        let before = target.stats(&mut control)?;
        follow.wait_ready(&mut control, &before)?;
        let offset = (i * args.messages) as u64;
        follow.run_schedule(|published| progress.set_position(offset + published))?;
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
        };
        let (requests, bytes) = (f.traffic.requests_per(delivered), f.traffic.bytes_per(delivered));
        let overhead = format!("{requests:.2} req/msg, {} empty, {bytes:.0} B/msg", f.empty);
        let [p50, _, p99, _] = s.human();
        let latency = format!("p50 {p50}, p99 {p99}");
        table.row(vec![name.to_string(), purpose, format!("{} opened, {connection}", f.opened), overhead, latency]);
        if delivered != expected || errors > 0 {
            let breakdown = f.errors.breakdown();
            let _ = writeln!(notes, "{name}: delivered {delivered} of {expected}, errors {errors} {breakdown}");
        }
        modes.push(json!({
            "mode": name, "delivered": f.delivered, "requests": f.traffic.requests,
            "requests_per_message": report::round(requests, 3), "empty_responses": f.empty,
            "bytes_per_message": report::round(bytes, 1), "latency_us": s.to_json(),
            "connections_opened": f.opened, "errors": errors,
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
         latency: scheduled publish -> answer read by the client (no coordinated omission)\n\
         B/msg: HTTP request and response bytes of the clients per delivered message (no TCP/IP headers);\n\
         a short poll's answer repeats the last message it has, so that tether answers at once (docs/lab.md)\n{notes}",
        table.render()
    );
    let distributions = deliveries.into_iter().map(|(style, f)| (style.name().to_string(), f.latency)).collect();
    let title = "realtime: delivery latency, short vs long polling".into();
    Outcome { json, table, title, distributions, nothing_measured: None }
}
