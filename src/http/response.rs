//! Serialising responses: the one write path every answer takes, from `/plaintext` to a 503.
//!
//! Invariants: every response carries `Server` and `Date`, and every one but the interim
//! `100 Continue` and a `204` carries `Content-Length` (a HEAD answer carries the length of the
//! body it leaves out, RFC 9110 section 9.3.2); the persistence
//! headers are decided by the caller once (`Persistence`) and written here, so no route can
//! forget `Connection: close` on the response that ends a connection.

use super::date::HttpDate;

/// A status code with its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: &'static str,
}

impl Status {
    pub const OK: Status = Status::new(200, "OK");
    pub const NO_CONTENT: Status = Status::new(204, "No Content");
    pub const BAD_REQUEST: Status = Status::new(400, "Bad Request");
    pub const UNAUTHORIZED: Status = Status::new(401, "Unauthorized");
    pub const FORBIDDEN: Status = Status::new(403, "Forbidden");
    pub const NOT_FOUND: Status = Status::new(404, "Not Found");
    pub const METHOD_NOT_ALLOWED: Status = Status::new(405, "Method Not Allowed");
    pub const REQUEST_TIMEOUT: Status = Status::new(408, "Request Timeout");
    pub const PAYLOAD_TOO_LARGE: Status = Status::new(413, "Content Too Large");
    pub const URI_TOO_LONG: Status = Status::new(414, "URI Too Long");
    pub const UPGRADE_REQUIRED: Status = Status::new(426, "Upgrade Required");
    pub const HEADER_FIELDS_TOO_LARGE: Status = Status::new(431, "Request Header Fields Too Large");
    pub const NOT_IMPLEMENTED: Status = Status::new(501, "Not Implemented");
    pub const SERVICE_UNAVAILABLE: Status = Status::new(503, "Service Unavailable");
    pub const VERSION_NOT_SUPPORTED: Status = Status::new(505, "HTTP Version Not Supported");

    const fn new(code: u16, reason: &'static str) -> Status {
        Status { code, reason }
    }

    /// The status of a request-parsing error code (400, 413, 414, 431, 501, 505).
    pub fn from_code(code: u16) -> Status {
        match code {
            413 => Status::PAYLOAD_TOO_LARGE,
            414 => Status::URI_TOO_LONG,
            431 => Status::HEADER_FIELDS_TOO_LARGE,
            501 => Status::NOT_IMPLEMENTED,
            505 => Status::VERSION_NOT_SUPPORTED,
            _ => Status::BAD_REQUEST,
        }
    }
}

/// Whether the connection stays open after this response, decided once per response by the
/// connection's keep-alive rule and written here as headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// `Keep-Alive: timeout=T, max=M` (M = requests the connection still accepts after this one);
    /// HTTP/1.0 also needs `Connection: keep-alive`, since persistence is not its default.
    KeepAlive { timeout_secs: u64, remaining: u32, http10: bool },
    /// `Connection: close`: the last response on this connection.
    Close,
    /// A body without a length that runs until the connection closes (an event stream): no
    /// `Content-Length`, and `Connection: close` (RFC 9112 §6.3, the last rule).
    Stream,
}

/// An answer before serialisation. `headers` are the extra ones a route needs (`Allow`,
/// `Retry-After`, `Cache-Control`).
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    pub status: Status,
    pub content_type: &'static str,
    pub headers: &'a [(&'static str, &'a str)],
    pub body: &'a [u8],
    /// Whether a page of another origin may read it, and (`allow_origin`) which: the endpoint
    /// says the first, the request's grant (`http::cors`) the second.
    pub cors: Cors<'a>,
    pub allow_origin: Option<&'a str>,
}

/// Whether an answer may be read by a page of another origin that is allowed (the Fetch
/// standard's CORS protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cors<'a> {
    /// No: the browser keeps it from a page of another origin.
    None,
    /// Yes: `Access-Control-Allow-Origin` and `Vary: Origin`.
    Shared,
    /// The answer to a preflight: also which methods and request headers the page may use, and
    /// for how long the browser may remember so.
    Preflight { methods: &'a str },
}

