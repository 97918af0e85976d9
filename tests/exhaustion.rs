//! Running out of file descriptors (issue 5, "open-file exhaustion"): the server is started with
//! its soft open-file limit lowered to 128 and 400 long-poll clients arrive. It must keep
//! serving the connections it has, refuse the rest with 503 or a clean close (never leave one
//! hanging in the backlog), not spin while at the limit, and serve everyone again once they
//! leave. And when the descriptors are held by idle keep-alive connections, closing the longest
//! idle makes room instead.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{num, Server};

const FD_LIMIT: u64 = 128;
const CLIENTS: usize = 400;
/// Clients that arrive before the measured window; the rest arrive during it.
const FIRST_WAVE: usize = 150;
const ARRIVAL_GAP: Duration = Duration::from_millis(4);

/// How a storm client's connection looks once the server has dealt with it.
#[derive(Debug, Default)]
struct Outcomes {
    /// No answer yet: a held poll (or, if the server misbehaved, a connection left hanging).
    silent: u64,
    refused_503: u64,
    /// Closed without an answer: EOF or reset.
    closed: u64,
    other: Vec<String>,
}

/// CPU time (user + system) the process has used, from `/proc/PID/stat`.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's /proc/PID/stat");
    // The fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf reads a constant.
    let per_sec = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).expect("clock ticks");
    Duration::from_millis(ticks * 1000 / per_sec)
}

fn storm_client(server: &Server) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)).expect("connect");
    stream.write_all(b"GET /poll/storm HTTP/1.1\r\nHost: tether.test\r\n\r\n").expect("send the poll");
    stream
}

fn classify(clients: &mut [TcpStream]) -> Outcomes {
    let mut outcomes = Outcomes::default();
    for stream in clients {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut answer = [0u8; 512];
        match stream.read(&mut answer) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => outcomes.silent += 1,
            Ok(0) => outcomes.closed += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => outcomes.closed += 1,
            Ok(n) if answer[..n].starts_with(b"HTTP/1.1 503 ") => {
                let text = String::from_utf8_lossy(&answer[..n]);
                assert!(text.contains("\r\nRetry-After: "), "a 503 says when to retry: {text}");
                outcomes.refused_503 += 1;
            }
            other => outcomes.other.push(format!("{other:?}: {:?}", String::from_utf8_lossy(&answer))),
        }
    }
    outcomes
}

/// The whole story, for a server started with `options` under the lowered limit.
fn survive_a_storm(options: &[&str]) -> (Outcomes, serde_json::Value) {
    let server = Server::start_with_fd_limit(FD_LIMIT, options);
    let mut old = server.connect();
    assert_eq!(old.get("/plaintext").status, 200);

    let mut clients: Vec<TcpStream> = (0..FIRST_WAVE).map(|_| storm_client(&server)).collect();
    // At the limit: the rest keep arriving while the server's CPU use is measured, and the old
    // keep-alive client keeps being served (often enough that it is in use, not idle).
    let cpu_before = cpu_time(server.pid());
    let window = Instant::now();
    for i in FIRST_WAVE..CLIENTS {
        clients.push(storm_client(&server));
        if i % 25 == 0 {
            let response = old.get("/plaintext");
            assert_eq!((response.status, response.text()), (200, "Hello, World!"), "the old connection at the limit");
        }
        thread::sleep(ARRIVAL_GAP);
    }
    thread::sleep(Duration::from_millis(300));
    let busy = cpu_time(server.pid()) - cpu_before;
    let share = busy.as_secs_f64() / window.elapsed().as_secs_f64();
    eprintln!("server CPU at the limit: {busy:?} over {:?} = {:.1} % of a core", window.elapsed(), share * 100.0);
    assert!(share < 0.20, "the server spins at the limit: {:.1} % of a core", share * 100.0);

    // Every client was dealt with: accepted and held, or refused (no request is left unread
    // but the one asking for these stats).
    let stats = old.wait_for_stats("every storm client dealt with", |s| {
        num(s, "totals.accepted") > CLIENTS as u64 && num(s, "connections.reading") <= 1
    });
    let outcomes = classify(&mut clients);
    assert!(outcomes.other.is_empty(), "unexpected answers: {:?}", outcomes.other);
    assert_eq!(
        outcomes.silent,
        num(&stats, "polls.held"),
        "every client without an answer is a held poll, none hangs in the backlog: {outcomes:?} {stats}"
    );
    assert_eq!(outcomes.silent + outcomes.refused_503 + outcomes.closed, CLIENTS as u64);
    assert!(outcomes.refused_503 > 0, "{outcomes:?}");
    assert!(outcomes.silent > 0, "{outcomes:?}");

    // After they leave, every new request succeeds.
    drop(clients);
    old.wait_for_stats("the storm clients gone", |s| num(s, "connections.open") == 1);
    for _ in 0..50 {
        let mut client = server.connect();
        let response = client.get("/plaintext");
        assert_eq!((response.status, response.text()), (200, "Hello, World!"), "after the storm");
    }
    let after = old.stats();
    assert!(num(&after, "fds.open") < FD_LIMIT, "{after}");
    (outcomes, stats)
}

