//! The `keepalive` scenario: a closed loop of `--connections` client connections, each sending
//! its next request as soon as the answer to the last one is in, for `--duration`, once per mode.
//!
//! ```text
//!   keep-alive  connect once; request, answer, request, answer, ...
//!   close       connect, request with `Connection: close`, answer, close; connect again
//!   pipelined   connect once; --pipeline requests in one write, their answers, again
//! ```
//!
//! On the lab's engine (`engine`): an answer sends the next request at once; every `TICK`,
//! connections with no answer within `RESPONSE_TIMEOUT` are replaced; a connection that ended
//! is replaced after the turn (after `RETRY_DELAY` if it failed).
//!
//! Invariants:
//! - `--connections` connections are open or about to be reopened at any time.
//! - A connection keeps one start time per request in flight, oldest first; answers arrive in
//!   request order (HTTP/1.1), so each answer takes the oldest. Latency runs from the write of
//!   the request (keep-alive, pipelined) or from the connect (close: the handshake is part of
//!   what close costs) to the last byte of the answer.
//! - Only answers that arrive before the deadline count; requests in flight then are dropped.
//!
//! A closed loop under-reports stalls (coordinated omission): while a connection waits for a
//! slow answer it sends nothing, so the stall is recorded once instead of once per request that
//! a steady client would have sent meanwhile. wrk has the same property; `docs/lab.md` explains.

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::json;

use super::conn::ConnError;
use super::engine::{self, Engine, Gone};
use super::frame::Frame;
use super::report::{self, Errors, Latency, Table};
use super::{check_fd_budget, progress_bar, Outcome, OutputArgs, Target};
use crate::config::parse_duration;

/// How often the loop looks for stalled connections and moves the progress bar.
const TICK: Duration = Duration::from_millis(100);
/// An answer that takes longer than this counts as an error and its connection is replaced.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A slot whose connection failed waits this long (to the next turn after it) before opening
/// another: a server that is gone must not turn the loop into a spin of refused connects.
const RETRY_DELAY: Duration = Duration::from_millis(10);

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
    /// As `--modes` spells it, in the report too.
    fn name(self) -> String {
        self.to_possible_value().map_or_else(String::new, |value| value.get_name().to_string())
    }
}

/// What one mode measured: its closed loop's counts, the connections it opened, and the
/// host's sockets in TIME_WAIT before and after it.
struct Measured {
    load: ClosedLoop,
    opened: u64,
    time_wait: [u64; 2],
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
    // Each mode once, where it was first given.
    let given = &args.modes;
    let modes: Vec<Mode> =
        given.iter().enumerate().filter(|(i, m)| !given[..*i].contains(m)).map(|(_, m)| *m).collect();
    let total = args.duration * modes.len() as u32;
    let progress = progress_bar(total.as_millis() as u64, total, "keepalive");
    let mut results = Vec::new();
    for (i, &mode) in modes.iter().enumerate() {
        progress.set_prefix(mode.name());
        let offset = args.duration * i as u32;
        let time_wait_before = crate::stats::sockstat().tcp_time_wait;
        let mut engine = Engine::new(target.addr, usize::MAX)?;
        let mut load = ClosedLoop::new(&target, args, mode);
        load.run(&mut engine, |elapsed| progress.set_position((offset + elapsed).as_millis() as u64))?;
        let time_wait = [time_wait_before, crate::stats::sockstat().tcp_time_wait];
        results.push(Measured { load, opened: engine.opened, time_wait });
    }
    progress.finish_and_clear();
    Ok(outcome(&target, args, results))
}

/// One blocking request first, so that a wrong URL is one clear error, not a run of them.
fn preflight(target: &Target) -> Result<(), String> {
    let path = target.url.target();
    let response = target.control().get(&path).map_err(|e| format!("GET {path}: {e}"))?;
    if (200..300).contains(&response.status) {
        return Ok(());
    }
    Err(format!("GET {path} answered {} {}; bench a URL that answers 2xx", response.status, response.reason))
}

