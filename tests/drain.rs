//! Graceful shutdown on SIGTERM and SIGINT: stop accepting, close idle connections at once,
//! answer in-flight requests with `Connection: close`, exit 0 within `--drain-timeout`; a second
//! signal exits at once.

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

use common::{num, Client, Server};
use serde_json::Value;

/// How long a test waits for the process to exit before calling it stuck. Exiting "quickly" is
/// never asserted; only that it happens within a bound well above any drain timeout used here
/// (except where the test is about the drain timeout being cut short).
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// A keep-alive connection that has been answered once and is now idle.
fn idle_connection(server: &Server) -> Client {
    let mut client = server.connect();
    let response = client.get("/plaintext");
    assert_eq!(response.status, 200);
    response.assert_keeps_alive();
    client
}

fn assert_refused(server: &Server) {
    match TcpStream::connect_timeout(&server.addr, Duration::from_secs(5)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("a draining server refuses new connections, got {other:?}"),
    }
}

#[test]
fn sigterm_drains_gracefully() {
    // A drain timeout far beyond the test's waits: the server must exit because its work is
    // done, not because the timeout ran out.
    let mut server = Server::start(&["--drain-timeout", "60s"]);
    let mut idle = idle_connection(&server);
    // In flight: half a request head, read by the server before the signal.
    let mut in_flight = server.connect();
    in_flight.send(b"GET /stats HTTP/1.1\r\nHost: tether.test\r\n");
    server.barrier();

    server.signal(libc::SIGTERM);

    // The idle connection is closed at once, silently. Once it is, the drain has begun, so the
    // listener is already closed.
    idle.expect_eof();
    assert_refused(&server);

    // The in-flight request is completed and answered, with `Connection: close`.
    in_flight.send(b"\r\n");
    let response = in_flight.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    response.assert_closes();
    in_flight.expect_eof();
    let stats: Value = serde_json::from_slice(&response.body).expect("/stats JSON");
    assert_eq!(num(&stats, "totals.closed.drain"), 1, "the idle connection was closed by the drain: {stats}");
    drop(in_flight);

    let status = server.wait_exit(EXIT_WAIT).expect("the server exits once its last connection is done");
    assert_eq!(status.code(), Some(0), "a graceful drain exits 0");
    assert_eq!(server.stdout_after_banner(), "", "nothing on stdout but the listening line");
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut server = Server::start(&["--drain-timeout", "60s"]);
    let mut idle = idle_connection(&server);
    server.signal(libc::SIGINT);
    idle.expect_eof();
    drop(idle);
    let status = server.wait_exit(EXIT_WAIT).expect("the server exits once idle connections are closed");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_drain_timeout_bounds_a_stuck_request() {
    // The in-flight request never completes, and the header timeout (60 s) would not end it
    // before the test gives up: only the 300 ms drain timeout can.
    let mut server = Server::start(&["--drain-timeout", "300ms", "--header-timeout", "60s"]);
    let mut idle = idle_connection(&server);
    let mut stuck = server.connect();
    stuck.send(b"GET /plaintext HTTP/1.1\r\n");
    server.barrier();

    server.signal(libc::SIGTERM);
    idle.expect_eof();
    let status = server.wait_exit(EXIT_WAIT).expect("the server exits at the drain timeout");
    assert_eq!(status.code(), Some(0), "running out the drain timeout still exits 0");
    assert!(stuck.try_read_response(false).is_err(), "the stuck request is never answered");
}

#[test]
fn a_second_signal_exits_at_once() {
    // With a 60 s drain timeout and a stuck request, only the second signal can end the process
    // within the test's wait.
    let mut server = Server::start(&["--drain-timeout", "60s", "--header-timeout", "60s"]);
    let mut idle = idle_connection(&server);
    let mut stuck = server.connect();
    stuck.send(b"GET /plaintext HTTP/1.1\r\n");
    server.barrier();

    server.signal(libc::SIGTERM);
    idle.expect_eof(); // the first signal was handled: the drain has begun
    assert!(server.wait_exit(Duration::from_millis(200)).is_none(), "the drain waits for the stuck request");

    server.signal(libc::SIGTERM);
    server.wait_exit(EXIT_WAIT).expect("a second signal exits at once");
    drop(stuck);
}
