//! Methods and expectations end to end (docs/http.md, "Methods"): `OPTIONS` is answered `204`
//! with `Allow`; an answer to `HEAD` never carries a body, an error answer included; a request
//! that asks for `100 Continue` gets the refusal instead when its head alone decides one.

mod common;

use std::net::Shutdown;

use common::{Client, Server};

fn assert_no_content_allowing(response: &common::Response, allow: &str) {
    assert_eq!(response.status, 204, "{response:?}");
    assert_eq!(response.header("Allow"), Some(allow), "{response:?}");
    assert!(response.body.is_empty(), "{response:?}");
    response.assert_keeps_alive();
}

#[test]
fn options_is_answered_204_with_the_methods_allowed() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    let cases = [
        ("*", "GET, HEAD, POST, OPTIONS"),
        ("/poll/news", "GET, HEAD, OPTIONS"),
        ("/publish/news", "POST, OPTIONS"),
        ("/plaintext", "GET, HEAD, OPTIONS"),
        ("/stats", "GET, HEAD, OPTIONS"),
    ];
    for (target, allow) in cases {
        client.send(format!("OPTIONS {target} HTTP/1.1\r\nHost: tether.test\r\n\r\n").as_bytes());
        assert_no_content_allowing(&client.read_response(), allow);
    }
    client.send(b"OPTIONS /nowhere HTTP/1.1\r\nHost: tether.test\r\n\r\n");
    assert_eq!(client.read_response().status, 404);
    // The connection carried all of them and still serves.
    assert_eq!(client.get("/plaintext").status, 200);
}

/// Sends `head` (announcing a 5-byte body it does not send) and returns the answer.
fn expect_continue(server: &Server, head: &str) -> (Client, common::Response) {
    let mut client = server.connect();
    client.send(head.as_bytes());
    let response = client.read_response();
    (client, response)
}

#[test]
fn expect_100_continue_gets_the_refusal_when_the_head_decides_one() {
    let server = Server::start(&[]);
    let ask = |method: &str, target: &str| {
        format!("{method} {target} HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    };
    for (method, target, status) in [
        ("POST", "/nowhere", 404),
        ("POST", "/plaintext", 405),
        ("POST", "/poll/news", 405),
        ("POST", "/publish/not%20a%20topic", 400),
    ] {
        let (mut client, response) = expect_continue(&server, &ask(method, target));
        assert_eq!(response.status, status, "{method} {target}: {response:?}");
        response.assert_closes(); // the body may or may not follow: where the next request starts is unknown
        client.expect_eof();
    }
    // A head that decides nothing gets 100 Continue, then the answer once the body comes.
    let mut client = server.connect();
    client.send(ask("POST", "/publish/news").as_bytes());
    let mut interim = [0u8; 25];
    std::io::Read::read_exact(&mut client.stream(), &mut interim).expect("100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.send(b"hello");
    assert_eq!(client.read_response().status, 200);
}

#[test]
fn an_error_answer_to_head_has_no_body() {
    let server = Server::start(&["--max-head-bytes", "1024", "--max-message-bytes", "16"]);
    let long_header = format!("X-Long: {}\r\n", "a".repeat(2000));
    let cases = [
        ("a malformed header", "HEAD /plaintext HTTP/1.1\r\nHost: tether.test\r\nBad Header\r\n\r\n".to_string(), 400),
        (
            "a body over the limit",
            "HEAD /plaintext HTTP/1.1\r\nHost: tether.test\r\nContent-Length: 17\r\n\r\n".to_string(),
            413,
        ),
        ("a head over the limit", format!("HEAD /plaintext HTTP/1.1\r\nHost: tether.test\r\n{long_header}\r\n"), 431),
    ];
    for (what, request, status) in cases {
        let mut client = server.connect();
        client.send(request.as_bytes());
        client.stream().shutdown(Shutdown::Write).expect("shutdown");
        let response = client.read_head_response();
        assert_eq!(response.status, status, "{what}: {response:?}");
        response.assert_closes();
        // The length of the body a GET would have had, and not one byte of it.
        assert!(response.header("Content-Length").is_some_and(|n| n != "0"), "{what}: {response:?}");
        client.expect_eof();
    }
}
