//! Table-driven tests for `ws::frame`: every rule with its close code, each row fed whole, cut
//! at every byte and byte by byte through a buffer that drops what `read` consumed, as the
//! connection machine does; every strict prefix of a valid sequence waits; the writers; the
//! word-wise unmasking against the byte-wise one. Properties are in `frame_props.rs`.

use super::*;

/// What `read` returned, owned, so that the buffer can move on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seen {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn seen(incoming: &Incoming) -> Seen {
    match *incoming {
        Incoming::Text(text) => Seen::Text(text.to_owned()),
        Incoming::Binary(bytes) => Seen::Binary(bytes.to_vec()),
        Incoming::Ping(bytes) => Seen::Ping(bytes.to_vec()),
        Incoming::Pong(bytes) => Seen::Pong(bytes.to_vec()),
        Incoming::Close { code, reason } => Seen::Close(code, reason.to_owned()),
    }
}

/// What a connection makes of `pieces`, read by read: append, `read` until `Ok(None)`, drop
/// `consumed` after each frame, stop at the first fault. Checks on the way that `consumed` is
/// within the input and that `Ok(None)` comes only under the input cap. Returns what was seen,
/// then the fault or the bytes left waiting.
pub(super) fn drive(pieces: &[&[u8]], max_message: usize) -> (Vec<Seen>, Result<usize, Fault>) {
    let (mut buffer, mut seen_so_far) = (Vec::new(), Vec::new());
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            let len = buffer.len();
            match read(&mut buffer, max_message) {
                Ok(None) => {
                    assert!(len < input_cap(max_message), "Ok(None) on {len} bytes");
                    break;
                }
                Ok(Some((incoming, consumed))) => {
                    assert!(consumed > 0 && consumed <= len, "consumed {consumed} of {len}");
                    seen_so_far.push(seen(&incoming));
                    buffer.drain(..consumed);
                }
                Err(fault) => {
                    assert!(fault.reason.len() <= MAX_CLOSE_REASON && !fault.reason.contains('\n'));
                    return (seen_so_far, Err(fault));
                }
            }
        }
    }
    (seen_so_far, Ok(buffer.len()))
}

/// A client frame: `first` is FIN and the opcode; the length in its shortest form; the payload
/// masked with `key`.
pub(super) fn frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_head(&mut bytes, 0, payload.len());
    bytes[0] = first;
    bytes[1] |= 0x80;
    bytes.extend_from_slice(&key);
    bytes.extend(payload.iter().zip(key.iter().cycle()).map(|(byte, k)| byte ^ k));
    bytes
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const ZERO_KEY: [u8; 4] = [0; 4];

fn text(payload: &str) -> Vec<u8> {
    frame(0x81, payload.as_bytes(), KEY)
}

fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    frame(0x88, &[&code.to_be_bytes()[..], reason].concat(), KEY)
}

/// A header with its length written by hand (`second` then `extended`), and a zero mask key.
fn raw_header(first: u8, second: u8, extended: &[u8]) -> Vec<u8> {
    [&[first, second | 0x80][..], extended, &ZERO_KEY].concat()
}

