//! Tests of the client: URL and response parsing without I/O, then the connection rules (reuse,
//! `Connection: close`, the retry-once rule, the stop flag) against a scripted server on a std
//! listener.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::*;

// ---- URLs ---------------------------------------------------------------------------------

#[test]
fn urls() {
    let url = Url::parse("http://127.0.0.1:8080/poll/news?cursor=4&epoch=ab").unwrap();
    assert_eq!(url.host, "127.0.0.1");
    assert_eq!(url.port, 8080);
    assert_eq!(url.path, "/poll/news");
    assert_eq!(url.query, "cursor=4&epoch=ab");
    assert_eq!(url.target(), "/poll/news?cursor=4&epoch=ab");
    assert_eq!(url.authority(), "127.0.0.1:8080");

    let cases = [
        ("http://localhost", "localhost", 80, "/", ""),
        ("HTTP://h:1?x=1", "h", 1, "/", "x=1"),
        ("http://h/a%20b#frag", "h", 80, "/a%20b", ""),
        ("http://[::1]:9000/x", "[::1]", 9000, "/x", ""),
        ("http://[::1]/x", "[::1]", 80, "/x", ""),
    ];
    for (text, host, port, path, query) in cases {
        let url = Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((url.host.as_str(), url.port, url.path.as_str(), url.query.as_str()), (host, port, path, query));
    }
}

#[test]
fn bad_urls_say_what_is_wrong() {
    assert!(Url::parse("https://127.0.0.1/publish/a").unwrap_err().contains("no TLS"));
    let cases = [
        ("127.0.0.1:8080/poll/a", "expected a URL like"),
        ("ftp://h/x", "expected a URL like"),
        ("http:///x", "expected a URL like"),
        ("http://h:0/x", "bad port"),
        ("http://h:99999/x", "bad port"),
        ("http://h:x/y", "bad port"),
        ("http://user:pw@h/x", "user info"),
        ("http://h/a b", "spaces"),
        ("http://h/a\r\nX: y", "control"),
    ];
    for (text, why) in cases {
        let error = Url::parse(text).expect_err(text);
        assert!(error.contains(why), "{text}: {error}");
    }
}

// ---- responses, without I/O ---------------------------------------------------------------

/// Parses `input` whole; asserts that every strict prefix asks for more bytes.
fn parse_whole(input: &str) -> Response {
    for end in 0..input.len() {
        assert!(parse_response(&input.as_bytes()[..end], false).unwrap().is_none(), "prefix {:?}", &input[..end]);
    }
    let (response, len) = parse_response(input.as_bytes(), false).unwrap().expect("complete");
    assert_eq!(len, input.len());
    response
}

#[test]
fn content_length_bodies() {
    let response = parse_whole("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!((response.status, response.reason.as_str(), response.body.as_slice()), (200, "OK", &b"{}"[..]));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert!(!response.close);

    // A response ends where its length says, whatever follows.
    let input = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1";
    let (response, len) = parse_response(input, false).unwrap().unwrap();
    assert_eq!((response.body.as_slice(), len), (&b"x"[..], input.len() - 8));
}

#[test]
fn persistence() {
    let close = |head: &str| parse_whole(&format!("{head}\r\nContent-Length: 0\r\n\r\n")).close;
    assert!(!close("HTTP/1.1 200 OK"));
    assert!(close("HTTP/1.1 200 OK\r\nConnection: close"));
    assert!(close("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close"));
    assert!(close("HTTP/1.0 200 OK"));
    assert!(!close("HTTP/1.0 200 OK\r\nConnection: keep-alive"));
}

#[test]
fn chunked_bodies() {
    let input = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n";
    let response = parse_whole(input);
    assert_eq!(response.text(), "Wikipedia in\r\n\r\nchunks.");
    assert!(!response.close);
    let no_trailer = parse_whole("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n");
    assert_eq!(no_trailer.text(), "a");
    // Transfer-Encoding overrides Content-Length, and the connection is not trusted afterwards.
    let both = parse_whole("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n0\r\n\r\n");
    assert!(both.close);
}

#[test]
fn bodies_without_framing() {
    // No length: the body runs to the close, so it is complete only at EOF.
    let input = b"HTTP/1.1 200 OK\r\n\r\nuntil the end";
    assert!(parse_response(input, false).unwrap().is_none());
    let (response, len) = parse_response(input, true).unwrap().unwrap();
    assert_eq!((response.text().as_str(), len, response.close), ("until the end", input.len(), true));
    // These statuses never have a body.
    for status in ["100 Continue", "204 No Content", "304 Not Modified"] {
        let response = parse_whole(&format!("HTTP/1.1 {status}\r\n\r\n"));
        assert!(response.body.is_empty() && !response.close, "{status}");
    }
}

#[test]
fn malformed_responses() {
    let cases: [&[u8]; 8] = [
        b"HELLO\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
    ];
    for input in cases {
        let result = parse_response(input, false);
        assert!(matches!(result, Err(Error::Malformed(_))), "{:?}: {result:?}", String::from_utf8_lossy(input));
    }
    let long_head = format!("HTTP/1.1 200 OK\r\nX: {}", "y".repeat(MAX_HEAD_BYTES));
    assert!(matches!(parse_response(long_head.as_bytes(), false), Err(Error::Malformed(_))));
    // A response cut short by the close.
    let cut = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", true);
    assert!(matches!(cut, Err(Error::Io(ref e)) if e.kind() == ErrorKind::UnexpectedEof), "{cut:?}");
}

#[test]
fn the_retry_rule() {
    let no_response = || Error::NoResponse(ErrorKind::UnexpectedEof.into());
    assert!(should_retry(true, &no_response()));
    assert!(!should_retry(false, &no_response()), "a fresh connection's failure is real");
    assert!(!should_retry(true, &Error::Io(ErrorKind::UnexpectedEof.into())), "the response had begun");
    assert!(!should_retry(true, &Error::TimedOut(Duration::from_secs(1))));
    assert!(!should_retry(true, &Error::Stopped));
}

// ---- connections, against a scripted server -----------------------------------------------

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none";
const WAIT: Duration = Duration::from_secs(5);

/// Runs `script` on a loopback listener in a thread; the client's URL points at it.
fn scripted(script: impl FnOnce(&TcpListener) + Send + 'static) -> (Url, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    (url, thread::spawn(move || script(&listener)))
}

/// The next connection, waiting at most `WAIT`.
fn accept(listener: &TcpListener) -> TcpStream {
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(WAIT)).unwrap();
                return stream;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("no connection: {e}"),
        }
    }
}

