//! Clients that leave, in every state (docs/long-polling.md, "A client that leaves"): a client's
//! FIN frees its connection at once, also when the FIN arrives in the same read as the request.
//!
//! With edge-triggered epoll the request and the FIN can come as one readiness event; a read
//! that returns the request is short, and a short read looks like "drained". If the server then
//! waits for another event to learn of the FIN, none comes: the connection sits in CLOSE-WAIT
//! until some timer ends it (100 s here). Every test gives that timer 100 s, so only noticing the
//! FIN can free the connection within the 5 s the checks wait.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};

use common::{assert_accounting, num, Client, Server};

const CLIENTS: usize = 50;

/// Sends `request` and the FIN right behind it, as a client that writes and closes at once.
fn send_and_close(server: &Server, request: &[u8]) {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    stream.write_all(request).expect("send");
    drop(stream);
}

/// `CLIENTS` connections that each send `request` and shut down their write side right behind
/// it, and still read.
fn send_and_shut_down(server: &Server, request: &[u8]) -> Vec<Client> {
    (0..CLIENTS)
        .map(|_| {
            let mut client = server.connect();
            client.send(request);
            client.stream().shutdown(Shutdown::Write).expect("shutdown");
            client
        })
        .collect()
}

#[test]
fn an_abandoned_long_poll_is_freed_at_once() {
    let server = Server::start(&["--poll-timeout", "100s", "--max-poll-timeout", "100s"]);
    for _ in 0..CLIENTS {
        send_and_close(&server, b"GET /poll/leaktest?timeout=100s HTTP/1.1\r\nHost: tether.test\r\n\r\n");
    }
    // Each look at /stats is one more connection accepted: more than CLIENTS means all of them
    // were (an exact count held only if the first look found every poll freed already).
    let stats = server.wait_for_stats("every abandoned poll freed", |s| {
        num(s, "totals.accepted") > CLIENTS as u64 && num(s, "polls.held") == 0 && num(s, "connections.open") == 1
    });
    assert_eq!(num(&stats, "connections.held"), 0, "{stats}");
    assert_eq!(num(&stats, "polls.timed_out"), 0, "freed by the FIN, not by the hold time: {stats}");
    assert_accounting(&stats);
}

#[test]
fn a_request_and_its_fin_in_one_read_get_the_answer_then_the_close() {
    // A half-closing client (`nc -N`, `curl --upload-file` of some proxies) still reads: it gets
    // its answer, then the server's FIN instead of waiting for the idle timeout.
    let server = Server::start(&["--idle-timeout", "100s"]);
    for client in &mut send_and_shut_down(&server, b"GET /plaintext HTTP/1.1\r\nHost: tether.test\r\n\r\n") {
        let response = client.read_response();
        assert_eq!((response.status, response.text()), (200, "Hello, World!"));
        client.expect_eof();
    }
    let stats = server.wait_for_stats("no connection left idle", |s| num(s, "connections.open") == 1);
    assert_eq!(num(&stats, "totals.closed.idle_timeout"), 0, "{stats}");
    assert_accounting(&stats);
}

#[test]
fn a_partial_request_and_a_fin_close_without_waiting_for_the_header_timeout() {
    let server = Server::start(&["--header-timeout", "100s"]);
    for client in &mut send_and_shut_down(&server, b"GET /plaintext HTTP/1.1\r\nHost: tet") {
        client.expect_eof(); // no 408: nobody is left to read it
    }
    let stats = server.wait_for_stats("no connection left reading", |s| num(s, "connections.open") == 1);
    assert_eq!(num(&stats, "totals.closed.header_timeout"), 0, "{stats}");
    assert_accounting(&stats);
}

#[test]
fn pipelined_requests_past_the_output_cap_and_a_fin_are_all_answered() {
    // More answers than the server serialises before it waits for the socket to take them
    // (256 KiB of /stats answers, about 1.3 KB each): the rest are parsed after the output drains,
    // although the FIN was already read.
    const REQUESTS: usize = 400;
    let server = Server::start(&["--idle-timeout", "100s"]);
    let mut client = server.connect();
    let request = b"GET /stats HTTP/1.1\r\nHost: tether.test\r\n\r\n";
    client.send(&request.repeat(REQUESTS));
    client.stream().shutdown(Shutdown::Write).expect("shutdown");
    for i in 0..REQUESTS {
        let response = client.read_response();
        assert_eq!(response.status, 200, "answer {i}");
    }
    client.expect_eof();
}
