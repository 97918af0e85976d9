//! The cost view: what `/stats` (JSON) and `/metrics` (Prometheus text) report, and where each
//! figure comes from.
//!
//! Counters (`Totals`) and what grows with the connections (descriptors, states, holds, lent
//! buffers) are kept by the server as events happen, so a snapshot costs the same at 10 or
//! 10,000 connections; gauges that only the kernel knows (resident memory, TCP sockets) are
//! read from `/proc` when a snapshot is taken, never cached, so a figure is never staler than
//! the request that asked for it.
//! Invariant: both formats render the same `Snapshot`, field for field, so they cannot disagree.

use std::fmt::Write;

use crate::connection::{CloseReason, StateKind};

/// Monotonic counters since start.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub accepted: u64,
    pub requests: u64,
    pub reused: u64,
    pub rejected: u64,
    /// `accept` calls that failed for want of a descriptor (EMFILE, ENFILE).
    pub fds_exhausted: u64,
    /// Requests answered 401: no token, or one that is not good.
    pub unauthorized: u64,
    /// Requests answered 403: a token that does not cover what was asked, or a publish from a
    /// page of another origin.
    pub forbidden: u64,
    pub closed: Closed,
}

#[derive(Debug, Default, Clone)]
pub struct Closed {
    pub by_client: u64,
    pub idle_timeout: u64,
    pub header_timeout: u64,
    pub write_timeout: u64,
    pub max_requests: u64,
    pub reclaimed: u64,
    pub error: u64,
    pub drain: u64,
    pub rejected: u64,
    pub token_expired: u64,
    pub ping_timeout: u64,
}

impl Closed {
    pub fn count(&mut self, reason: CloseReason) {
        let counter = match reason {
            CloseReason::ByClient => &mut self.by_client,
            CloseReason::IdleTimeout => &mut self.idle_timeout,
            CloseReason::HeaderTimeout => &mut self.header_timeout,
            CloseReason::WriteTimeout => &mut self.write_timeout,
            CloseReason::MaxRequests => &mut self.max_requests,
            CloseReason::Reclaimed => &mut self.reclaimed,
            CloseReason::Error => &mut self.error,
            CloseReason::Drain => &mut self.drain,
            CloseReason::Rejected => &mut self.rejected,
            CloseReason::TokenExpired => &mut self.token_expired,
            CloseReason::PingTimeout => &mut self.ping_timeout,
        };
        *counter += 1;
    }
}

/// Connections by state, as the server's transition function counts them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ByState {
    pub reading: u64,
    pub idle: u64,
    pub held: u64,
    pub streaming: u64,
    pub websocket: u64,
    pub writing: u64,
    pub closing: u64,
}

impl ByState {
    /// Counts a connection into (`delta` 1) or out of (-1) a state; closed ones are not counted.
    pub fn count(&mut self, state: StateKind, delta: i64) {
        let counter = match state {
            StateKind::Reading => &mut self.reading,
            StateKind::Idle => &mut self.idle,
            StateKind::Writing => &mut self.writing,
            StateKind::Held => &mut self.held,
            StateKind::Streaming => &mut self.streaming,
            StateKind::WebSocket => &mut self.websocket,
            StateKind::Closing => &mut self.closing,
            StateKind::Closed => return,
        };
        *counter = counter.wrapping_add_signed(delta);
    }
}

/// Long-poll figures.
#[derive(Debug, Default, Clone, Copy)]
pub struct Polls {
    pub held: u64,
    pub answered: u64,
    pub timed_out: u64,
    pub rejected: u64,
    /// The last publish that woke polls: how many, and how long from parsing the publish to
    /// the last answer handed to the kernel (the end of that turn's flush phase).
    pub last_fanout_woken: u64,
    pub last_fanout_us: u64,
}

