//! `tether bench`: the lab. A single-threaded mio load generator that measures, against a
//! running server on this machine, what keep-alive and long polling cost. The scenarios are the
//! variants of `Scenario`, each a module of its own on the one engine.
//!
//! Who owns what: `engine` is the one event loop, `conn` one non-blocking client connection,
//! `frame` finds where a response ends, `websocket` writes a client's frames and finds where a
//! server's end, `follow` drives the followers and the publisher of `longpoll` and `realtime`,
//! `servers` the servers such a run loads and their `/stats`, `report` turns counts and
//! histograms into tables and JSON, `plot` draws the latency distributions, `host` reads the
//! server's pid, CPU time and memory from `/proc`. This module parses the arguments, checks the
//! target and the open-file budget, writes the requests every scenario sends, and prints the
//! outcome.
//!
//! Invariants every scenario keeps:
//! - Load goes to loopback only (127.0.0.0/8 or ::1); any other address is refused.
//! - Every run is bounded in time: by `--duration`, or by the publish schedule plus a fixed
//!   grace; every wait for the server has a deadline.
//! - Sockets never exceed the open-file limit: a run that would need more is refused up front.
//! - The outcome goes to standard output (JSON or a table), progress to standard error.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::client::{Client, Url};

mod conn;
mod engine;
mod exhaust;
mod follow;
mod frame;
mod host;
mod idle;
mod keepalive;
mod lateness;
mod longpoll;
mod plot;
mod realtime;
mod report;
mod servers;
mod slowloris;
mod websocket;

/// Descriptors the generator keeps beside its sockets: stdio, epoll, the control connection,
/// the publisher, `/proc` reads.
const SPARE_FDS: usize = 32;
/// A progress bar is drawn only for runs longer than this.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);
/// How long a `/stats`, warm-up or preflight request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// Requests per second and latency with keep-alive, one connection per request, and pipelining.
    Keepalive(keepalive::KeepaliveArgs),
    /// N clients hold polls (or event streams, or WebSockets) on one topic while M messages are
    /// published: delivery latency and what each costs the server (with --messages 1, the
    /// fan-out of one publish).
    Longpoll(longpoll::LongpollArgs),
    /// N polls held with hold times spread over 1s to 1s + --spread, nothing published: how late
    /// after its deadline the server answers each.
    Lateness(lateness::LatenessArgs),
    /// The same publish schedule delivered by short polling, long polling, event streams and
    /// WebSockets, one after the other: the comparison.
    Realtime(realtime::RealtimeArgs),
    /// Newcomers hold polls until the server refuses one: where and how it refuses, whether
    /// what it held still works, and its CPU while at the limit.
    Exhaust(exhaust::ExhaustArgs),
    /// Connections that send a request head one byte at a time and never finish it: how and
    /// when the server ends them, and what fresh requests wait meanwhile.
    Slowloris(slowloris::SlowlorisArgs),
    /// N keep-alive connections asked once and left idle: what each costs the server's RSS and
    /// the kernel's memory.
    Idle(idle::IdleArgs),
}

/// The options every scenario shares.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also draw the latency distributions into this SVG file (checked before the run).
    #[arg(long, value_name = "FILE.svg", value_parser = plot::svg_path)]
    pub plot: Option<PathBuf>,
}

/// Runs one scenario and prints its outcome.
///
/// # Errors
///
/// A message for the person who ran it: a refused argument, an unreachable server, a failed run,
/// a run that measured nothing (after its outcome is printed), a plot that could not be drawn.
pub fn run(args: BenchArgs) -> Result<(), String> {
    // How the scenario's outcome is printed (a plot only where there are latency distributions),
    // and the scenario, to be run once that is known to be possible.
    type Run<'a> = Box<dyn FnOnce() -> Result<Outcome, String> + 'a>;
    let json = |json: bool| OutputArgs { json, plot: None };
    let (output, scenario): (OutputArgs, Run) = match &args.scenario {
        Scenario::Keepalive(args) => (args.output.clone(), Box::new(|| keepalive::run(args))),
        Scenario::Longpoll(args) => (args.output.clone(), Box::new(|| longpoll::run(args))),
        Scenario::Realtime(args) => (args.output.clone(), Box::new(|| realtime::run(args))),
        Scenario::Lateness(args) => (json(args.json), Box::new(|| lateness::run(args))),
        Scenario::Exhaust(args) => (json(args.json), Box::new(|| exhaust::run(args))),
        Scenario::Slowloris(args) => (json(args.json), Box::new(|| slowloris::run(args))),
        Scenario::Idle(args) => (json(args.json), Box::new(|| idle::run(args))),
    };
    // A plot that cannot be written is refused now, not after a run whose figures it would lose.
    if let Some(path) = &output.plot {
        plot::check_writable(path)?;
    }
    emit(&scenario()?, &output, &mut std::io::stdout().lock())
}

