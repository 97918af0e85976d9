//! What an idle keep-alive connection costs a server: its RSS and the kernel's
//! memory, per connection. Works against any HTTP/1.1 server on loopback.
//!
//! ```text
//! cargo run --release --example idle_cost -- \
//!     --addr 127.0.0.1:8081 --pid PID --connections 15000 [--path /plaintext]
//! ```
//!
//! It reads figures, opens N connections one after another, sends one
//! `GET PATH` on each and reads the whole response (so every server-side
//! connection ends idle in keep-alive, past its first request), waits, reads
//! the figures again, prints them, and only then closes the connections.
//!
//! What the numbers include:
//! - RSS: the server process only (VmRSS of --pid).
//! - Slab / SUnreclaim (/proc/meminfo) and TCP mem (/proc/net/sockstat) are
//!   host-wide. Client and server run on this machine, so they count BOTH ends
//!   of every connection (two TCP sockets, two socket inodes, two files) plus
//!   whatever else the kernel did meanwhile. The per-cache lines from
//!   /proc/slabinfo show what grew: objects per connection near 2 (TCP,
//!   sock_inode_cache, filp) are both ends; an epoll server adds about 1
//!   eventpoll_epi. SLUB merges caches of one size, and a merged cache counts
//!   its aliases' objects too (e.g. eventpoll_epi may share with the client's
//!   tcp_bind_bucket entries), so the alias count is printed beside it.
//!   The server's own kernel share is roughly half the symmetric part plus
//!   the server-only part; it cannot be split exactly from here.
//! - TIME_WAIT sockets expiring during the run (e.g. left by a `Connection:
//!   close` benchmark less than 60 s earlier) shrink Slab; this tool warns.
//!
//! Only std is used, so it builds with the crate's tests on any machine.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: idle_cost --addr 127.0.0.1:PORT --pid PID --connections N \
[--path /plaintext] [--settle-ms 1000] [--max-secs 300]";

/// The client needs one fd per connection on top of these.
const SPARE_FDS: u64 = 32;

/// Slab caches that a TCP connection grows, shown per connection.
const CACHES: [&str; 6] = ["TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "skbuff_head_cache"];

struct Args {
    addr: SocketAddr,
    pid: u32,
    connections: u64,
    path: String,
    settle: Duration,
    max_time: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut pid = None;
    let mut connections = None;
    let mut path = "/plaintext".to_string();
    let mut settle_ms = 1000u64;
    let mut max_secs = 300u64;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--addr" => addr = Some(value.parse::<SocketAddr>().map_err(|e| bad(&e))?),
            "--pid" => pid = Some(value.parse::<u32>().map_err(|e| bad(&e))?),
            "--connections" => connections = Some(value.parse::<u64>().map_err(|e| bad(&e))?),
            "--path" => path = value,
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
    Ok(Args {
        addr,
        pid: pid.ok_or("--pid is required")?,
        connections: connections.ok_or("--connections is required")?,
        path,
        settle: Duration::from_millis(settle_ms),
        max_time: Duration::from_secs(max_secs),
    })
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))
}

/// The number after `key` on the line that starts with it: "VmRSS:  1234 kB".
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A value from the "TCP: inuse 3 orphan 0 tw 2 alloc 5 mem 1" line.
fn sockstat_tcp(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == key)?;
    words.get(i + 1)?.parse().ok()
}

/// Bytes held by one slab cache: active_objs * objsize, and active_objs.
fn slab_cache(slabinfo: &str, name: &str) -> Option<(u64, u64)> {
    let line = slabinfo.lines().find(|l| l.split_whitespace().next() == Some(name))?;
    let mut w = line.split_whitespace().skip(1).map(|n| n.parse::<u64>().ok());
    let active = w.next()??;
    let _total = w.next()??;
    let size = w.next()??;
    Some((active, active * size))
}

#[derive(Clone)]
struct Snapshot {
    rss_kb: u64,
    slab_kb: u64,
    sunreclaim_kb: u64,
    tcp_mem_pages: u64,
    tcp_inuse: u64,
    time_wait: u64,
    /// (objects, bytes) per cache in CACHES; None where /proc/slabinfo lacks it.
    caches: Vec<Option<(u64, u64)>>,
}

fn snapshot(pid: u32) -> Result<Snapshot, String> {
    let status = read(&format!("/proc/{pid}/status"))?;
    let meminfo = read("/proc/meminfo")?;
    let sockstat = read("/proc/net/sockstat")?;
    // /proc/slabinfo is root-only; without it the breakdown is just left out.
    let slabinfo = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    let need = |v: Option<u64>, what: &str| v.ok_or_else(|| format!("no {what} found"));
    Ok(Snapshot {
        rss_kb: need(field(&status, "VmRSS:"), "VmRSS in the server's status")?,
        slab_kb: need(field(&meminfo, "Slab:"), "Slab in /proc/meminfo")?,
        sunreclaim_kb: need(field(&meminfo, "SUnreclaim:"), "SUnreclaim in /proc/meminfo")?,
        tcp_mem_pages: need(sockstat_tcp(&sockstat, "mem"), "TCP mem in sockstat")?,
        tcp_inuse: need(sockstat_tcp(&sockstat, "inuse"), "TCP inuse in sockstat")?,
        time_wait: need(sockstat_tcp(&sockstat, "tw"), "TCP tw in sockstat")?,
        caches: CACHES.iter().map(|c| slab_cache(&slabinfo, c)).collect(),
    })
}

/// This process's soft limit on open files ("Max open files  20000  20000  files").
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    field(&limits, "Max open files")
}