/// No further connection arrives within a short while.
fn assert_no_more(listener: &TcpListener) {
    thread::sleep(Duration::from_millis(100));
    assert!(listener.accept().is_err(), "the client opened another connection");
}

/// Reads one request head (the client sends no body on GET).
fn read_request(stream: &mut TcpStream) -> String {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "EOF inside a request");
        request.push(byte[0]);
    }
    String::from_utf8(request).unwrap()
}

#[test]
fn one_connection_is_reused() {
    let (url, server) = scripted(|listener| {
        let mut stream = accept(listener);
        for _ in 0..3 {
            let request = read_request(&mut stream);
            assert!(request.starts_with("GET /x HTTP/1.1\r\nHost: 127.0.0.1:"), "{request}");
            stream.write_all(OK).unwrap();
        }
        assert_no_more(listener);
    });
    let mut client = Client::new(&url);
    for _ in 0..3 {
        assert_eq!(client.get("/x").unwrap().text(), "one");
    }
    server.join().unwrap();
}

#[test]
fn a_reused_connection_closed_by_the_server_is_retried_once() {
    let (closed_tx, closed_rx) = mpsc::channel();
    let (url, server) = scripted(move |listener| {
        let mut first = accept(listener);
        read_request(&mut first);
        first.write_all(OK).unwrap();
        // The idle timeout: the server closes between requests.
        drop(first);
        closed_tx.send(()).unwrap();
        let mut second = accept(listener);
        read_request(&mut second);
        second.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo").unwrap();
        assert_no_more(listener);
    });
    let mut client = Client::new(&url);
    assert_eq!(client.get("/").unwrap().text(), "one");
    closed_rx.recv_timeout(WAIT).unwrap();
    assert_eq!(client.get("/").unwrap().text(), "two", "retried on a new connection");
    server.join().unwrap();
}

#[test]
fn a_fresh_connection_that_closes_is_not_retried() {
    let (url, server) = scripted(|listener| {
        let mut stream = accept(listener);
        read_request(&mut stream);
        drop(stream);
        assert_no_more(listener);
    });
    let result = Client::new(&url).response_timeout(WAIT).get("/");
    assert!(matches!(result, Err(Error::NoResponse(_))), "{result:?}");
    server.join().unwrap();
}

#[test]
fn a_response_that_breaks_off_is_not_retried() {
    let (url, server) = scripted(|listener| {
        let mut stream = accept(listener);
        read_request(&mut stream);
        stream.write_all(OK).unwrap();
        read_request(&mut stream);
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ntw").unwrap();
        drop(stream);
        assert_no_more(listener);
    });
    let mut client = Client::new(&url);
    client.get("/").unwrap();
    let result = client.get("/");
    assert!(matches!(result, Err(Error::Io(ref e)) if e.kind() == ErrorKind::UnexpectedEof), "{result:?}");
    server.join().unwrap();
}

#[test]
fn connection_close_is_honoured() {
    let (url, server) = scripted(|listener| {
        let mut first = accept(listener);
        read_request(&mut first);
        first.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\none").unwrap();
        // Kept open: a client that ignored the close would wait here for an answer.
        let mut second = accept(listener);
        read_request(&mut second);
        second.write_all(OK).unwrap();
        drop(first);
    });
    let mut client = Client::new(&url).response_timeout(WAIT);
    client.get("/").unwrap();
    assert_eq!(client.get("/").unwrap().text(), "one");
    server.join().unwrap();
}

#[test]
fn waits_end_on_the_stop_flag_or_the_response_timeout() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (url, server) = scripted(move |listener| {
        // Reads both requests and never answers.
        let mut streams = [accept(listener), accept(listener)];
        for stream in &mut streams {
            read_request(stream);
        }
        let _ = done_rx.recv_timeout(WAIT);
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut stoppable = Client::new(&url).read_timeout(Duration::from_millis(20)).stop_flag(stop.clone());
    let raise = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
    });
    assert!(matches!(stoppable.get("/"), Err(Error::Stopped)));
    raise.join().unwrap();
    let started = Instant::now();
    let mut impatient =
        Client::new(&url).read_timeout(Duration::from_millis(20)).response_timeout(Duration::from_millis(100));
    let result = impatient.get("/");
    assert!(matches!(result, Err(Error::TimedOut(_))), "{result:?}");
    assert!(started.elapsed() < WAIT);
    done_tx.send(()).unwrap();
    server.join().unwrap();
}
