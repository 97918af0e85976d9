//! HTTP/1.1 request parsing and message framing, without I/O.
//!
//! [`parse`] turns the bytes a connection has buffered into at most one
//! [`Request`]. It alone decides where a request starts and ends, which makes
//! it the server's defence against request smuggling (RFC 9112 §11.2). It
//! keeps these invariants:
//!
//! * **It never guesses framing.** Whatever two parsers could read two ways
//!   (Content-Length with Transfer-Encoding, a repeated or listed
//!   Content-Length, a coding other than one final `chunked`, a line ended by
//!   a bare LF, obs-fold, whitespace after a chunk size) is an error, never a
//!   best effort.
//! * **It is stateless and exact.** Nothing is kept between calls: the server
//!   calls `parse` on its whole buffer whenever bytes arrive, and
//!   [`Request::len`] says exactly how many bytes to drop before the next
//!   pipelined request.
//! * **Prefixes wait; violations fail early.** Every strict prefix of a valid
//!   request gives `Ok(None)`. Input that already breaks the grammar or a
//!   limit fails at once instead of waiting for bytes that cannot repair it,
//!   and with the status that the whole input would get: the verdict does not
//!   depend on how the bytes were split into reads.
//! * **`Ok(None)` implies bounded input.** It is only returned while
//!   `input.len() <= 2 * max_head_bytes + max_body_bytes`, so a connection's
//!   buffer can be capped there.
//! * **It allocates only a decoded chunked body.** The head is parsed into
//!   stack slots, and a Content-Length body is borrowed from the input.
//!
//! The rules, each with its RFC reason, are listed in `docs/http.md`.

use std::mem::MaybeUninit;

use httparse::Status;

use super::chunked::walk_chunked;
use super::error::wait_unless;
pub use super::error::{HttpError, Limits};
use super::grammar::{is_host_byte, is_tchar};
use super::target::split_target;

/// The most header fields a request may have; more is 431.
const MAX_HEADERS: usize = 64;

/// The protocol versions served. Any other well-formed version is 505.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// The request method. Methods are case-sensitive (RFC 9110 §9.1), so `get`
/// is `Other("get")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method<'b> {
    Get,
    Head,
    Post,
    Options,
    Other(&'b str),
}

/// The request body.
#[derive(Debug, PartialEq, Eq)]
pub enum Body<'b> {
    /// No body: no framing header, or `Content-Length: 0`.
    Empty,
    /// A Content-Length body, borrowed from the input.
    Bytes(&'b [u8]),
    /// A decoded chunked body. Chunk extensions and trailer fields are checked, then dropped.
    Chunked(Vec<u8>),
}

/// One complete request found at the start of the input.
#[derive(Debug)]
pub struct Request<'b> {
    pub method: Method<'b>,
    /// The path of the target, without the query: `/p` for both `/p?q` and
    /// `http://h/p?q`, `/` for `http://h`, and `*` for asterisk-form (only
    /// with OPTIONS). Always ASCII, without `#`.
    pub path: &'b str,
    /// What follows the first `?` of the target, or `""`.
    pub query: &'b str,
    pub version: Version,
    /// A `close` option appears in a Connection header.
    pub close: bool,
    /// A `keep-alive` option appears in a Connection header.
    pub keep_alive: bool,
    /// The `Last-Event-ID` header that an `EventSource` sends when it reconnects.
    pub last_event_id: Option<&'b str>,
    /// The `Origin` header a browser sends with a cross-origin request (RFC 6454).
    pub origin: Option<&'b str>,
    /// `Access-Control-Request-Method` is present: an `OPTIONS` with it is a CORS preflight.
    pub preflight: bool,
    /// The `Host` header's value (checked against RFC 9110's grammar), which names the origin
    /// the request was sent to.
    pub host: Option<&'b str>,
    /// The `Authorization` header's value, which may carry a bearer token.
    pub authorization: Option<&'b str>,
    /// An `Upgrade` header lists the protocol `websocket` (case-insensitive, RFC 6455 §4.2.1).
    pub upgrade_websocket: bool,
    /// An `upgrade` option appears in a Connection header (RFC 9110 §7.8).
    pub connection_upgrade: bool,
    /// The `Sec-WebSocket-Key` header's value, unchecked: `ws::handshake` judges it.
    pub websocket_key: Option<&'b str>,
    /// The `Sec-WebSocket-Version` header's value, unchecked: `ws::handshake` judges it.
    pub websocket_version: Option<&'b str>,
    pub body: Body<'b>,
    /// Bytes of input this request occupies, head and body framing included.
    pub len: usize,
}

