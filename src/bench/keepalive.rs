//! The `keepalive` scenario: a closed loop of `--connections` client connections, each sending
//! its next request as soon as the answer to the last one is in, for `--duration`, once per mode.
//!
//! ```text
//!   keep-alive  connect once; request, answer, request, answer, ...
//!   close       connect, request with `Connection: close`, answer, close; connect again
//!   pipelined   connect once; --pipeline requests in one write, their answers, again
//! ```
//!
//! The reactor mirrors the server's, in named phases: `poll`, `dispatch` (connects completing,
//! answers arriving, the next request written at once), `expire` (every `TICK`: connections
//! with no answer within `RESPONSE_TIMEOUT`), `reopen` (replace the connections that closed).
//!
//! Invariants:
//! - A connection's token is its slot index. A slot's socket is replaced only in `reopen`, after
//!   the event batch, so no event of this batch can reach the newer socket.
//! - A slot keeps one start time per request in flight, oldest first; answers arrive in request
//!   order (HTTP/1.1), so each answer takes the oldest. Latency runs from the write of the
//!   request (keep-alive, pipelined) or from the connect (close: the handshake is part of what
//!   close costs) to the last byte of the answer.
//! - Only answers that arrive before the deadline count; requests in flight then are dropped.
//!
//! A closed loop under-reports stalls (coordinated omission): while a connection waits for a
//! slow answer it sends nothing, so the stall is recorded once instead of once per request that
//! a steady client would have sent meanwhile. wrk has the same property; `docs/lab.md` explains.

use std::collections::VecDeque;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use mio::{Events, Poll, Token};
use serde_json::{json, Value};

use super::conn::{Conn, ConnError};
use super::report::{self, Errors, Latency, Table};
use super::{check_fd_budget, Outcome, OutputArgs, Progress, Target};
use crate::config::parse_duration;

/// How often the loop looks for stalled connections and moves the progress bar.
const TICK: Duration = Duration::from_millis(100);
/// An answer that takes longer than this counts as an error and its connection is replaced.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A slot whose connection failed waits this long (to the next turn after it) before opening
/// another: a server that is gone must not turn the loop into a spin of refused connects.
const RETRY_DELAY: Duration = Duration::from_millis(10);
const EVENTS_CAPACITY: usize = 1024;

#[derive(Args, Debug)]
pub struct KeepaliveArgs {
    /// The URL every request asks for, like http://127.0.0.1:8080/plaintext (loopback only).
    #[arg(long)]
    pub url: String,
    /// Connections open at once.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// How long each mode runs (100ms to 1h).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests written at once in the pipelined mode.
    #[arg(long, default_value_t = 16)]
    pub pipeline: usize,
    /// The modes to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "keep-alive,close,pipelined")]
    pub modes: Vec<Mode>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    KeepAlive,
    Close,
    Pipelined,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::Close => "close",
            Mode::Pipelined => "pipelined",
        }
    }
}

/// What one mode measured.
struct Measured {
    mode: Mode,
    requests: u64,
    elapsed: Duration,
    latency: Latency,
    opened: u64,
    errors: Errors,
    time_wait_before: u64,
    time_wait_after: u64,
}

