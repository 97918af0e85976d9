//! The three per-connection deadlines, end to end: idle (`--idle-timeout`), head
//! (`--header-timeout`, 408) and write (`--write-timeout`), through the real wheel, clock and
//! sockets. Which deadline each state arms, and when it restarts (a trickled head does not, an
//! answer restarts the idle one), is the machine's to say and is tested there without a sleep
//! (`src/connection/tests.rs`). Timeouts are set short (hundreds of milliseconds) so the suite
//! stays fast; the tests only ever wait *for* a deadline, with a bounded read, and never assert
//! that something happened quickly.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{num, Server};

#[test]
fn an_idle_keep_alive_connection_is_closed_silently() {
    let server = Server::start(&["--idle-timeout", "300ms"]);
    let mut client = server.connect();
    let response = client.get("/plaintext");
    assert_eq!(response.status, 200);
    response.assert_keeps_alive();
    let answered = Instant::now();
    client.expect_eof(); // no bytes, no 408: just the close
                         // A lower bound only: a timer never fires early (a margin covers millisecond rounding).
    assert!(
        answered.elapsed() >= Duration::from_millis(250),
        "closed after {:?}, before the idle timeout",
        answered.elapsed()
    );
    let stats = server.stats();
    assert_eq!(num(&stats, "totals.closed.idle_timeout"), 1, "{stats}");
}

#[test]
fn an_incomplete_head_gets_408_then_close() {
    let server = Server::start(&["--header-timeout", "300ms"]);

    let mut partial = server.connect();
    partial.send(b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\n"); // no blank line
    partial.read_response().assert_error(408);
    partial.expect_eof();

    // A connection that never sends a byte is answered the same way.
    let mut silent = server.connect();
    silent.read_response().assert_error(408);
    silent.expect_eof();

    drop((partial, silent));
    server.wait_for_stats("two header timeouts", |s| num(s, "totals.closed.header_timeout") == 2);
}

#[test]
fn a_peer_that_does_not_read_is_dropped_after_the_write_timeout() {
    // A high --max-requests, so that the connection is not ended by the request count first.
    let server = Server::start(&["--write-timeout", "300ms", "--max-requests", "1000000"]);
    let client = server.connect();
    // Pipeline /metrics requests (a few KB of answer each) and never read: the answers fill the
    // kernel's buffers, the server's writes stop, and after --write-timeout it gives up. The
    // writer stops at the first failed write (the server dropped us), after ~40 MB of answers, or
    // after 5 s.
    let batch = b"GET /metrics HTTP/1.1\r\nHost: tether.test\r\n\r\n".repeat(100);
    client.stream().set_write_timeout(Some(Duration::from_millis(500))).expect("set_write_timeout");
    let mut stream = client.stream().try_clone().expect("clone the socket");
    let give_up = Instant::now() + Duration::from_secs(5);
    for _ in 0..160 {
        if Instant::now() >= give_up || stream.write_all(&batch).is_err() {
            break;
        }
    }
    let stats = server.wait_for_stats("a write timeout", |s| num(s, "totals.closed.write_timeout") == 1);
    assert_eq!(num(&stats, "connections.open"), 1, "only the /stats connection is left: {stats}");
}