/// How far the start of the input has come towards a request.
#[derive(Debug)]
pub enum Progress<'b> {
    /// A complete request, which occupies `request.len` bytes.
    Complete(Request<'b>),
    /// A valid prefix: call again when more bytes arrive. `awaits_continue`: the head is
    /// complete, HTTP/1.1, and asks with `Expect: 100-continue` for `100 Continue` before its
    /// body is sent (RFC 9110 §10.1.1); its method and path, so that the server can answer a
    /// refusal instead when the head alone decides one. Such a client waits for either, or for
    /// its own timeout (curl: 1 s).
    Waiting { awaits_continue: Option<(Method<'b>, &'b str)> },
}

/// Parses one request at the start of `input`.
///
/// Returns `Ok(None)` while `input` is a valid prefix of a request (call
/// again when more bytes arrive), and `Ok(Some(request))` once it starts with
/// a complete one, which occupies `request.len` bytes. [`parse_progress`] says
/// more about a prefix.
///
/// # Errors
///
/// `Err(error)` when the input can never become a valid request: it breaks
/// the grammar, its framing is ambiguous, or it exceeds a limit. Answer
/// `error.status()` and close the connection.
pub fn parse<'b>(input: &'b [u8], limits: &Limits) -> Result<Option<Request<'b>>, HttpError> {
    Ok(match parse_progress(input, limits)? {
        Progress::Complete(request) => Some(request),
        Progress::Waiting { .. } => None,
    })
}

/// [`parse`], telling also whether a prefix waits for a body that its client will send only
/// after `100 Continue`.
///
/// # Errors
///
/// As [`parse`].
pub fn parse_progress<'b>(input: &'b [u8], limits: &Limits) -> Result<Progress<'b>, HttpError> {
    // Only the first max_head_bytes may hold the head, so only they are
    // parsed: the head's fate then depends on those bytes alone.
    let window = &input[..input.len().min(limits.max_head_bytes)];
    // httparse writes only the slots it fills, so a small request does not
    // pay for clearing all of them.
    let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut []);
    let parsed = head.parse_with_uninit_headers(window, &mut slots);

    // 414 as soon as the target is known to be too long (RFC 9112 §3), before
    // any other verdict, so that the answer does not depend on how much of
    // the head has arrived.
    if target_len(&head, window) > limits.max_uri_bytes {
        return Err(HttpError::UriTooLong);
    }
    // The request line is judged as soon as httparse has read it whole, without waiting for
    // the fields: nothing after it can repair a bad target.
    let line = match (head.method, head.path, head.version) {
        (Some(method), Some(target), Some(minor)) => Some(request_line(method, target, minor)?),
        _ => None,
    };
    let head_full = input.len() >= limits.max_head_bytes;
    let head_len = match parsed {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) => return head_incomplete(head_full),
        Err(httparse::Error::Version) => match version_error(&head, window) {
            Some(error) => return Err(error),
            None => return head_incomplete(head_full),
        },
        Err(error) => return Err(head_error(error, &head, window)),
    };
    if !crlf_line_ends(&head, &window[..head_len]) {
        return Err(bad!("bare LF as a line ending"));
    }
    // httparse fills the request line on success.
    let Some(RequestLine { method, path, query, version }) = line else {
        return Err(bad!("malformed request line"));
    };
    let fields = Fields::scan(head.headers)?;
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is 400. Duplicates are
    // refused by Fields::scan for both versions.
    if version == Version::Http11 && fields.host.is_none() {
        return Err(bad!("missing Host header"));
    }
    let framing = framing(&fields, head.headers, version, limits)?;
    let Some((body, len)) = read_body(input, head_len, framing, limits)? else {
        let awaits_continue = (version == Version::Http11 && fields.expect_continue).then_some((method, path));
        return Ok(Progress::Waiting { awaits_continue });
    };
    Ok(Progress::Complete(Request {
        method,
        path,
        query,
        version,
        close: fields.close,
        keep_alive: fields.keep_alive,
        last_event_id: fields.last_event_id,
        origin: fields.origin,
        preflight: fields.preflight,
        host: fields.host,
        authorization: fields.authorization,
        upgrade_websocket: fields.upgrade_websocket,
        connection_upgrade: fields.connection_upgrade,
        websocket_key: fields.websocket_key,
        websocket_version: fields.websocket_version,
        body,
        len,
    }))
}

