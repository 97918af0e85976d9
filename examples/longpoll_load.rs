//! Long polling under load: how fast one publish reaches many held polls, what a held poll
//! costs the server, and how close to its deadline a hold ends. Loopback only.
//!
//! ```text
//! cargo build --release --example longpoll_load
//! longpoll_load fanout       --addr 127.0.0.1:PORT --pid PID --clients 15000 [--topic t]
//! longpoll_load lateness     --addr 127.0.0.1:PORT [--pid PID] --clients 15000 --spread 30s
//! ```
//!
//! - `fanout`: N connections each hold `GET /poll/T?timeout=120s`; once the server's /stats says
//!   all N are held, memory is read, then one `POST /publish/T` goes out on a separate connection
//!   opened beforehand. Every answer's arrival is timed from just before that write.
//! - `lateness`: N polls with distinct hold times spread over [1s, 1s + spread], in shuffled
//!   order, sent as fast as connections open; lateness = arrival - (send + hold).
//!
//! What a held poll adds to an idle keep-alive connection is `fanout`'s figure against
//! `idle_cost`'s, both against a fresh server.
//!
//! The client is one thread on one mio `Poll`, like the server, so give it its own core
//! (`taskset -c 1`) and its own process: each side needs one descriptor per connection.
//! Arrival times are taken when the whole answer has been read, so they include the client's
//! own lag; compare them with the server's `polls.last_fanout_us`. Bodies are checked only
//! after the timed part, so that checking does not delay reading the next answer.
//!
//! Memory is read as `idle_cost` reads it: VmRSS of --pid (the server only), and Slab,
//! SUnreclaim, sockstat and /proc/slabinfo, which are host-wide and count BOTH ends of every
//! loopback connection. `other` CPU says how busy the rest of the machine was meanwhile.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const USAGE: &str = "usage: longpoll_load fanout|lateness --addr 127.0.0.1:PORT [--pid PID] \
--clients N [--topic t] [--spread 30s] [--settle-ms 1000] [--max-secs 120]";

/// The client needs one fd per connection on top of these.
const SPARE_FDS: u64 = 32;
/// Connections started per turn of the loop. Between batches the loop finishes connects and
/// reads answers, so opening never starves the arrivals that `lateness` times. Opening faster
/// than the server accepts overflows its listen backlog: the kernel drops the SYN and the
/// connect completes 1 s later. Send times are taken after the connect, so only the opening
/// takes longer; the kernel's ListenOverflows count is printed to show it.
const CONNECTS_PER_TURN: usize = 64;
/// Slab caches that a TCP connection grows, shown per connection (as in `idle_cost`).
const CACHES: [&str; 6] = ["TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "skbuff_head_cache"];

struct Args {
    /// `lateness`, else `fanout`.
    lateness: bool,
    addr: SocketAddr,
    pid: Option<u32>,
    clients: usize,
    topic: String,
    spread: Duration,
    settle: Duration,
    max_time: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let lateness = match it.next().as_deref() {
        Some("fanout") => false,
        Some("lateness") => true,
        other => return Err(format!("unknown scenario {other:?}")),
    };
    let (mut addr, mut pid, mut clients) = (None, None, None);
    let (mut topic, mut spread) = ("t".to_string(), Duration::from_secs(30));
    let (mut settle_ms, mut max_secs) = (1000u64, 120u64);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => addr = Some(value.parse::<SocketAddr>().map_err(|e| bad(&e))?),
            "--pid" => pid = Some(value.parse::<u32>().map_err(|e| bad(&e))?),
            "--clients" => clients = Some(value.parse::<usize>().map_err(|e| bad(&e))?),
            "--topic" => topic = value,
            // The server's own syntax: 500ms, 30s, 2m.
            "--spread" => spread = tether::config::parse_duration(&value).map_err(|e| bad(&e))?,
            "--settle-ms" => settle_ms = value.parse().map_err(|e| bad(&e))?,
            "--max-secs" => max_secs = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let addr = addr.ok_or("--addr is required")?;
    // Load is only ever sent to this machine.
    if !addr.ip().is_loopback() {
        return Err(format!("--addr {addr} is not a loopback address"));
    }
    if pid.is_none() && !lateness {
        return Err("--pid is required: the server's memory is read from /proc".into());
    }
    let clients = clients.filter(|&n| n > 0).ok_or("--clients N (at least 1) is required")?;
    let (settle, max_time) = (Duration::from_millis(settle_ms), Duration::from_secs(max_secs));
    Ok(Args { lateness, addr, pid, clients, topic, spread, settle, max_time })
}

// ---- /proc readings, as in idle_cost ----------------------------------------------------------

/// The number after `key` on the line that starts with it: "VmRSS:  1234 kB".
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}

