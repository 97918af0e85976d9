//! Where one HTTP/1.1 response, or one event of an event-stream body, ends in a buffer: the
//! load generator's framing, without I/O and without copying. (After a `101` to WebSocket, the
//! frames that follow are `websocket`'s to read.)
//!
//! `crate::client::parse_response` is the complete client-side framing (chunked bodies, bodies
//! delimited by the close), but it copies every header and body into owned strings: at a
//! hundred thousand responses a second those allocations would make the generator, not the
//! server, the limit. This module only finds the end of a response and the few facts the
//! generator acts on, and borrows everything else.
//!
//! An event stream (`Content-Type: text/event-stream` and no length) is the one body that has no
//! end but the close: its head is framed alone, and what follows is read with `event`, one event
//! at a time, in the WHATWG event-stream format (`field: value` lines up to a blank line; `id`,
//! `event` and `data` kept, comments and `retry` skipped).
//!
//! Invariants:
//! - A `Frame` is returned only for a whole response: `input[..frame.len]` is its head and body
//!   (for an event stream or a `101`, its head); an `Event` only for a whole event, blank line
//!   included.
//! - Only `Content-Length` bodies and event streams are framed (tether always sends one or the
//!   other); a chunked response or another response without a length is an error, never a guess.
//! - Every buffer has a cap: a head over `MAX_HEAD_BYTES` or a body or event over
//!   `MAX_BODY_BYTES` is an error, so a peer cannot make the generator buffer without bound.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// A response head longer than this is not from a sane server.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The largest body accepted: a long-poll answer carries at most 64 KiB of message data, or
/// one larger message.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The most header fields a response may have.
const MAX_HEADERS: usize = 32;

/// One whole response at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub status: u16,
    /// Head and body: the bytes this response takes.
    pub len: usize,
    /// Where the body lies in the buffer.
    pub body: Range<usize>,
    /// The server ends the connection after this response (`Connection: close`, or HTTP/1.0
    /// without `keep-alive`).
    pub close: bool,
    /// Where the value of `Retry-After`, if any, lies in the buffer (a refusal says when to
    /// come back).
    pub retry_after: Option<Range<usize>>,
    /// What the connection's bytes after this response are.
    pub then: Reading,
    /// Where the value of `Sec-WebSocket-Accept`, if any, lies in the buffer (a `101` proves
    /// with it that the server read the client's key).
    pub accept: Option<Range<usize>>,
}

/// What a connection's next bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Responses, one after the other (keep-alive).
    Responses,
    /// The events of an event-stream body (`event`), until the close.
    Events,
    /// WebSocket frames (`websocket::read`): the response was a `101` to `websocket`.
    WebSocket,
}

/// What a connection reads next: a response, or, once a response opened an event stream, an
/// event of it, or, once it switched to WebSocket, a frame.
pub enum Framed {
    Response(Frame),
    Event(Event),
    WebSocket(super::websocket::Frame),
}

/// One event of an event stream at the start of a buffer; its ranges are in `input[..len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The bytes it takes, its blank line included.
    pub len: usize,
    /// The value of its last `id` field, if any.
    pub id: Option<Range<usize>>,
    /// The value of its last `event` field, if any (none: a message).
    pub name: Option<Range<usize>>,
    /// From the start of its first `data` value to the end of its last (`data` joins them).
    data: Option<Range<usize>>,
    data_fields: usize,
}

impl Event {
    /// A client dispatches it only if it has data: a block of comments (a heartbeat), or of
    /// `retry` or `id` alone, is not an event.
    pub fn is_dispatched(&self) -> bool {
        self.data.is_some()
    }

    /// Its `data` values joined by LF, borrowed when there is one; `block` is `input[..len]`.
    pub fn data<'a>(&self, block: &'a [u8]) -> Cow<'a, [u8]> {
        match &self.data {
            Some(at) if self.data_fields == 1 => Cow::Borrowed(&block[at.clone()]),
            Some(_) => {
                let mut joined = Vec::new();
                fields(block, |name, value| {
                    if name == b"data" {
                        joined.extend_from_slice(&block[value]);
                        joined.push(b'\n');
                    }
                });
                joined.pop();
                Cow::Owned(joined)
            }
            None => Cow::Borrowed(b""),
        }
    }
}