impl std::ops::AddAssign<&Totals> for Totals {
    fn add_assign(&mut self, other: &Totals) {
        self.accepted += other.accepted;
        self.requests += other.requests;
        self.reused += other.reused;
        self.rejected += other.rejected;
        self.fds_exhausted += other.fds_exhausted;
        self.unauthorized += other.unauthorized;
        self.forbidden += other.forbidden;
        let (c, o) = (&mut self.closed, &other.closed);
        c.by_client += o.by_client;
        c.idle_timeout += o.idle_timeout;
        c.header_timeout += o.header_timeout;
        c.write_timeout += o.write_timeout;
        c.max_requests += o.max_requests;
        c.reclaimed += o.reclaimed;
        c.error += o.error;
        c.drain += o.drain;
        c.rejected += o.rejected;
        c.token_expired += o.token_expired;
        c.ping_timeout += o.ping_timeout;
    }
}

impl std::ops::AddAssign<&ByState> for ByState {
    fn add_assign(&mut self, other: &ByState) {
        self.reading += other.reading;
        self.idle += other.idle;
        self.held += other.held;
        self.streaming += other.streaming;
        self.websocket += other.websocket;
        self.writing += other.writing;
        self.closing += other.closing;
    }
}

impl std::ops::AddAssign<&Polls> for Polls {
    /// Several workers' polls: counts add up; of the last fan-outs, the woken add up and the
    /// time is the slowest worker's (each worker answers its own share of a publish).
    fn add_assign(&mut self, other: &Polls) {
        self.held += other.held;
        self.answered += other.answered;
        self.timed_out += other.timed_out;
        self.rejected += other.rejected;
        self.last_fanout_woken += other.last_fanout_woken;
        self.last_fanout_us = self.last_fanout_us.max(other.last_fanout_us);
    }
}

/// One worker's line in `/stats` `workers` (and the `tether_worker_*` series of `/metrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLine {
    pub connections_open: u64,
    /// Held polls, open streams and open sockets: what pins a connection for long.
    pub waiting: u64,
    pub accepted: u64,
    pub requests: u64,
}

/// Everything one `/stats` or `/metrics` answer reports.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub uptime_secs: f64,
    pub fds_open: u64,
    pub fds_limit: u64,
    pub connections_open: u64,
    pub by_state: ByState,
    pub totals: Totals,
    pub polls: Polls,
    pub streams_open: u64,
    pub sockets_open: u64,
    pub topics: u64,
    pub messages: u64,
    pub retained_bytes: u64,
    pub max_retained_bytes: u64,
    pub evicted: u64,
    pub forgotten: u64,
    pub timers_armed: u64,
    pub rss_bytes: u64,
    pub connection_bytes: u64,
    pub buffer_bytes: u64,
    pub pool_bytes: u64,
    pub kernel: Sockstat,
    pub backplane: Backplane,
    /// One line per worker, in worker order (one for `--workers 1`).
    pub workers: Vec<WorkerLine>,
}

/// The link to Redis (`--redis`); all zero without it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Backplane {
    /// 1 when the topics' log is kept in Redis.
    pub redis: u64,
    /// 1 while the log here is in step with Redis: publishes are taken.
    pub up: u64,
    /// Publishes waiting for Redis to acknowledge them.
    pub pending: u64,
    pub acked: u64,
    /// Publishes answered 503 for want of Redis: refused while it was unreachable, or not
    /// acknowledged in time.
    pub refused: u64,
    /// Messages Redis reported appended, by every process that shares it.
    pub appended: u64,
    pub reconnects: u64,
}

/// The TCP line of `/proc/net/sockstat`, with `mem` converted from pages to bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sockstat {
    pub tcp_inuse: u64,
    pub tcp_time_wait: u64,
    pub tcp_mem_bytes: u64,
}