/// A value from the "TCP: inuse 3 orphan 0 tw 2 alloc 5 mem 1" line of /proc/net/sockstat.
fn sockstat_tcp(text: &str, key: &str) -> Option<u64> {
    let words: Vec<&str> = text.lines().find(|l| l.starts_with("TCP:"))?.split_whitespace().collect();
    words.get(words.iter().position(|w| *w == key)? + 1)?.parse().ok()
}

/// TcpExt ListenOverflows of /proc/net/netstat (a line of names, then one of values): SYNs
/// dropped because a listen backlog was full, each retried by the client 1 s later.
fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:")).map(|l| l.split_whitespace());
    let (Some(mut names), Some(mut values)) = (lines.next(), lines.next()) else { return 0 };
    names.position(|w| w == "ListenOverflows").and_then(|i| values.nth(i)?.parse().ok()).unwrap_or(0)
}

/// (active objects, bytes) of one slab cache.
fn slab_cache(slabinfo: &str, name: &str) -> Option<(u64, u64)> {
    let line = slabinfo.lines().find(|l| l.split_whitespace().next() == Some(name))?;
    let w: Vec<u64> = line.split_whitespace().skip(1).take(3).filter_map(|n| n.parse().ok()).collect();
    Some((*w.first()?, w.first()? * w.get(2)?))
}

/// The kernel page size, which sockstat's "mem" is counted in.
fn page_size() -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    field(&smaps, "KernelPageSize:").map_or(4096, |kb| kb * 1024)
}

struct Memory {
    /// Server VmRSS, Slab, SUnreclaim, sockstat TCP mem: all in bytes.
    bytes: [u64; 4],
    /// The server's peak RSS so far (VmHWM).
    peak_rss: u64,
    tcp_inuse: u64,
    time_wait: u64,
    caches: Vec<Option<(u64, u64)>>,
}

fn memory(pid: u32) -> Result<Memory, String> {
    let read = |path: &str| std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"));
    let (status, meminfo) = (read(&format!("/proc/{pid}/status"))?, read("/proc/meminfo")?);
    let sockstat = read("/proc/net/sockstat")?;
    // /proc/slabinfo is root-only; without it the breakdown is left out.
    let slabinfo = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    let need = |v: Option<u64>, what: &str| v.ok_or_else(|| format!("no {what} found"));
    Ok(Memory {
        bytes: [
            need(field(&status, "VmRSS:"), "VmRSS")? * 1024,
            need(field(&meminfo, "Slab:"), "Slab")? * 1024,
            need(field(&meminfo, "SUnreclaim:"), "SUnreclaim")? * 1024,
            need(sockstat_tcp(&sockstat, "mem"), "TCP mem")? * page_size(),
        ],
        peak_rss: need(field(&status, "VmHWM:"), "VmHWM")? * 1024,
        tcp_inuse: need(sockstat_tcp(&sockstat, "inuse"), "TCP inuse")?,
        time_wait: need(sockstat_tcp(&sockstat, "tw"), "TCP tw")?,
        caches: CACHES.iter().map(|c| slab_cache(&slabinfo, c)).collect(),
    })
}