/// How a row ends: everything read, or the connection failed with this code and reason.
type Verdict = Result<(), (CloseCode, &'static str)>;

/// A row: what it shows, its bytes, `max_message`, what comes out, how it ends.
struct Row {
    name: &'static str,
    input: Vec<u8>,
    max_message: usize,
    seen: Vec<Seen>,
    verdict: Verdict,
}

fn row(name: &'static str, input: Vec<u8>, seen: Vec<Seen>, verdict: Verdict) -> Row {
    Row { name, input, max_message: 1024, seen, verdict }
}

fn protocol(reason: &'static str) -> Verdict {
    Err((CloseCode::ProtocolError, reason))
}

fn rows() -> Vec<Row> {
    use Seen::*;
    let hello = || Text("hello".into());
    let mut rows = vec![
        // Messages in one frame; masking with any key, even zero.
        row("text", text("hello"), vec![hello()], Ok(())),
        row("text, zero key", frame(0x81, b"hello", ZERO_KEY), vec![hello()], Ok(())),
        row("binary", frame(0x82, &[0, 255, 1], KEY), vec![Binary(vec![0, 255, 1])], Ok(())),
        row("empty text", text(""), vec![Text(String::new())], Ok(())),
        row("empty binary", frame(0x82, b"", KEY), vec![Binary(vec![])], Ok(())),
        row("two messages", [text("a"), text("b")].concat(), vec![Text("a".into()), Text("b".into())], Ok(())),
        // Control frames.
        row("ping", frame(0x89, b"abc", KEY), vec![Ping(b"abc".to_vec())], Ok(())),
        row("pong", frame(0x8a, b"", KEY), vec![Pong(vec![])], Ok(())),
        row("ping of 125", frame(0x89, &[7; 125], KEY), vec![Ping(vec![7; 125])], Ok(())),
        row("empty close: no code", frame(0x88, b"", KEY), vec![Close(None, String::new())], Ok(())),
        row("close 1000 bye", close_frame(1000, b"bye"), vec![Close(Some(1000), "bye".into())], Ok(())),
        row(
            "close, 123-byte reason",
            close_frame(1000, &[b'r'; 123]),
            vec![Close(Some(1000), "r".repeat(123))],
            Ok(()),
        ),
        row("close of one byte", frame(0x88, &[3], KEY), vec![], protocol("one byte")),
        row("close reason not UTF-8", close_frame(1000, b"\xc3("), vec![], Err((CloseCode::InvalidData, "not UTF-8"))),
        row("control of 126", frame(0x89, &[0; 126], KEY), vec![], protocol("over 125")),
        row("close of 126", close_frame(1000, &[b'r'; 124]), vec![], protocol("over 125")),
        row("fragmented ping", frame(0x09, b"a", KEY), vec![], protocol("fragmented control")),
        row("fragmented close", frame(0x08, b"", KEY), vec![], protocol("fragmented control")),
        // Header rules (RFC 6455 §5.2).
        row("unmasked", vec![0x81, 0x05, b'h', b'e', b'l', b'l', b'o'], vec![], protocol("unmasked")),
        row("unmasked ping", vec![0x89, 0x00], vec![], protocol("unmasked")),
        row("RSV1", frame(0xc1, b"x", KEY), vec![], protocol("reserved bit")),
        row("RSV2", frame(0xa1, b"x", KEY), vec![], protocol("reserved bit")),
        row("RSV3", frame(0x91, b"x", KEY), vec![], protocol("reserved bit")),
        row("16-bit length for 125", raw_header(0x82, 126, &[0, 125]), vec![], protocol("shortest form")),
        row("16-bit length for 0", raw_header(0x82, 126, &[0, 0]), vec![], protocol("shortest form")),
        row(
            "64-bit length for 65535",
            raw_header(0x82, 127, &[0, 0, 0, 0, 0, 0, 255, 255]),
            vec![],
            protocol("shortest"),
        ),
        row("64-bit length for 5", raw_header(0x82, 127, &[0, 0, 0, 0, 0, 0, 0, 5]), vec![], protocol("shortest form")),
        row("64-bit length, top bit", raw_header(0x82, 127, &[0x80, 0, 0, 0, 0, 0, 0, 1]), vec![], protocol("top bit")),
        row("64-bit length, top bit alone", vec![0x82, 0xff, 0x80], vec![], protocol("top bit")),
        row(
            "64-bit length, huge",
            raw_header(0x82, 127, &[0x7f, 255, 255, 255, 255, 255, 255, 255]),
            vec![],
            too_big(),
        ),
        // Fragmentation (RFC 6455 §5.4).
        row("fragmented text", [frame(0x01, b"hel", KEY), frame(0x80, b"lo", KEY)].concat(), vec![hello()], Ok(())),
        row(
            "three fragments, empty ones among them",
            [frame(0x02, b"", KEY), frame(0x00, b"ab", [1, 2, 3, 4]), frame(0x00, b"", KEY), frame(0x80, b"c", KEY)]
                .concat(),
            vec![Binary(b"abc".to_vec())],
            Ok(()),
        ),
        row(
            "a ping between fragments comes first",
            [frame(0x01, b"hel", KEY), frame(0x89, b"are you there", [9, 8, 7, 6]), frame(0x80, b"lo", KEY)].concat(),
            vec![Ping(b"are you there".to_vec()), hello()],
            Ok(()),
        ),
        row(
            "controls between fragments, in order",
            [
                frame(0x01, b"h", KEY),
                frame(0x8a, b"1", KEY),
                frame(0x00, b"el", [5; 4]),
                frame(0x89, b"2", KEY),
                frame(0x89, b"3", KEY),
                frame(0x80, b"lo", KEY),
                frame(0x89, b"4", KEY),
            ]
            .concat(),
            vec![Pong(b"1".to_vec()), Ping(b"2".to_vec()), Ping(b"3".to_vec()), hello(), Ping(b"4".to_vec())],
            Ok(()),
        ),
        row(
            "a close between fragments",
            [frame(0x01, b"hel", KEY), close_frame(1001, b""), frame(0x80, b"lo", KEY)].concat(),
            vec![Close(Some(1001), String::new()), hello()],
            Ok(()),
        ),
        row(
            "UTF-8 split across fragments",
            [frame(0x01, b"caf\xc3", KEY), frame(0x80, b"\xa9", KEY)].concat(),
            vec![Text("café".into())],
            Ok(()),
        ),
        row(
            "invalid UTF-8 split across fragments",
            [frame(0x01, b"caf\xc3", KEY), frame(0x80, b"(", KEY)].concat(),
            vec![],
            Err((CloseCode::InvalidData, "not UTF-8")),
        ),
        row("invalid UTF-8", frame(0x81, b"\xff", KEY), vec![], Err((CloseCode::InvalidData, "not UTF-8"))),
        row("continuation first", frame(0x80, b"x", KEY), vec![], protocol("continuation frame outside")),
        row(
            "continuation after a whole message",
            [text("a"), frame(0x80, b"x", KEY)].concat(),
            vec![Text("a".into())],
            protocol("continuation frame outside"),
        ),
        row(
            "text inside a message",
            [frame(0x01, b"a", KEY), text("b")].concat(),
            vec![],
            protocol("new message inside"),
        ),
        row(
            "binary inside a message",
            [frame(0x02, b"a", KEY), frame(0x02, b"b", KEY)].concat(),
            vec![],
            protocol("new message inside"),
        ),
        row(
            "a ping, then a rule broken behind the fragments",
            [frame(0x01, b"a", KEY), frame(0x89, b"", KEY), frame(0xc0, b"b", KEY)].concat(),
            vec![Ping(vec![])],
            protocol("reserved bit"),
        ),
    ];
    // Every opcode that is not defined (RFC 6455 §5.2).
    let unknown = [0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf];
    rows.extend(
        unknown.into_iter().map(|op| row("unknown opcode", frame(0x80 | op, b"", KEY), vec![], protocol("opcode"))),
    );
    // Every close code: those that may be sent come out, the others fail (RFC 6455 §7.4).
    for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
        rows.push(row(
            "a close code that may be sent",
            close_frame(code, b"r"),
            vec![Close(Some(code), "r".into())],
            Ok(()),
        ));
    }
    for code in [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        rows.push(row(
            "a close code that may not be sent",
            close_frame(code, b""),
            vec![],
            protocol("may not be sent"),
        ));
    }
    rows.extend(size_rows());
    rows
}