impl Snapshot {
    /// The figures in `/stats` order: (JSON path, value and kind, `# HELP` text). `/metrics`
    /// derives its names and types from the same entries ([`metric`]), so adding a figure here
    /// adds it to both formats, and no figure comes without its description.
    fn figures(&self) -> Vec<(&'static str, Figure, &'static str)> {
        use Figure::{Counter, Float, Gauge};
        let (s, t, c, p, b) = (&self.by_state, &self.totals, &self.totals.closed, &self.polls, &self.backplane);
        vec![
            ("uptime_secs", Float(self.uptime_secs), "Seconds since the server started."),
            ("fds.open", Gauge(self.fds_open), "Descriptors open in the process."),
            ("fds.limit", Gauge(self.fds_limit), "The soft RLIMIT_NOFILE, which accept runs into."),
            ("fds.exhausted", Counter(t.fds_exhausted), "accept calls that failed for want of a descriptor."),
            ("connections.open", Gauge(self.connections_open), "Connections open, in any state."),
            ("connections.reading", Gauge(s.reading), "Connections reading (the rest of) a request."),
            ("connections.idle", Gauge(s.idle), "Keep-alive connections between requests."),
            ("connections.held", Gauge(s.held), "Connections held in a long poll."),
            ("connections.streaming", Gauge(s.streaming), "Connections streaming events, between writes."),
            ("connections.websocket", Gauge(s.websocket), "WebSocket connections, between frames."),
            ("connections.writing", Gauge(s.writing), "Connections with output the socket has not taken."),
            ("connections.closing", Gauge(s.closing), "Connections past their last answer, awaiting FIN."),
            ("totals.accepted", Counter(t.accepted), "Connections accepted, those answered 503 included."),
            ("totals.requests", Counter(t.requests), "Requests answered, error answers included."),
            ("totals.reused", Counter(t.reused), "Requests on a connection that had served one."),
            ("totals.rejected", Counter(t.rejected), "Connections answered 503 at a limit."),
            ("totals.unauthorized", Counter(t.unauthorized), "Requests answered 401: no token, or not a good one."),
            ("totals.forbidden", Counter(t.forbidden), "Requests answered 403: not allowed by token or origin."),
            ("totals.closed.by_client", Counter(c.by_client), "Closed: the client hung up or asked to."),
            ("totals.closed.idle_timeout", Counter(c.idle_timeout), "Closed: idle for --idle-timeout."),
            ("totals.closed.header_timeout", Counter(c.header_timeout), "Closed after a 408."),
            ("totals.closed.write_timeout", Counter(c.write_timeout), "Closed: no output taken in time."),
            ("totals.closed.max_requests", Counter(c.max_requests), "Closed after --max-requests."),
            ("totals.closed.reclaimed", Counter(c.reclaimed), "Closed idle, to make room at a limit."),
            ("totals.closed.error", Counter(c.error), "Closed: a malformed request, a failed I/O."),
            ("totals.closed.drain", Counter(c.drain), "Closed by a graceful shutdown."),
            ("totals.closed.rejected", Counter(c.rejected), "Closed after a 503 at a limit."),
            (
                "totals.closed.token_expired",
                Counter(c.token_expired),
                "Closed: a stream's or a socket's token expired.",
            ),
            ("totals.closed.ping_timeout", Counter(c.ping_timeout), "Closed: a WebSocket did not answer a ping."),
            ("polls.held", Gauge(p.held), "Long polls held now."),
            ("polls.answered", Counter(p.answered), "Long polls answered with messages or reset."),
            ("polls.timed_out", Counter(p.timed_out), "Long polls answered with timeout."),
            ("polls.rejected", Counter(p.rejected), "Polls, streams, sockets refused 503 at --max-held."),
            ("polls.last_fanout_woken", Gauge(p.last_fanout_woken), "Waiters woken by the last publish that woke any."),
            ("polls.last_fanout_us", Gauge(p.last_fanout_us), "Time from the last waking publish to its last answer."),
            ("streams.open", Gauge(self.streams_open), "Event streams open, the live page's included."),
            ("sockets.open", Gauge(self.sockets_open), "WebSockets open."),
            ("topics.count", Gauge(self.topics), "Topics that exist."),
            ("topics.messages", Gauge(self.messages), "Messages retained in all topics."),
            ("topics.retained_bytes", Gauge(self.retained_bytes), "Message bytes retained in all topics."),
            ("topics.max_retained_bytes", Gauge(self.max_retained_bytes), "The bound on retained bytes."),
            ("topics.evicted", Counter(self.evicted), "Messages evicted to keep under the byte bound."),
            ("topics.forgotten", Counter(self.forgotten), "Topics forgotten after --topic-idle-timeout."),
            ("timers.armed", Gauge(self.timers_armed), "Deadlines in the timer wheel."),
            ("memory.rss_bytes", Gauge(self.rss_bytes), "Resident set size of the process."),
            ("memory.connection_bytes", Gauge(self.connection_bytes), "The connection table and its indexes."),
            ("memory.buffer_bytes", Gauge(self.buffer_bytes), "I/O buffers lent to connections."),
            ("memory.pool_bytes", Gauge(self.pool_bytes), "Empty I/O buffers kept for reuse."),
            ("backplane.redis", Gauge(b.redis), "1 when the topics' log is kept in Redis."),
            ("backplane.up", Gauge(b.up), "1 while the log is in step with Redis and publishes are taken."),
            ("backplane.pending", Gauge(b.pending), "Publishes waiting for Redis to acknowledge them."),
            ("backplane.acked", Counter(b.acked), "Publishes Redis acknowledged."),
            ("backplane.refused", Counter(b.refused), "Publishes answered 503 for want of Redis."),
            ("backplane.appended", Counter(b.appended), "Messages Redis reported appended, by any process."),
            ("backplane.reconnects", Counter(b.reconnects), "Times the link to Redis came back after a loss."),
            ("kernel.tcp_inuse", Gauge(self.kernel.tcp_inuse), "TCP sockets in use on the host."),
            ("kernel.tcp_time_wait", Gauge(self.kernel.tcp_time_wait), "TCP sockets in TIME_WAIT on the host."),
            ("kernel.tcp_mem_bytes", Gauge(self.kernel.tcp_mem_bytes), "TCP socket buffers on the host."),
        ]
    }

