//! THE ANTI-EXAMPLE: a deliberately naive HTTP server, kept to be measured against tether by
//! `tether bench exhaust` (docs/lab.md, "Exhaustion"). Do not copy it.
//!
//! What it gets wrong, and what tether does instead (src/server/admission.rs):
//! - When `accept` fails with `EMFILE` (the open-file limit), it logs the error and goes back
//!   to `poll`. The listener is level-triggered and the connection is still in the backlog, so
//!   `poll` returns at once, `accept` fails again, and so on: a busy loop that burns a core and
//!   writes a log line per turn for as long as the limit lasts, while the newcomer waits in the
//!   backlog and gets no answer at all. tether keeps a spare descriptor to accept the newcomer
//!   and answer 503 with `Retry-After`, first closes keep-alive connections that sit idle, caps
//!   connections below the limit, rate-limits its log, and pauses accepting instead of spinning.
//! - Every turn rebuilds and scans a `pollfd` for every connection (tether: epoll, one event per
//!   ready socket); no timeouts, no caps on buffers or on held polls.
//!
//! What it does right enough to be filled: answers every request `200 ok` on a keep-alive
//! connection, holds `GET /poll...` until a `POST /publish...` arrives (then answers every held
//! poll with the published body) or the client leaves. std and libc only.
//!
//! ```sh
//! cargo build --release --example naive_server
//! bash -c 'ulimit -n 256; exec target/release/examples/naive_server 127.0.0.1:8081'
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    held: bool,
    gone: bool,
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".into());
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
    listener.set_nonblocking(true).expect("a non-blocking listener");
    println!("naive_server listening on http://{}", listener.local_addr().expect("a bound address"));
    let mut conns: Vec<Conn> = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(conns.iter().map(|c| c.stream.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            continue; // EINTR
        }
        if fds[0].revents != 0 {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(true);
                        conns.push(Conn { stream, input: Vec::new(), held: false, gone: false });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // THE BUG: log and go back to poll(), which reports the listener again at once.
                    Err(e) => {
                        eprintln!("accept failed: {e}");
                        break;
                    }
                }
            }
        }
        let mut published = Vec::new();
        // conns[i] is fds[i + 1]; connections accepted this turn have no pollfd yet.
        for (conn, fd) in conns.iter_mut().zip(&fds[1..]) {
            if fd.revents != 0 {
                serve(conn, &mut published);
            }
        }
        for body in published {
            for conn in conns.iter_mut().filter(|c| c.held) {
                conn.held = false;
                respond(&mut conn.stream, &body);
            }
        }
        conns.retain(|c| !c.gone);
    }
}

fn serve(conn: &mut Conn, published: &mut Vec<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    match conn.stream.read(&mut buf) {
        Ok(0) => conn.gone = true,
        Ok(n) => conn.input.extend_from_slice(&buf[..n]),
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(_) => conn.gone = true,
    }
    while !conn.held {
        let Some(request) = take_request(&mut conn.input) else {
            return;
        };
        if request.path.starts_with("/poll") {
            conn.held = true;
        } else {
            if request.method == "POST" && request.path.starts_with("/publish") {
                published.push(request.body);
            }
            respond(&mut conn.stream, b"ok\n");
        }
    }
}

/// The first whole request in `input`, removed from it.
fn take_request(input: &mut Vec<u8>) -> Option<Request> {
    let head_end = input.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&input[..head_end]).into_owned();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    if input.len() < head_end + length {
        return None;
    }
    let body = input[head_end..head_end + length].to_vec();
    input.drain(..head_end + length);
    Some(Request { method, path, body })
}

fn respond(stream: &mut TcpStream, body: &[u8]) {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len());
    // Small answers fit in the socket buffer; a failure shows up as a close on the next read.
    let _ = stream.write_all(&[head.as_bytes(), body].concat());
}