/// Whether `input` starts a HEAD request, as far as its first bytes tell (after the empty lines
/// RFC 9112 §2.2 lets a server skip). An error answer to input that could not be parsed still
/// must not carry a body if the client asked with HEAD and will not read one.
pub fn says_head(input: &[u8]) -> bool {
    let start = input.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(input.len());
    input[start..].starts_with(b"HEAD ")
}

/// A head not yet complete: wait for more bytes, unless all the bytes it may occupy have
/// arrived.
fn head_incomplete(full: bool) -> Result<Progress<'static>, HttpError> {
    if full {
        Err(HttpError::HeaderFieldsTooLarge)
    } else {
        Ok(Progress::Waiting { awaits_continue: None })
    }
}

/// Whether every line of a complete head ends with CRLF. RFC 9112 §2.2 lets
/// a recipient accept a bare LF too; we do not, because a proxy in front of
/// us that kept it inside a field value would see other fields than we do.
/// httparse has already checked that each line is well formed, so only the
/// ends need a look: after each empty line before the request line, before
/// each field name, and at the end of the head. The cost is per line, not
/// per byte.
fn crlf_line_ends(head: &httparse::Request, bytes: &[u8]) -> bool {
    let crlf_before = |line: &str| {
        let start = offset(bytes, line);
        start >= 2 && bytes[start - 2..start] == *b"\r\n"
    };
    let request_line = head.method.map_or(0, |method| offset(bytes, method));
    bytes[..request_line].chunks(2).all(|line| line == b"\r\n")
        && head.headers.iter().all(|field| crlf_before(field.name))
        && bytes.ends_with(b"\r\n\r\n")
}

/// Where `part`, a subslice that httparse returned, starts in `whole`.
fn offset(whole: &[u8], part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// The length of the request-target, or of the part of it that has arrived.
fn target_len(head: &httparse::Request, window: &[u8]) -> usize {
    match (head.method, head.path) {
        (_, Some(target)) => target.len(),
        // httparse stopped inside the target, at the end of the input or at a
        // byte that cannot be in one (its URI_MAP): the bytes before are target.
        (Some(method), None) => {
            let start = offset(window, method) + method.len() + 1;
            let rest = window.get(start..).unwrap_or_default();
            rest.iter().take_while(|&&c| c > b' ' && c != 0x7f).count()
        }
        (None, None) => 0,
    }
}

/// Classifies what httparse found in place of `HTTP/1.0` or `HTTP/1.1`.
/// `None` means it may still become a well-formed version: wait.
fn version_error(head: &httparse::Request, window: &[u8]) -> Option<HttpError> {
    // RFC 9112 §2.3: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive.
    fn fits(version: &[u8]) -> bool {
        version.len() <= 8
            && version.iter().zip(b"HTTP/0.0").all(|(&c, &shape)| match shape {
                b'0' => c.is_ascii_digit(),
                _ => c == shape,
            })
    }
    let start = head.path.map_or(0, |target| offset(window, target) + target.len() + 1);
    let rest = window.get(start..).unwrap_or_default();
    let invalid = bad!("invalid HTTP version");
    match rest.iter().position(|&c| c == b'\n') {
        // The line is complete: a well-formed version that we do not serve
        // is 505 (RFC 9110 §15.6.6); anything else is not a version at all.
        Some(lf) => {
            let version = rest[..lf].strip_suffix(b"\r").unwrap_or(&rest[..lf]);
            let well_formed = version.len() == 8 && fits(version);
            Some(if well_formed { HttpError::VersionNotSupported } else { invalid })
        }
        // Still arriving: wait while it can become `HTTP/d.d` CRLF.
        None => {
            let may_fit = match rest.strip_suffix(b"\r") {
                Some(version) => version.len() == 8 && fits(version),
                None => fits(rest),
            };
            (!may_fit).then_some(invalid)
        }
    }
}

/// Turns an httparse error into a 400 (or 431) that says what is wrong.
fn head_error(error: httparse::Error, head: &httparse::Request, window: &[u8]) -> HttpError {
    match error {
        httparse::Error::Token if head.method.is_none() => bad!("invalid method"),
        httparse::Error::Token => bad!("invalid request-target"),
        httparse::Error::Version | httparse::Error::Status => bad!("invalid HTTP version"),
        httparse::Error::NewLine => bad!("malformed line ending"),
        httparse::Error::HeaderName => header_name_error(head, window),
        httparse::Error::HeaderValue => bad!("control character in a header field value"),
        httparse::Error::TooManyHeaders => HttpError::HeaderFieldsTooLarge,
    }
}

/// httparse does not say which field name it refused; find the first bad
/// line to say why. Only runs on the error path.
fn header_name_error(head: &httparse::Request, window: &[u8]) -> HttpError {
    let after_target = head.path.map_or(0, |target| offset(window, target) + target.len());
    // skip(1) drops the rest of the request line.
    let lines = window.get(after_target..).unwrap_or_default().split(|&c| c == b'\n');
    for line in lines.skip(1) {
        let name = line.iter().take_while(|&&c| is_tchar(c)).count();
        match line.get(name) {
            Some(b':') => {}
            // RFC 9112 §5.2: obs-fold is refused, not unfolded.
            Some(b' ' | b'\t') if name == 0 => return bad!("obs-fold (a line starting with whitespace)"),
            // RFC 9112 §5.1: whitespace before the colon MUST be refused with 400.
            Some(b' ' | b'\t') => return bad!("whitespace between a field name and its colon"),
            _ => break,
        }
    }
    bad!("invalid header field name")
}

/// What the request line says, once its method and target are known to be served.
struct RequestLine<'b> {
    method: Method<'b>,
    path: &'b str,
    query: &'b str,
    version: Version,
}

