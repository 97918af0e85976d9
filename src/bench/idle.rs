//! The `idle` scenario: what an idle keep-alive connection costs a server, in its RSS and in the
//! kernel's memory, per connection. Works against any HTTP/1.1 server on loopback.
//!
//! ```text
//!   before   the server's VmRSS, /proc/meminfo Slab and SUnreclaim, sockstat, slab caches
//!   open     N connections, CONNECTS_PER_TURN per turn; each asks GET --url once and reads
//!            the whole answer, so that every server-side connection ends idle in keep-alive
//!   settle   --settle with nothing sent; a connection the server closes meanwhile is counted
//!   after    the same figures; growth / idle connections; then every connection is closed
//! ```
//!
//! What the figures include: RSS is the server's process only. `Slab`, `SUnreclaim` and
//! sockstat's TCP memory are host-wide, and client and server run on this machine, so they count
//! BOTH ends of every connection (two sockets, two inodes, two files) and whatever else the
//! kernel did meanwhile. The per-cache lines of `/proc/slabinfo` (root only) show what grew:
//! near 2 objects per connection (TCP, sock_inode_cache, filp) are both ends; an epoll server
//! adds about 1 eventpoll_epi. SLUB merges caches of one size, and a merged cache counts its
//! aliases' objects too, so the alias count is printed beside it. TIME_WAIT sockets expiring
//! during the run (left by a `Connection: close` run less than 60 s before) shrink Slab: the
//! report warns.
//!
//! Invariants:
//! - Bounded: N sockets (checked against the open-file limit, raised to its hard limit), the
//!   opening by `engine::opening_bound`, the settle by `--settle` (at most 10 min).
//! - A figure that cannot be read is `null` in the JSON and "unknown" in the report.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use super::conn::ConnError;
use super::engine::{self, Engine, Gone, Load};
use super::frame::Frame;
use super::host::{self, SlabCache};
use super::report::{self, round, Errors, Table};
use super::{check_fd_budget, Outcome, Target};
use crate::config::parse_duration;
use crate::stats::Sockstat;

