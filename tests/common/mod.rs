//! Helpers shared by the end-to-end tests: a guard around the real `tether` binary, a raw TCP
//! client that reads one HTTP/1.1 response at a time, and readers for `/stats`.
//!
//! Rules every test follows through these helpers:
//! - the server is the real binary (`serve --listen 127.0.0.1:0`), one per test, killed when
//!   its guard drops, so tests never share state and may run in parallel;
//! - every read has a timeout (`IO_TIMEOUT`) and every wait loop a bound, so a broken server
//!   fails a test instead of hanging it;
//! - every response read is checked for the headers every answer must carry (`Server`, `Date`,
//!   `Content-Length` matching the body), so no test can forget to.
//!
//! Each test file uses a different subset of these helpers, hence `allow(dead_code)`.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod polls;
pub mod redis;

/// How long any single read waits before the test calls the server unresponsive. Generous on
/// purpose: a loaded machine is slow, not wrong.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A response head longer than this is garbage, not a slow response.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How long a server gets to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Polling a condition that the server reaches on its own (a lingering close that ends when our
/// FIN arrives, a timer): `POLL_ATTEMPTS` tries, `POLL_INTERVAL` apart, i.e. at most 5 s.
const POLL_ATTEMPTS: u32 = 100;
const POLL_INTERVAL: Duration = Duration::from_millis(50);

// ---- the server ---------------------------------------------------------------------------

/// A running `tether serve` on a kernel-chosen loopback port; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Collects whatever the server prints to stdout after its listening line (nothing, by
    /// contract); joined by `stdout_after_banner`.
    stdout_rest: Option<JoinHandle<String>>,
}

impl Server {
    /// Starts `tether serve --listen 127.0.0.1:0 <options>` and waits for its listening line.
    /// Server logs are discarded unless `RUST_LOG` is set in the test's environment.
    pub fn start(options: &[&str]) -> Server {
        Server::start_at("127.0.0.1:0", options)
    }

    /// Starts the server on a given address (to restart one on the same port).
    pub fn start_at(listen: &str, options: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command.args(["serve", "--listen", listen]).args(options);
        Server::launch(command)
    }

    /// Starts the server with its soft open-file limit lowered to `limit` (set in the child
    /// between fork and exec, so the test process keeps its own).
    pub fn start_with_fd_limit(limit: u64, options: &[&str]) -> Server {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether"));
        command.args(["serve", "--listen", "127.0.0.1:0"]).args(options);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // getrlimit/setrlimit, which are async-signal-safe, on a struct on its own stack.
        unsafe {
            command.pre_exec(move || {
                let mut rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlimit) != 0 {
                    return Err(io::Error::last_os_error());
                }
                rlimit.rlim_cur = limit.min(rlimit.rlim_max);
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Server::launch(command)
    }

    fn launch(mut command: Command) -> Server {
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_some() {
            command.stderr(Stdio::inherit());
        } else {
            command.stderr(Stdio::null());
        }
        let mut child = command.spawn().expect("cannot start the tether binary");

        // Read stdout on a thread so that waiting for the banner has a deadline.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (banner_tx, banner_rx) = mpsc::channel();
        let stdout_rest = thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut banner = String::new();
            let _ = reader.read_line(&mut banner);
            let _ = banner_tx.send(banner);
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            rest
        });
        let banner = banner_rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let addr = parse_banner(&banner);
        let mut server = Server {
            child,
            addr: addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            stdout_rest: Some(stdout_rest),
        };
        if addr.is_none() {
            // `server` is dropped by the panic, which kills the process.
            let status = server.child.try_wait().ok().flatten();
            panic!("expected 'tether listening on http://127.0.0.1:PORT', got {banner:?} (exit status {status:?})");
        }
        server
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in pid_t")
    }