impl Measured {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub fn run(args: &KeepaliveArgs) -> Result<Outcome, String> {
    let target = Target::parse(&args.url)?;
    if args.connections == 0 || args.pipeline == 0 {
        return Err("--connections and --pipeline must be at least 1".into());
    }
    if args.duration < Duration::from_millis(100) || args.duration > Duration::from_secs(3600) {
        return Err("--duration must lie between 100ms and 1h".into());
    }
    check_fd_budget("--connections", args.connections, args.connections)?;
    preflight(&target)?;
    let mut modes: Vec<Mode> = Vec::new();
    for mode in &args.modes {
        if !modes.contains(mode) {
            modes.push(*mode);
        }
    }
    let total = args.duration * modes.len() as u32;
    let progress = Progress::new(total.as_millis() as u64, total, "keepalive");
    let mut results = Vec::new();
    for (i, &mode) in modes.iter().enumerate() {
        progress.message(mode.name());
        let offset = args.duration * i as u32;
        let time_wait_before = crate::stats::sockstat().tcp_time_wait;
        let mut load = Load::new(&target, args, mode)?;
        load.run(args.duration, |elapsed| progress.set((offset + elapsed).as_millis() as u64))?;
        results.push(Measured {
            mode,
            requests: load.requests,
            elapsed: load.elapsed,
            latency: load.latency,
            opened: load.opened,
            errors: load.errors,
            time_wait_before,
            time_wait_after: crate::stats::sockstat().tcp_time_wait,
        });
    }
    progress.finish();
    Ok(outcome(&target, args, results))
}

/// One blocking request first, so that a wrong URL is one clear error, not a run of them.
fn preflight(target: &Target) -> Result<(), String> {
    let path = target.url.target();
    let response = target.control().get(&path).map_err(|e| format!("GET {}: {e}", target.url.target()))?;
    if !(200..300).contains(&response.status) {
        return Err(format!(
            "GET {path} answered {} {}; bench a URL that answers 2xx",
            response.status, response.reason
        ));
    }
    Ok(())
}

/// Where a slot's connection is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The connect has not completed yet.
    Connecting,
    /// Requests written (or waiting for room to be), their answers due.
    Awaiting,
    /// Closed during this turn; `reopen` replaces it.
    Closed,
}

struct Slot {
    conn: Option<Conn>,
    phase: Phase,
    /// When the current connect began: a close-mode request's latency starts here.
    opened_at: Instant,
    /// The start time of each request in flight, oldest first.
    started: VecDeque<Instant>,
    /// The last connect, write or answer: a slot quiet for `RESPONSE_TIMEOUT` has stalled.
    progressed_at: Instant,
    /// After a failure, `reopen` leaves the slot closed until then.
    retry_at: Instant,
}

/// The closed-loop engine of one mode.
struct Load {
    poll: Poll,
    addr: SocketAddr,
    mode: Mode,
    /// What one turn of the loop writes: one request, or `--pipeline` of them.
    batch: Vec<u8>,
    depth: usize,
    slots: Vec<Slot>,
    reopen: Vec<usize>,
    latency: Latency,
    requests: u64,
    opened: u64,
    errors: Errors,
    elapsed: Duration,
}