/// The request headers a page may send across origins: a token, a JSON body, and the cursor an
/// `EventSource` sends back.
const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// How long a browser may keep a preflight's answer, in seconds.
const CORS_MAX_AGE_SECS: &str = "600";

impl<'a> Response<'a> {
    pub fn new(status: Status, content_type: &'static str, body: &'a [u8]) -> Self {
        Response { status, content_type, headers: &[], body, cors: Cors::None, allow_origin: None }
    }

    /// An error answer: a one-line `text/plain` body.
    pub fn error(status: Status, line: &'a [u8]) -> Self {
        Response::new(status, "text/plain; charset=utf-8", line)
    }

    pub fn with_headers(self, headers: &'a [(&'static str, &'a str)]) -> Self {
        Response { headers, ..self }
    }

    pub fn with_cors(self, cors: Cors<'a>) -> Self {
        Response { cors, ..self }
    }

    /// Names the origin a shared answer is for (`None`: the request's origin was not allowed).
    pub fn allowing(self, allow_origin: Option<&'a str>) -> Self {
        Response { allow_origin, ..self }
    }
}

/// The extra header of an answer that is stale as soon as it is sent (the cost view, a poll's
/// messages): no cache may keep it (RFC 9111 §5.2.2.5).
pub const NO_STORE: &[(&str, &str)] = &[("Cache-Control", "no-store")];