    /// The `/stats` document: nested objects built from the dotted paths, on one line.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut open: Vec<&str> = Vec::new(); // the objects currently open, outermost first
        out.push('{');
        let mut first_in_object = true;
        for (path, value, _) in self.figures() {
            let parts: Vec<&str> = path.split('.').collect();
            let (parents, leaf) = parts.split_at(parts.len() - 1);
            let shared = open.iter().zip(parents).take_while(|(a, b)| a == b).count();
            while open.len() > shared {
                open.pop();
                out.push('}');
                first_in_object = false;
            }
            for parent in &parents[shared..] {
                if !first_in_object {
                    out.push(',');
                }
                let _ = write!(out, "\"{parent}\":{{");
                open.push(parent);
                first_in_object = true;
            }
            if !first_in_object {
                out.push(',');
            }
            let _ = write!(out, "\"{}\":{}", leaf[0], value);
            first_in_object = false;
        }
        for _ in open {
            out.push('}');
        }
        out.push_str(",\"workers\":[");
        for (i, w) in self.workers.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"connections\":{},\"waiting\":{},\"accepted\":{},\"requests\":{}}}",
                if i == 0 { "" } else { "," },
                w.connections_open,
                w.waiting,
                w.accepted,
                w.requests
            );
        }
        out.push_str("]}\n");
        out
    }

    /// The `/metrics` document (Prometheus text format 0.0.4): for each figure its `# HELP`,
    /// its `# TYPE` and one sample, as [`metric`] names it.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(8192);
        for (path, figure, help) in self.figures() {
            let (name, value) = metric(path, figure);
            let kind = if let Figure::Counter(_) = figure { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        for (name, kind, help, value) in WORKER_SERIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, line) in self.workers.iter().enumerate() {
                let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", value(line));
            }
        }
        out
    }
}