impl Load {
    fn new(target: &Target, args: &KeepaliveArgs, mode: Mode) -> Result<Load, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
        let close = if mode == Mode::Close { "Connection: close\r\n" } else { "" };
        // The same request as wrk's, so that both ask the server for the same work.
        let request =
            format!("GET {} HTTP/1.1\r\nHost: {}\r\n{close}\r\n", target.url.target(), target.url.authority());
        let depth = if mode == Mode::Pipelined { args.pipeline } else { 1 };
        let now = Instant::now();
        let slots = (0..args.connections)
            .map(|_| Slot {
                conn: None,
                phase: Phase::Closed,
                opened_at: now,
                started: VecDeque::with_capacity(depth),
                progressed_at: now,
                retry_at: now,
            })
            .collect();
        Ok(Load {
            poll,
            addr: target.addr,
            mode,
            batch: request.repeat(depth).into_bytes(),
            depth,
            slots,
            reopen: (0..args.connections).collect(),
            latency: Latency::default(),
            requests: 0,
            opened: 0,
            errors: Errors::default(),
            elapsed: Duration::ZERO,
        })
    }

    /// Runs the loop for `duration`; `tick` hears the elapsed time every `TICK`.
    fn run(&mut self, duration: Duration, mut tick: impl FnMut(Duration)) -> Result<(), String> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let started = Instant::now();
        let deadline = started + duration;
        let mut next_tick = started + TICK;
        self.reopen(started);
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let timeout = next_tick.min(deadline).saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(format!("poll failed: {e}"));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break; // answers that came in after the deadline do not count
            }
            self.dispatch(&events);
            if now >= next_tick {
                self.expire(now);
                tick(now - started);
                next_tick = now + TICK;
            }
            self.reopen(now);
        }
        self.elapsed = deadline - started;
        Ok(())
    }

    fn dispatch(&mut self, events: &Events) {
        for event in events.iter() {
            // One clock reading per event: it ends this connection's answers and starts its
            // next request.
            let now = Instant::now();
            let key = event.token().0;
            let Some(slot) = self.slots.get_mut(key) else {
                continue;
            };
            match slot.phase {
                Phase::Closed => {}
                Phase::Connecting => {
                    if event.is_writable() || event.is_error() || event.is_read_closed() {
                        self.finish_connect(key, now);
                    }
                }
                Phase::Awaiting => {
                    if event.is_writable() || event.is_error() {
                        self.flush(key, now);
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.read_answers(key, now);
                    }
                }
            }
        }
    }

    fn finish_connect(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.slots[key].conn.as_mut() else {
            return;
        };
        match conn.finish_connect() {
            Ok(true) => self.send_batch(key, now),
            Ok(false) => {} // spurious: still connecting
            Err(e) => self.fail(key, &e),
        }
    }

    /// Writes the next request (or batch) and notes when each started.
    fn send_batch(&mut self, key: usize, now: Instant) {
        let slot = &mut self.slots[key];
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        let start = if self.mode == Mode::Close { slot.opened_at } else { now };
        slot.started.extend(std::iter::repeat_n(start, self.depth));
        slot.phase = Phase::Awaiting;
        slot.progressed_at = now;
        conn.queue(&self.batch);
        self.flush(key, now);
    }

    fn flush(&mut self, key: usize, now: Instant) {
        let slot = &mut self.slots[key];
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        match conn.flush() {
            Ok(()) => slot.progressed_at = now,
            Err(e) => self.fail(key, &e),
        }
    }

    /// Reads, records every whole answer, and sends the next batch once all are in.
    fn read_answers(&mut self, key: usize, now: Instant) {
        let slot = &mut self.slots[key];
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        let eof = match conn.fill() {
            Ok(eof) => eof,
            Err(e) => return self.fail(key, &e),
        };
        loop {
            let frame = match conn.next_response() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return self.fail(key, &e),
            };
            conn.consume(&frame);
            slot.progressed_at = now;
            // An answer nobody asked for has no start time; the connection is out of step.
            let Some(start) = slot.started.pop_front() else {
                self.errors.malformed += 1;
                return self.close(key);
            };
            self.latency.record(now - start);
            self.requests += 1;
            if !(200..300).contains(&frame.status) {
                self.errors.status += 1;
            }
            if frame.close || self.mode == Mode::Close {
                // The server ends the connection (close mode, or --max-requests reached): a new
                // one replaces it, as a browser would open one. Requests pipelined behind this
                // answer go unanswered, as the server announced; they are not errors.
                return self.close(key);
            }
        }
        if eof {
            self.errors.io += 1;
            self.close(key);
        } else if slot.started.is_empty() {
            self.send_batch(key, now);
        }
    }

    /// Replaces connections that made no progress for `RESPONSE_TIMEOUT`.
    fn expire(&mut self, now: Instant) {
        for key in 0..self.slots.len() {
            let slot = &self.slots[key];
            if slot.phase != Phase::Closed && now.duration_since(slot.progressed_at) >= RESPONSE_TIMEOUT {
                self.errors.timeout += 1;
                self.close(key);
            }
        }
    }

    fn fail(&mut self, key: usize, error: &ConnError) {
        self.count(error);
        log::debug!("connection {key}: {error}");
        self.slots[key].retry_at = Instant::now() + RETRY_DELAY;
        self.close(key);
    }

    fn count(&mut self, error: &ConnError) {
        match error {
            ConnError::Connect(_) => self.errors.connect += 1,
            ConnError::Io(_) => self.errors.io += 1,
            ConnError::Frame(_) => self.errors.malformed += 1,
        }
    }

    /// Marks a slot closed; its socket is dropped and replaced in `reopen`.
    fn close(&mut self, key: usize) {
        let slot = &mut self.slots[key];
        if slot.phase != Phase::Closed {
            slot.phase = Phase::Closed;
            slot.started.clear();
            self.reopen.push(key);
        }
    }

    /// Opens a new connection in every slot closed this turn. Dropping the old socket closes
    /// it, which also removes it from the poll.
    fn reopen(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.reopen) {
            self.slots[key].conn = None;
            if self.slots[key].retry_at > now {
                self.reopen.push(key);
                continue;
            }
            match Conn::open(self.poll.registry(), self.addr, Token(key)) {
                Ok(conn) => {
                    self.opened += 1;
                    let connected = conn.is_connected();
                    let slot = &mut self.slots[key];
                    (slot.conn, slot.phase, slot.opened_at, slot.progressed_at) =
                        (Some(conn), Phase::Connecting, now, now);
                    if connected {
                        self.send_batch(key, now);
                    }
                }
                Err(e) => {
                    self.count(&e);
                    self.slots[key].retry_at = now + RETRY_DELAY;
                    self.reopen.push(key);
                }
            }
        }
    }
}