    /// A new raw connection to the server.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends a signal (`libc::SIGTERM`, `libc::SIGINT`) to the server process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed: {}", self.pid(), io::Error::last_os_error());
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the server printed to stdout after its listening line; call after it exited.
    pub fn stdout_after_banner(&mut self) -> String {
        let handle = self.stdout_rest.take().expect("stdout read only once");
        handle.join().expect("stdout reader thread")
    }

    /// `GET /stats` on a fresh connection (which asks to close, so it does not linger), parsed.
    pub fn stats(&self) -> Value {
        let mut client = self.connect();
        client.send(b"GET /stats HTTP/1.1\r\nHost: tether.test\r\nConnection: close\r\n\r\n");
        let response = client.read_response();
        client.expect_eof();
        parse_stats(&response)
    }

    /// Polls `/stats` (a fresh connection each time) until `condition` holds, for at most 5 s;
    /// returns the snapshot that satisfied it. For figures the server reaches on its own time,
    /// e.g. a close counted when the client's FIN arrives.
    pub fn wait_for_stats(&self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        poll_stats(what, || self.stats(), condition)
    }

    /// `POST /publish/{topic}` with `data` on a fresh connection, expecting `200`.
    pub fn publish(&self, topic: &str, data: &str) {
        let mut client = self.connect();
        client.send(
            format!(
                "POST /publish/{topic} HTTP/1.1\r\nHost: tether.test\r\nContent-Length: {}\r\n\r\n{data}",
                data.len()
            )
            .as_bytes(),
        );
        let response = client.read_response();
        assert_eq!(response.status, 200, "{response:?}");
    }

    /// Returns once the server has processed everything already sent on other connections.
    ///
    /// On loopback, `write` returns after the bytes are in the peer's receive queue and its
    /// epoll readiness is queued; epoll reports readiness in order and the server handles one
    /// batch of events before polling again. So once a request made *after* those writes is
    /// answered, the earlier bytes have been read. Used to make "the server has seen this partial
    /// request" a fact before the next step instead of a sleep.
    pub fn barrier(&self) {
        let _ = self.stats();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_banner(banner: &str) -> Option<SocketAddr> {
    let addr: SocketAddr = banner.strip_suffix('\n')?.strip_prefix("tether listening on http://")?.parse().ok()?;
    (addr.ip().is_loopback() && addr.port() != 0).then_some(addr)
}

// ---- the raw client -----------------------------------------------------------------------

/// One HTTP/1.1 response as it came off the wire.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// In arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Shows the body as text, so that a failing assertion prints something readable.
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Response {
    /// The value of header `name` (case-insensitive); panics if it appears more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "header {name} appears more than once in {self:?}");
        first
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("the body is UTF-8")
    }

    /// `Connection: close` is present.
    pub fn closes(&self) -> bool {
        self.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The `(timeout, max)` of `Keep-Alive: timeout=T, max=M`, or `None` without that header.
    pub fn keep_alive(&self) -> Option<(u64, u64)> {
        let value = self.header("Keep-Alive")?;
        let (timeout, max) = value.split_once(", ").unwrap_or_else(|| panic!("malformed Keep-Alive: {value:?}"));
        let number = |field: &str, prefix: &str| -> u64 {
            field
                .strip_prefix(prefix)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("malformed Keep-Alive: {value:?}"))
        };
        Some((number(timeout, "timeout="), number(max, "max=")))
    }

    /// The checks for an answer after which the server keeps the connection: no
    /// `Connection: close`, and a `Keep-Alive` header saying how many requests remain.
    pub fn assert_keeps_alive(&self) {
        assert!(!self.closes(), "expected a keep-alive response, got {self:?}");
        assert!(self.keep_alive().is_some(), "a keep-alive response carries Keep-Alive: {self:?}");
    }

    /// The checks for an answer that ends the connection: `Connection: close`, no `Keep-Alive`.
    pub fn assert_closes(&self) {
        assert!(self.closes(), "expected Connection: close, got {self:?}");
        assert!(self.header("Keep-Alive").is_none(), "a closing response carries no Keep-Alive: {self:?}");
    }

    /// The checks for an error answer: `Connection: close` and a body of one line of text.
    pub fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "unexpected status in {self:?}");
        self.assert_closes();
        let text = self.text();
        assert!(
            text.len() > 1 && text.ends_with('\n') && text.matches('\n').count() == 1,
            "an error body is one line of text ending in a newline, got {text:?}"
        );
    }
}