fn print_memory(before: &Memory, after: &Memory, n: usize, per: &str) {
    println!("TCP sockets in use   {} -> {} (both ends counted)", before.tcp_inuse, after.tcp_inuse);
    println!("{:<20} {:>14} {:>14} {:>14} {:>10}", "figure", "before B", "after B", "growth B", per);
    let names = ["server VmRSS", "kernel Slab", "kernel SUnreclaim", "sockstat TCP mem"];
    for (i, name) in names.iter().enumerate() {
        let (b, a) = (before.bytes[i], after.bytes[i]);
        let growth = a as i64 - b as i64;
        let note = if i == 0 { "server process only" } else { "host-wide, both ends" };
        println!("{name:<20} {b:>14} {a:>14} {growth:>14} {:>10.0}  ({note})", growth as f64 / n as f64);
    }
    println!("slab caches (host-wide, active objects): objects and bytes per connection");
    for (i, name) in CACHES.iter().enumerate() {
        if let (Some((ob, bb)), Some((oa, ba))) = (before.caches[i], after.caches[i]) {
            let [objects, bytes] = [oa as f64 - ob as f64, ba as f64 - bb as f64].map(|d| d / n as f64);
            // SLUB merges caches of one size, and a merged cache counts its aliases' objects too
            // (eventpoll_epi shares with the client's tcp_bind_bucket entries).
            let aliases = std::fs::read_to_string(format!("/sys/kernel/slab/{name}/aliases")).unwrap_or_default();
            let aliases = aliases.trim().parse::<u64>().ok().filter(|&a| a > 0);
            let aliases = aliases.map_or(String::new(), |a| format!("  (shared with {a} merged caches)"));
            println!("  {name:<18} {objects:>8.2} {bytes:>10.0}{aliases}");
        }
    }
    if before.time_wait != after.time_wait {
        println!(
            "warning: TIME_WAIT went {} -> {}; their slab skews the kernel figures (rerun 60 s later)",
            before.time_wait, after.time_wait
        );
    }
}

/// utime + stime of a process in clock ticks (fields 14 and 15; comm may hold spaces).
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    rest.split_whitespace().skip(11).take(2).filter_map(|n| n.parse::<u64>().ok()).sum()
}

/// Busy ticks of all CPUs: user + nice + system + irq + softirq + steal.
fn host_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = stat.lines().next().unwrap_or("").split_whitespace().skip(1).flat_map(|n| n.parse()).collect();
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| cpu.get(i)).sum()
}

/// CPU ticks (host busy, server, this client) when a run starts, to tell afterwards how busy
/// the rest of the machine was: a run that shared its cores is not a clean one.
struct CpuWatch(Instant, [u64; 3], Option<String>);

impl CpuWatch {
    fn start(pid: Option<u32>) -> Self {
        let pid = pid.map(|p| p.to_string());
        CpuWatch(Instant::now(), [host_busy_ticks(), pid.as_deref().map_or(0, cpu_ticks), cpu_ticks("self")], pid)
    }

    /// Server, client and other CPU in percent of one core over the wall time (10 ms ticks).
    fn report(&self) -> String {
        let wall = self.0.elapsed().as_secs_f64();
        let server = self.2.as_deref().map_or(0, cpu_ticks).saturating_sub(self.1[1]);
        let client = cpu_ticks("self").saturating_sub(self.1[2]);
        let other = host_busy_ticks().saturating_sub(self.1[0]).saturating_sub(server + client);
        let [s, c, o] = [server, client, other].map(|ticks| ticks as f64 / wall);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        format!("CPU server {s:.0}%, client {c:.0}%, other {o:.0}% of a core over {wall:.1} s, load {}", load.join(" "))
    }
}

// ---- HTTP -------------------------------------------------------------------------------------

/// `Some((status, head length, body length))` once `buf` holds a whole Content-Length response.
fn complete_response(buf: &[u8]) -> Result<Option<(u16, usize, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf).map_err(|e| format!("bad response: {e}"))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let length = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"));
    let length = length.and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
    let length = length.ok_or("response without Content-Length")?;
    Ok((buf.len() >= head_len + length).then_some((response.code.unwrap_or(0), head_len, length)))
}

fn poll_request(topic: &str, hold: Duration) -> Vec<u8> {
    format!("GET /poll/{topic}?timeout={}ms HTTP/1.1\r\nHost: x\r\n\r\n", hold.as_millis()).into_bytes()
}

fn publish_request(topic: &str, data: &str) -> Vec<u8> {
    format!("POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{data}", data.len()).into_bytes()
}

