//! Property tests for `http::request`, with proptest: generated pipelines of valid requests
//! come out whole and in order however the stream is split into reads, and random or mutated
//! bytes never panic, never break `check_invariants`, and get the same verdicts whether they
//! arrive at once or in pieces.
//!
//! [`drive`] feeds bytes to `parse` the way the server does (`server::answer`): append what
//! arrived to a buffer, parse, drop `len` bytes per request, stop at `Ok(None)` until more
//! arrives, and stop for good at the first error.
//!
//! Each property runs 256 small cases. A failure prints its shrunk input; it is not saved to a
//! regressions file: copy it into a table in `request_tests.rs` instead.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::{check_invariants, SMALL};
use crate::http::request::{parse, Body, Limits, Method};

/// What a request was parsed as, for comparing with what was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Vec<u8>,
}

/// One generated request: its bytes, and what parsing them must give.
#[derive(Debug, Clone)]
struct Sample {
    bytes: Vec<u8>,
    seen: Seen,
}

/// How a generated request frames its body.
#[derive(Debug, Clone, Copy)]
enum Framing {
    None,
    Length,
    Chunked,
}

/// A field line that no rule of `parse` reads: an `X-` name and a visible value (with spaces).
fn field() -> impl Strategy<Value = String> {
    ("X-[A-Za-z0-9-]{1,8}", "[ -~]{0,16}").prop_map(|(name, value)| format!("{name}: {value}\r\n"))
}

/// A valid request: method, origin-form target, `Host` among 0 to 3 other fields, and a body
/// with no framing, a Content-Length, or chunked encoding split at random points (with
/// extensions and a trailer, or without).
fn sample() -> impl Strategy<Value = Sample> {
    let framing = prop_oneof![Just(Framing::None), Just(Framing::Length), Just(Framing::Chunked)];
    (
        prop_oneof![Just("GET"), Just("POST"), Just("HEAD"), Just("DELETE")],
        ("/[a-z0-9/._-]{0,12}", proptest::option::of("[a-z0-9=&]{0,8}")),
        (vec(field(), 0..4), any::<Index>()),
        (framing, vec(any::<u8>(), 0..40), vec(any::<Index>(), 0..4), any::<bool>(), any::<bool>()),
    )
        .prop_map(|(method, (path, query), (mut fields, host_at), (framing, body, cuts, upper, decorated))| {
            fields.insert(host_at.index(fields.len() + 1), "Host: tether.test\r\n".into());
            let target = match &query {
                Some(query) => format!("{path}?{query}"),
                None => path.clone(),
            };
            let body = if matches!(framing, Framing::None) { Vec::new() } else { body };
            match framing {
                Framing::None => {}
                Framing::Length => fields.push(format!("Content-Length: {}\r\n", body.len())),
                Framing::Chunked => fields.push("Transfer-Encoding: chunked\r\n".into()),
            }
            let mut bytes = format!("{method} {target} HTTP/1.1\r\n{}\r\n", fields.concat()).into_bytes();
            match framing {
                Framing::None => {}
                Framing::Length => bytes.extend_from_slice(&body),
                Framing::Chunked => bytes.extend(chunk(&body, &cuts, upper, decorated)),
            }
            let seen = Seen { method: method.into(), path, query: query.unwrap_or_default(), body };
            Sample { bytes, seen }
        })
}

/// The chunked encoding of `body`, cut into chunks at `cuts`.
fn chunk(body: &[u8], cuts: &[Index], upper: bool, decorated: bool) -> Vec<u8> {
    let mut ends: Vec<usize> = cuts.iter().map(|cut| cut.index(body.len() + 1)).collect();
    ends.push(body.len());
    ends.sort_unstable();
    ends.dedup();
    let (mut out, mut start) = (Vec::new(), 0);
    for end in ends.into_iter().filter(|&end| end > 0) {
        let size = end - start;
        let size = if upper { format!("{size:X}") } else { format!("{size:x}") };
        let ext = if decorated { "; name=\"v\"" } else { "" };
        out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
        out.extend_from_slice(&body[start..end]);
        out.extend_from_slice(b"\r\n");
        start = end;
    }
    let trailer = if decorated { "X-Trailer: t\r\n" } else { "" };
    out.extend_from_slice(format!("0\r\n{trailer}\r\n").as_bytes());
    out
}

