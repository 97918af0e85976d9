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
//!   opening by `OPEN_MIN` plus `OPEN_PER_THOUSAND`, the settle by `--settle` (at most 10 min).
//! - A figure that cannot be read is `null` in the JSON and "unknown" in the report.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use super::engine::{Ending, Engine, Gone, Load};
use super::frame::Frame;
use super::host::{self, SlabCache};
use super::report::{round, Errors, Table};
use super::{check_fd_budget, Outcome, Target};
use crate::config::parse_duration;
use crate::stats::Sockstat;

/// Connects started per turn: faster could overflow the server's listen backlog.
const CONNECTS_PER_TURN: usize = 64;
/// The opening may take this long, plus `OPEN_PER_THOUSAND` per thousand connections.
const OPEN_MIN: Duration = Duration::from_secs(10);
const OPEN_PER_THOUSAND: Duration = Duration::from_secs(2);
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
    let pids = args.server_pid.map_or_else(|| host::listening_pids(target.addr), |pid| vec![pid]);
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", target.url.target(), target.url.authority());
    let before = Figures::read(&pids);
    let mut engine = Engine::new(target.addr, CONNECTS_PER_TURN)?;
    for _ in 0..args.connections {
        engine.open((), request.as_bytes());
    }
    let mut idle = Idle::default();
    let started = Instant::now();
    let deadline = started + OPEN_MIN + OPEN_PER_THOUSAND * (args.connections / 1000) as u32;
    while idle.idle + idle.failed < args.connections && Instant::now() < deadline {
        engine.turn(&mut idle, TICK)?;
    }
    let opening = started.elapsed();
    let settled = Instant::now() + args.settle;
    while Instant::now() < settled {
        engine.turn(&mut idle, settled.saturating_duration_since(Instant::now()))?;
    }
    let after = Figures::read(&pids);
    let measured = Measured { pids, opening, before, after, idle };
    Ok(outcome(args, &target, &measured))
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

    fn ended(&mut self, _engine: &mut Engine<()>, _key: usize, gone: Gone<()>, ending: Ending, _now: Instant) {
        match ending {
            Ending::Closed { partial: false } if gone.received > 0 => self.closed += 1,
            Ending::Closed { .. } => {
                self.errors.io += 1;
                self.failed += 1;
            }
            Ending::Failed(e) => {
                self.errors.count(&e);
                self.failed += 1;
            }
        }
    }
}

/// The server's and the kernel's memory at one moment.
struct Figures {
    rss: Option<u64>,
    slab: Option<u64>,
    sunreclaim: Option<u64>,
    sockets: Sockstat,
    caches: Vec<Option<SlabCache>>,
}

impl Figures {
    fn read(pids: &[i32]) -> Figures {
        Figures {
            rss: host::rss_bytes(pids),
            slab: host::meminfo_bytes("Slab:"),
            sunreclaim: host::meminfo_bytes("SUnreclaim:"),
            sockets: crate::stats::sockstat(),
            caches: host::slab_caches(&CACHES),
        }
    }
}

struct Measured {
    pids: Vec<i32>,
    opening: Duration,
    before: Figures,
    after: Figures,
    idle: Idle,
}

/// Growth from `before` to `after` per connection, with both readings; `None` if either failed.
fn growth(before: Option<u64>, after: Option<u64>, connections: usize) -> Option<(u64, u64, i64, f64)> {
    let (before, after) = (before?, after?);
    let total = after as i64 - before as i64;
    Some((before, after, total, total as f64 / connections.max(1) as f64))
}

fn outcome(args: &IdleArgs, target: &Target, m: &Measured) -> Outcome {
    let (b, a, n) = (&m.before, &m.after, m.idle.idle);
    let still_open = n - m.idle.closed;
    let rows = [
        ("server VmRSS", "server_rss", growth(b.rss, a.rss, n), "server process only"),
        ("kernel Slab", "kernel_slab", growth(b.slab, a.slab, n), "host-wide, both ends"),
        ("kernel SUnreclaim", "kernel_sunreclaim", growth(b.sunreclaim, a.sunreclaim, n), "host-wide, both ends"),
        (
            "sockstat TCP mem",
            "tcp_mem",
            growth(Some(b.sockets.tcp_mem_bytes), Some(a.sockets.tcp_mem_bytes), n),
            "host-wide, both ends",
        ),
    ];
    let mut figures = serde_json::Map::new();
    let mut table = Table::new(&["figure", "before B", "after B", "growth B", "B/conn", ""]);
    for (name, key, growth, what) in &rows {
        figures.insert(
            key.to_string(),
            growth.map_or(Value::Null, |(before, after, total, each)| {
                json!({"before": before, "after": after, "growth": total, "per_connection": round(each, 1)})
            }),
        );
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
        caches.insert(
            name.to_string(),
            json!({"objects_per_connection": round(objects, 2), "bytes_per_connection": round(bytes, 1), "aliases": aliases}),
        );
        let merged = aliases.map_or(String::new(), |aliases| format!("  (shared with {aliases} merged caches)"));
        let _ = writeln!(cache_lines, "  {name:<18} {objects:>8.2} {bytes:>10.0}{merged}");
    }
    let e = &m.idle.errors;
    let json = json!({
        "scenario": "idle", "url": args.url, "connections": args.connections, "idle": n, "still_open": still_open,
        "errors": e.total(), "error_kinds": {"connect": e.connect, "io": e.io, "malformed": e.malformed, "status": e.status},
        "opening_ms": round(m.opening.as_secs_f64() * 1e3, 1), "settle_ms": args.settle.as_millis() as u64,
        "pids": m.pids, "figures": figures, "slab_caches": caches,
        "tcp_inuse": {"before": b.sockets.tcp_inuse, "after": a.sockets.tcp_inuse},
        "time_wait": {"before": b.sockets.tcp_time_wait, "after": a.sockets.tcp_time_wait},
    });
    let pids: Vec<String> = m.pids.iter().map(i32::to_string).collect();
    let pids = if pids.is_empty() { "unknown (give --server-pid)".into() } else { pids.join(", ") };
    let mut text =
        format!("idle: server pid {pids} at {}, GET {} on each connection\n", target.addr, target.url.target());
    let errors = if e.total() == 0 { String::new() } else { format!("; errors: {}", e.breakdown()) };
    let _ = writeln!(
        text,
        "connections     {n} of {} idle after {:.1?}, {still_open} still open after {:?}{errors}",
        args.connections, m.opening, args.settle
    );
    let _ =
        writeln!(text, "TCP sockets     {} -> {} in use (both ends counted)", b.sockets.tcp_inuse, a.sockets.tcp_inuse);
    text.push_str(&table.render());
    if !cache_lines.is_empty() {
        text.push_str("slab caches (host-wide, /proc/slabinfo active objects): objects/conn, bytes/conn\n");
        text.push_str(&cache_lines);
    }
    if b.sockets.tcp_time_wait != a.sockets.tcp_time_wait {
        let _ = writeln!(
            text,
            "warning: TIME_WAIT sockets went {} -> {} during the run; their slab (tw_sock_TCP) skews the kernel \
             figures. Rerun 60 s after any Connection: close load.",
            b.sockets.tcp_time_wait, a.sockets.tcp_time_wait
        );
    }
    if m.idle.closed > 0 {
        let _ = writeln!(text, "warning: the server closed {} connections before the second reading", m.idle.closed);
    }
    let nothing_measured = (n == 0).then(|| format!("no connection to {} was left idle", target.addr));
    Outcome { json, table: text, title: String::new(), distributions: vec![], nothing_measured }
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