fn too_big() -> Verdict {
    Err((CloseCode::TooBig, "over the size limit"))
}

/// Lengths at the edges of their encodings, and the size limits.
fn size_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for len in [125, 126, 65535, 65536, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let input = frame(0x82, &payload, KEY);
        let header = match len {
            0..=125 => 6,
            126..=65535 => 8,
            _ => 14,
        };
        assert_eq!(input.len(), header + len, "{len} bytes take the shortest length");
        rows.push(Row {
            name: "length edge",
            input,
            max_message: 70_000,
            seen: vec![Seen::Binary(payload)],
            verdict: Ok(()),
        });
    }
    let small = |name, input, verdict| Row { name, input, max_message: 10, seen: vec![], verdict };
    rows.extend([
        Row {
            name: "exactly the limit",
            input: text("0123456789"),
            max_message: 10,
            seen: vec![Seen::Text("0123456789".into())],
            verdict: Ok(()),
        },
        small("one byte over", text("0123456789!"), too_big()),
        // Refused from the header alone, before any payload arrives.
        small("over, header only", raw_header(0x81, 11, &[]), too_big()),
        small("fragments over", [frame(0x01, b"012345", KEY), raw_header(0x80, 5, &[])].concat(), too_big()),
        // Many empty fragments: the framing limit, not the payload, refuses them.
        small(
            "framing over its limit",
            [frame(0x01, b"", KEY), frame(0x00, b"", KEY).repeat((10 + MAX_MESSAGE_FRAMING) / 6 + 1)].concat(),
            Err((CloseCode::TooBig, "framing limit")),
        ),
    ]);
    rows
}