/// The per-worker series of `/metrics`, labelled `worker="N"`: name, type, help, value.
type WorkerSeries = (&'static str, &'static str, &'static str, fn(&WorkerLine) -> u64);
const WORKER_SERIES: [WorkerSeries; 4] = [
    ("tether_worker_connections_open", "gauge", "Connections open on the worker.", |w| w.connections_open),
    ("tether_worker_waiting", "gauge", "Held polls, streams and sockets on the worker.", |w| w.waiting),
    ("tether_worker_accepted_total", "counter", "Connections the worker accepted.", |w| w.accepted),
    ("tether_worker_requests_total", "counter", "Requests the worker answered.", |w| w.requests),
];

/// A figure's Prometheus name and sample value. The name is `tether_` and the `/stats` path with
/// dots as underscores, changed where Prometheus' naming conventions ask (docs/costs.md lists
/// every name):
/// - a counter ends in `_total`, which replaces the `totals.` group that says the same;
/// - time is in seconds, spelled out: `_secs` becomes `_seconds`, and so does `_us`, whose value
///   is divided by 10^6;
/// - `_count` names a histogram's sample count, so a trailing `.count` is dropped.
fn metric(path: &str, figure: Figure) -> (String, String) {
    let path = match figure {
        Figure::Counter(_) => path.strip_prefix("totals.").unwrap_or(path),
        _ => path,
    };
    let stem = path.replace('.', "_");
    let (stem, value) = if let Some(stem) = stem.strip_suffix("_secs") {
        (format!("{stem}_seconds"), figure.to_string())
    } else if let (Some(stem), Figure::Counter(us) | Figure::Gauge(us)) = (stem.strip_suffix("_us"), figure) {
        // Exact as f64 below 2^53 us (285 years); `to_string` prints the fewest digits that
        // read back as the same number.
        (format!("{stem}_seconds"), (us as f64 / 1e6).to_string())
    } else {
        (stem.strip_suffix("_count").unwrap_or(&stem).to_string(), figure.to_string())
    };
    let total = if let Figure::Counter(_) = figure { "_total" } else { "" };
    (format!("tether_{stem}{total}"), value)
}

#[derive(Debug, Clone, Copy)]
enum Figure {
    /// Only grows, from 0 at start (a Prometheus `counter`).
    Counter(u64),
    /// A level that goes up and down (a `gauge`).
    Gauge(u64),
    Float(f64),
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Figure::Counter(n) | Figure::Gauge(n) => write!(f, "{n}"),
            Figure::Float(x) => write!(f, "{x:.3}"),
        }
    }
}

/// Descriptors open in this process: the entries of `/proc/self/fd` (minus the one the listing
/// itself holds open).
pub fn fds_open() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| (dir.count() as u64).saturating_sub(1))
}

/// The soft `RLIMIT_NOFILE`: what `accept` runs into.
pub fn fds_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    }
}

/// Resident set size from `/proc/self/statm` (its second field, in pages).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * page_size()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// The kernel's view of TCP from `/proc/net/sockstat` (all sockets of the network namespace).
pub fn sockstat() -> Sockstat {
    let text = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    parse_sockstat(&text, page_size())
}

