//! WebSocket frames (RFC 6455 §5) without I/O: [`read`] finds the next message or control
//! frame at the start of a connection's unread input, and the writers append the server's
//! frames to its output.
//!
//! [`read`] keeps the HTTP parser's invariants (`http::request`):
//!
//! * **It is stateless and exact.** Nothing is kept between calls: the only state is the unread
//!   input. The fragments of an unfinished message stay there, still masked, until its last
//!   fragment arrives, and each call scans them again from the start. `consumed` says exactly
//!   how many bytes to drop.
//! * **Prefixes wait; violations fail early.** Every strict prefix of a valid frame sequence
//!   gives `Ok(None)`. A header that breaks a rule fails as soon as the bytes that break it have
//!   arrived, and the rules are checked in the order of the bytes they read, so the close code
//!   does not depend on how the bytes were split into reads. Only a text message's UTF-8 waits
//!   for the message's end, so that a character split across fragments is read whole.
//! * **`Ok(None)` implies bounded input.** It is only returned while
//!   `input.len() < input_cap(max_message)`: a message whose framing alone would take more is
//!   refused (1009) as soon as its headers say so.
//! * **It works in place.** Nothing is allocated: payloads are unmasked where they lie, and the
//!   fragments of a message are moved together behind its first header, where the returned
//!   [`Incoming`] borrows them. The input is written only when `read` returns a frame or fails.
//!
//! The rules, each with its RFC reason, are listed in `docs/http.md` ("WebSocket").

/// A close code (RFC 6455 §7.4.1): the ones this server sends. `code as u16` is the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// The connection has done its work.
    Normal = 1000,
    /// The server is shutting down.
    GoingAway = 1001,
    /// The peer broke the framing rules.
    ProtocolError = 1002,
    /// A message of a type the endpoint does not take: here, binary (messages are JSON text).
    UnsupportedData = 1003,
    /// A text message, or a close reason, that is not UTF-8.
    InvalidData = 1007,
    /// A message the service refuses for what it says.
    PolicyViolation = 1008,
    /// A message over the size limit.
    TooBig = 1009,
    /// The server hit a condition it did not expect.
    InternalError = 1011,
}

/// Why the connection must be failed (RFC 6455 §7.1.7): send a close frame with `code` and
/// `reason` (one line, at most 123 bytes), then close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub code: CloseCode,
    pub reason: &'static str,
}

/// A complete message or control frame, unmasked, borrowed from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// `code` is `None` for an empty close payload, which RFC 6455 §7.1.5 reads as 1005.
    Close {
        code: Option<u16>,
        reason: &'a str,
    },
}

/// A control frame carries at most this much (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// A close reason fits beside its two-byte code.
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;
const MASK_KEY_BYTES: usize = 4;
/// A client's control frame at its longest: two header bytes, the mask key, the payload.
const MAX_CONTROL_FRAME: usize = 2 + MASK_KEY_BYTES + MAX_CONTROL_PAYLOAD;
/// The header bytes that the frames of one message may take beyond its payload: room for 292
/// fragments with 64-bit lengths, 682 small ones. A client that fragments more finely than that
/// is refused (1009) rather than let framing grow the buffer without bound, as the HTTP parser
/// bounds a chunked body's encoding.
pub const MAX_MESSAGE_FRAMING: usize = 4096;

/// The most unread input a connection needs to hold to receive a message of `max_message`
/// bytes, fragmented within [`MAX_MESSAGE_FRAMING`], and a control frame after its fragments.
/// [`read`] returns `Ok(None)` only on less, so the connection's buffer can be capped here.
#[must_use]
pub fn input_cap(max_message: usize) -> usize {
    max_message.saturating_add(MAX_MESSAGE_FRAMING).saturating_add(MAX_CONTROL_FRAME)
}