/// A connection of the closed loop.
struct Slot {
    /// The start time of each request in flight, oldest first.
    started: VecDeque<Instant>,
    /// The last connect, write or answer: a connection quiet for `RESPONSE_TIMEOUT` has stalled.
    progressed_at: Instant,
}

/// The closed loop of one mode, on the engine.
struct ClosedLoop {
    mode: Mode,
    /// What one turn of the loop writes: one request, or `--pipeline` of them.
    batch: Vec<u8>,
    depth: usize,
    /// When each connection to open (in place of one closed) may be opened: at once, or after
    /// `RETRY_DELAY` when the last one failed.
    reopen: Vec<Instant>,
    latency: Latency,
    requests: u64,
    errors: Errors,
    duration: Duration,
    /// Answers read and connections ended after this are not counted.
    deadline: Instant,
}

impl ClosedLoop {
    fn new(target: &Target, args: &KeepaliveArgs, mode: Mode) -> ClosedLoop {
        let close = if mode == Mode::Close { "Connection: close\r\n" } else { "" };
        // The same request as wrk's, so that both ask the server for the same work.
        let request = target.get(&target.url.target(), close);
        let depth = if mode == Mode::Pipelined { args.pipeline } else { 1 };
        ClosedLoop {
            mode,
            batch: request.repeat(depth).into_bytes(),
            depth,
            reopen: vec![Instant::now(); args.connections],
            latency: Latency::default(),
            requests: 0,
            errors: Errors::default(),
            duration: args.duration,
            deadline: Instant::now(),
        }
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// Runs the loop for `--duration`; `tick` hears the elapsed time every `TICK`.
    fn run(&mut self, engine: &mut Engine<Slot>, mut tick: impl FnMut(Duration)) -> Result<(), String> {
        let started = Instant::now();
        self.deadline = started + self.duration;
        let mut next_tick = started + TICK;
        self.open_due(engine, started);
        while Instant::now() < self.deadline {
            engine.turn(self, next_tick.min(self.deadline).saturating_duration_since(Instant::now()))?;
            let now = Instant::now();
            if now >= next_tick {
                self.expire(engine, now);
                tick(now - started);
                next_tick = now + TICK;
            }
            self.open_due(engine, now);
        }
        Ok(())
    }

    /// Opens a connection in place of each closed one whose time has come.
    fn open_due(&mut self, engine: &mut Engine<Slot>, now: Instant) {
        let depth = self.depth;
        self.reopen.retain(|&at| {
            if at <= now {
                engine.open(Slot { started: VecDeque::with_capacity(depth), progressed_at: now }, b"");
            }
            at > now
        });
    }

    /// Writes the next request (or batch) and notes when each started.
    fn send_batch(&mut self, engine: &mut Engine<Slot>, key: usize, now: Instant) {
        let Some(open) = engine.get_mut(key) else {
            return;
        };
        let start = if self.mode == Mode::Close { open.opened_at } else { now };
        open.state.started.extend(std::iter::repeat_n(start, self.depth));
        open.state.progressed_at = now;
        if let Err(e) = engine.send(key, &self.batch) {
            self.fail(engine, key, &e, now);
        }
    }

    /// Replaces connections that made no progress for `RESPONSE_TIMEOUT`.
    fn expire(&mut self, engine: &mut Engine<Slot>, now: Instant) {
        for key in engine.keys(|open| now.duration_since(open.state.progressed_at) >= RESPONSE_TIMEOUT) {
            self.errors.timeout += 1;
            self.replace(engine, key, now);
        }
    }

    fn fail(&mut self, engine: &mut Engine<Slot>, key: usize, error: &ConnError, now: Instant) {
        self.errors.count(error);
        log::debug!("connection {key}: {error}");
        engine.close(key);
        self.reopen.push(now + RETRY_DELAY);
    }

    /// Closes a connection; a new one replaces it at once.
    fn replace(&mut self, engine: &mut Engine<Slot>, key: usize, now: Instant) {
        engine.close(key);
        self.reopen.push(now);
    }
}

impl engine::Load<Slot> for ClosedLoop {
    fn connected(&mut self, engine: &mut Engine<Slot>, key: usize, now: Instant) {
        self.send_batch(engine, key, now);
    }

