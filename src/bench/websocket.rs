//! The lab's side of a WebSocket (RFC 6455), without I/O: the upgrade request and the check of
//! its answer's accept key, the client's frames (masked, each with a key of its own), and where
//! each of the server's frames ends in a buffer.
//!
//! tether's own `crate::ws::frame` is the server's side: it reads masked client frames and
//! writes unmasked ones. This module is the mirror image, as small as the lab needs: it writes
//! masked frames and reads unmasked ones, borrowing from the buffer as `frame` does for HTTP.
//!
//! Invariants:
//! - Every frame written is masked, with the key it is given (RFC 6455 §5.3: a server must
//!   close on an unmasked client frame); the caller draws each key from its generator.
//! - A `Frame` is returned only when whole: `input[..frame.len]` is its header and payload.
//! - A server frame that breaks the rules a client must enforce (masked, reserved bits,
//!   unknown opcode, a control frame over 125 bytes or fragmented) is an error, never skipped;
//!   a fragmented message is an error too (tether sends each message in one frame), and so is a
//!   payload over `frame::MAX_BODY_BYTES`, so a peer cannot make the lab buffer without bound.

use std::ops::Range;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::frame::{FrameError, MAX_BODY_BYTES};
use super::Target;
use crate::backoff::XorShift;

const FIN: u8 = 0x80;
const RESERVED: u8 = 0x70;
const MASKED: u8 = 0x80;
/// A control frame carries at most this much (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's opcode (RFC 6455 §5.2): the ones the lab reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Kind {
    fn of(opcode: u8) -> Option<Kind> {
        Some(match opcode {
            0x1 => Kind::Text,
            0x2 => Kind::Binary,
            0x8 => Kind::Close,
            0x9 => Kind::Ping,
            0xA => Kind::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }
}

/// One whole server frame at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    /// Header and payload: the bytes this frame takes.
    pub len: usize,
    /// Where its payload lies in the buffer.
    pub payload: Range<usize>,
}

/// A `Sec-WebSocket-Key`: 16 bytes of `keys`, in base64 (RFC 6455 §4.1: a nonce per handshake).
pub fn new_key(keys: &mut XorShift) -> String {
    let nonce = [keys.next_u64().to_ne_bytes(), keys.next_u64().to_ne_bytes()];
    STANDARD.encode(nonce.as_flattened())
}

/// `GET /ws` asking to upgrade with `key`.
pub fn upgrade(target: &Target, key: &str) -> String {
    let headers = format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    target.get(&format!("{}/ws", target.base_path()), &headers)
}

/// Whether `accept` (a 101's `Sec-WebSocket-Accept`) proves that the server read `key`.
pub fn accepts(key: &str, accept: &[u8]) -> bool {
    crate::ws::handshake::accept_key(key).as_bytes() == accept
}

/// A mask key from `keys` (RFC 6455 §5.3: unpredictable per frame; the lab only needs it to
/// vary, as a browser's would).
pub fn mask_key(keys: &mut XorShift) -> [u8; 4] {
    (keys.next_u64() as u32).to_ne_bytes()
}