/// What a scenario measured, ready to print.
#[derive(Default)]
pub struct Outcome {
    pub json: Value,
    pub table: String,
    /// The title of the plot, and each mode's latency distribution.
    pub title: String,
    pub distributions: Vec<(String, report::Latency)>,
    /// Why the run measured nothing (no connection was ever made, say), if it did not: the
    /// outcome is printed all the same, and the command then fails with this message.
    pub nothing_measured: Option<String>,
}

/// Prints the outcome first, so that no failure after it (the plot, a run that measured
/// nothing) can lose what was measured.
fn emit(outcome: &Outcome, output: &OutputArgs, out: &mut impl Write) -> Result<(), String> {
    let text = if output.json {
        let mut text = serde_json::to_string_pretty(&outcome.json).map_err(|e| e.to_string())?;
        text.push('\n');
        text
    } else {
        outcome.table.clone()
    };
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| format!("cannot print: {e}"))?;
    if let Some(path) = &output.plot {
        plot::write(path, &outcome.title, &outcome.distributions)?;
    }
    outcome.nothing_measured.clone().map_or(Ok(()), Err)
}

/// The server under test, from `--url`.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `--url` and refuses anything but a loopback address (`localhost` is 127.0.0.1;
    /// other names are not resolved, so a name can never send load elsewhere).
    ///
    /// # Errors
    ///
    /// A message naming what is wrong with the URL.
    pub fn parse(text: &str) -> Result<Target, String> {
        let url = Url::parse(text)?;
        let host = url.host.trim_start_matches('[').trim_end_matches(']');
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse::<IpAddr>().map_err(|_| {
                format!("--url {text}: give a loopback address such as 127.0.0.1, not a name (no lookups are made)")
            })?
        };
        if !ip.is_loopback() {
            return Err(format!(
                "--url {text}: tether bench loads only this machine's loopback (127.0.0.0/8 or ::1), not {ip}"
            ));
        }
        Ok(Target { addr: SocketAddr::new(ip, url.port), url })
    }

    /// The path under which the server's endpoints live: the URL's path without its final `/`
    /// (empty for tether itself; a prefix behind a proxy).
    pub fn base_path(&self) -> &str {
        self.url.path.trim_end_matches('/')
    }

    /// Connects once and closes, so that a run against a port where nothing listens ends at once,
    /// saying so, instead of counting every connection it tries as a failure.
    ///
    /// # Errors
    ///
    /// `cannot connect to ADDR: REASON`.
    pub fn check_listening(&self) -> Result<(), String> {
        std::net::TcpStream::connect_timeout(&self.addr, CONTROL_TIMEOUT)
            .map(drop)
            .map_err(|e| format!("cannot connect to {}: {e}; is the server running?", self.addr))
    }

    /// `GET request_target` (a path and its query) with `headers`, each ending in CRLF.
    pub fn get(&self, request_target: &str, headers: &str) -> String {
        format!("GET {request_target} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n", self.url.authority())
    }

    /// `POST /publish/TOPIC` with `data` as its body.
    pub fn publish(&self, topic: &str, data: &str) -> String {
        let (base, authority, length) = (self.base_path(), self.url.authority(), data.len());
        format!(
            "POST {base}/publish/{topic} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain\r\n\
             Content-Length: {length}\r\n\r\n{data}"
        )
    }

    /// A blocking keep-alive connection for `/stats`, warm-up publishes and the preflight.
    pub fn control(&self) -> Client {
        Client::new(&self.url).response_timeout(CONTROL_TIMEOUT)
    }

    /// `GET /stats`, parsed.
    ///
    /// # Errors
    ///
    /// When the server does not answer 200 with JSON.
    pub fn stats(&self, control: &mut Client) -> Result<Value, String> {
        let target = format!("{}/stats", self.base_path());
        let response = control.get(&target).map_err(|e| format!("GET {target}: {e}"))?;
        if response.status != 200 {
            return Err(format!("GET {target} answered {} {}", response.status, response.reason));
        }
        serde_json::from_slice(&response.body).map_err(|e| format!("GET {target} is not JSON: {e}"))
    }
}