    fn written(&mut self, engine: &mut Engine<Slot>, key: usize, now: Instant) {
        if let Some(open) = engine.get_mut(key) {
            open.state.progressed_at = now;
        }
    }

    /// Records the answer, and sends the next batch once all are in.
    fn answered(&mut self, engine: &mut Engine<Slot>, key: usize, frame: &Frame, now: Instant) {
        let Some(open) = engine.get_mut(key).filter(|_| now < self.deadline) else {
            return; // after the deadline, nothing counts
        };
        open.state.progressed_at = now;
        // An answer nobody asked for has no start time; the connection is out of step.
        let Some(start) = open.state.started.pop_front() else {
            self.errors.malformed += 1;
            return self.replace(engine, key, now);
        };
        let all_in = open.state.started.is_empty();
        self.latency.record(now - start);
        self.requests += 1;
        if !(200..300).contains(&frame.status) {
            self.errors.status += 1;
        }
        if frame.close || self.mode == Mode::Close {
            // The server ends the connection (close mode, or --max-requests reached): a new
            // one replaces it, as a browser would open one. Requests pipelined behind this
            // answer go unanswered, as the server announced; they are not errors.
            self.replace(engine, key, now);
        } else if all_in {
            self.send_batch(engine, key, now);
        }
    }

    fn ended(&mut self, engine: &mut Engine<Slot>, key: usize, _gone: Gone<Slot>, why: ConnError, now: Instant) {
        if now >= self.deadline {
            return; // what ends after the deadline (a close after an uncounted answer) is not counted
        }
        if let ConnError::Closed { .. } = why {
            self.errors.io += 1;
            return self.reopen.push(now);
        }
        self.fail(engine, key, &why, now);
    }
}

fn outcome(target: &Target, args: &KeepaliveArgs, results: Vec<Measured>) -> Outcome {
    let header = ["mode", "requests", "req/s", "p50", "p90", "p99", "max", "connections", "errors", "TIME_WAIT"];
    let mut table = Table::new(&header);
    let (mut modes, mut notes) = (Vec::new(), String::new());
    for Measured { load: m, opened, time_wait: [before, after] } in &results {
        let (name, s, errors) = (m.mode.name(), m.latency.summary(), m.errors.total());
        let mut row = vec![name.to_string(), m.requests.to_string(), format!("{:.0}", m.rps())];
        row.extend(s.human());
        row.extend([opened.to_string(), errors.to_string(), format!("{before} -> {after}")]);
        table.row(row);
        if errors > 0 {
            let _ = writeln!(notes, "{name} errors: {}", m.errors.breakdown());
        }
        modes.push(json!({
            "mode": name, "requests": m.requests, "rps": report::round(m.rps(), 1), "latency_us": s.to_json(),
            "connections_opened": opened, "errors": errors, "time_wait_before": before, "time_wait_after": after,
        }));
    }
    let (path, connections, pipeline, duration) = (target.url.target(), args.connections, args.pipeline, args.duration);
    let table = format!(
        "keepalive: {path} for {duration:?} per mode, {connections} connections, pipeline {pipeline}\n\n{}\n\
         latency: request written -> answer read (close: from the connect); a closed loop under-counts stalls\n\
         TIME_WAIT: sockets in TIME_WAIT before -> after the mode, host-wide (/proc/net/sockstat; \
         docs/lab.md)\n{notes}",
        table.render()
    );
    let json = json!({
        "scenario": "keepalive", "url": format!("http://{}{path}", target.url.authority()),
        "connections": connections, "duration_secs": duration.as_secs_f64(), "pipeline": pipeline, "modes": modes,
    });
    let distributions = results.into_iter().map(|m| (m.load.mode.name(), m.load.latency)).collect();
    let title = "keepalive: request latency by mode".into();
    Outcome { json, table, title, distributions, nothing_measured: None }
}
