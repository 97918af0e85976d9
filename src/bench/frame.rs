//! Where one HTTP/1.1 response ends in a buffer: the load generator's framing, without I/O and
//! without copying.
//!
//! `crate::client::parse_response` is the complete client-side framing (chunked bodies, bodies
//! delimited by the close), but it copies every header and body into owned strings: at a
//! hundred thousand responses a second those allocations would make the generator, not the
//! server, the limit. This module only finds the end of a response and the few facts the
//! generator acts on, and borrows everything else.
//!
//! Invariants:
//! - A `Frame` is returned only for a whole response: `input[..frame.len]` is its head and body.
//! - Only `Content-Length` bodies are framed (tether always sends one); a chunked response or a
//!   response without a length is an error, never a guess.
//! - Every buffer has a cap: a head over `MAX_HEAD_BYTES` or a body over `MAX_BODY_BYTES` is an
//!   error, so a peer cannot make the generator buffer without bound.

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
}

/// Why bytes are not a response the generator can frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not an HTTP/1.x response head.
    Malformed,
    /// A head or body over the caps above.
    TooLarge,
    /// A body framed otherwise than by `Content-Length`.
    Unframed,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::Malformed => "not an HTTP/1.x response",
            FrameError::TooLarge => "a response head or body over the generator's limits",
            FrameError::Unframed => "a response without Content-Length (chunked or delimited by the close)",
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
    let (mut length, mut close, mut retry_after) = (None, None, None);
    for header in head.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = parse_length(header.value).ok_or(FrameError::Malformed)?;
            // Repeats must agree (RFC 9112 section 6.3).
            if length.is_some_and(|l| l != value) {
                return Err(FrameError::Malformed);
            }
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("retry-after") {
            // httparse's values borrow from `input`: the offset is where this one starts.
            let value = header.value.trim_ascii();
            let start = value.as_ptr() as usize - input.as_ptr() as usize;
            retry_after = Some(start..start + value.len());
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
    let body_len = match length {
        _ if status < 200 || status == 204 || status == 304 => 0,
        Some(length) if length > MAX_BODY_BYTES => return Err(FrameError::TooLarge),
        Some(length) => length,
        None => return Err(FrameError::Unframed),
    };
    let len = head_len + body_len;
    Ok((input.len() >= len).then_some(Frame { status, len, body: head_len..len, close, retry_after }))
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