/// Connects started per turn: faster could overflow the server's listen backlog.
const CONNECTS_PER_TURN: usize = 64;
const MAX_SETTLE: Duration = Duration::from_secs(600);
const TICK: Duration = Duration::from_millis(100);
/// Slab caches that a TCP connection grows, shown per connection.
const CACHES: [&str; 6] = ["TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "skbuff_head_cache"];

#[derive(Args, Debug)]
pub struct IdleArgs {
    /// The URL each connection asks for once, like http://127.0.0.1:8080/plaintext (loopback).
    #[arg(long)]
    pub url: String,
    /// Connections left idle (bounded by the open-file limit).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// How long the connections sit idle before the second reading (at most 10 min).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
    /// The server's process, whose RSS is read [default: the one holding the socket that
    /// listens on --url's port].
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<i32>,
    /// Print one JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &IdleArgs) -> Result<Outcome, String> {
    let target = Target::parse(&args.url)?;
    if args.connections == 0 || args.settle > MAX_SETTLE {
        return Err(format!("--connections must be at least 1 and --settle at most {MAX_SETTLE:?}"));
    }
    host::raise_open_file_limit();
    check_fd_budget("--connections", args.connections, args.connections)?;
    target.check_listening()?;
    let pids = host::server_pids(args.server_pid.as_slice(), &[target.addr]);
    let request = target.get(&target.url.target(), "");
    let before = Figures::read(&pids);
    let mut engine = Engine::new(target.addr, CONNECTS_PER_TURN)?;
    for _ in 0..args.connections {
        engine.open((), request.as_bytes());
    }
    let mut idle = Idle::default();
    let started = Instant::now();
    let deadline = started + engine::opening_bound(args.connections);
    while idle.idle + idle.failed < args.connections && Instant::now() < deadline {
        engine.turn(&mut idle, TICK)?;
    }
    idle.opening = started.elapsed();
    let settled = Instant::now() + args.settle;
    while Instant::now() < settled {
        engine.turn(&mut idle, settled.saturating_duration_since(Instant::now()))?;
    }
    let after = Figures::read(&pids);
    Ok(outcome(args, &target, &pids, [before, after], idle))
}

/// What the connections did: the scenario's side of the engine.
#[derive(Default)]
struct Idle {
    /// Answered 2xx and left open; `closed` of them closed by the server since.
    idle: usize,
    closed: usize,
    /// Never answered 2xx with keep-alive: counted in `errors`.
    failed: usize,
    errors: Errors,
    /// How long opening them took.
    opening: Duration,
}

impl Load<()> for Idle {
    fn answered(&mut self, engine: &mut Engine<()>, key: usize, frame: &Frame, _now: Instant) {
        if (200..300).contains(&frame.status) && !frame.close {
            self.idle += 1;
            return;
        }
        // Nothing would stay idle: a refusal, or a server that closes after one request.
        self.errors.status += 1;
        self.failed += 1;
        engine.close(key);
    }

    fn ended(&mut self, _engine: &mut Engine<()>, _key: usize, gone: Gone<()>, why: ConnError, _now: Instant) {
        if let (ConnError::Closed { partial: false }, true) = (&why, gone.received > 0) {
            return self.closed += 1; // an idle connection the server closed
        }
        self.errors.count(&why);
        self.failed += 1;
    }
}

/// The memory figures, by their names in the report and in the JSON, and what they count.
const MEMORY: [(&str, &str, &str); 4] = [
    ("server VmRSS", "server_rss", "server process only"),
    ("kernel Slab", "kernel_slab", "host-wide, both ends"),
    ("kernel SUnreclaim", "kernel_sunreclaim", "host-wide, both ends"),
    ("sockstat TCP mem", "tcp_mem", "host-wide, both ends"),
];

/// The server's and the kernel's memory at one moment.
struct Figures {
    /// In bytes, in the order of `MEMORY`.
    memory: [Option<u64>; 4],
    sockets: Sockstat,
    caches: Vec<Option<SlabCache>>,
}

impl Figures {
    fn read(pids: &[i32]) -> Figures {
        let sockets = crate::stats::sockstat();
        let (slab, sunreclaim) = (host::meminfo_bytes("Slab:"), host::meminfo_bytes("SUnreclaim:"));
        let memory = [host::status_bytes(pids, "VmRSS:"), slab, sunreclaim, Some(sockets.tcp_mem_bytes)];
        Figures { memory, sockets, caches: host::slab_caches(&CACHES) }
    }
}

/// Growth from `before` to `after` per connection, with both readings; `None` if either failed.
fn growth(before: Option<u64>, after: Option<u64>, connections: usize) -> Option<(u64, u64, i64, f64)> {
    let (before, after) = (before?, after?);
    let total = after as i64 - before as i64;
    Some((before, after, total, total as f64 / connections.max(1) as f64))
}

fn outcome(args: &IdleArgs, target: &Target, pids: &[i32], [b, a]: [Figures; 2], idle: Idle) -> Outcome {
    let (n, opening) = (idle.idle, idle.opening);
    let still_open = n - idle.closed;
    let mut figures = serde_json::Map::new();
    let mut table = Table::new(&["figure", "before B", "after B", "growth B", "B/conn", ""]);
    for (i, (name, key, what)) in MEMORY.into_iter().enumerate() {
        let growth = growth(b.memory[i], a.memory[i], n);
        let figure = growth.map(|(before, after, total, each)| {
            json!({"before": before, "after": after, "growth": total, "per_connection": round(each, 1)})
        });
        figures.insert(key.to_string(), figure.unwrap_or(Value::Null));
        let cells = growth.map_or(vec!["unknown".into(); 4], |(before, after, total, each)| {
            vec![before.to_string(), after.to_string(), total.to_string(), format!("{each:.0}")]
        });
        table.row([vec![name.to_string()], cells, vec![format!("({what})")]].concat());
    }
    let mut caches = serde_json::Map::new();
    let mut cache_lines = String::new();
    for (i, name) in CACHES.iter().enumerate() {
        let (Some(before), Some(after)) = (b.caches[i], a.caches[i]) else {
            continue;
        };
        let objects = (after.objects as f64 - before.objects as f64) / n.max(1) as f64;
        let bytes = (after.bytes as f64 - before.bytes as f64) / n.max(1) as f64;
        let aliases = host::slab_aliases(name).filter(|&aliases| aliases > 0);
        let (objects_json, bytes_json) = (round(objects, 2), round(bytes, 1));
        let each =
            json!({"objects_per_connection": objects_json, "bytes_per_connection": bytes_json, "aliases": aliases});
        caches.insert(name.to_string(), each);
        let merged = aliases.map_or(String::new(), |aliases| format!("  (shared with {aliases} merged caches)"));
        let _ = writeln!(cache_lines, "  {name:<18} {objects:>8.2} {bytes:>10.0}{merged}");
    }
    let (e, [inuse, time_wait]) = (&idle.errors, [b.sockets, a.sockets].map(|s| [s.tcp_inuse, s.tcp_time_wait]));
    let json = json!({
        "scenario": "idle", "url": args.url, "connections": args.connections, "idle": n, "still_open": still_open,
        "errors": e.total(), "error_kinds": e.to_json(&["connect", "io", "malformed", "status"]),
        "opening_ms": report::ms(opening, 1), "settle_ms": args.settle.as_millis() as u64,
        "pids": pids, "figures": figures, "slab_caches": caches,
        "tcp_inuse": {"before": inuse[0], "after": inuse[1]},
        "time_wait": {"before": time_wait[0], "after": time_wait[1]},
    });
    let pids = if pids.is_empty() { "unknown (give --server-pid)".into() } else { host::pid_list(pids) };
    let errors = if e.total() == 0 { String::new() } else { format!("; errors: {}", e.breakdown()) };
    let mut text =
        format!("idle: server pid {pids} at {}, GET {} on each connection\n", target.addr, target.url.target());
    let (connections, settle) = (args.connections, args.settle);
    let idled = format!("{n} of {connections} idle after {opening:.1?}, {still_open} still open after {settle:?}");
    text += &report::lines([
        ("connections", idled + &errors),
        ("TCP sockets", format!("{} -> {} in use (both ends counted)", inuse[0], inuse[1])),
    ]);
    text += &table.render();
    if !cache_lines.is_empty() {
        text += "slab caches (host-wide, /proc/slabinfo active objects): objects/conn, bytes/conn\n";
        text += &cache_lines;
    }
    if time_wait[0] != time_wait[1] {
        let _ = writeln!(
            text,
            "warning: TIME_WAIT sockets went {} -> {} during the run; their slab (tw_sock_TCP) skews the kernel \
             figures. Rerun 60 s after any Connection: close load.",
            time_wait[0], time_wait[1]
        );
    }
    if idle.closed > 0 {
        let _ = writeln!(text, "warning: the server closed {} connections before the second reading", idle.closed);
    }
    let nothing_measured = (n == 0).then(|| format!("no connection to {} was left idle", target.addr));
    Outcome { json, table: text, nothing_measured, ..Outcome::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_per_connection_and_unknown_without_both_readings() {
        assert_eq!(growth(Some(1000), Some(3000), 4), Some((1000, 3000, 2000, 500.0)));
        assert_eq!(growth(Some(3000), Some(1000), 4), Some((3000, 1000, -2000, -500.0)));
        assert_eq!(growth(None, Some(1000), 4), None);
    }
}