/// Classifies the method and splits the target of a request line that httparse has read:
/// `minor` is the digit of `HTTP/1.x`.
fn request_line<'b>(method: &'b str, target: &'b str, minor: u8) -> Result<RequestLine<'b>, HttpError> {
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "OPTIONS" => Method::Options,
        // CONNECT carries an authority-form target and turns the connection
        // into a tunnel (RFC 9110 §9.3.6); neither is implemented.
        "CONNECT" => return Err(HttpError::NotImplemented("not implemented: CONNECT")),
        other => Method::Other(other),
    };
    let (path, query) = split_target(target, method == Method::Options)?;
    let version = if minor == 0 { Version::Http10 } else { Version::Http11 };
    Ok(RequestLine { method, path, query, version })
}

/// What the header section says about routing, framing and persistence, and whether the
/// client waits for `100 Continue`.
#[derive(Default)]
struct Fields<'b> {
    host: Option<&'b str>,
    content_length: Option<&'b [u8]>,
    transfer_encoding: bool,
    close: bool,
    keep_alive: bool,
    last_event_id: Option<&'b str>,
    origin: Option<&'b str>,
    preflight: bool,
    authorization: Option<&'b str>,
    upgrade_websocket: bool,
    connection_upgrade: bool,
    websocket_key: Option<&'b str>,
    websocket_version: Option<&'b str>,
    /// `Expect: 100-continue`.
    expect_continue: bool,
}