/// Reads the next message or control frame at the start of `input`, the unread bytes of a
/// connection whose opening handshake is done.
///
/// `Ok(None)`: more bytes are needed. `Ok(Some((incoming, consumed)))`: handle `incoming`, then
/// drop `consumed` bytes from the front of the input. A control frame that arrives between the
/// fragments of a message (RFC 6455 §5.4) is returned first: it is moved in front of them, and
/// they stay behind it, untouched and still masked, until the message is complete.
///
/// # Errors
///
/// A [`Fault`] when the input breaks a rule of RFC 6455 (1002), a text message or close reason
/// is not UTF-8 (1007), or a message's payload exceeds `max_message` or its framing
/// [`MAX_MESSAGE_FRAMING`] (1009). Send it in a close frame and close the connection.
pub fn read(input: &mut [u8], max_message: usize) -> Result<Option<(Incoming<'_>, usize)>, Fault> {
    let data_end_limit = max_message.saturating_add(MAX_MESSAGE_FRAMING);
    // The scan so far: where the next frame starts, the unfinished message's kind and payload.
    let (mut at, mut message, mut payload) = (0, None, 0_usize);
    loop {
        let Some(header) = header(&input[at..], message.is_some())? else { return Ok(None) };
        let end = at.saturating_add(header.header_len).saturating_add(header.payload_len);
        if header.opcode.is_control() {
            if end > input.len() {
                return Ok(None);
            }
            return control(input, at, end, &header).map(Some);
        }
        // Refused as soon as the header says so, before the payload arrives.
        payload = payload.saturating_add(header.payload_len);
        if payload > max_message {
            return Err(Fault { code: CloseCode::TooBig, reason: "a message over the size limit" });
        }
        if end > data_end_limit {
            return Err(Fault { code: CloseCode::TooBig, reason: "a message fragmented past the framing limit" });
        }
        if end > input.len() {
            return Ok(None);
        }
        let kind = message.unwrap_or(header.opcode);
        if header.fin {
            return assemble(input, end, kind).map(Some);
        }
        message = Some(kind);
        at = end;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// What a frame header says, once its length is known.
struct Header {
    fin: bool,
    opcode: Opcode,
    /// With the mask key, which need not have arrived yet.
    header_len: usize,
    payload_len: usize,
}

fn protocol_error(reason: &'static str) -> Fault {
    Fault { code: CloseCode::ProtocolError, reason }
}

/// Reads the header at the start of `bytes`, the next frame after the fragments of an
/// unfinished message if `in_message`. Each rule is checked as soon as the bytes it reads have
/// arrived, in the order of those bytes. `Ok(None)`: the length is not known yet.
fn header(bytes: &[u8], in_message: bool) -> Result<Option<Header>, Fault> {
    let Some(&first) = bytes.first() else { return Ok(None) };
    // RFC 6455 §5.2: RSV1-3 are 0 unless an extension says otherwise, and none is agreed.
    if first & 0x70 != 0 {
        return Err(protocol_error("a reserved bit set with no extension agreed"));
    }
    let opcode = match first & 0x0f {
        0x0 => Opcode::Continuation,
        0x1 => Opcode::Text,
        0x2 => Opcode::Binary,
        0x8 => Opcode::Close,
        0x9 => Opcode::Ping,
        0xa => Opcode::Pong,
        _ => return Err(protocol_error("an unknown opcode")),
    };
    let fin = first & 0x80 != 0;
    // RFC 6455 §5.5: control frames MUST NOT be fragmented.
    if opcode.is_control() && !fin {
        return Err(protocol_error("a fragmented control frame"));
    }
    // RFC 6455 §5.4: a message's fragments are sent in order, one message at a time.
    match opcode {
        Opcode::Continuation if !in_message => return Err(protocol_error("a continuation frame outside a message")),
        Opcode::Text | Opcode::Binary if in_message => {
            return Err(protocol_error("a new message inside a fragmented one"));
        }
        _ => {}
    }
    let Some(&second) = bytes.get(1) else { return Ok(None) };
    // RFC 6455 §5.1: a server MUST close the connection on an unmasked client frame.
    if second & 0x80 == 0 {
        return Err(protocol_error("an unmasked client frame"));
    }
    let short = second & 0x7f;
    if opcode.is_control() && usize::from(short) > MAX_CONTROL_PAYLOAD {
        return Err(protocol_error("a control frame over 125 bytes"));
    }
    // RFC 6455 §5.2: "the minimal number of bytes MUST be used to encode the length"; a length
    // has one encoding, as a Content-Length has one form.
    let (extended, payload_len) = match short {
        126 => {
            let Some(length) = bytes.get(2..4) else { return Ok(None) };
            let length = big_endian(length);
            if length <= MAX_CONTROL_PAYLOAD as u64 {
                return Err(protocol_error("a length not in its shortest form"));
            }
            (2, length)
        }
        127 => {
            // RFC 6455 §5.2: the most significant bit MUST be 0; judged on the first byte.
            if bytes.get(2).is_some_and(|&top| top & 0x80 != 0) {
                return Err(protocol_error("a 64-bit length with its top bit set"));
            }
            let Some(length) = bytes.get(2..10) else { return Ok(None) };
            let length = big_endian(length);
            if length <= u64::from(u16::MAX) {
                return Err(protocol_error("a length not in its shortest form"));
            }
            (8, length)
        }
        short => (0, u64::from(short)),
    };
    // A length past usize is past any limit: the caller refuses it as too big.
    let payload_len = usize::try_from(payload_len).unwrap_or(usize::MAX);
    Ok(Some(Header { fin, opcode, header_len: 2 + extended + MASK_KEY_BYTES, payload_len }))
}

fn big_endian(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |value, &byte| value << 8 | u64::from(byte))
}

/// The mask key: the last four bytes of a complete frame header.
fn mask_key(header: &[u8]) -> [u8; MASK_KEY_BYTES] {
    let mut key = [0; MASK_KEY_BYTES];
    key.copy_from_slice(&header[header.len() - MASK_KEY_BYTES..]);
    key
}

/// The complete control frame at `input[at..end]`, brought to the front (ahead of any
/// unfinished fragments before it, which keep their order behind it) and unmasked.
fn control<'a>(input: &'a mut [u8], at: usize, end: usize, header: &Header) -> Result<(Incoming<'a>, usize), Fault> {
    let frame_len = end - at;
    input[..end].rotate_right(frame_len);
    let (head, payload) = input[..frame_len].split_at_mut(header.header_len);
    unmask(payload, mask_key(head));
    let payload = &*payload;
    let incoming = match header.opcode {
        Opcode::Ping => Incoming::Ping(payload),
        Opcode::Pong => Incoming::Pong(payload),
        _ => close(payload)?,
    };
    Ok((incoming, frame_len))
}

