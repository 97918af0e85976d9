//! Table-driven tests for `http::request`. Every table row, every prefix of
//! it, and thousands of mutated requests are also checked against the
//! invariants: each strict prefix of a valid request waits, a prefix of an
//! invalid one waits or fails with the same status, `len` is exact under
//! pipelining, and `Ok(None)` comes only on bounded input.

use super::*;

/// Limits small enough to reach in a table row.
const SMALL: Limits = Limits { max_head_bytes: 128, max_uri_bytes: 32, max_body_bytes: 64 };

/// A one-line summary of a request, so that the tables stay readable.
fn summary(r: &Request) -> String {
    let mut s = format!("{:?} {} ?{} {:?}", r.method, r.path, r.query, r.version);
    if r.close {
        s += " close";
    }
    if r.keep_alive {
        s += " keep-alive";
    }
    if let Some(id) = r.last_event_id {
        s += &format!(" id={id}");
    }
    if let Some(credentials) = r.authorization {
        s += &format!(" auth={credentials}");
    }
    if r.upgrade_websocket {
        s += " upgrade=websocket";
    }
    if r.connection_upgrade {
        s += " connection-upgrade";
    }
    if let Some(key) = r.websocket_key {
        s += &format!(" ws-key={key}");
    }
    if let Some(version) = r.websocket_version {
        s += &format!(" ws-version={version}");
    }
    match &r.body {
        Body::Empty => {}
        Body::Bytes(b) => s += &format!(" bytes={}", String::from_utf8_lossy(b)),
        Body::Chunked(b) => s += &format!(" chunked={}", String::from_utf8_lossy(b)),
    }
    s
}

/// `Ok(None)` is only allowed while the input is within this bound.
fn bound(limits: &Limits) -> usize {
    2 * limits.max_head_bytes + limits.max_body_bytes
}

/// Checks the invariants that hold for any input whatsoever.
fn check_invariants(input: &[u8], limits: &Limits) {
    match parse(input, limits) {
        Ok(None) => assert!(input.len() <= bound(limits), "Ok(None) on {} bytes", input.len()),
        Ok(Some(r)) => {
            assert!(r.len > 0 && r.len <= input.len());
            // The target is a URI in a form the method may use (RFC 9112 §3.2).
            let target = [r.path, r.query].concat();
            assert!(target.is_ascii() && !target.contains('#'), "target {target:?}");
            assert!(r.path.starts_with('/') || (r.path == "*" && r.method == Method::Options), "{r:?}");
            // A request is decided by its own bytes: its strict prefixes
            // wait, and what follows it does not change it.
            let own = &input[..r.len];
            let again = parse(own, limits).map(|r| r.map(|r| (summary(&r), r.len)));
            assert_eq!(again, Ok(Some((summary(&r), r.len))), "{:?}", String::from_utf8_lossy(own));
            for cut in 0..r.len {
                let prefix = parse(&own[..cut], limits);
                assert!(matches!(prefix, Ok(None)), "prefix {cut}: {prefix:?}");
            }
        }
        Err(e) => {
            assert!(!e.message().is_empty() && !e.message().contains('\n'));
            // The verdict does not depend on how the input was split: each
            // prefix waits or is refused with the same status.
            for cut in 0..input.len() {
                match parse(&input[..cut], limits) {
                    Ok(None) => {}
                    Err(early) => {
                        assert_eq!(early.status(), e.status(), "prefix {cut} of {:?}", String::from_utf8_lossy(input))
                    }
                    Ok(Some(r)) => panic!("prefix {cut} of a refused input gave {r:?}"),
                }
            }
        }
    }
}

const PIPELINED: &[u8] = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n";