/// Several samples, pipelined in one byte stream.
fn pipeline() -> impl Strategy<Value = (Vec<u8>, Vec<Seen>)> {
    vec(sample(), 1..4).prop_map(|samples| {
        let bytes = samples.iter().flat_map(|s| s.bytes.iter().copied()).collect();
        (bytes, samples.into_iter().map(|s| s.seen).collect())
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

/// What a connection made of a byte stream: the requests, then the status of the error that
/// ended it (if any), and how many bytes were left waiting for more.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    requests: Vec<Seen>,
    error: Option<u16>,
    waiting: usize,
}

/// Feeds `pieces` to `parse` as the server does, checking each answer against the contract.
fn drive(pieces: &[&[u8]], limits: &Limits) -> Outcome {
    let (mut buffer, mut requests) = (Vec::new(), Vec::new());
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            match parse(&buffer, limits) {
                Ok(None) => {
                    assert!(buffer.len() <= 2 * limits.max_head_bytes + limits.max_body_bytes);
                    break;
                }
                Ok(Some(r)) => {
                    assert!(r.len > 0 && r.len <= buffer.len(), "len {} of {}", r.len, buffer.len());
                    let method = match r.method {
                        Method::Get => "GET",
                        Method::Head => "HEAD",
                        Method::Post => "POST",
                        Method::Options => "OPTIONS",
                        Method::Other(other) => other,
                    };
                    let body = match r.body {
                        Body::Empty => Vec::new(),
                        Body::Bytes(bytes) => bytes.to_vec(),
                        Body::Chunked(bytes) => bytes,
                    };
                    assert!(body.len() <= limits.max_body_bytes);
                    let (path, query) = (r.path.into(), r.query.into());
                    let len = r.len;
                    requests.push(Seen { method: method.into(), path, query, body });
                    buffer.drain(..len);
                }
                Err(e) => return Outcome { requests, error: Some(e.status()), waiting: 0 },
            }
        }
    }
    Outcome { requests, error: None, waiting: buffer.len() }
}

/// How a valid stream is damaged: a byte replaced, inserted or removed, at a random place.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    Replace(Index, u8),
    Insert(Index, u8),
    Remove(Index),
}

/// Bytes that matter to the grammar, so that mutations reach past the first check.
const INTERESTING: &[u8] = b"\r\n \t:;,=\"\\0aF/?*-+\x00\x7f\xff";

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![3 => proptest::sample::select(INTERESTING), 1 => any::<u8>()];
    prop_oneof![
        (any::<Index>(), byte.clone()).prop_map(|(at, c)| Mutation::Replace(at, c)),
        (any::<Index>(), byte).prop_map(|(at, c)| Mutation::Insert(at, c)),
        any::<Index>().prop_map(Mutation::Remove),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: Mutation) {
    match mutation {
        Mutation::Replace(at, c) if !bytes.is_empty() => {
            let at = at.index(bytes.len());
            bytes[at] = c;
        }
        Mutation::Insert(at, c) => bytes.insert(at.index(bytes.len() + 1), c),
        Mutation::Remove(at) if !bytes.is_empty() => drop(bytes.remove(at.index(bytes.len()))),
        _ => {}
    }
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// Pipelined valid requests come out in order, unchanged, however the stream is split.
    #[test]
    fn pipelined_requests_survive_any_split((bytes, expected) in pipeline(), cuts in vec(any::<Index>(), 0..8)) {
        let outcome = drive(&pieces(&bytes, &cuts), &Limits::default());
        prop_assert_eq!(outcome, Outcome { requests: expected, error: None, waiting: 0 });
    }

    /// Random bytes never panic and keep the invariants.
    #[test]
    fn random_bytes_keep_the_invariants(bytes in vec(any::<u8>(), 0..256)) {
        check_invariants(&bytes, &Limits::default());
        check_invariants(&bytes, &SMALL);
    }

    /// A valid request followed by random bytes: the request is unchanged, and what follows
    /// waits, parses or fails like any input.
    #[test]
    fn a_random_tail_does_not_change_the_request(sample in sample(), tail in vec(any::<u8>(), 0..64)) {
        let bytes = [&sample.bytes[..], &tail].concat();
        let outcome = drive(&[&bytes], &Limits::default());
        prop_assert_eq!(outcome.requests.first(), Some(&sample.seen));
        check_invariants(&bytes, &Limits::default());
        check_invariants(&bytes[sample.bytes.len()..], &Limits::default());
    }

    /// Mutated pipelines never panic, keep the invariants, and get the same verdicts whole
    /// and split into reads.
    #[test]
    fn mutated_pipelines_keep_the_invariants(
        (bytes, _) in pipeline(),
        mutations in vec(mutation(), 1..4),
        cuts in vec(any::<Index>(), 0..8),
    ) {
        let mut bytes = bytes;
        for mutation in mutations {
            mutate(&mut bytes, mutation);
        }
        for limits in [Limits::default(), SMALL] {
            check_invariants(&bytes, &limits);
            let whole = drive(&[&bytes], &limits);
            prop_assert_eq!(drive(&pieces(&bytes, &cuts), &limits), whole);
        }
    }
}