/// A blocking TCP connection with read and write timeouts, reading responses one at a time.
pub struct Client {
    stream: TcpStream,
    /// Bytes read past the end of the last response (the start of the next one, pipelined).
    pending: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set_read_timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("set_write_timeout");
        stream.set_nodelay(true).expect("set_nodelay");
        Client { stream, pending: Vec::new() }
    }

    /// The socket, e.g. to clone it for a writer thread.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket itself, for a test that drives it another way (nothing may be buffered).
    pub fn into_stream(self) -> TcpStream {
        assert!(self.pending.is_empty(), "bytes of a response are still buffered");
        self.stream
    }

    /// Writes all of `bytes` in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    /// `GET path` over HTTP/1.1 (keep-alive by default) and its response.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: tether.test\r\n\r\n").as_bytes());
        self.read_response()
    }

    /// `GET /stats` on this connection, parsed. The connection stays open.
    pub fn stats(&mut self) -> Value {
        let response = self.get("/stats");
        response.assert_keeps_alive();
        parse_stats(&response)
    }

    /// Polls `/stats` on this connection until `condition` holds, for at most 5 s; returns the
    /// snapshot that satisfied it. (Each poll is one more request on this connection.)
    pub fn wait_for_stats(&mut self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        poll_stats(what, || self.stats(), condition)
    }

    /// Reads one response (with its `Content-Length` body); panics on timeout or EOF.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads the response to a HEAD request: its `Content-Length` announces a body that is not
    /// sent, so none is read.
    pub fn read_head_response(&mut self) -> Response {
        self.try_read_response(true).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits up to `within` for the server to send something (an answer held for long, say),
    /// without reading it: the next read then has `IO_TIMEOUT` from there.
    pub fn await_bytes(&mut self, within: Duration) {
        if !self.pending.is_empty() {
            return;
        }
        self.stream.set_read_timeout(Some(within)).expect("set_read_timeout");
        let mut byte = [0u8; 1];
        match self.stream.peek(&mut byte) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => panic!("nothing from the server within {within:?}"),
            Err(e) => panic!("error while waiting for the server: {e}"),
        }
    }

    /// Reads one response, or says why none came (timeout, EOF, reset, malformed). The whole
    /// response must arrive within `IO_TIMEOUT`, and its head within `MAX_RESPONSE_HEAD` bytes.
    pub fn try_read_response(&mut self, head_request: bool) -> Result<Response, String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let head_end = loop {
            if let Some(at) = find(&self.pending, b"\r\n\r\n") {
                break at + 4;
            }
            if self.pending.len() > MAX_RESPONSE_HEAD {
                return Err(format!("no end of the response head in {} bytes", self.pending.len()));
            }
            self.fill("response head", deadline)?;
        };
        let head = std::str::from_utf8(&self.pending[..head_end - 4])
            .map_err(|_| "the response head is not UTF-8".to_string())?;
        let mut response = parse_head(head)?;
        let length: usize = match response.header("Content-Length") {
            // A 204 has no content and says nothing of its length (RFC 9110 §8.6).
            None if response.status == 204 => 0,
            Some(_) if response.status == 204 => return Err(format!("a 204 with Content-Length: {response:?}")),
            length => length
                .ok_or_else(|| format!("no Content-Length in {response:?}"))?
                .parse()
                .map_err(|_| format!("bad Content-Length in {response:?}"))?,
        };
        let body_length = if head_request { 0 } else { length };
        while self.pending.len() < head_end + body_length {
            self.fill("response body", deadline)?;
        }
        response.body = self.pending[head_end..head_end + body_length].to_vec();
        self.pending.drain(..head_end + body_length);
        check_common_headers(&response)?;
        Ok(response)
    }

    /// Reads the head of an event stream, which has no length (its body runs until the close);
    /// what came after the head stays buffered for `read_stream_until`.
    pub fn read_stream_head(&mut self) -> Response {
        let deadline = Instant::now() + IO_TIMEOUT;
        let head_end = loop {
            if let Some(at) = find(&self.pending, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill("event stream head", deadline).unwrap_or_else(|e| panic!("{e}"));
        };
        let head = String::from_utf8_lossy(&self.pending[..head_end - 4]).into_owned();
        let response = parse_head(&head).unwrap_or_else(|e| panic!("{e}"));
        self.pending.drain(..head_end);
        response
    }

    /// Reads an event stream's body until `needle` has arrived (within `IO_TIMEOUT`), and takes
    /// everything up to and including it.
    pub fn read_stream_until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(at) = find(&self.pending, needle.as_bytes()) {
                let taken: Vec<u8> = self.pending.drain(..at + needle.len()).collect();
                return String::from_utf8(taken).expect("an event stream is UTF-8");
            }
            self.fill(&format!("event stream up to {needle:?}"), deadline).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Asserts that the server sends nothing more and closes cleanly: a FIN (EOF), within
    /// `IO_TIMEOUT`, not a reset and not extra bytes.
    pub fn expect_eof(&mut self) {
        assert!(
            self.pending.is_empty(),
            "unexpected bytes after the last response: {:?}",
            String::from_utf8_lossy(&self.pending)
        );
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set_read_timeout");
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => {}
            Ok(n) => panic!("expected EOF, got {n} more bytes: {:?}", String::from_utf8_lossy(&chunk[..n])),
            Err(e) if is_timeout(&e) => panic!("expected EOF, but the connection is still open after {IO_TIMEOUT:?}"),
            Err(e) => panic!("expected a clean EOF, got {e}"),
        }
    }

    /// Reads once more into `pending`, waiting no later than `deadline`.
    fn fill(&mut self, reading: &str, deadline: Instant) -> Result<(), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no complete {reading} within {IO_TIMEOUT:?}"));
        }
        self.stream.set_read_timeout(Some(left)).expect("set_read_timeout");
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(format!(
                "EOF while reading {reading} (after {} bytes: {:?})",
                self.pending.len(),
                String::from_utf8_lossy(&self.pending)
            )),
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if is_timeout(&e) => Err(format!("no complete {reading} within {IO_TIMEOUT:?}")),
            Err(e) => Err(format!("error while reading the {reading}: {e}")),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses `HTTP/1.1 NNN Reason` and `Name: value` lines, strictly.