impl<'b> Fields<'b> {
    fn scan(headers: &[httparse::Header<'b>]) -> Result<Self, HttpError> {
        let mut fields = Fields::default();
        for header in headers {
            let (name, value) = (header.name, header.value);
            // Dispatch on length first: each name we read has its own.
            match name.len() {
                4 if name.eq_ignore_ascii_case("host") => {
                    // RFC 9112 §3.2: more than one Host, or an invalid one, is 400.
                    if fields.host.is_some() {
                        return Err(bad!("two Host headers"));
                    }
                    // Host = uri-host [ ":" port ]; it may be empty (RFC 9112 §3.2).
                    if !value.iter().all(|&c| is_host_byte(c)) {
                        return Err(bad!("invalid Host header"));
                    }
                    // Host bytes are ASCII (`is_host_byte`), so this is UTF-8.
                    fields.host = std::str::from_utf8(value).ok();
                }
                6 if name.eq_ignore_ascii_case("expect") => {
                    fields.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
                }
                6 if name.eq_ignore_ascii_case("origin") => {
                    // One origin, or none: a list would be ambiguous (RFC 6454 §7.2).
                    if fields.origin.is_some() {
                        return Err(bad!("two Origin headers"));
                    }
                    let Ok(origin) = std::str::from_utf8(value) else {
                        return Err(bad!("Origin is not ASCII"));
                    };
                    fields.origin = Some(origin);
                }
                29 if name.eq_ignore_ascii_case("access-control-request-method") => fields.preflight = true,
                13 if name.eq_ignore_ascii_case("authorization") => {
                    // Two credentials would leave it open which one the request is made with.
                    if fields.authorization.is_some() {
                        return Err(bad!("two Authorization headers"));
                    }
                    let Ok(credentials) = std::str::from_utf8(value) else {
                        return Err(bad!("Authorization is not UTF-8"));
                    };
                    fields.authorization = Some(credentials);
                }
                10 if name.eq_ignore_ascii_case("connection") => {
                    // RFC 9110 §7.6.1: a list of case-insensitive options.
                    for option in list(value) {
                        fields.close |= option.eq_ignore_ascii_case(b"close");
                        fields.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
                        fields.connection_upgrade |= option.eq_ignore_ascii_case(b"upgrade");
                    }
                }
                7 if name.eq_ignore_ascii_case("upgrade") => {
                    // RFC 9110 §7.8: a list of protocols; RFC 6455 §4.2.1 asks for `websocket`,
                    // case-insensitive, with no version after it.
                    fields.upgrade_websocket |= list(value).any(|protocol| protocol.eq_ignore_ascii_case(b"websocket"));
                }
                17 if name.eq_ignore_ascii_case("sec-websocket-key") => {
                    // RFC 6455 §11.3.1: at most once in a request; two keys would leave it open
                    // which one the accept answers.
                    if fields.websocket_key.is_some() {
                        return Err(bad!("two Sec-WebSocket-Key headers"));
                    }
                    let Ok(key) = std::str::from_utf8(value) else {
                        return Err(bad!("Sec-WebSocket-Key is not UTF-8"));
                    };
                    fields.websocket_key = Some(key);
                }
                21 if name.eq_ignore_ascii_case("sec-websocket-version") => {
                    // RFC 6455 §11.3.5: at most once in a request.
                    if fields.websocket_version.is_some() {
                        return Err(bad!("two Sec-WebSocket-Version headers"));
                    }
                    let Ok(version) = std::str::from_utf8(value) else {
                        return Err(bad!("Sec-WebSocket-Version is not UTF-8"));
                    };
                    fields.websocket_version = Some(version);
                }
                13 if name.eq_ignore_ascii_case("last-event-id") => {
                    if fields.last_event_id.is_some() {
                        return Err(bad!("two Last-Event-ID headers"));
                    }
                    let Ok(id) = std::str::from_utf8(value) else {
                        return Err(bad!("Last-Event-ID is not UTF-8"));
                    };
                    // Empty is no id at all (the event-stream processing model resets the last
                    // event ID to the empty string), as a proxy may forward it.
                    fields.last_event_id = Some(id).filter(|id| !id.is_empty());
                }
                14 if name.eq_ignore_ascii_case("content-length") => {
                    // RFC 9112 §6.3: several Content-Length lines could be
                    // read two ways by two parsers; refuse even equal ones.
                    if fields.content_length.is_some() {
                        return Err(bad!("two Content-Length headers"));
                    }
                    fields.content_length = Some(value);
                }
                17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                    fields.transfer_encoding = true;
                }
                _ => {}
            }
        }
        Ok(fields)
    }
}

/// The elements of a comma-separated field value (RFC 9110 §5.6.1): OWS
/// trimmed, empty elements dropped. httparse has already refused the other
/// ASCII whitespace that `trim_ascii` would strip.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&c| c == b',').map(<[u8]>::trim_ascii).filter(|item| !item.is_empty())
}

/// How the body is delimited (RFC 9112 §6.3), decided from the head alone.
#[derive(Clone, Copy)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