/// Appends a client frame: FIN, `kind`, the length in its shortest form, `mask` and the payload
/// masked with it.
pub fn write(out: &mut Vec<u8>, kind: Kind, payload: &[u8], mask: [u8; 4]) {
    out.push(FIN | kind as u8);
    match payload.len() {
        n @ 0..=125 => out.push(MASKED | n as u8),
        n @ 126..=0xffff => {
            out.push(MASKED | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(MASKED | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(byte, key)| byte ^ key));
}

/// Frames the server frame at the start of `input`: `Ok(None)` while more bytes are needed.
///
/// # Errors
///
/// `Malformed` for a frame a client must refuse, `Fragmented` for a message in several frames,
/// `TooLarge` for a payload over `MAX_BODY_BYTES`; the connection cannot be read further.
pub fn read(input: &[u8]) -> Result<Option<Frame>, FrameError> {
    let [first, second, ..] = *input else {
        return Ok(None);
    };
    if first & RESERVED != 0 || second & MASKED != 0 {
        return Err(FrameError::Malformed);
    }
    let Some(kind) = Kind::of(first & 0x0f) else {
        // A continuation (0x0) begins only after a fragment, which `Fragmented` refused.
        return Err(if first & 0x0f == 0 { FrameError::Fragmented } else { FrameError::Malformed });
    };
    let (fin, short) = (first & FIN != 0, usize::from(second & 0x7f));
    match (kind.is_control(), fin) {
        (true, false) => return Err(FrameError::Malformed),
        (true, true) if short > MAX_CONTROL_PAYLOAD => return Err(FrameError::Malformed),
        (false, false) => return Err(FrameError::Fragmented),
        _ => {}
    }
    let (header, payload_len) = match short {
        126 => match input.get(2..4) {
            Some(&[a, b]) => (4, usize::from(u16::from_be_bytes([a, b]))),
            _ => return Ok(None),
        },
        127 => match input.get(2..10).and_then(|bytes| <[u8; 8]>::try_from(bytes).ok()) {
            // The most significant bit must be 0 (RFC 6455 §5.2).
            Some(bytes) if bytes[0] & 0x80 != 0 => return Err(FrameError::Malformed),
            Some(bytes) => (10, usize::try_from(u64::from_be_bytes(bytes)).unwrap_or(usize::MAX)),
            None => return Ok(None),
        },
        n => (2, n),
    };
    if payload_len > MAX_BODY_BYTES {
        return Err(FrameError::TooLarge);
    }
    let len = header + payload_len;
    Ok((input.len() >= len).then_some(Frame { kind, len, payload: header..len }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{self as server, Incoming};

    /// A frame as read: its kind and payload, or `None` when not whole.
    fn read_whole(input: &[u8]) -> Option<(Kind, &[u8], usize)> {
        read(input).unwrap().map(|frame| (frame.kind, &input[frame.payload.clone()], frame.len))
    }

    #[test]
    fn tethers_frames_are_read_whole_and_every_prefix_waits() {
        let long = "x".repeat(300);
        let huge = "y".repeat(70_000);
        let mut written = Vec::new();
        server::write_text(&mut written, r#"{"topic":"t","seq":7,"data":"message 0"}"#);
        server::write_ping(&mut written, b"");
        server::write_text(&mut written, &long);
        server::write_text(&mut written, &huge);
        server::write_close(&mut written, server::CloseCode::GoingAway, "drain");
        let expected: [(Kind, &[u8]); 5] = [
            (Kind::Text, br#"{"topic":"t","seq":7,"data":"message 0"}"#),
            (Kind::Ping, b""),
            (Kind::Text, long.as_bytes()),
            (Kind::Text, huge.as_bytes()),
            (Kind::Close, b"\x03\xe9drain"),
        ];
        let mut at = 0;
        for (kind, payload) in expected {
            let rest = &written[at..];
            let (read_kind, read_payload, len) = read_whole(rest).expect("a whole frame");
            assert_eq!((read_kind, read_payload), (kind, payload));
            for end in 0..len {
                assert_eq!(read(&rest[..end]), Ok(None), "{kind:?}: prefix of {end} bytes");
            }
            at += len;
        }
        assert_eq!(at, written.len());
    }

    #[test]
    fn frames_written_here_are_read_by_tethers_reader_unmasked() {
        let mut keys = XorShift::new(7);
        let long = "z".repeat(200);
        let huge = "w".repeat(70_000);
        let cases: [(Kind, &[u8]); 5] = [
            (Kind::Text, br#"{"subscribe":"t","cursor":3}"#),
            (Kind::Pong, b""),
            (Kind::Pong, b"ping data"),
            (Kind::Text, long.as_bytes()),
            (Kind::Text, huge.as_bytes()),
        ];
        let mut masks = Vec::new();
        for (kind, payload) in cases {
            let mut out = Vec::new();
            let mask = mask_key(&mut keys);
            masks.push(mask);
            write(&mut out, kind, payload, mask);
            let len = out.len();
            let (incoming, consumed) = server::read(&mut out, 1 << 20).expect("a valid frame").expect("whole");
            assert_eq!(consumed, len, "{kind:?}");
            let read: &[u8] = match incoming {
                Incoming::Text(text) => text.as_bytes(),
                Incoming::Pong(payload) => payload,
                other => panic!("{other:?}"),
            };
            assert_eq!(read, payload, "{kind:?}");
        }
        masks.dedup();
        assert_eq!(masks.len(), 5, "a key of its own per frame: {masks:?}");
    }

    #[test]
    fn frames_a_client_must_refuse_are_errors() {
        let cases: [(&[u8], FrameError); 8] = [
            (&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2], FrameError::Malformed), // masked
            (&[0xc1, 0x00], FrameError::Malformed),                                 // RSV1
            (&[0x83, 0x00], FrameError::Malformed),                                 // opcode 3
            (&[0x09, 0x00], FrameError::Malformed),                                 // a fragmented ping
            (&[0x89, 126, 0, 126], FrameError::Malformed),                          // a 126-byte ping
            (&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1], FrameError::Malformed),       // a length's top bit
            (&[0x01, 0x01, b'a'], FrameError::Fragmented),                          // a first fragment
            (&[0x80, 0x01, b'a'], FrameError::Fragmented),                          // a continuation
        ];
        for (input, error) in cases {
            assert_eq!(read(input), Err(error), "{input:?}");
        }
        let over = (MAX_BODY_BYTES as u64 + 1).to_be_bytes();
        assert_eq!(read(&[&[0x81, 127][..], &over].concat()), Err(FrameError::TooLarge));
    }

    #[test]
    fn the_upgrade_asks_for_version_13_with_a_fresh_key_that_tether_accepts() {
        let target = Target::parse("http://127.0.0.1:8080/api/").unwrap();
        let mut keys = XorShift::new(11);
        let (key, other) = (new_key(&mut keys), new_key(&mut keys));
        assert_ne!(key, other, "a nonce per handshake");
        assert_eq!(STANDARD.decode(&key).map(|nonce| nonce.len()), Ok(16), "{key}");
        let request = upgrade(&target, &key);
        let expected = format!(
            "GET /api/ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        assert_eq!(request, expected);
        let parsed = crate::http::request::parse(request.as_bytes(), &crate::http::request::Limits::default());
        let parsed = parsed.expect("parses").expect("whole");
        assert_eq!(crate::ws::handshake::check_upgrade(&parsed).ok(), Some(key.as_str()), "tether takes it");
        // RFC 6455 §1.3's example.
        assert!(accepts("dGhlIHNhbXBsZSBub25jZQ==", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(!accepts(&key, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }
}