fn outcome(target: &Target, args: &KeepaliveArgs, results: Vec<Measured>) -> Outcome {
    let header = ["mode", "requests", "req/s", "p50", "p90", "p99", "max", "connections", "errors", "TIME_WAIT"];
    let mut table = Table::new(&header);
    let mut modes = Vec::new();
    let mut notes = Vec::new();
    for m in &results {
        let s = m.latency.summary();
        table.row(vec![
            m.mode.name().to_string(),
            m.requests.to_string(),
            format!("{:.0}", m.rps()),
            report::human_us(s.p50_us),
            report::human_us(s.p90_us),
            report::human_us(s.p99_us),
            report::human_us(s.max_us),
            m.opened.to_string(),
            m.errors.total().to_string(),
            format!("{} -> {}", m.time_wait_before, m.time_wait_after),
        ]);
        if m.errors.total() > 0 {
            notes.push(format!("{} errors: {}", m.mode.name(), m.errors.breakdown()));
        }
        modes.push(json!({
            "mode": m.mode.name(),
            "requests": m.requests,
            "rps": report::round(m.rps(), 1),
            "latency_us": s.to_json(),
            "connections_opened": m.opened,
            "errors": m.errors.total(),
            "time_wait_before": m.time_wait_before,
            "time_wait_after": m.time_wait_after,
        }));
    }
    let mut text = format!(
        "keepalive: {} for {:?} per mode, {} connections, pipeline {}\n\n",
        target.url.target(),
        args.duration,
        args.connections,
        args.pipeline
    );
    text.push_str(&table.render());
    text.push_str(
        "\nlatency: request written -> answer read (close: from the connect); a closed loop under-counts \
         stalls\nTIME_WAIT: sockets in TIME_WAIT before -> after the mode, host-wide (/proc/net/sockstat; \
         docs/lab.md)\n",
    );
    for note in notes {
        let _ = writeln!(text, "{note}");
    }
    let json: Value = json!({
        "scenario": "keepalive",
        "url": format!("http://{}{}", target.url.authority(), target.url.target()),
        "connections": args.connections,
        "duration_secs": args.duration.as_secs_f64(),
        "pipeline": args.pipeline,
        "modes": modes,
    });
    let distributions = results.into_iter().map(|m| (m.mode.name().to_string(), m.latency)).collect();
    Outcome {
        json,
        table: text,
        title: "keepalive: request latency by mode".into(),
        distributions,
        nothing_measured: None,
    }
}