#[test]
fn every_row_reads_as_expected_however_it_is_split() {
    for row in rows() {
        let Row { name, input, max_message, seen: expected, verdict } = row;
        let whole = drive(&[&input], max_message);
        let ended = whole.1.map(|_| ()).map_err(|fault| fault.code);
        assert_eq!((&whole.0, ended), (&expected, verdict.map_err(|(code, _)| code)), "{name}");
        if let (Err(fault), Err((_, words))) = (whole.1, verdict) {
            assert!(fault.reason.contains(words), "{name}: {fault:?}");
        }
        if let Ok(left) = whole.1 {
            assert_eq!(left, 0, "{name}: bytes left");
        }
        // The verdict does not depend on how the bytes arrive: cut in two anywhere, and one
        // byte at a time (long rows are cut every few hundred bytes).
        let step = if input.len() > 4096 { 997 } else { 1 };
        for cut in (0..=input.len()).step_by(step) {
            assert_eq!(drive(&[&input[..cut], &input[cut..]], max_message), whole, "{name}, cut at {cut}");
        }
        if input.len() <= 4096 {
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(drive(&bytes, max_message), whole, "{name}, byte by byte");
        }
    }
}

#[test]
fn every_strict_prefix_of_a_valid_frame_sequence_waits() {
    // The rows that hold one message or control frame; the others are cut everywhere above.
    for row in rows().into_iter().filter(|row| row.verdict.is_ok() && row.seen.len() == 1) {
        let step = if row.input.len() > 4096 { 997 } else { 1 };
        for cut in (0..row.input.len()).step_by(step) {
            let mut prefix = row.input[..cut].to_vec();
            assert_eq!(read(&mut prefix, row.max_message), Ok(None), "{}, prefix {cut}", row.name);
            assert_eq!(prefix, row.input[..cut], "{}: a read that waits writes nothing", row.name);
        }
    }
}