/// One blocking keep-alive connection for /stats and the publish, opened before anything is
/// measured so that it is part of the baseline, and so that the publish needs no handshake.
/// Its first request must follow within the server's --header-timeout (else 408).
struct Control(StdStream);

impl Control {
    fn open(addr: SocketAddr) -> Result<Control, String> {
        let stream = StdStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(Control(stream))
    }

    /// Sends `request` and returns the body of a 2xx answer.
    fn exchange(&mut self, request: &[u8]) -> Result<String, String> {
        self.0.write_all(request).map_err(|e| format!("control write: {e}"))?;
        let (mut buf, mut chunk) = (Vec::new(), [0u8; 16384]);
        loop {
            if let Some((status, head, len)) = complete_response(&buf)? {
                let body = String::from_utf8_lossy(&buf[head..head + len]).into_owned();
                return if (200..300).contains(&status) { Ok(body) } else { Err(format!("HTTP {status}: {body}")) };
            }
            match self.0.read(&mut chunk) {
                Ok(0) => return Err("the server closed the control connection".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("control read: {e}")),
            }
        }
    }

    fn stats(&mut self) -> Result<serde_json::Value, String> {
        let body = self.exchange(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")?;
        serde_json::from_str(&body).map_err(|e| format!("/stats is not JSON: {e}"))
    }
}

fn stat(stats: &serde_json::Value, pointer: &str) -> u64 {
    stats.pointer(pointer).and_then(|v| v.as_u64()).unwrap_or(0)
}

// ---- the client reactor -----------------------------------------------------------------------

struct Conn {
    stream: TcpStream,
    /// Written as soon as the connect completes; emptied once sent.
    request: Vec<u8>,
    sent: Option<Instant>,
    hold: Duration,
    buf: Vec<u8>,
    /// When the whole answer had arrived, its status and its body.
    answered: Option<(Instant, u16, String)>,
    failed: Option<String>,
}

struct Client {
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    scratch: Vec<u8>,
    /// Connections whose request went out or whose connect failed.
    started: usize,
    /// Connections answered or failed since their request went out.
    finished: usize,
}

impl Client {
    fn new(n: usize) -> Result<Self, String> {
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let (events, scratch, conns) = (Events::with_capacity(4096), vec![0; 16384], Slab::with_capacity(n));
        Ok(Client { poll, events, conns, scratch, started: 0, finished: 0 })
    }

    /// Opens one connection per (request, hold), writing each request the moment its connect
    /// completes, and reads whatever answers come meanwhile.
    fn open(&mut self, addr: SocketAddr, requests: Vec<(Vec<u8>, Duration)>, until: Instant) -> Result<(), String> {
        let total = requests.len();
        let mut requests = requests.into_iter();
        while self.started < total {
            if Instant::now() > until {
                return Err(format!("gave up: {} of {total} requests sent", self.started));
            }
            for (request, hold) in requests.by_ref().take(CONNECTS_PER_TURN) {
                let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
                let token = Token(self.conns.vacant_key());
                let interest = Interest::READABLE | Interest::WRITABLE;
                self.poll.registry().register(&mut stream, token, interest).map_err(|e| format!("register: {e}"))?;
                let (sent, buf, answered, failed) = (None, Vec::new(), None, None);
                self.conns.insert(Conn { stream, request, sent, hold, buf, answered, failed });
            }
            self.turn(Some(Duration::from_millis(1)))?;
        }
        Ok(())
    }