/// Why bytes are not a response the generator can frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not an HTTP/1.x response head.
    Malformed,
    /// A head or body over the caps above.
    TooLarge,
    /// A body framed otherwise than by `Content-Length`, and not an event stream.
    Unframed,
    /// A WebSocket message in several frames (tether sends each in one).
    Fragmented,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::Malformed => "not an HTTP/1.x response",
            FrameError::TooLarge => "a response head or body over the generator's limits",
            FrameError::Unframed => "a response without Content-Length (chunked or delimited by the close)",
            FrameError::Fragmented => "a WebSocket message in several frames",
        })
    }
}

/// Frames the response at the start of `input`: `Ok(None)` while more bytes are needed.
///
/// # Errors
///
/// See [`FrameError`]; the connection cannot be read further after one.
pub fn frame(input: &[u8]) -> Result<Option<Frame>, FrameError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD_BYTES => return Err(FrameError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(FrameError::Malformed),
    };
    // httparse fills both on success.
    let (Some(status), Some(minor)) = (head.code, head.version) else {
        return Err(FrameError::Malformed);
    };
    let (mut length, mut close, mut retry_after, mut event_stream) = (None, None, None, false);
    let (mut websocket, mut accept) = (false, None);
    for header in head.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = parse_length(header.value).ok_or(FrameError::Malformed)?;
            // Repeats must agree (RFC 9112 section 6.3).
            if length.is_some_and(|l| l != value) {
                return Err(FrameError::Malformed);
            }
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("retry-after") {
            retry_after = Some(located(input, header.value));
        } else if header.name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = Some(located(input, header.value));
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            websocket = header.value.trim_ascii().eq_ignore_ascii_case(b"websocket");
        } else if header.name.eq_ignore_ascii_case("content-type") {
            let media_type = header.value.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
            event_stream = media_type.eq_ignore_ascii_case(b"text/event-stream");
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(FrameError::Unframed);
        } else if header.name.eq_ignore_ascii_case("connection") {
            let has = |token: &str| {
                header.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            };
            // The first that says either decides.
            close = close.or(has("close").then_some(true)).or(has("keep-alive").then_some(false));
        }
    }
    // HTTP/1.1 persists unless told otherwise; HTTP/1.0 only when asked to.
    let close = close.unwrap_or(minor == 0);
    let (body_len, then) = match length {
        _ if status == 101 && websocket => (0, Reading::WebSocket),
        _ if status < 200 || status == 204 || status == 304 => (0, Reading::Responses),
        Some(length) if length > MAX_BODY_BYTES => return Err(FrameError::TooLarge),
        Some(length) => (length, Reading::Responses),
        None if event_stream => (0, Reading::Events),
        None => return Err(FrameError::Unframed),
    };
    let len = head_len + body_len;
    let body = head_len..len;
    Ok((input.len() >= len).then_some(Frame { status, len, body, close, retry_after, then, accept }))
}

/// Where a header value, trimmed, lies in `input` (httparse's values borrow from it: the offset
/// is where this one starts).
fn located(input: &[u8], value: &[u8]) -> Range<usize> {
    let value = value.trim_ascii();
    let start = value.as_ptr() as usize - input.as_ptr() as usize;
    start..start + value.len()
}

/// Reads the event at the start of `input`, the body of an event stream: `Ok(None)` until its
/// blank line has arrived.
///
/// # Errors
///
/// `FrameError::TooLarge` for an event over `MAX_BODY_BYTES`.
pub fn event(input: &[u8]) -> Result<Option<Event>, FrameError> {
    let (mut id, mut name, mut data, mut data_fields) = (None, None, None::<Range<usize>>, 0);
    let len = fields(input, |field, value| match field {
        b"data" => {
            data = Some(data.as_ref().map_or(value.start, |data| data.start)..value.end);
            data_fields += 1;
        }
        b"id" => id = Some(value),
        b"event" => name = Some(value),
        _ => {} // retry, and fields a client ignores
    });
    match len {
        Some(len) => Ok(Some(Event { len, id, name, data, data_fields })),
        None if input.len() > MAX_BODY_BYTES => Err(FrameError::TooLarge),
        None => Ok(None),
    }
}