fn framing(
    fields: &Fields,
    headers: &[httparse::Header],
    version: Version,
    limits: &Limits,
) -> Result<Framing, HttpError> {
    match (fields.content_length, fields.transfer_encoding) {
        // RFC 9112 §6.3: "ought to be handled as an error"; it is the classic smuggling pattern.
        (Some(_), true) => Err(bad!("both Content-Length and Transfer-Encoding")),
        (Some(value), false) => match content_length(value)? {
            // RFC 9110 §15.5.14: refuse now rather than read a body we will not keep.
            length if length > limits.max_body_bytes => Err(HttpError::PayloadTooLarge),
            length => Ok(Framing::Length(length)),
        },
        (None, true) => {
            // RFC 9112 §6.1: an HTTP/1.0 recipient could not have understood it,
            // so the framing is faulty.
            if version == Version::Http10 {
                return Err(bad!("Transfer-Encoding in an HTTP/1.0 request"));
            }
            transfer_coding(headers)?;
            Ok(Framing::Chunked)
        }
        // RFC 9112 §6.3 rule 7: a request without either has no body.
        (None, false) => Ok(Framing::Empty),
    }
}

/// Content-Length = 1*DIGIT (RFC 9110 §8.6): no sign, no list, no spaces inside.
fn content_length(value: &[u8]) -> Result<usize, HttpError> {
    if value.contains(&b',') {
        return Err(bad!("a list in Content-Length"));
    }
    if value.is_empty() {
        return Err(bad!("empty Content-Length"));
    }
    value.iter().try_fold(0usize, |length, &c| {
        if !c.is_ascii_digit() {
            return Err(bad!("Content-Length is not a decimal number"));
        }
        let digit = usize::from(c - b'0');
        length.checked_mul(10).and_then(|length| length.checked_add(digit)).ok_or(bad!("Content-Length overflows"))
    })
}

/// Accepts exactly one coding, a final `chunked`, across all Transfer-Encoding lines.
fn transfer_coding(headers: &[httparse::Header]) -> Result<(), HttpError> {
    let codings = headers
        .iter()
        .filter(|header| header.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|header| list(header.value));
    let (mut chunked, mut other, mut last_is_chunked) = (0, false, false);
    for coding in codings {
        last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
        if last_is_chunked {
            chunked += 1;
        } else {
            other = true;
        }
    }
    // RFC 9112 §6.3 rule 4: if chunked is not the final coding the length
    // cannot be determined: 400.
    if !last_is_chunked {
        return Err(bad!("Transfer-Encoding does not end with chunked"));
    }
    // RFC 9112 §6.1: chunked MUST NOT be applied more than once.
    if chunked > 1 {
        return Err(bad!("chunked applied twice"));
    }
    // RFC 9112 §6.1: a coding we do not implement SHOULD be 501.
    if other {
        return Err(HttpError::NotImplemented("not implemented: a transfer coding other than chunked"));
    }
    Ok(())
}

/// Reads the body after a `head_len`-byte head: the body and the request's
/// total length, or `None` to wait for more bytes.
fn read_body<'b>(
    input: &'b [u8],
    head_len: usize,
    framing: Framing,
    limits: &Limits,
) -> Result<Option<(Body<'b>, usize)>, HttpError> {
    match framing {
        Framing::Empty | Framing::Length(0) => Ok(Some((Body::Empty, head_len))),
        Framing::Length(length) => {
            let end = head_len.saturating_add(length);
            Ok(input.get(head_len..end).map(|body| (Body::Bytes(body), end)))
        }
        Framing::Chunked => {
            // Bound the encoding, not just the data, so that framing overhead
            // ("1\r\nx\r\n" per byte, extensions, trailers) cannot grow the
            // buffer without limit.
            let max_encoded = limits.max_body_bytes.saturating_add(limits.max_head_bytes);
            let end = input.len().min(head_len.saturating_add(max_encoded));
            let encoded = &input[head_len..end];
            // Two passes: the first checks the framing and measures the body,
            // so an incomplete body costs no allocation and a complete one
            // exactly one.
            let Some((encoded_len, body_len)) = walk_chunked(encoded, limits, |_| {})? else {
                return wait_unless(encoded.len() == max_encoded, HttpError::PayloadTooLarge);
            };
            let mut body = Vec::with_capacity(body_len);
            walk_chunked(encoded, limits, |data| body.extend_from_slice(data))?;
            Ok(Some((Body::Chunked(body), head_len + encoded_len)))
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