    /// One epoll round: finish connects and send, read answers.
    fn turn(&mut self, timeout: Option<Duration>) -> Result<(), String> {
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(format!("epoll_wait: {e}"));
            }
        }
        for event in self.events.iter() {
            let Some(conn) = self.conns.get_mut(event.token().0) else { continue };
            if conn.failed.is_some() || conn.answered.is_some() {
                continue;
            }
            if conn.sent.is_none() && (event.is_writable() || event.is_error()) {
                // The documented mio way to learn how a non-blocking connect ended.
                if let Ok(Some(e)) | Err(e) = conn.stream.take_error() {
                    conn.failed = Some(format!("connect: {e}"));
                    self.started += 1;
                } else if conn.stream.peer_addr().is_ok() {
                    // Taken before the write: the hold starts when the request arrives.
                    let at = Instant::now();
                    match conn.stream.write(&conn.request) {
                        Ok(n) if n == conn.request.len() => {
                            (conn.sent, conn.request) = (Some(at), Vec::new());
                            // WRITABLE from here on would only add events to wade through.
                            let (registry, token) = (self.poll.registry(), event.token());
                            let _ = registry.reregister(&mut conn.stream, token, Interest::READABLE);
                        }
                        other => conn.failed = Some(format!("request write: {other:?}")),
                    }
                    self.started += 1;
                }
            }
            if conn.sent.is_some() && (event.is_readable() || event.is_read_closed() || event.is_error()) {
                read_answer(conn, &mut self.scratch);
            }
            if conn.failed.is_some() || conn.answered.is_some() {
                self.finished += 1;
            }
        }
        Ok(())
    }

    /// Turns the loop until every connection is answered or failed, or `until` (the caller
    /// counts what is missing).
    fn wait_answers(&mut self, until: Instant) -> Result<(), String> {
        while self.finished < self.conns.len() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            self.turn(Some(left))?;
        }
        Ok(())
    }

    /// Turns the loop until the server's /stats says it holds `n` polls; any answer or failure
    /// meanwhile is an error, since nothing should answer a poll before the publish.
    fn wait_held(&mut self, control: &mut Control, n: u64, until: Instant) -> Result<(), String> {
        loop {
            self.turn(Some(Duration::from_millis(100)))?;
            if self.finished > 0 {
                return Err(format!("{} polls were answered or failed before any publish", self.finished));
            }
            let held = stat(&control.stats()?, "/polls/held");
            if held >= n {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(format!("the server holds only {held} of {n} polls"));
            }
        }
    }
}

