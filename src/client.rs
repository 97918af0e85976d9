//! A small blocking HTTP/1.1 client: one connection, kept alive and reused, for `tether publish`
//! and `tether poll`.
//!
//! Invariants:
//! - At most one connection is open, and it is kept only after a complete response that did not
//!   end it (`Connection: close`, HTTP/1.0 without keep-alive, a body delimited by the close, or
//!   bytes after the response). So a kept connection is always at a response boundary.
//! - A request is retried at most once, and only when the connection had already carried a
//!   response and the server closed it before sending a byte of this one: the idle-timeout race,
//!   where the server never read the request (see `docs/client.md`).
//! - Every wait is bounded: the socket's read timeout is a short tick, so a caller's stop flag is
//!   seen within one tick, and a response must arrive whole within `response_timeout`.
//!
//! [`parse_response`] holds the framing rules (RFC 9112 section 6.3) without I/O; [`Client`] adds
//! the socket. Plain `http://` only: there is no TLS.

use std::fmt::{self, Write as _};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use httparse::Status;

/// The most header fields a response may have.
const MAX_HEADERS: usize = 64;
/// A response head longer than this is not a response from a sane server.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest body accepted. A poll answer holds at most 64 KiB of message data, or one
/// message of up to `--max-message-bytes`, escaped: far below this.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing a request may stall.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// `http://host[:port][/path][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// As written, brackets included for an IPv6 address: it goes into `Host` as is.
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
    /// What follows the `?`, or `""`.
    pub query: String,
}

impl Url {
    /// Parses an `http://` URL. A `#fragment` is dropped, since it is never sent.
    ///
    /// # Errors
    ///
    /// A message saying what is wrong: another scheme (there is no TLS), user info, a bad port, or
    /// a space or control character that would break the request line.
    pub fn parse(text: &str) -> Result<Url, String> {
        let usage = || format!("expected a URL like http://127.0.0.1:8080/poll/news, got {text:?}");
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(usage());
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(format!("{text}: https is not supported, tether's client speaks plain http only (no TLS)"));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(usage());
        }
        if text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("{text:?}: a URL cannot hold spaces or control characters; percent-encode them"));
        }
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.contains('@') {
            return Err(format!("{text}: user info in a URL is not supported"));
        }
        // The port follows the last ':' unless that colon is inside an IPv6 literal's brackets.
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse().ok().filter(|&p| p != 0).ok_or_else(|| format!("{text}: bad port {port:?}"))?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(usage());
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = if path.is_empty() { "/" } else { path };
        Ok(Url { host: host.to_string(), port, path: path.to_string(), query: query.to_string() })
    }

    /// The request-target: the path, and the query if there is one.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// `host:port`, for `Host` and for messages.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// In arrival order; values not valid UTF-8 are kept lossily.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The connection ends after this response.
    pub close: bool,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text, lossily: for messages to a person.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum Error {
    /// No connection could be made.
    Connect { to: String, source: io::Error },
    /// The server closed or reset the connection before a byte of the response arrived. On a
    /// reused connection this is the idle-timeout race, and the request is retried once.
    NoResponse(io::Error),
    /// The connection failed after the response had begun.
    Io(io::Error),
    /// The bytes are not an HTTP/1.x response, or exceed this client's limits.
    Malformed(&'static str),
    /// The whole response did not arrive in time.
    TimedOut(Duration),
    /// The caller's stop flag was raised while waiting.
    Stopped,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect { to, source } => write!(f, "cannot connect to {to}: {source}"),
            Error::NoResponse(e) => write!(f, "the server closed the connection without answering ({e})"),
            Error::Io(e) => write!(f, "the connection failed: {e}"),
            Error::Malformed(why) => write!(f, "malformed response: {why}"),
            Error::TimedOut(after) => write!(f, "no response within {after:?}"),
            Error::Stopped => f.write_str("stopped"),
        }
    }
}

impl std::error::Error for Error {}

/// The retry-once rule: only on a connection that had already carried a response, and only when
/// the server went away before answering. A fresh connection that fails is a real failure, and
/// a response that broke off may have been acted on.
pub fn should_retry(reused: bool, error: &Error) -> bool {
    reused && matches!(error, Error::NoResponse(_))
}