/// With the default `--max-connections` (the open-file limit minus a reserve), the limit is
/// met as a connection count: newcomers are refused before descriptors run out.
#[test]
fn at_an_open_file_limit_of_128_400_clients_meet_the_connection_limit() {
    let (outcomes, stats) = survive_a_storm(&["--poll-timeout", "60s"]);
    assert_eq!(num(&stats, "fds.limit"), FD_LIMIT, "{stats}");
    assert_eq!(num(&stats, "fds.exhausted"), 0, "the reserve kept accept from failing: {stats}");
    assert_eq!(outcomes.silent, 128 - 32 - 1, "held up to --max-connections, the old connection included");
}

/// With `--max-connections` above the open-file limit, `accept` itself fails (EMFILE): the
/// spare descriptor answers newcomers 503 and the listener is never spun on.
#[test]
fn at_an_open_file_limit_of_128_400_clients_exhaust_descriptors_and_get_503() {
    let (outcomes, stats) = survive_a_storm(&["--poll-timeout", "60s", "--max-connections", "1000"]);
    assert!(num(&stats, "fds.exhausted") > 0, "accept ran out of descriptors: {stats}");
    // Reading /proc at the limit takes the spare descriptor's slot.
    eprintln!("at the limit: fds.open {} of {FD_LIMIT}", num(&stats, "fds.open"));
    assert!(num(&stats, "fds.open") >= FD_LIMIT - 2, "/stats still reads /proc at the limit: {stats}");
    assert!(outcomes.silent > 96, "more connections than the default limit were held: {outcomes:?}");
    assert_eq!(num(&stats, "totals.rejected"), outcomes.refused_503 + outcomes.closed, "{stats}");
}

/// At `EMFILE` with keep-alive connections idle for over a second, room is made by closing the
/// longest idle, not by refusing: accepting pauses until their descriptors are freed, then the
/// newcomers are served.
#[test]
fn at_emfile_idle_connections_make_room_for_newcomers() {
    const NEWCOMERS: usize = 40;
    let server = Server::start_with_fd_limit(FD_LIMIT, &["--max-connections", "1000", "--idle-timeout", "60s"]);
    // Fill every descriptor with idle keep-alive connections: those beyond the limit are
    // refused on the spare descriptor (nothing is idle long enough to reclaim yet).
    let mut idle = Vec::new();
    for _ in 0..FD_LIMIT {
        let mut client = server.connect();
        if client.get("/plaintext").status == 200 {
            idle.push(client);
        }
    }
    thread::sleep(Duration::from_millis(1200)); // idle long enough to be reclaimed
    let before = idle[0].stats();
    assert!(num(&before, "fds.exhausted") > 0, "the descriptors were all in use: {before}");

    for _ in 0..NEWCOMERS {
        let mut newcomer = server.connect();
        newcomer.send(b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\nConnection: close\r\n\r\n");
        let response = newcomer.read_response();
        assert_eq!((response.status, response.text()), (200, "Hello, World!"), "a newcomer at EMFILE");
    }
    let stats = server.stats();
    assert_eq!(num(&stats, "totals.rejected"), num(&before, "totals.rejected"), "nobody refused: {stats}");
    // A batch of the longest idle, not one per newcomer: the newcomers close after their
    // answer, so the first batch's descriptors serve them all.
    let reclaimed = num(&stats, "totals.closed.reclaimed");
    assert!((1..=8).contains(&reclaimed), "{stats}");
    // The reclaimed ones are old idle connections, closed by the server.
    let closed = idle
        .iter_mut()
        .filter(|client| {
            client.stream().set_nonblocking(true).expect("nonblocking");
            let mut byte = [0u8; 1];
            matches!(client.stream().read(&mut byte), Ok(0))
        })
        .count();
    assert_eq!(closed as u64, reclaimed, "{stats}");
}