#[test]
fn a_ping_between_fragments_leaves_them_masked_behind_it() {
    let fragments = [frame(0x01, b"hel", KEY), frame(0x00, b"l", [1, 2, 3, 4])].concat();
    let ping = frame(0x89, b"!", [4, 3, 2, 1]);
    let mut input = [&fragments[..], &ping, &frame(0x80, b"o", KEY)].concat();
    let Ok(Some((incoming, consumed))) = read(&mut input, 1024) else { panic!("the ping is complete") };
    assert_eq!((incoming, consumed), (Incoming::Ping(b"!"), ping.len()));
    assert_eq!(&input[consumed..consumed + fragments.len()], &fragments[..], "the fragments, untouched");
    let rest = input.len() - ping.len();
    let Ok(Some((incoming, consumed))) = read(&mut input[ping.len()..], 1024) else {
        panic!("the message is complete")
    };
    assert_eq!((incoming, consumed), (Incoming::Text("hello"), rest));
}

#[test]
fn oversize_is_refused_before_the_rest_arrives() {
    // A first fragment of 6 bytes, then only the header of one of 5: 11 > 10.
    let mut input = [frame(0x01, b"012345", KEY), vec![0x80, 0x85]].concat();
    assert_eq!(read(&mut input, 10), Err(Fault { code: CloseCode::TooBig, reason: "a message over the size limit" }));
}

#[test]
fn the_input_cap_holds_a_whole_message_and_a_control_frame() {
    let max = 1000;
    // The largest message in one frame, and a ping behind its first fragment, fit.
    let whole = frame(0x82, &vec![1; max], KEY);
    assert!(whole.len() + MAX_CONTROL_FRAME <= input_cap(max));
    let mut input = [frame(0x02, &vec![1; max - 1], KEY), frame(0x89, &[2; 125], KEY)].concat();
    assert!(input.len() <= input_cap(max));
    assert!(matches!(read(&mut input, max), Ok(Some((Incoming::Ping(_), 131)))));
    assert_eq!(input_cap(usize::MAX), usize::MAX);
}

#[test]
fn the_writers_frame_what_they_are_given() {
    let mut out = Vec::new();
    write_text(&mut out, "hi");
    assert_eq!(out, b"\x81\x02hi");
    out.clear();
    write_binary(&mut out, &[1, 2]);
    assert_eq!(out, [0x82, 2, 1, 2]);
    out.clear();
    write_ping(&mut out, b"p");
    write_pong(&mut out, b"");
    assert_eq!(out, b"\x89\x01p\x8a\x00");
    out.clear();
    write_close(&mut out, CloseCode::TooBig, "big");
    assert_eq!(out, b"\x88\x05\x03\xf1big");
    out.clear();
    // A reason is cut to 123 bytes, at a character boundary; a control payload to 125.
    write_close(&mut out, CloseCode::Normal, &format!("{}é", "r".repeat(122)));
    assert_eq!(out.len(), 2 + 2 + 122);
    out.clear();
    write_ping(&mut out, &[0; 200]);
    assert_eq!(out.len(), 2 + 125);
    // Length encodings at their edges, as `text_head` writes them for a caller that appends.
    for (len, head) in [
        (0, vec![0x81, 0]),
        (125, vec![0x81, 125]),
        (126, vec![0x81, 126, 0, 126]),
        (65535, vec![0x81, 126, 255, 255]),
        (65536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ] {
        let mut out = Vec::new();
        text_head(&mut out, len);
        assert_eq!(out, head, "{len}");
    }
}

#[test]
fn close_codes_are_their_numbers() {
    let codes = [
        (CloseCode::Normal, 1000),
        (CloseCode::GoingAway, 1001),
        (CloseCode::ProtocolError, 1002),
        (CloseCode::InvalidData, 1007),
        (CloseCode::PolicyViolation, 1008),
        (CloseCode::TooBig, 1009),
        (CloseCode::InternalError, 1011),
    ];
    for (code, number) in codes {
        assert_eq!(code as u16, number);
        assert!(may_be_sent(number), "{code:?}");
    }
}

/// The obvious unmasking, to check the word-wise one against.
pub(super) fn unmask_bytewise(payload: &mut [u8], key: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

#[path = "frame_props.rs"]
mod props;