fn parse_head(head: &str) -> Result<Response, String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let malformed = || format!("malformed status line {status_line:?}");
    let rest = status_line.strip_prefix("HTTP/1.1 ").ok_or_else(malformed)?;
    let (code, reason) = rest.split_once(' ').ok_or_else(malformed)?;
    if code.len() != 3 {
        return Err(malformed());
    }
    let status = code.parse().map_err(|_| malformed())?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("malformed header line {line:?}"))?;
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(format!("malformed header name in {line:?}"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Response { status, reason: reason.to_string(), headers, body: Vec::new() })
}

/// Every response carries `Server: tether`, an IMF-fixdate `Date` and one `Content-Length`.
fn check_common_headers(response: &Response) -> Result<(), String> {
    let count = |name: &str| response.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count();
    for name in ["Server", "Date", "Content-Length", "Connection", "Keep-Alive", "Content-Type"] {
        if count(name) > 1 {
            return Err(format!("header {name} repeated in {response:?}"));
        }
    }
    if response.header("Server") != Some("tether") {
        return Err(format!("missing Server: tether in {response:?}"));
    }
    match response.header("Date") {
        Some(date) if is_imf_fixdate(date) => Ok(()),
        _ => Err(format!("missing or malformed Date in {response:?}")),
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 section 5.6.7).
fn is_imf_fixdate(date: &str) -> bool {
    let b = date.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    b.len() == 29
        && ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&&date[..3])
        && &date[3..5] == ", "
        && digits(5..7)
        && ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"].contains(&&date[8..11])
        && digits(12..16)
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &date[25..] == " GMT"
}

