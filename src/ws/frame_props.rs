//! Property tests for `ws::frame`, with proptest: random messages, fragmented at random with
//! random control frames between their fragments and masked with random keys, come out in
//! order and byte-exact, each control frame once, however the stream is split into reads;
//! random and mutated bytes get the same verdict whole and in pieces; the word-wise unmasking
//! is the byte-wise one.
//!
//! [`drive`] feeds bytes to `read` the way the connection machine does. Each property runs 256
//! cases; a failure prints its shrunk input: copy it into a table in `frame_tests.rs`.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;

use super::{drive, frame, unmask_bytewise, Seen};
use crate::ws::frame::unmask;

/// Large enough for every generated message.
const MAX_MESSAGE: usize = 1024;

/// A ping or a pong of 0 to 125 bytes, and what reading it gives.
fn control() -> impl Strategy<Value = (Vec<u8>, Seen)> {
    (any::<bool>(), vec(any::<u8>(), 0..=125), any::<[u8; 4]>()).prop_map(|(ping, payload, key)| {
        let bytes = frame(if ping { 0x89 } else { 0x8a }, &payload, key);
        (bytes, if ping { Seen::Ping(payload) } else { Seen::Pong(payload) })
    })
}

/// A text (any characters, cut anywhere, inside a character too) or binary message, cut into
/// one to five fragments (empty ones included), each with its own key and maybe a control
/// frame after it; and what reading them gives: the controls, then the message.
fn message() -> impl Strategy<Value = (Vec<u8>, Vec<Seen>)> {
    let payload = prop_oneof![
        ".{0,40}".prop_map(|text: String| (true, text.into_bytes())),
        vec(any::<u8>(), 0..300).prop_map(|bytes| (false, bytes)),
    ];
    (payload, vec(any::<Index>(), 0..5), vec((any::<[u8; 4]>(), option::of(control())), 5)).prop_map(
        |((is_text, payload), cuts, fragments)| {
            let mut ends: Vec<usize> = cuts.iter().map(|cut| cut.index(payload.len() + 1)).collect();
            ends.sort_unstable();
            ends.push(payload.len());
            let (mut bytes, mut seen, mut start) = (Vec::new(), Vec::new(), 0);
            for (i, (&end, (key, control))) in ends.iter().zip(&fragments).enumerate() {
                let last = i + 1 == ends.len();
                let opcode = match (i, is_text) {
                    (0, true) => 0x1,
                    (0, false) => 0x2,
                    _ => 0x0,
                };
                bytes.extend(frame(if last { 0x80 | opcode } else { opcode }, &payload[start..end], *key));
                start = end;
                if let (false, Some((control, read_as))) = (last, control) {
                    bytes.extend_from_slice(control);
                    seen.push(read_as.clone());
                }
            }
            seen.push(match String::from_utf8(payload) {
                Ok(text) if is_text => Seen::Text(text),
                Ok(text) => Seen::Binary(text.into_bytes()),
                Err(binary) => Seen::Binary(binary.into_bytes()),
            });
            (bytes, seen)
        },
    )
}

/// One to four messages and lone control frames, one after another.
fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<Seen>)> {
    let item = prop_oneof![message(), control().prop_map(|(bytes, seen)| (bytes, vec![seen]))];
    vec(item, 1..5).prop_map(|items| {
        let bytes = items.iter().flat_map(|(bytes, _)| bytes.iter().copied()).collect();
        (bytes, items.into_iter().flat_map(|(_, seen)| seen).collect())
    })
}

/// `bytes` cut at `cuts`, as the reads that deliver it.
fn pieces<'b>(bytes: &'b [u8], cuts: &[Index]) -> Vec<&'b [u8]> {
    let mut ends: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let piece = &bytes[start..end];
            start = end;
            piece
        })
        .collect()
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// Messages come out in order and byte-exact, and each control frame once, before the
    /// message it interrupted, however the stream is split.
    #[test]
    fn messages_and_controls_survive_any_split((bytes, expected) in stream(), cuts in vec(any::<Index>(), 0..8)) {
        prop_assert_eq!(drive(&pieces(&bytes, &cuts), MAX_MESSAGE), (expected, Ok(0)));
    }

    /// Random bytes never panic, keep `drive`'s checks, and get the same verdict in pieces.
    #[test]
    fn random_bytes_get_one_verdict(bytes in vec(any::<u8>(), 0..256), cuts in vec(any::<Index>(), 0..8), max in 0..64_usize) {
        prop_assert_eq!(drive(&pieces(&bytes, &cuts), max), drive(&[&bytes], max));
    }

    /// A valid stream with a few bytes changed: the same verdict whole and in pieces, with a
    /// limit that the messages may exceed.
    #[test]
    fn mutated_streams_get_one_verdict(
        (mut bytes, _) in stream(),
        changes in vec((any::<Index>(), any::<u8>()), 1..4),
        cuts in vec(any::<Index>(), 0..8),
        max in prop_oneof![Just(MAX_MESSAGE), 0..200_usize],
    ) {
        for (at, byte) in changes {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        prop_assert_eq!(drive(&pieces(&bytes, &cuts), max), drive(&[&bytes], max));
    }

    /// Unmasking eight bytes at a time is unmasking one at a time.
    #[test]
    fn unmasking_by_words_is_unmasking_by_bytes(payload in vec(any::<u8>(), 0..100), key in any::<[u8; 4]>()) {
        let (mut fast, mut slow) = (payload.clone(), payload);
        unmask(&mut fast, key);
        unmask_bytewise(&mut slow, key);
        prop_assert_eq!(fast, slow);
    }
}