/// Hands each field of the block at the start of `input` to `each` (its name, where its value
/// lies), comments skipped, up to the blank line that ends the block: its length, or `None`
/// while that line has not arrived. `field: value` loses one space after the colon; a line
/// without a colon is a field with an empty value.
fn fields(input: &[u8], mut each: impl FnMut(&[u8], Range<usize>)) -> Option<usize> {
    let mut at = 0;
    loop {
        let (end, next) = line_end(input, at)?;
        let line = &input[at..end];
        match line.iter().position(|&b| b == b':') {
            None if line.is_empty() => return Some(next),
            Some(0) => {} // a comment
            Some(colon) => each(&line[..colon], at + colon + 1 + usize::from(line.get(colon + 1) == Some(&b' '))..end),
            None => each(line, end..end),
        }
        at = next;
    }
}

/// Where the line at `at` ends, and where the next begins (after its CRLF, LF or CR); `None`
/// until its end has arrived, and while a CR is the last byte (it may be half a CRLF).
fn line_end(input: &[u8], at: usize) -> Option<(usize, usize)> {
    let end = at + input.get(at..)?.iter().position(|&b| b == b'\n' || b == b'\r')?;
    match (input[end], input.get(end + 1)) {
        (b'\r', None) => None,
        (b'\r', Some(b'\n')) => Some((end, end + 2)),
        _ => Some((end, end + 1)),
    }
}