/// Reads a close frame's payload (RFC 6455 §5.5.1): nothing, or a code and a UTF-8 reason.
fn close(payload: &[u8]) -> Result<Incoming<'_>, Fault> {
    let [high, low, reason @ ..] = payload else {
        return match payload {
            [] => Ok(Incoming::Close { code: None, reason: "" }),
            _ => Err(protocol_error("a close payload of one byte")),
        };
    };
    let code = u16::from_be_bytes([*high, *low]);
    if !may_be_sent(code) {
        return Err(protocol_error("a close code that may not be sent"));
    }
    let Ok(reason) = std::str::from_utf8(reason) else {
        return Err(Fault { code: CloseCode::InvalidData, reason: "a close reason that is not UTF-8" });
    };
    Ok(Incoming::Close { code: Some(code), reason })
}

/// The close codes an endpoint may put in a close frame: those RFC 6455 §7.4.1 defines for the
/// wire (not 1004, reserved, nor 1005 and 1006, which stand for no code and no close frame),
/// 1012-1014 that the IANA registry added, and 3000-4999 for libraries and applications
/// (§7.4.2). 1015 stands for a TLS failure and is never sent either.
fn may_be_sent(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Unmasks the complete message in `input[..end]`, its data frames all checked by the scan, and
/// moves the payloads together behind the first frame's header.
fn assemble(input: &mut [u8], end: usize, kind: Opcode) -> Result<(Incoming<'_>, usize), Fault> {
    // The message so far is input[start..filled]; filled never passes the frame being read, so
    // a frame's header (and mask key) is read before anything is written over it.
    let (mut at, mut start, mut filled) = (0, 0, 0);
    while at < end {
        let Ok(Some(header)) = header(&input[at..end], at > 0) else {
            // The scan has just read each of these headers: this cannot happen.
            return Err(Fault { code: CloseCode::InternalError, reason: "a message read two ways" });
        };
        let payload_at = at + header.header_len;
        let next = payload_at + header.payload_len;
        if at == 0 {
            (start, filled) = (payload_at, payload_at);
        }
        let key = mask_key(&input[at..payload_at]);
        if filled < payload_at {
            input.copy_within(payload_at..next, filled);
        }
        unmask(&mut input[filled..filled + header.payload_len], key);
        filled += header.payload_len;
        at = next;
    }
    let message = &input[start..filled];
    let incoming = match kind {
        Opcode::Text => match std::str::from_utf8(message) {
            Ok(text) => Incoming::Text(text),
            Err(_) => return Err(Fault { code: CloseCode::InvalidData, reason: "a text message that is not UTF-8" }),
        },
        _ => Incoming::Binary(message),
    };
    Ok((incoming, end))
}

/// XORs `payload` with the mask key repeated from its first byte (RFC 6455 §5.3), eight bytes
/// at a time: the key twice over is one `u64`, and XOR does not care about byte order as long
/// as the bytes go back the way they came.
fn unmask(payload: &mut [u8], key: [u8; MASK_KEY_BYTES]) {
    let [a, b, c, d] = key;
    let word = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = payload.chunks_exact_mut(8);
    for chunk in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    // The rest starts at a multiple of eight, so at the key's first byte.
    for (byte, k) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// Appends the header of a server frame, final and unmasked (RFC 6455 §5.1), with its length
/// in the shortest form.
fn write_head(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(FIN | opcode);
    match (u8::try_from(len), u16::try_from(len)) {
        (Ok(short), _) if usize::from(short) <= MAX_CONTROL_PAYLOAD => out.push(short),
        (_, Ok(medium)) => {
            out.push(126);
            out.extend_from_slice(&medium.to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Appends the header of a text frame of `len` bytes; the caller appends exactly `len` bytes of
/// UTF-8 after it (a service that builds its JSON straight into the output).
pub fn text_head(out: &mut Vec<u8>, len: usize) {
    write_head(out, TEXT, len);
}

/// Appends a text message in one frame.
pub fn write_text(out: &mut Vec<u8>, text: &str) {
    text_head(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// Appends a binary message in one frame.
pub fn write_binary(out: &mut Vec<u8>, payload: &[u8]) {
    write_head(out, BINARY, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a control frame; a payload over 125 bytes is cut there (RFC 6455 §5.5).
fn write_control(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    write_head(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a ping; a payload over 125 bytes is cut there.
pub fn write_ping(out: &mut Vec<u8>, payload: &[u8]) {
    write_control(out, PING, payload);
}

/// Appends a pong, the answer to a ping with its payload (RFC 6455 §5.5.3).
pub fn write_pong(out: &mut Vec<u8>, payload: &[u8]) {
    write_control(out, PONG, payload);
}

/// Appends a close frame with `code` and `reason`; a reason over 123 bytes is cut at the last
/// character that fits, so that it stays UTF-8.
pub fn write_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    let mut cut = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = [0; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&(code as u16).to_be_bytes());
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    write_control(out, CLOSE, &payload[..2 + cut]);
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