/// The interim answer to `Expect: 100-continue`: a status line alone, not a response, so it
/// carries none of the headers every response does (RFC 9110 §15.2).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Appends the serialised response to `out`; with `head_only` the body is left out (HEAD).
pub fn write(out: &mut Vec<u8>, response: &Response, persistence: Persistence, head_only: bool, date: &HttpDate) {
    let body = response.body;
    out.reserve(160 + if head_only { 0 } else { body.len() });
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(response.status.code));
    out.push(b' ');
    out.extend_from_slice(response.status.reason.as_bytes());
    out.extend_from_slice(b"\r\nServer: tether\r\nDate: ");
    out.extend_from_slice(date.as_bytes());
    // A 204 has no content, and says nothing of its length or type (RFC 9110 §8.6, §15.3.5).
    if response.status != Status::NO_CONTENT {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(response.content_type.as_bytes());
        if persistence != Persistence::Stream {
            out.extend_from_slice(b"\r\nContent-Length: ");
            push_decimal(out, body.len() as u64);
        }
    }
    for (name, value) in response.headers {
        push_header(out, name, value);
    }
    if let (Some(origin), Cors::Shared | Cors::Preflight { .. }) = (response.allow_origin, response.cors) {
        push_header(out, "Access-Control-Allow-Origin", origin);
        push_header(out, "Vary", "Origin");
        if let Cors::Preflight { methods } = response.cors {
            push_header(out, "Access-Control-Allow-Methods", methods);
            push_header(out, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
            push_header(out, "Access-Control-Max-Age", CORS_MAX_AGE_SECS);
        }
    }
    match persistence {
        Persistence::KeepAlive { timeout_secs, remaining, http10 } => {
            if http10 {
                out.extend_from_slice(b"\r\nConnection: keep-alive");
            }
            out.extend_from_slice(b"\r\nKeep-Alive: timeout=");
            push_decimal(out, timeout_secs);
            out.extend_from_slice(b", max=");
            push_decimal(out, u64::from(remaining));
        }
        Persistence::Close | Persistence::Stream => out.extend_from_slice(b"\r\nConnection: close"),
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Appends the answer that turns the connection into a WebSocket (RFC 6455 §4.2.2): `101`, the
/// upgrade's headers and the accept key, and no content (RFC 9110 §15.2: a 1xx has none).
pub fn write_switching_protocols(out: &mut Vec<u8>, accept: &[u8; 28], date: &HttpDate) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nServer: tether\r\nDate: ");
    out.extend_from_slice(date.as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
}

/// Appends `n` in decimal without going through `fmt` (this runs several times per request).
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn date() -> HttpDate {
        let mut date = HttpDate::new();
        date.refresh(UNIX_EPOCH + Duration::from_secs(784_111_777));
        date
    }

    fn render(response: &Response, persistence: Persistence, head_only: bool) -> String {
        let mut out = Vec::new();
        write(&mut out, response, persistence, head_only, &date());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keep_alive_response_carries_every_required_header() {
        let response = Response::new(Status::OK, "text/plain", b"Hello, World!");
        let persistence = Persistence::KeepAlive { timeout_secs: 75, remaining: 999, http10: false };
        assert_eq!(
            render(&response, persistence, false),
            "HTTP/1.1 200 OK\r\nServer: tether\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Type: text/plain\r\nContent-Length: 13\r\nKeep-Alive: timeout=75, max=999\r\n\r\n\
             Hello, World!"
        );
    }

    #[test]
    fn http10_keep_alive_says_so_and_close_says_close() {
        let response = Response::new(Status::OK, "text/plain", b"x");
        let http10 = Persistence::KeepAlive { timeout_secs: 5, remaining: 0, http10: true };
        assert!(
            render(&response, http10, false).contains("\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5, max=0\r\n")
        );
        let closing = render(&response, Persistence::Close, false);
        assert!(closing.contains("\r\nConnection: close\r\n\r\nx"));
        assert!(!closing.contains("Keep-Alive"));
    }

    #[test]
    fn head_keeps_the_length_and_drops_the_body() {
        let response = Response::new(Status::OK, "text/plain", b"Hello, World!");
        let text = render(&response, Persistence::Close, true);
        assert!(text.contains("Content-Length: 13\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn extra_headers_and_error_lines() {
        let response = Response::error(Status::SERVICE_UNAVAILABLE, b"at the connection limit\n")
            .with_headers(&[("Retry-After", "1")]);
        let text = render(&response, Persistence::Close, false);
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("\r\nRetry-After: 1\r\n"));
        assert!(text.ends_with("\r\n\r\nat the connection limit\n"));
    }

    #[test]
    fn an_event_stream_has_no_length_and_ends_with_the_connection() {
        let response = Response::new(Status::OK, "text/event-stream", b"").with_headers(NO_STORE);
        let text = render(&response, Persistence::Stream, false);
        assert!(
            text.contains("Content-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
        );
        assert!(!text.contains("Content-Length"), "{text}");
    }

    #[test]
    fn cors_names_the_origin_and_varies_on_it() {
        let allowed = Response::new(Status::OK, "application/json", b"{}")
            .with_cors(Cors::Shared)
            .allowing(Some("http://a.test"));
        let text = render(&allowed, Persistence::Close, false);
        assert!(text.contains("\r\nAccess-Control-Allow-Origin: http://a.test\r\nVary: Origin\r\n"), "{text}");
        let preflight = Response::new(Status::NO_CONTENT, "", b"")
            .with_headers(&[("Allow", "GET, HEAD, OPTIONS")])
            .with_cors(Cors::Preflight { methods: "GET, HEAD, OPTIONS" })
            .allowing(Some("http://a.test"));
        let text = render(&preflight, Persistence::Close, false);
        for line in [
            "Access-Control-Allow-Origin: http://a.test",
            "Access-Control-Allow-Methods: GET, HEAD, OPTIONS",
            "Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID",
            "Access-Control-Max-Age: 600",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        let plain = Response::new(Status::OK, "text/plain", b"x").allowing(Some("http://a.test"));
        let plain = render(&plain, Persistence::Close, false);
        assert!(!plain.contains("Access-Control") && !plain.contains("Vary"), "not shared: {plain}");
        let not_allowed =
            render(&Response::new(Status::OK, "text/plain", b"x").with_cors(Cors::Shared), Persistence::Close, false);
        assert!(!not_allowed.contains("Access-Control"), "shared, but not with this origin");
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 99, 1000, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