/// Reads what the socket has and notes the time once the answer is whole. A short read means
/// the socket is drained (TCP), so the extra read that would only say WouldBlock is skipped:
/// that keeps the client quick during a fan-out.
fn read_answer(conn: &mut Conn, scratch: &mut [u8]) {
    loop {
        match conn.stream.read(scratch) {
            Ok(0) => return conn.failed = Some("closed before a whole answer".into()),
            Ok(n) => {
                conn.buf.extend_from_slice(&scratch[..n]);
                if n < scratch.len() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return conn.failed = Some(format!("read: {e}")),
        }
    }
    match complete_response(&conn.buf) {
        Ok(Some((status, head, len))) => {
            let body = String::from_utf8_lossy(&conn.buf[head..head + len]).into_owned();
            (conn.answered, conn.buf) = (Some((Instant::now(), status, body)), Vec::new());
        }
        Ok(None) => {}
        Err(e) => conn.failed = Some(e),
    }
}

/// Counts, by kind, connections that failed, got no answer, or got another answer than 200
/// with JSON `status` = `want` and (for `ok`) exactly the one message `data`; prints the kinds.
fn count_errors(client: &Client, want: &str, data: Option<&str>) -> usize {
    let check = |status: u16, body: &str| -> Result<(), String> {
        let json: serde_json::Value = serde_json::from_str(body).map_err(|_| format!("HTTP {status}, not JSON"))?;
        let (got, messages) = (json["status"].as_str().unwrap_or(""), &json["messages"]);
        let count = messages.as_array().map_or(0, |m| m.len());
        match data {
            _ if status != 200 || got != want => Err(format!("HTTP {status}, status {got:?}")),
            Some(data) if count != 1 || messages[0]["data"] != data => Err("wrong messages".into()),
            None if count != 0 => Err("messages in a timeout".into()),
            _ => Ok(()),
        }
    };
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for (_, conn) in client.conns.iter() {
        let error = match (&conn.failed, &conn.answered) {
            (Some(e), _) => Some(e.clone()),
            (None, None) => Some("no answer in time".into()),
            (None, Some((_, status, body))) => check(*status, body).err(),
        };
        if let Some(error) = error {
            *kinds.entry(error).or_default() += 1;
        }
    }
    for (kind, n) in &kinds {
        println!("  error: {n} x {kind}");
    }
    kinds.values().sum()
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied().unwrap_or(f64::NAN)
}

// ---- scenarios --------------------------------------------------------------------------------

fn fanout(args: &Args) -> Result<(), String> {
    let (n, pid, topic) = (args.clients, args.pid.unwrap_or(0), &args.topic);
    let until = Instant::now() + args.max_time;
    let mut client = Client::new(n)?;
    // The topic and the server's buffer pool exist before "before". The polls wait for the
    // next message, so this one is never in their answers.
    let control = &mut Control::open(args.addr)?;
    control.exchange(&publish_request(topic, "warm-up"))?;
    let stats_before = control.stats()?;
    let (before, overflows, cpu) = (memory(pid)?, listen_overflows(), CpuWatch::start(args.pid));
    let hold = Duration::from_secs(120);
    client.open(args.addr, (0..n).map(|_| (poll_request(topic, hold), hold)).collect(), until)?;
    let opened_in = cpu.0.elapsed();
    eprintln!("{n} polls sent in {opened_in:.1?}; waiting until the server holds them all");
    client.wait_held(control, n as u64, until)?;
    eprintln!("all {n} held; publishing in {:?}", args.settle);
    sleep(args.settle);
    let (stats_held, after) = (control.stats()?, memory(pid)?);

    let data = format!("fan-out {}", std::process::id());
    let publish = publish_request(topic, &data);
    let published = Instant::now();
    control.0.write_all(&publish).map_err(|e| format!("publish: {e}"))?;
    client.wait_answers(published + Duration::from_secs(10))?;
    let reply = control.exchange(b"")?; // the publish's own reply, waiting in the socket
    let stats = control.stats()?;
    let answered = memory(pid)?;

    let arrivals = client.conns.iter().filter_map(|(_, c)| c.answered.as_ref());
    let mut ms: Vec<f64> = arrivals.map(|(at, _, _)| at.duration_since(published).as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    println!("scenario fanout: server pid {pid} at {}, topic {topic}, {n} clients", args.addr);
    println!("connections          {n} opened, polls sent in {opened_in:.1?}; {}", cpu.report());
    println!("listen overflows     {} (host-wide)", listen_overflows() - overflows);
    println!("publish reply        {}", reply.trim());
    let errors = count_errors(&client, "ok", Some(&data));
    let fanout_us = stat(&stats, "/polls/last_fanout_us") as f64;
    let peak = answered.peak_rss as f64 - after.peak_rss as f64;
    let rows = [
        ("answers received", format!("{} of {n}", ms.len()), "bodies checked after timing"),
        ("errors", errors.to_string(), "failed, wrong or missing answers"),
        ("publish -> first", format!("{:.2} ms", pct(&ms, 0.0)), "client side, from just before the write"),
        ("publish -> p50", format!("{:.2} ms", pct(&ms, 50.0)), ""),
        ("publish -> p99", format!("{:.2} ms", pct(&ms, 99.0)), ""),
        ("publish -> last", format!("{:.2} ms", pct(&ms, 100.0)), "aim: <= 30 ms"),
        ("server fan-out", format!("{:.2} ms", fanout_us / 1e3), "polls.last_fanout_us: parse -> flush end"),
        ("server woken", stat(&stats, "/polls/last_fanout_woken").to_string(), "polls.last_fanout_woken"),
        ("server per answer", format!("{:.2} us", fanout_us / n as f64), "server fan-out / answers"),
        ("peak RSS growth", format!("{peak:.0} B"), "server VmHWM, held -> answered"),
        ("  per answer", format!("{:.0} B", peak / n as f64), "answers waiting in memory during the fan-out"),
    ];
    for (name, value, note) in rows {
        println!("{name:<20} {value:>14}  {note}");
    }
    println!("held-poll cost ({n} held, against the server before them):");
    print_memory(&before, &after, n, "B/poll");
    let table = |s: &serde_json::Value| stat(s, "/memory/connection_bytes") as f64;
    let (t0, t1) = (table(&stats_before), table(&stats_held));
    println!(
        "server's own view    connection_bytes {t0} -> {t1} ({:.0} B/poll), buffer_bytes {}, pool_bytes {}",
        (t1 - t0) / n as f64,
        stat(&stats_held, "/memory/buffer_bytes"),
        stat(&stats_held, "/memory/pool_bytes")
    );
    Ok(())
}

fn lateness(args: &Args) -> Result<(), String> {
    let (n, spread_ms) = (args.clients as u64, args.spread.as_millis() as u64);
    // Distinct hold times, uniform over [1 s, 1 s + spread], handed out in a fixed shuffled
    // order (xorshift) so that deadlines do not follow the order in which connections opened.
    let mut holds: Vec<u64> = (0..n).map(|i| 1000 + i * spread_ms / (n - 1).max(1)).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..holds.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        holds.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let (overflows, cpu) = (listen_overflows(), CpuWatch::start(args.pid));
    let until = cpu.0 + args.spread + Duration::from_secs(10);
    let mut client = Client::new(holds.len())?;
    let requests = holds.iter().map(|&ms| Duration::from_millis(ms)).map(|d| (poll_request(&args.topic, d), d));
    client.open(args.addr, requests.collect(), until)?;
    let opened = Instant::now();
    eprintln!("{n} polls sent in {:.1?}; waiting for their deadlines", opened - cpu.0);
    client.wait_answers(until)?;
    let stats = Control::open(args.addr)?.stats()?;

    // (lateness in ms, whether the deadline fell while connections were still being opened)
    let mut late: Vec<(f64, bool)> = Vec::new();
    for (_, c) in client.conns.iter() {
        if let (Some(sent), Some((at, _, _))) = (c.sent, &c.answered) {
            let deadline = sent + c.hold;
            let ms = at.saturating_duration_since(deadline).as_secs_f64()
                - deadline.saturating_duration_since(*at).as_secs_f64();
            late.push((ms * 1e3, deadline < opened));
        }
    }
    println!("scenario lateness: server at {}, {n} clients, holds 1s..{}ms shuffled", args.addr, 1000 + spread_ms);
    println!("connections          {n} opened, polls sent in {:.1?}; {}", opened - cpu.0, cpu.report());
    println!("listen overflows     {} (host-wide)", listen_overflows() - overflows);
    let [timed_out, answered, held] = ["timed_out", "answered", "held"].map(|f| stat(&stats, &format!("/polls/{f}")));
    println!("server               polls.timed_out {timed_out}, polls.answered {answered}, polls.held {held}");
    let errors = count_errors(&client, "timeout", None);
    println!("answers {} of {n}, errors {errors}; lateness = arrival - (send + hold), in ms:", late.len());
    println!(
        "{:<26} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "polls", "count", "min", "p50", "p90", "p99", "max", "early"
    );
    let groups = [("all", None), ("deadline during opening", Some(true)), ("deadline after opening", Some(false))];
    for (name, during) in groups {
        let mut ms: Vec<f64> = late.iter().filter(|(_, d)| during.is_none_or(|x| x == *d)).map(|(ms, _)| *ms).collect();
        ms.sort_by(f64::total_cmp);
        // Earlier than 1 ms before the deadline is more than the server's millisecond rounding: a bug.
        let early = ms.iter().filter(|&&m| m < -1.0).count();
        let [min, p50, p90, p99, max] = [0.0, 50.0, 90.0, 99.0, 100.0].map(|p| pct(&ms, p));
        println!("{name:<26} {:>6} {min:>8.2} {p50:>8.2} {p90:>8.2} {p99:>8.2} {max:>8.2} {early:>6}", ms.len());
    }
    println!("aim: p99 within 10 ms of the deadline; early (< -1 ms) must be 0");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("longpoll_load: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let run = || -> Result<(), String> {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        if let Some(limit) = field(&limits, "Max open files").filter(|&l| args.clients as u64 + SPARE_FDS > l) {
            return Err(format!("--clients {} needs more open files than the limit, {limit}", args.clients));
        }
        if args.lateness {
            lateness(&args)
        } else {
            fanout(&args)
        }
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("longpoll_load: {e}");
            ExitCode::FAILURE
        }
    }
}