fn parse_sockstat(text: &str, page_size: u64) -> Sockstat {
    let mut stat = Sockstat::default();
    let Some(line) = text.lines().find(|l| l.starts_with("TCP:")) else {
        return stat;
    };
    let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
    for pair in fields.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        match pair[0] {
            "inuse" => stat.tcp_inuse = value,
            "tw" => stat.tcp_time_wait = value,
            "mem" => stat.tcp_mem_bytes = value * page_size,
            _ => {}
        }
    }
    stat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_line_is_parsed_and_pages_converted() {
        let text = "sockets: used 290\nTCP: inuse 5 orphan 0 tw 17 alloc 9 mem 3\nUDP: inuse 1 mem 0\n";
        let stat = parse_sockstat(text, 4096);
        assert_eq!(stat, Sockstat { tcp_inuse: 5, tcp_time_wait: 17, tcp_mem_bytes: 3 * 4096 });
        assert_eq!(parse_sockstat("", 4096), Sockstat::default());
    }

    #[test]
    fn json_nests_every_figure_in_spec_order() {
        let workers =
            vec![WorkerLine { connections_open: 2, waiting: 1, accepted: 5, requests: 9 }, WorkerLine::default()];
        let mut snapshot = Snapshot { fds_open: 7, uptime_secs: 1.5, workers, ..Snapshot::default() };
        snapshot.totals.closed.idle_timeout = 3;
        snapshot.kernel.tcp_mem_bytes = 8192;
        let json = snapshot.to_json();
        assert!(json.starts_with(
            "{\"uptime_secs\":1.500,\"fds\":{\"open\":7,\"limit\":0,\"exhausted\":0},\"connections\":{\"open\":0,"
        ));
        assert!(json.contains("\"closed\":{\"by_client\":0,\"idle_timeout\":3,"));
        assert!(json.contains("\"rejected\":0,\"token_expired\":0,\"ping_timeout\":0}},\"polls\":{\"held\":0,"));
        assert!(json.ends_with(
            "\"kernel\":{\"tcp_inuse\":0,\"tcp_time_wait\":0,\"tcp_mem_bytes\":8192},\"workers\":[\
             {\"connections\":2,\"waiting\":1,\"accepted\":5,\"requests\":9},\
             {\"connections\":0,\"waiting\":0,\"accepted\":0,\"requests\":0}]}\n"
        ));
        let text = snapshot.to_prometheus();
        assert!(text
            .contains("tether_worker_requests_total{worker=\"0\"} 9\ntether_worker_requests_total{worker=\"1\"} 0\n"));
        let opens = json.matches('{').count();
        assert_eq!(opens, json.matches('}').count());
    }

    #[test]
    fn prometheus_names_follow_the_conventions() {
        use Figure::{Counter, Float, Gauge};
        // (path, figure, name, value)
        let table = [
            ("totals.requests", Counter(42), "tether_requests_total", "42"),
            ("totals.closed.idle_timeout", Counter(3), "tether_closed_idle_timeout_total", "3"),
            ("fds.exhausted", Counter(1), "tether_fds_exhausted_total", "1"),
            ("connections.idle", Gauge(2), "tether_connections_idle", "2"),
            ("memory.rss_bytes", Gauge(4096), "tether_memory_rss_bytes", "4096"),
            ("uptime_secs", Float(1.5), "tether_uptime_seconds", "1.500"),
            ("polls.last_fanout_us", Gauge(1234), "tether_polls_last_fanout_seconds", "0.001234"),
            ("polls.last_fanout_us", Gauge(0), "tether_polls_last_fanout_seconds", "0"),
            ("topics.count", Gauge(7), "tether_topics", "7"),
        ];
        for (path, figure, name, value) in table {
            assert_eq!(metric(path, figure), (name.to_string(), value.to_string()), "{path}");
        }
        let mut snapshot = Snapshot::default();
        snapshot.totals.requests = 42;
        let text = snapshot.to_prometheus();
        assert!(text.contains(
            "# HELP tether_requests_total Requests answered, error answers included.\n\
             # TYPE tether_requests_total counter\ntether_requests_total 42\n"
        ));
    }

    #[test]
    fn every_metric_is_named_typed_and_described_as_prometheus_asks() {
        let text = Snapshot::default().to_prometheus();
        let mut names = std::collections::BTreeSet::new();
        for (path, figure, help) in Snapshot::default().figures() {
            let (name, _) = metric(path, figure);
            // The text format's name grammar, and no unit abbreviations or reserved suffixes.
            let mut chars = name.chars();
            assert!(chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_'), "{name}");
            assert!(chars.all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
            assert!(!["_secs", "_us", "_ms", "_count", "_sum", "_bucket"].iter().any(|s| name.ends_with(s)), "{name}");
            assert_eq!(name.ends_with("_total"), matches!(figure, Figure::Counter(_)), "{name}");
            assert!(names.insert(name.clone()), "{name} twice");
            // HELP text is one line and needs no escaping.
            assert!(!help.is_empty() && !help.contains(['\\', '\n']), "{name}: {help:?}");
            assert!(text.contains(&format!("# HELP {name} {help}\n# TYPE {name} ")), "{name}");
            // docs/costs.md lists every name.
            assert!(COSTS_DOC.contains(&format!("`{name}`")), "docs/costs.md does not list {name}");
        }
        for (name, kind, help, _) in WORKER_SERIES {
            assert_eq!(name.ends_with("_total"), kind == "counter", "{name}");
            assert!(names.insert(name.to_string()), "{name} twice");
            assert!(COSTS_DOC.contains(&format!("`{name}`")), "docs/costs.md does not list {name}");
            assert!(!help.contains(['\\', '\n']), "{name}");
        }
    }

    const COSTS_DOC: &str = include_str!("../docs/costs.md");

    #[test]
    fn proc_readers_see_this_process() {
        assert!(fds_open() >= 3, "stdin, stdout and stderr at least");
        assert!(fds_limit() >= fds_open());
        assert!(rss_bytes() > 0);
    }
}