/// A Content-Length value: digits only, no sign, no spaces inside.
fn parse_length(value: &[u8]) -> Option<usize> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: tether\r\nContent-Length: 13\r\n\r\nHello, World!";

    #[test]
    fn a_whole_response_is_framed_and_its_body_located() {
        let frame = frame(OK).unwrap().unwrap();
        assert_eq!((frame.status, frame.len, frame.close), (200, OK.len(), false));
        assert_eq!(&OK[frame.body], b"Hello, World!");
    }

    #[test]
    fn every_prefix_is_partial_and_extra_bytes_are_left() {
        for end in 0..OK.len() {
            assert_eq!(frame(&OK[..end]), Ok(None), "prefix of {end} bytes");
        }
        let two = [OK, OK].concat();
        assert_eq!(frame(&two).unwrap().unwrap().len, OK.len());
    }

    #[test]
    fn the_close_rule_follows_version_and_connection() {
        let close = |text: &str| frame(text.as_bytes()).unwrap().unwrap().close;
        assert!(close("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"));
        assert!(close("HTTP/1.1 200 OK\r\nConnection: upgrade, Close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!close("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(close("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!close("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"));
    }

    #[test]
    fn retry_after_is_located_in_the_head() {
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After:  2 \r\nContent-Length: 0\r\n\r\n";
        let refused = frame(busy).unwrap().unwrap();
        assert_eq!(refused.retry_after.map(|at| &busy[at]), Some(b"2".as_slice()));
        assert_eq!(frame(OK).unwrap().unwrap().retry_after, None);
    }

    #[test]
    fn bodyless_statuses_need_no_length() {
        let frame = frame(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!((frame.status, frame.body.len()), (204, 0));
    }

    #[test]
    fn an_event_stream_head_is_framed_alone_and_its_body_left_for_events() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\nConnection: close\r\n\r\n";
        let input = format!("{head}retry: 2000\n\n");
        let frame = frame(input.as_bytes()).unwrap().unwrap();
        assert_eq!((frame.status, frame.len, frame.body, frame.close), (200, head.len(), head.len()..head.len(), true));
        assert_eq!(frame.then, Reading::Events);
        assert_eq!(super::frame(OK).unwrap().unwrap().then, Reading::Responses);
    }

    #[test]
    fn a_switch_to_websocket_is_framed_alone_with_its_accept_key() {
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept:  s3pPLMBiTxaQ9kYGzzhZRbK+xOo= \r\n\r\n";
        let input = [head.as_bytes(), &[0x81, 0x00]].concat(); // and the first frame
        let frame = frame(&input).unwrap().unwrap();
        assert_eq!((frame.status, frame.len, frame.close, frame.then), (101, head.len(), false, Reading::WebSocket));
        assert_eq!(frame.accept.map(|at| &input[at]), Some(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".as_slice()));
        let other = super::frame(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n").unwrap().unwrap();
        assert_eq!(other.then, Reading::Responses, "only a switch to websocket is read as frames");
    }

    /// An event as read: its length, id, name, and data (`None` when it is not dispatched).
    type Read<'a> = (usize, Option<&'a str>, Option<&'a str>, Option<String>);

    /// The event at the start of `input`, or `None` when it is not whole.
    fn read(input: &str) -> Option<Read<'_>> {
        let event = event(input.as_bytes()).unwrap()?;
        let text = |at: Option<Range<usize>>| at.map(|at| &input[at]);
        let data = event.is_dispatched().then(|| String::from_utf8(event.data(input.as_bytes()).to_vec()).unwrap());
        Some((event.len, text(event.id), text(event.name), data))
    }

    #[test]
    fn events_are_read_one_block_at_a_time_in_every_line_ending() {
        let data = |text: &str| Some(text.to_string());
        let cases: [(&str, Read); 9] = [
            ("id: 7\ndata: message 0\n\nid: 8\n", (23, Some("7"), None, data("message 0"))),
            ("event: missed\nid: 9\ndata: {\"missed\":2}\n\n", (40, Some("9"), Some("missed"), data("{\"missed\":2}"))),
            ("data: two\nid: 3\ndata: lines\n\n", (29, Some("3"), None, data("two\nlines"))),
            (": heartbeat\n\n", (13, None, None, None)),
            ("retry: 2000\n\n", (13, None, None, None)),
            ("id: 3\r\ndata:x\r\n\r\n", (17, Some("3"), None, data("x"))),
            ("data:  two spaces\rid: 4\r\rdata", (25, Some("4"), None, data(" two spaces"))),
            ("data\n\n", (6, None, None, data(""))),
            (":c\nevent\nid\ndata: a\n\n", (21, Some(""), Some(""), data("a"))),
        ];
        for (input, expected) in cases {
            assert_eq!(read(input), Some(expected), "{input:?}");
        }
    }

    #[test]
    fn an_event_is_whole_only_at_its_blank_line() {
        let one = "id: 7\ndata: message 0\n\n";
        for end in 0..one.len() {
            assert_eq!(read(&one[..end]), None, "prefix of {end} bytes");
        }
        assert_eq!(read("data: x\r\r"), None, "a CR last may be half a CRLF");
        let endless = [b"data: ".as_slice(), &[b'a'; MAX_BODY_BYTES]].concat();
        assert_eq!(event(&endless), Err(FrameError::TooLarge));
    }

    #[test]
    fn framing_doubts_are_errors() {
        let cases: [(&[u8], FrameError); 7] = [
            (b"HTTP/1.1 200 OK\r\n\r\n", FrameError::Unframed),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", FrameError::Unframed),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", FrameError::Malformed),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", FrameError::Malformed),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", FrameError::TooLarge),
            (b"SSH-2.0-OpenSSH\r\n\r\n", FrameError::Malformed),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n", FrameError::Malformed),
        ];
        for (input, error) in cases {
            assert_eq!(frame(input), Err(error), "{:?}", String::from_utf8_lossy(input));
        }
        let endless = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; MAX_HEAD_BYTES]].concat();
        assert_eq!(frame(&endless), Err(FrameError::TooLarge));
    }
}