/// Valid requests and their summaries, under the default limits.
const VALID: &[(&[u8], &str)] = &[
    // Plain GETs, HEAD and other methods.
    (b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\n\r\n", "Get /plaintext ? Http11"),
    (b"GET /search?q=a&b=c HTTP/1.1\r\nHost: x\r\n\r\n", "Get /search ?q=a&b=c Http11"),
    (b"GET /a?b?c HTTP/1.1\r\nHost: x\r\n\r\n", "Get /a ?b?c Http11"),
    (b"GET /? HTTP/1.1\r\nHost: x\r\n\r\n", "Get / ? Http11"),
    (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", "Head / ? Http11"),
    (b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n", "Other(\"DELETE\") /x ? Http11"),
    (b"get / HTTP/1.1\r\nHost: x\r\n\r\n", "Other(\"get\") / ? Http11"),
    // asterisk-form is for OPTIONS alone (RFC 9112 §3.2.4); OPTIONS may also name a resource.
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", "Options * ? Http11"),
    (b"OPTIONS /x HTTP/1.1\r\nHost: x\r\n\r\n", "Options /x ? Http11"),
    // Non-ASCII reaches a target percent-encoded (RFC 3986 §2.1), and stays encoded.
    (b"GET /caf%C3%A9?q=%E2%82%AC HTTP/1.1\r\nHost: x\r\n\r\n", "Get /caf%C3%A9 ?q=%E2%82%AC Http11"),
    // Field names are case-insensitive; values may hold obs-text.
    (b"GET / HTTP/1.1\r\nhOST: x\r\nX-Name: caf\xc3\xa9\r\n\r\n", "Get / ? Http11"),
    // Host may be empty (RFC 9112 §3.2), an IP literal, or carry a port.
    (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", "Get / ? Http11"),
    (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", "Get / ? Http11"),
    // Leading empty lines are skipped (RFC 9112 §2.2) and counted in len.
    (b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", "Get / ? Http11"),
    // absolute-form is reduced to path and query (RFC 9112 §3.2.2).
    (b"GET http://example.com:8080/p/q?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", "Get /p/q ?x=1 Http11"),
    (b"GET HTTPS://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", "Get / ? Http11"),
    (b"GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n", "Get / ?q=1 Http11"),
    (b"GET http://h/ HTTP/1.1\r\nHost: other\r\n\r\n", "Get / ? Http11"),
    // HTTP/1.0: Host optional, persistence only with keep-alive.
    (b"GET / HTTP/1.0\r\n\r\n", "Get / ? Http10"),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", "Get / ? Http10 keep-alive"),
    (b"POST /f HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", "Post /f ? Http10 bytes=hi"),
    // Connection options: case-insensitive lists across lines.
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\r\n", "Get / ? Http11 keep-alive connection-upgrade"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nConnection: ,CLOSE,\r\n\r\n", "Get / ? Http11 close connection-upgrade"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgraded, Upgrade-X\r\n\r\n", "Get / ? Http11"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, keep-alive\r\n\r\n", "Get / ? Http11 close keep-alive"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: closed\r\n\r\n", "Get / ? Http11"),
    // Last-Event-ID, for EventSource reconnects.
    (b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: 42\r\n\r\n", "Get /events ? Http11 id=42"),
    // Authorization, which may carry a bearer token.
    (b"GET /stats HTTP/1.1\r\nHost: x\r\nauthorization: Bearer a.b.c\r\n\r\n", "Get /stats ? Http11 auth=Bearer a.b.c"),
    (b"GET /events HTTP/1.1\r\nHost: x\r\nlast-event-id:\r\n\r\n", "Get /events ? Http11"), // an empty id is none
    // The WebSocket handshake's fields (RFC 6455 §4.1), which `ws::handshake` judges.
    (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "Get /ws ? Http11 upgrade=websocket connection-upgrade ws-key=dGhlIHNhbXBsZSBub25jZQ== ws-version=13",
    ),
    // Upgrade is a list across lines (RFC 9110 §7.8); tokens are case-insensitive, and a
    // protocol with a version or another name is not `websocket`.
    (b"GET /ws HTTP/1.1\r\nHost: x\r\nupgrade: h2c, WebSocket\r\n\r\n", "Get /ws ? Http11 upgrade=websocket"),
    (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nUpgrade: websocket\r\n\r\n", "Get /ws ? Http11 upgrade=websocket"),
    (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket/13, websockets\r\n\r\n", "Get /ws ? Http11"),
    // The key and the version are kept as sent (OWS trimmed), even when wrong.
    (b"GET /ws HTTP/1.1\r\nHost: x\r\nsec-websocket-key:  not a key \r\nSEC-WEBSOCKET-VERSION: 8\r\n\r\n", "Get /ws ? Http11 ws-key=not a key ws-version=8"),
    // Content-Length bodies. httparse trims OWS around a value.
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "Post /echo ? Http11 bytes=hello"),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\ncontent-length:  \t5 \r\n\r\nhello", "Post /echo ? Http11 bytes=hello"),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhello", "Post /echo ? Http11 bytes=hello"),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "Post /echo ? Http11"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n!", "Get / ? Http11 bytes=!"),
    // Chunked bodies.
    (b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "Post /up ? Http11 chunked=hello world"),
    (b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Post /up ? Http11 chunked="),
    (b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n000\r\n\r\n", "Post /up ? Http11 chunked=0123456789"),
    (b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked ,\r\n\r\n0002\r\nhi\r\n0\r\n\r\n", "Post /up ? Http11 chunked=hi"),
    (b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", "Post /up ? Http11 chunked=hi"),
    // Extensions (BWS, tokens, quoted strings) and trailers are checked, then dropped. BWS may
    // stand before ";" and around "=" (RFC 9112 §7.1.1), never at the end of the line.
    (b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value;flag\r\nhello\r\n1 ; q = \"a \\\" b;\"\r\n!\r\n0;last\r\nExpires: never\r\nX-Sum:1\r\n\r\n", "Post /up ? Http11 chunked=hello!"),
    (b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2 ;a\r\nhi\r\n0\t;b =c\r\nX-Empty:\r\n\r\n", "Post /up ? Http11 chunked=hi"),
];

#[test]
fn valid_requests() {
    for &(input, expected) in VALID {
        let shown = String::from_utf8_lossy(input);
        let request = parse(input, &Limits::default()).unwrap_or_else(|e| panic!("{shown:?}: {e:?}"));
        let request = request.unwrap_or_else(|| panic!("{shown:?}: incomplete"));
        assert_eq!(summary(&request), expected, "{shown:?}");
        assert_eq!(request.len, input.len(), "{shown:?}");
    }
}

#[test]
fn every_strict_prefix_of_a_valid_request_waits() {
    for &(input, _) in VALID {
        for cut in 0..input.len() {
            let result = parse(&input[..cut], &Limits::default());
            assert!(matches!(result, Ok(None)), "{:?}: {result:?}", String::from_utf8_lossy(&input[..cut]));
        }
    }
}

#[test]
fn len_is_exact_under_pipelining() {
    for &(input, expected) in VALID {
        let both = [input, PIPELINED].concat();
        let Ok(Some(first)) = parse(&both, &Limits::default()) else { panic!("{expected}") };
        assert_eq!((summary(&first).as_str(), first.len), (expected, input.len()));
        let Ok(Some(second)) = parse(&both[first.len..], &Limits::default()) else { panic!("{expected}") };
        assert_eq!((second.path, second.len), ("/next", PIPELINED.len()));
    }
}

#[test]
fn pipelined_bodies_stay_in_sync() {
    let cl = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nGET GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    let chunked = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nGET \r\n0\r\nT: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    for input in [&cl[..], &chunked[..]] {
        let Ok(Some(first)) = parse(input, &Limits::default()) else { panic!() };
        assert_eq!(first.path, "/a");
        assert_eq!(first.body, if input == cl { Body::Bytes(b"GET ") } else { Body::Chunked(b"GET ".to_vec()) });
        let Ok(Some(second)) = parse(&input[first.len..], &Limits::default()) else { panic!() };
        assert_eq!((second.method, second.path, first.len + second.len), (Method::Get, "/b", input.len()));
    }
}

/// Inputs that must be refused under the default limits: (input, status, part of the message).
const INVALID: &[(&[u8], u16, &str)] = &[
    // Request line.
    (b"GET / FOO\r\nHost: x\r\n\r\n", 400, "invalid HTTP version"),
    (b"GET / http/1.1\r\nHost: x\r\n\r\n", 400, "invalid HTTP version"),
    (b"GET / HTTP/2.00\r\nHost: x\r\n\r\n", 400, "invalid HTTP version"),
    (b"GET / HTTP/2.0\rX\r\n", 400, "invalid HTTP version"),
    (b"GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400, "line ending"),
    (b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400, "line ending"),
    (b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400, "line ending"),
    (b"\rGET / HTTP/1.1\r\n", 400, "line ending"),
    // Bare LF line ends, which RFC 9112 §2.2 would allow.
    (b"GET / HTTP/1.1\nHost: x\n\n", 400, "bare LF"),
    (b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400, "bare LF"),
    (b"GET / HTTP/1.1\r\nHost: x\n\r\n", 400, "bare LF"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400, "bare LF"),
    (b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bare LF"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bare LF"),
    (b"GET /\r\n\r\n", 400, "request-target"),
    (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request-target"),
    (b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request-target"),
    (b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400, "request-target"),
    // Raw non-ASCII that is valid UTF-8, which httparse lets through: RFC 3986 §2 allows only
    // ASCII in a URI, and RFC 9112 §3 answers an invalid request-line with 400. Refused as soon
    // as the request line has arrived, without waiting for the fields.
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "non-ASCII byte in the request-target"),
    (b"GET /?q=\xe2\x82\xac HTTP/1.1\r\n", 400, "non-ASCII byte in the request-target"),
    (b"GET http://h/\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "non-ASCII byte in the request-target"),
    // A fragment: no form of request-target has one (RFC 9112 §3.2, RFC 3986 §4.3); a client
    // strips it before sending.
    (b"GET /plaintext#top HTTP/1.1\r\nHost: x\r\n\r\n", 400, "fragment"),
    (b"GET /#? HTTP/1.1\r\n", 400, "fragment"),
    (b"GET /?q#f HTTP/1.1\r\nHost: x\r\n\r\n", 400, "fragment"),
    (b"GET http://h/p#f HTTP/1.1\r\nHost: h\r\n\r\n", 400, "fragment"),
    (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid method"),
    (b" GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid method"),
    // Versions that are well-formed but not served (RFC 9110 §15.6.6).
    (b"GET / HTTP/2.0\r\n", 505, "version"),
    (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505, "version"),
    (b"GET / HTTP/0.9\r\n\r\n", 505, "version"),
    (b"GET / HTTP/3.0\n\n", 505, "version"),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "version"),
    // Request-target forms.
    (b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n", 400, "not origin-form"),
    (b"GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "not origin-form"),
    (b"GET *x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "not origin-form"),
    // asterisk-form is only for a server-wide OPTIONS (RFC 9112 §3.2.4); methods are
    // case-sensitive, so `options` is another method.
    (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "asterisk-form"),
    (b"HEAD * HTTP/1.1\r\n", 400, "asterisk-form"),
    (b"POST * HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400, "asterisk-form"),
    (b"options * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "asterisk-form"),
    (b"GET ftp://h/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "not origin-form"),
    (b"GET http:/h/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "not origin-form"),
    (b"GET http:// HTTP/1.1\r\nHost: x\r\n\r\n", 400, "authority"),
    (b"GET http:///p HTTP/1.1\r\nHost: x\r\n\r\n", 400, "authority"),
    (b"GET http://user@h/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, "authority"),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501, "CONNECT"),
    // Header fields, as httparse refuses them.
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "whitespace between a field name and its colon"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: 1\r\n\r\n", 400, "whitespace between a field name and its colon"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", 400, "obs-fold"),
    (b"GET / HTTP/1.1\r\n\tHost: x\r\n\r\n", 400, "obs-fold"),
    (b"GET / HTTP/1.1\r\n: x\r\nHost: x\r\n\r\n", 400, "invalid header field name"),
    (b"GET / HTTP/1.1\r\nHo\x01st: x\r\n\r\n", 400, "invalid header field name"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, "control character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, "control character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 400, "control character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb\r\n\r\n", 400, "control character"),
    // Host (RFC 9112 §3.2).
    (b"GET / HTTP/1.1\r\n\r\n", 400, "missing Host"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, "two Host"),
    (b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400, "two Host"),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host"),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "invalid Host"),
    (b"GET / HTTP/1.1\r\nHost: user@h\r\n\r\n", 400, "invalid Host"),
    (b"GET http://h/ HTTP/1.1\r\n\r\n", 400, "missing Host"),
    // Last-Event-ID.
    (b"GET / HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\r\nLast-Event-ID: 2\r\n\r\n", 400, "two Last-Event-ID"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xff\r\n\r\n", 400, "not UTF-8"),
    // Authorization.
    (
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
        400,
        "two Authorization",
    ),
    (b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n\r\n", 400, "not UTF-8"),
    // The WebSocket handshake's fields: each at most once (RFC 6455 §11.3.1, §11.3.5).
    (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n",
        400,
        "two Sec-WebSocket-Key",
    ),
    (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n\r\n",
        400,
        "two Sec-WebSocket-Version",
    ),
    (b"GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: \xc3(\r\n\r\n", 400, "Sec-WebSocket-Key is not UTF-8"),
    (b"GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Version: \xff\r\n\r\n", 400, "Sec-WebSocket-Version is not UTF-8"),
    // Hostile framing: Content-Length (RFC 9110 §8.6, RFC 9112 §6.3).
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "both Content-Length and Transfer-Encoding",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
        "both Content-Length and Transfer-Encoding",
    ),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "two Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400, "two Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello", 400, "a list in Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,\r\n\r\nhello", 400, "a list in Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400, "not a decimal number"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello", 400, "not a decimal number"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5e2\r\n\r\nhello", 400, "not a decimal number"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello", 400, "not a decimal number"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5 5\r\n\r\nhello", 400, "not a decimal number"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", 400, "empty Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, "overflows"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n", 400, "overflows"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n", 413, "payload too large"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n", 413, "payload too large"),
    // Hostile framing: Transfer-Encoding (RFC 9112 §6.1, §6.3).
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        400,
        "does not end with chunked",
    ),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "does not end with chunked"),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
        400,
        "does not end with chunked",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
        400,
        "does not end with chunked",
    ),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, "does not end with chunked"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n0\r\n\r\n", 400, "does not end with chunked"),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        400,
        "does not end with chunked",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        400,
        "chunked applied twice",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "chunked applied twice",
    ),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        501,
        "transfer coding other than chunked",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        "transfer coding other than chunked",
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
        "transfer coding other than chunked",
    ),
];

#[test]
fn invalid_requests() {
    for &(input, status, message) in INVALID {
        let shown = String::from_utf8_lossy(input);
        let error = parse(input, &Limits::default()).err().unwrap_or_else(|| panic!("{shown:?} accepted"));
        assert_eq!(error.status(), status, "{shown:?}: {error:?}");
        assert!(error.message().contains(message), "{shown:?}: {error:?}");
    }
}

#[test]
fn every_table_row_keeps_the_invariants() {
    let rows = VALID.iter().map(|&(input, _)| (input, Limits::default()));
    let rows = rows.chain(INVALID.iter().map(|&(input, ..)| (input, Limits::default())));
    let rows = rows.chain(limits::OVER_LIMITS.iter().map(|&(input, ..)| (input, SMALL)));
    let chunked: Vec<Vec<u8>> = chunked::refused_requests().collect();
    let rows = rows.chain(chunked.iter().map(|input| (input.as_slice(), Limits::default())));
    for (input, limits) in rows {
        for cut in 0..=input.len() {
            check_invariants(&input[..cut], &limits);
            check_invariants(&input[..cut], &SMALL);
        }
    }
}

#[test]
fn mutated_requests_keep_the_invariants() {
    // A small deterministic fuzzer: mutate valid requests at random and
    // check that no input panics or breaks an invariant.
    const FUZZ_ROUNDS: usize = 300;
    const BYTES: &[u8] = b"\r\n \t:;,=\"\\0aF/?*#\x00\x7f\xc3\xa9\xff";
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for &(input, _) in VALID {
        for _ in 0..FUZZ_ROUNDS {
            let mut bytes = [input, PIPELINED].concat();
            for _ in 0..1 + next(3) {
                let at = next(bytes.len());
                match next(3) {
                    0 => bytes[at] = BYTES[next(BYTES.len())],
                    1 => bytes.insert(at, BYTES[next(BYTES.len())]),
                    _ => drop(bytes.remove(at)),
                }
            }
            check_invariants(&bytes, &Limits::default());
            check_invariants(&bytes, &SMALL);
        }
    }
}

#[test]
fn statuses_and_messages() {
    let errors = [
        (HttpError::BadRequest("bad request: x"), 400),
        (HttpError::PayloadTooLarge, 413),
        (HttpError::UriTooLong, 414),
        (HttpError::HeaderFieldsTooLarge, 431),
        (HttpError::NotImplemented("not implemented: x"), 501),
        (HttpError::VersionNotSupported, 505),
    ];
    for (error, status) in errors {
        assert_eq!(error.status(), status);
        assert_eq!(error.to_string(), error.message());
        assert!(!error.message().is_empty() && !error.message().contains('\n'));
    }
}

#[path = "request_chunked.rs"]
mod chunked;
#[path = "request_limits.rs"]
mod limits;
#[path = "request_props.rs"]
mod props;

#[test]
fn a_complete_http11_head_with_expect_100_continue_expects_it() {
    let expects = |input: &str| match parse_progress(input.as_bytes(), &Limits::default()) {
        Ok(Progress::Waiting { awaits_continue }) => awaits_continue.is_some(),
        other => panic!("{input:?} should wait for its body: {other:?}"),
    };
    let head = "POST /publish/t?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n";
    assert!(expects(head));
    assert!(
        matches!(
            parse_progress(head.as_bytes(), &Limits::default()),
            Ok(Progress::Waiting { awaits_continue: Some((Method::Post, "/publish/t")) })
        ),
        "the method and path come along, to refuse before the body"
    );
    let cases = [
        ("an incomplete head", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"),
        ("HTTP/1.0", "POST / HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"),
        ("no Expect", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"),
        ("another expectation", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 200-ok\r\n\r\n"),
    ];
    for (name, input) in cases {
        assert!(!expects(input), "{name}");
    }
}

#[test]
fn says_head_reads_the_method_of_input_that_may_not_parse() {
    for (input, head) in [
        ("HEAD / HTTP/1.1\r\n", true),
        ("\r\nHEAD /x", true),
        ("HEAD", false),
        ("GET / HTTP/1.1\r\n", false),
        ("head / HTTP/1.1\r\n", false),
        ("", false),
    ] {
        assert_eq!(says_head(input.as_bytes()), head, "{input:?}");
    }
}