// ---- /stats ---------------------------------------------------------------------------------

fn parse_stats(response: &Response) -> Value {
    assert_eq!(response.status, 200, "GET /stats failed: {response:?}");
    assert_eq!(response.header("Content-Type"), Some("application/json"), "{response:?}");
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("/stats is not JSON ({e}): {}", response.text()))
}

/// The unsigned integer at a dotted path, e.g. `num(&stats, "totals.closed.by_client")`.
pub fn num(stats: &Value, path: &str) -> u64 {
    let mut value = stats;
    for key in path.split('.') {
        value = value.get(key).unwrap_or_else(|| panic!("/stats has no {path}: {stats}"));
    }
    value.as_u64().unwrap_or_else(|| panic!("/stats {path} is not an unsigned integer: {value}"))
}

/// The names of `totals.closed`: each accepted connection ends in exactly one of them.
pub const CLOSE_REASONS: [&str; 9] = [
    "by_client",
    "idle_timeout",
    "header_timeout",
    "write_timeout",
    "max_requests",
    "reclaimed",
    "error",
    "drain",
    "rejected",
];

/// The sum of all `totals.closed.*` buckets.
pub fn closed_total(stats: &Value) -> u64 {
    CLOSE_REASONS.iter().map(|reason| num(stats, &format!("totals.closed.{reason}"))).sum()
}

/// The bookkeeping that must hold in every snapshot: every accepted connection is either open
/// or counted in exactly one close bucket, and every open connection is in exactly one state.
pub fn assert_accounting(stats: &Value) {
    let open = num(stats, "connections.open");
    assert_eq!(num(stats, "totals.accepted"), open + closed_total(stats), "accepted != open + closed.*: {stats}");
    let by_state: u64 = ["reading", "idle", "held", "streaming", "websocket", "writing", "closing"]
        .iter()
        .map(|s| num(stats, &format!("connections.{s}")))
        .sum();
    assert_eq!(open, by_state, "connections.open != the sum of the per-state counts: {stats}");
}

/// Takes `/stats` snapshots with `fetch` until `condition` holds, for at most 5 s.
fn poll_stats(what: &str, mut fetch: impl FnMut() -> Value, condition: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..POLL_ATTEMPTS {
        last = fetch();
        if condition(&last) {
            return last;
        }
        thread::sleep(POLL_INTERVAL);
    }
    panic!("/stats never showed {what}; last snapshot: {last}");
}

// ---- scripts ------------------------------------------------------------------------------

/// Runs `command` (a client script) to its end, or kills it after `timeout`, and returns what
/// it printed, standard output then standard error; fails the test unless it exited 0.
pub fn run_script_command(mut command: Command, timeout: Duration) -> String {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    // Read both pipes on threads, so that waiting for the exit has a deadline.
    let stdout = read_to_end(child.stdout.take().expect("stdout is piped"));
    let stderr = read_to_end(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on the script") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let output = format!("{}{}", stdout.join().expect("stdout reader"), stderr.join().expect("stderr reader"));
    match status {
        Some(status) => assert!(status.success(), "{shown} failed ({status}):\n{output}"),
        None => panic!("{shown} did not end within {timeout:?}, killed:\n{output}"),
    }
    output
}

fn read_to_end(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