/// Parses one response at the start of `input`. `eof` says the peer has closed, which completes
/// a body delimited by the close (and makes any other incomplete response an error).
///
/// Returns `Ok(None)` while more bytes are needed, else the response and the bytes it took.
/// Interim (1xx) responses are returned like any other; the caller skips them.
///
/// # Errors
///
/// `Error::Malformed` for bytes that are not a response or exceed the limits, `Error::Io` when
/// the connection closed in the middle of one.
pub fn parse_response(input: &[u8], eof: bool) -> Result<Option<(Response, usize)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(input) {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) if input.len() > MAX_HEAD_BYTES => return Err(Error::Malformed("head too large")),
        Ok(Status::Partial) => return incomplete(eof),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Malformed("too many header fields")),
        Err(_) => return Err(Error::Malformed("not an HTTP/1.x response head")),
    };
    // httparse fills both on success.
    let (Some(status), Some(minor)) = (head.code, head.version) else {
        return Err(Error::Malformed("no status line"));
    };
    let headers: Vec<(String, String)> = head
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).trim().to_string()))
        .collect();
    let tokens = |name: &'static str| list_tokens(&headers, name);
    let has_token = |name, token| tokens(name).any(|t| t.eq_ignore_ascii_case(token));
    // HTTP/1.1 persists unless told otherwise; HTTP/1.0 only when asked to (RFC 9112 section 9.3).
    let mut close = if minor == 0 { !has_token("Connection", "keep-alive") } else { has_token("Connection", "close") };

    // RFC 9112 section 6.3, in its order.
    let rest = &input[head_len..];
    let framed = if status < 200 || status == 204 || status == 304 {
        Some((Vec::new(), 0))
    } else if tokens("Transfer-Encoding").next().is_some() {
        if !tokens("Transfer-Encoding").last().is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            return Err(Error::Malformed("a transfer coding other than chunked"));
        }
        // A Content-Length next to Transfer-Encoding is ignored, but the connection is not
        // trusted afterwards (section 6.3, item 3).
        close |= tokens("Content-Length").next().is_some();
        chunked(rest)?
    } else if let Some(length) = content_length(tokens("Content-Length"))? {
        if length > MAX_BODY_BYTES {
            return Err(Error::Malformed("body too large"));
        }
        rest.get(..length).map(|body| (body.to_vec(), length))
    } else {
        // No framing: the body runs to the close (section 6.3, item 8).
        close = true;
        if rest.len() > MAX_BODY_BYTES {
            return Err(Error::Malformed("body too large"));
        }
        eof.then(|| (rest.to_vec(), rest.len()))
    };
    let Some((body, body_len)) = framed else {
        return incomplete(eof);
    };
    let reason = head.reason.unwrap_or_default().to_string();
    Ok(Some((Response { status, reason, headers, body, close }, head_len + body_len)))
}

/// The comma-separated items of every `name` field, in order (RFC 9110 section 5.6.1).
fn list_tokens<'h>(headers: &'h [(String, String)], name: &'static str) -> impl Iterator<Item = &'h str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// More bytes are needed; an error if none will come.
fn incomplete<T>(eof: bool) -> Result<Option<T>, Error> {
    if eof {
        Err(Error::Io(io::Error::new(ErrorKind::UnexpectedEof, "the server closed in the middle of a response")))
    } else {
        Ok(None)
    }
}

/// The one Content-Length value: repeats must agree (RFC 9112 section 6.3, item 5).
fn content_length<'a>(mut values: impl Iterator<Item = &'a str>) -> Result<Option<usize>, Error> {
    let bad = Error::Malformed("bad Content-Length");
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) || values.any(|v| v != first) {
        return Err(bad);
    }
    first.parse().map(Some).map_err(|_| bad)
}