/// The unsigned figure at a JSON pointer of a `/stats` document, 0 when absent.
pub fn stat(stats: &Value, pointer: &str) -> u64 {
    stats.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Refuses a run whose `option` (given as `value`) needs more sockets than this process may open.
///
/// # Errors
///
/// A message naming the option, the need and the limit.
pub fn check_fd_budget(option: &str, value: usize, sockets: usize) -> Result<(), String> {
    let limit = crate::stats::fds_limit();
    let need = sockets.saturating_add(SPARE_FDS) as u64;
    if need > limit {
        return Err(format!(
            "{option} {value} needs {need} open files, over this process's open-file limit of {limit} \
             (RLIMIT_NOFILE, `ulimit -n`); the server needs one per connection too: lower {option} or raise the limit"
        ));
    }
    Ok(())
}

/// A progress bar on standard error of `len` steps named `what`, for a run expected to take
/// `expected`. It is drawn only when standard error is a terminal and the run is long enough to be
/// worth watching; otherwise it is hidden, and every call on it does nothing.
pub fn progress_bar(len: u64, expected: Duration, what: &str) -> ProgressBar {
    drawn(len, expected, what, "{pos}/{len} {elapsed}")
}

/// As `progress_bar`, filling with time over `duration` (its position is the milliseconds
/// elapsed, its message what happened so far), for a run whose count moves only at its end
/// (slowloris end together at the server's header timeout).
pub fn timed_bar(duration: Duration, what: &str) -> ProgressBar {
    drawn(duration.as_millis() as u64, duration, what, "{msg}")
}

fn drawn(len: u64, expected: Duration, what: &str, tail: &str) -> ProgressBar {
    if expected <= PROGRESS_AFTER || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_prefix(what.to_string());
    if let Ok(style) = ProgressStyle::with_template(&format!("{{prefix:>12}} [{{bar:40}}] {tail}")) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        for ok in ["http://127.0.0.1:8080/plaintext", "http://127.9.8.7:1/", "http://localhost:80", "http://[::1]:8080"]
        {
            assert!(Target::parse(ok).is_ok(), "{ok}");
        }
        let addr = Target::parse("http://localhost:8080/x").unwrap().addr;
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        for bad in ["http://10.0.0.1:8080/", "http://example.com/", "http://[2001:db8::1]:80/", "https://127.0.0.1/"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_base_path_drops_its_final_slash() {
        assert_eq!(Target::parse("http://127.0.0.1:8080").unwrap().base_path(), "");
        assert_eq!(Target::parse("http://127.0.0.1:8080/").unwrap().base_path(), "");
        assert_eq!(Target::parse("http://127.0.0.1:8080/api/").unwrap().base_path(), "/api");
    }

    fn outcome(nothing_measured: Option<&str>) -> Outcome {
        Outcome {
            json: serde_json::json!({"scenario": "test"}),
            table: "the table\n".into(),
            title: "test".into(),
            distributions: vec![("a".into(), report::Latency::default())],
            nothing_measured: nothing_measured.map(str::to_string),
        }
    }

    #[test]
    fn the_outcome_is_printed_before_anything_after_it_can_fail() {
        let missing = std::env::temp_dir().join(format!("tether-no-such-dir-{}", std::process::id())).join("x.svg");
        let cases = [
            (OutputArgs { json: false, plot: Some(missing) }, None, "the table\n", false),
            (OutputArgs { json: true, plot: None }, Some("nothing"), "{\n  \"scenario\": \"test\"\n}\n", false),
            (OutputArgs { json: false, plot: None }, None, "the table\n", true),
        ];
        for (output, nothing_measured, printed, ok) in cases {
            let mut out = Vec::new();
            let result = emit(&outcome(nothing_measured), &output, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), printed, "{output:?}");
            assert_eq!(result.is_ok(), ok, "{output:?}: {result:?}");
        }
    }

    #[test]
    fn the_open_file_budget_names_the_limit() {
        let limit = crate::stats::fds_limit() as usize;
        let error = check_fd_budget("--clients", limit, limit + 1).unwrap_err();
        let need = format!("--clients {limit} needs {} open files", limit + 1 + SPARE_FDS);
        assert!(error.contains(&need) && error.contains("open-file limit"), "{error}");
        assert!(check_fd_budget("--clients", 1, 2).is_ok());
    }
}
