//! Fuzzes `tether::ws::frame::read`: arbitrary bytes, as the frames a client sends after the
//! handshake, under three message limits (64 KiB, 128 bytes, 5 bytes).
//!
//! For each input it checks what `frame_tests.rs` checks for every table row:
//! - nothing panics; a fault has a one-line reason that fits in a close frame;
//! - `Ok(None)` only while the unread input is under `input_cap(max_message)`, and a read that
//!   waits writes nothing;
//! - a frame has `0 < consumed <= input`, a message within `max_message`, a control payload
//!   within 125 bytes, all borrowed from the `consumed` bytes at the front of the input;
//! - a fault does not depend on the split: a few prefixes of the input it was found in each
//!   wait or fail with its code;
//! - the stream fed whole and fed in three reads (cut where the input's first bytes say) gives
//!   the same frames and the same end, as the connection machine would see them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::ws::frame::{input_cap, read, CloseCode, Fault, Incoming};

const MAX_MESSAGES: [usize; 3] = [64 * 1024, 128, 5];

/// Everything a frame says, comparable.
type Summary = String;

/// Reads once and checks the contract. Returns what was read and `consumed`, `None` to wait,
/// or the fault.
fn checked(input: &mut [u8], max_message: usize) -> Result<Option<(Summary, usize)>, Fault> {
    let (len, before) = (input.len(), input.to_vec());
    let start = input.as_ptr() as usize;
    match read(input, max_message) {
        Ok(None) => {
            assert!(len < input_cap(max_message), "Ok(None) on {len} bytes");
            assert_eq!(input, &before[..], "a read that waits writes nothing");
            Ok(None)
        }
        Ok(Some((incoming, consumed))) => {
            assert!(consumed > 0 && consumed <= len, "consumed {consumed} of {len}");
            let (payload, limit) = match incoming {
                Incoming::Text(text) => (text.as_bytes(), max_message),
                Incoming::Binary(bytes) => (bytes, max_message),
                Incoming::Ping(bytes) | Incoming::Pong(bytes) => (bytes, 125),
                Incoming::Close { reason, .. } => (reason.as_bytes(), 123),
            };
            assert!(payload.len() <= limit, "{incoming:?}");
            if !payload.is_empty() {
                let at = (payload.as_ptr() as usize).wrapping_sub(start);
                assert!(at < consumed && payload.len() <= consumed - at, "{incoming:?} outside its bytes");
            }
            Ok(Some((format!("{incoming:?}"), consumed)))
        }
        Err(fault) => {
            assert!(fault.reason.len() <= 123 && !fault.reason.is_empty() && !fault.reason.contains('\n'));
            assert!(matches!(fault.code, CloseCode::ProtocolError | CloseCode::InvalidData | CloseCode::TooBig));
            Err(fault)
        }
    }
}

/// A fault is found in the bytes before it: a prefix of the input it was found in waits, or
/// fails with the same code.
fn check_prefixes(input: &[u8], max_message: usize, fault: Fault) {
    for cut in [input.len() / 2, input.len() / 4 * 3, input.len().saturating_sub(1)] {
        match checked(&mut input[..cut].to_vec(), max_message) {
            Ok(None) => {}
            Err(early) => assert_eq!(early.code, fault.code, "prefix {cut} of {input:?}"),
            Ok(Some(frame)) => panic!("prefix {cut} of a refused input gave {frame:?}"),
        }
    }
}

/// What a connection makes of `pieces`, read by read, as the machine does: the frames, then
/// the fault that ended it or the bytes left waiting.
fn drive(pieces: &[&[u8]], max_message: usize) -> (Vec<Summary>, Result<usize, Fault>) {
    let (mut buffer, mut frames) = (Vec::new(), Vec::new());
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            let unread = buffer.clone();
            match checked(&mut buffer, max_message) {
                Ok(None) => break,
                Ok(Some((summary, consumed))) => {
                    frames.push(summary);
                    buffer.drain(..consumed);
                }
                Err(fault) => {
                    check_prefixes(&unread, max_message, fault);
                    return (frames, Err(fault));
                }
            }
        }
    }
    (frames, Ok(buffer.len()))
}

fuzz_target!(|data: &[u8]| {
    // Three reads, cut where the first two bytes say (so the fuzzer controls the split).
    let (a, b) = match data {
        [x, y, ..] => (usize::from(*x) * data.len() / 256, usize::from(*y) * data.len() / 256),
        _ => (0, 0),
    };
    let (a, b) = (a.min(b), a.max(b));
    for max_message in MAX_MESSAGES {
        let whole = drive(&[data], max_message);
        let split = drive(&[&data[..a], &data[a..b], &data[b..]], max_message);
        assert_eq!(whole, split, "split at {a} and {b}");
    }
});
