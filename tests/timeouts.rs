//! The three per-connection deadlines: idle (`--idle-timeout`), head (`--header-timeout`, 408)
//! and write (`--write-timeout`). Timeouts are set short (hundreds of milliseconds) so the
//! suite stays fast; the tests only ever wait *for* a deadline, with a bounded read, and never
//! assert that something happened quickly.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
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
fn an_idle_connection_is_not_held_to_the_header_timeout() {
    let server = Server::start(&["--header-timeout", "300ms", "--idle-timeout", "10s"]);
    let mut client = server.connect();
    assert_eq!(client.get("/plaintext").status, 200);
    // Between requests only the idle timeout applies: waiting past the header timeout is fine.
    thread::sleep(Duration::from_millis(700));
    let response = client.get("/plaintext");
    assert_eq!((response.status, response.text()), (200, "Hello, World!"));
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
fn a_trickled_head_does_not_extend_the_header_timeout() {
    let server = Server::start(&["--header-timeout", "500ms"]);
    let mut client = server.connect();
    client.send(b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\n");
    // A slowloris: one more header line every 50 ms, never the blank line, until the answer
    // comes (at most 6 s, longer than the read waits, so a server that lets the trickle extend
    // the deadline fails the read). The head must be whole within the timeout.
    let stop = AtomicBool::new(false);
    let mut writer = client.stream().try_clone().expect("clone the socket");
    thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..120 {
                if stop.load(Ordering::Relaxed) || writer.write_all(b"X-Trickle: 1\r\n").is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let response = client.try_read_response(false);
        stop.store(true, Ordering::Relaxed);
        response.unwrap_or_else(|e| panic!("{e}")).assert_error(408);
    });
    drop(writer);
    client.expect_eof();
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