/// Decodes a chunked body at the start of `input`; `Ok(None)` while incomplete. Chunk extensions
/// and trailer fields are dropped. It starts over on every call, which costs time quadratic in
/// the number of reads of one huge chunked body; tether itself always sends Content-Length.
fn chunked(input: &[u8]) -> Result<Option<(Vec<u8>, usize)>, Error> {
    let bad = || Error::Malformed("bad chunked framing");
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line = &input[at..];
        // httparse reads a line without digits as size 0; a size must have one.
        if line.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let (line_len, size) = match httparse::parse_chunk_size(line) {
            Ok(Status::Complete(parsed)) => parsed,
            Ok(Status::Partial) => return Ok(None),
            Err(_) => return Err(bad()),
        };
        at += line_len;
        if size == 0 {
            // The trailer section: field lines, then an empty line.
            let trailer = &input[at..];
            let end = if trailer.starts_with(b"\r\n") { Some(2) } else { find(trailer, b"\r\n\r\n").map(|i| i + 4) };
            return Ok(end.map(|end| (body, at + end)));
        }
        let size = usize::try_from(size).ok().filter(|&s| body.len() + s <= MAX_BODY_BYTES);
        let size = size.ok_or(Error::Malformed("body too large"))?;
        let Some(chunk) = input.get(at..at + size + 2) else {
            return Ok(None);
        };
        if !chunk.ends_with(b"\r\n") {
            return Err(bad());
        }
        body.extend_from_slice(&chunk[..size]);
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One server, one connection at a time.
pub struct Client {
    url: Url,
    /// Open only between responses that kept it; `Some` means the next request reuses it.
    stream: Option<TcpStream>,
    tick: Duration,
    response_timeout: Duration,
    stop: Option<Arc<AtomicBool>>,
    /// Sent as `Authorization: Bearer` with every request.
    token: Option<String>,
}

impl Client {
    /// A client for the server of `url` (its path is not used). Nothing is connected yet.
    pub fn new(url: &Url) -> Client {
        Client {
            url: url.clone(),
            stream: None,
            tick: Duration::from_millis(200),
            response_timeout: Duration::from_secs(30),
            stop: None,
            token: None,
        }
    }

    /// A bearer token to send with every request (`tether publish --token`).
    #[must_use]
    pub fn token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// The socket's read timeout: how often a wait looks at the stop flag (default 200 ms).
    #[must_use]
    pub fn read_timeout(mut self, tick: Duration) -> Client {
        self.tick = tick.max(Duration::from_millis(1));
        self
    }

    /// How long a whole response may take once the request is sent (default 30 s).
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Client {
        self.response_timeout = timeout;
        self
    }

    /// A flag that, once raised, makes a waiting request return `Error::Stopped`.
    #[must_use]
    pub fn stop_flag(mut self, stop: Arc<AtomicBool>) -> Client {
        self.stop = Some(stop);
        self
    }

    /// `GET target`.
    ///
    /// # Errors
    ///
    /// See [`Client::request`].
    pub fn get(&mut self, target: &str) -> Result<Response, Error> {
        self.request("GET", target, None)
    }

    /// `POST target` with a text body.
    ///
    /// # Errors
    ///
    /// See [`Client::request`].
    pub fn post(&mut self, target: &str, body: &[u8]) -> Result<Response, Error> {
        self.request("POST", target, Some(body))
    }

    /// Sends one request and reads its final response, retrying once under [`should_retry`].
    /// Any status is a response; what a 4xx or 5xx means is the caller's business.
    ///
    /// # Errors
    ///
    /// Why no response came: see [`Error`]. The connection is dropped on any error.
    pub fn request(&mut self, method: &str, target: &str, body: Option<&[u8]>) -> Result<Response, Error> {
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tether\r\n", self.url.authority());
        if let Some(token) = &self.token {
            let _ = write!(request, "Authorization: Bearer {token}\r\n");
        }
        if let Some(body) = body {
            request.push_str("Content-Type: text/plain; charset=utf-8\r\n");
            let _ = write!(request, "Content-Length: {}\r\n", body.len());
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());

        let reused = self.stream.is_some();
        match self.exchange(&bytes) {
            Err(error) if should_retry(reused, &error) => {
                log::debug!("retrying on a new connection: {error}");
                self.exchange(&bytes)
            }
            result => result,
        }
    }

    /// One attempt: (re)connect if needed, write, read. Keeps the connection only if the
    /// response allows it.
    fn exchange(&mut self, request: &[u8]) -> Result<Response, Error> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => self.connect()?,
        };
        // A server may answer before reading all of a request (a 413, say) and close; that
        // answer is still the answer, so a failed write is followed by a read.
        let written = stream.write_all(request);
        match (self.read_response(&mut stream), written) {
            (Ok(response), written) => {
                // Keep the connection only if the whole request went out and the server keeps it.
                if written.is_ok() && !response.close {
                    self.stream = Some(stream);
                }
                Ok(response)
            }
            // No answer after a failed write: the write's error says why.
            (Err(Error::NoResponse(_)), Err(e)) if is_gone(&e) => Err(Error::NoResponse(e)),
            (Err(Error::NoResponse(_)), Err(e)) => Err(Error::Io(e)),
            (Err(error), _) => Err(error),
        }
    }

    fn connect(&self) -> Result<TcpStream, Error> {
        let to = self.url.authority();
        let failed = |source| Error::Connect { to: to.clone(), source };
        // A bracketed IPv6 literal resolves without its brackets.
        let host = self.url.host.trim_start_matches('[').trim_end_matches(']');
        let mut last = io::Error::new(ErrorKind::NotFound, "the host has no address");
        for addr in (host, self.url.port).to_socket_addrs().map_err(failed)? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(self.tick)).map_err(failed)?;
                    stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(failed)?;
                    // A request is written in one call; there is nothing for Nagle to coalesce.
                    stream.set_nodelay(true).map_err(failed)?;
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(failed(last))
    }

    /// Reads until one final response is complete. `stream` is at a response boundary.
    fn read_response(&self, stream: &mut TcpStream) -> Result<Response, Error> {
        let deadline = Instant::now() + self.response_timeout;
        let mut input = Vec::new();
        // Whether any byte of the response has arrived, interim responses included.
        let mut answered = false;
        let mut eof = false;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((mut response, len)) = parse_response(&input, eof)? {
                input.drain(..len);
                if response.status >= 200 {
                    // Bytes after a response we did not ask for: the connection is out of step.
                    response.close |= !input.is_empty();
                    return Ok(response);
                }
                continue;
            }
            match stream.read(&mut chunk) {
                Ok(0) if !answered => return Err(Error::NoResponse(ErrorKind::UnexpectedEof.into())),
                Ok(0) => eof = true,
                Ok(n) => {
                    answered = true;
                    input.extend_from_slice(&chunk[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.stop.as_ref().is_some_and(|stop| stop.load(Ordering::Relaxed)) {
                        return Err(Error::Stopped);
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::TimedOut(self.response_timeout));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if !answered && is_gone(&e) => return Err(Error::NoResponse(e)),
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }
}

/// The errors of a connection the peer has closed or reset.
fn is_gone(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted)
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