/// The kernel page size, which sockstat's "mem" is counted in.
fn page_size() -> u64 {
    std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .and_then(|s| field(&s, "KernelPageSize:"))
        .map_or(4096, |kb| kb * 1024)
}

/// Sends one request and reads its whole response (headers + Content-Length
/// body), leaving the connection idle in keep-alive.
fn one_request(stream: &mut TcpStream, request: &[u8]) -> Result<(), String> {
    stream.write_all(request).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head_len, body_len) = loop {
        let n = stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("server closed the connection before a full response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 2") {
                let status = head.lines().next().unwrap_or("").to_string();
                return Err(format!("non-2xx response: {status}"));
            }
            if head.contains("\r\nconnection: close") {
                return Err("server answered Connection: close; nothing would stay idle".into());
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("response has no Content-Length")?;
            break (end + 4, len);
        }
        if buf.len() > 64 * 1024 {
            return Err("response headers larger than 64 KiB".into());
        }
    };
    let mut have = buf.len() - head_len;
    while have < body_len {
        let n = stream.read(&mut chunk).map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            return Err("server closed the connection mid-body".into());
        }
        have += n;
    }
    Ok(())
}

/// True if the server has not closed this connection (nothing to read yet).
fn still_open(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    matches!(stream.peek(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn per_conn(before: u64, after: u64, unit: u64, n: u64) -> (i64, f64) {
    let total = (after as i64 - before as i64) * unit as i64;
    (total, total as f64 / n as f64)
}

fn run(args: &Args) -> Result<(), String> {
    let n = args.connections;
    if n == 0 {
        return Err("--connections must be at least 1".into());
    }
    // Each connection costs this client one fd, and the server one more.
    if let Some(limit) = open_files_limit() {
        if n + SPARE_FDS > limit {
            return Err(format!(
                "--connections {n} is too many: this client holds one fd per connection and may open \
                 {limit} files (RLIMIT_NOFILE), so at most {} here; the server needs as many fds too",
                limit.saturating_sub(SPARE_FDS)
            ));
        }
    }
    let request = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", args.path).into_bytes();
    let page = page_size();

    let before = snapshot(args.pid)?;
    let start = Instant::now();
    let mut conns = Vec::with_capacity(n as usize);
    for i in 0..n {
        if start.elapsed() > args.max_time {
            return Err(format!("gave up after {:?} with {i} of {n} connections open", args.max_time));
        }
        let fail = |e: String| format!("connection {} of {n}: {e}", i + 1);
        let mut s = TcpStream::connect_timeout(&args.addr, Duration::from_secs(5))
            .map_err(|e| fail(format!("connect: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| fail(e.to_string()))?;
        s.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        one_request(&mut s, &request).map_err(fail)?;
        conns.push(s);
        if (i + 1) % 5000 == 0 {
            eprintln!("{} connections open after {:.1?}", i + 1, start.elapsed());
        }
    }
    let opened_in = start.elapsed();
    sleep(args.settle);
    let after = snapshot(args.pid)?;
    let open = conns.iter().filter(|s| still_open(s)).count();

    println!("server pid {} at {}, path {}", args.pid, args.addr, args.path);
    println!("connections          {n} opened in {opened_in:.1?}, {open} still open after {:?}", args.settle);
    println!("TCP sockets in use   {} -> {} (both ends counted)", before.tcp_inuse, after.tcp_inuse);
    let rows = [
        ("server VmRSS", before.rss_kb, after.rss_kb, 1024, "server process only"),
        ("kernel Slab", before.slab_kb, after.slab_kb, 1024, "host-wide, both ends"),
        ("kernel SUnreclaim", before.sunreclaim_kb, after.sunreclaim_kb, 1024, "host-wide, both ends"),
        ("sockstat TCP mem", before.tcp_mem_pages, after.tcp_mem_pages, page, "host-wide, both ends"),
    ];
    println!("{:<20} {:>14} {:>14} {:>14} {:>10}", "figure", "before B", "after B", "growth B", "B/conn");
    for (name, b, a, unit, what) in rows {
        let (total, each) = per_conn(b, a, unit, n);
        println!("{name:<20} {:>14} {:>14} {total:>14} {each:>10.0}  ({what})", b * unit, a * unit);
    }
    println!("slab caches (host-wide, /proc/slabinfo active objects): objects/conn, bytes/conn");
    for (i, name) in CACHES.iter().enumerate() {
        if let (Some((ob, bb)), Some((oa, ba))) = (before.caches[i], after.caches[i]) {
            let objs = (oa as f64 - ob as f64) / n as f64;
            let (_, bytes) = per_conn(bb, ba, 1, n);
            // Caches merged into this one also count here (SLUB, see the top).
            let aliases = std::fs::read_to_string(format!("/sys/kernel/slab/{name}/aliases"))
                .ok()
                .and_then(|a| a.trim().parse::<u64>().ok())
                .filter(|&a| a > 0)
                .map_or(String::new(), |a| format!("  (shared with {a} merged caches)"));
            println!("  {name:<18} {objs:>8.2} {bytes:>10.0}{aliases}");
        }
    }
    if before.time_wait != after.time_wait {
        println!(
            "warning: TIME_WAIT sockets went {} -> {} during the run; their slab (tw_sock_TCP) \
             skews the kernel figures. Rerun 60 s after any Connection: close load.",
            before.time_wait, after.time_wait
        );
    }
    if (open as u64) < n {
        println!("warning: the server closed {} connections before the second reading", n - open as u64);
    }
    drop(conns);
    println!("closed all {n} connections");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("idle_cost: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle_cost: {e}");
            ExitCode::FAILURE
        }
    }
}
