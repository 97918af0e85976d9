//! Fuzzes `tether::http::request::parse`: arbitrary bytes, as one connection's stream, under
//! three sets of limits (the server's defaults, small ones, tiny ones).
//!
//! For each input it checks what `request_tests.rs` checks for every table row, on the request
//! at the start of the stream and on each pipelined one after it:
//! - nothing panics; an error has a known status and a one-line message;
//! - `Ok(None)` only while the buffer is within `2 * max_head_bytes + max_body_bytes`;
//! - a request has `0 < len <= input`, a body within `max_body_bytes` (a Content-Length body
//!   borrowed from inside its own `len` bytes), a path starting with `/` or equal to `*`;
//! - a request is decided by its own bytes: parsing exactly them gives the same request, and
//!   the prefix one byte shorter waits;
//! - an error does not depend on the split: a few prefixes each wait or fail with its status;
//! - the stream fed whole and fed in three reads (cut where the input's bytes say) gives the
//!   same requests and the same final verdict, as the server's read loop would see them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::http::request::{parse, Body, HttpError, Limits, Request};

const LIMITS: [Limits; 3] = [
    Limits { max_head_bytes: 16 * 1024, max_uri_bytes: 8 * 1024, max_body_bytes: 64 * 1024 },
    Limits { max_head_bytes: 128, max_uri_bytes: 32, max_body_bytes: 64 },
    Limits { max_head_bytes: 40, max_uri_bytes: 8, max_body_bytes: 5 },
];

/// Everything a request says, comparable.
type Summary = String;

fn summary(r: &Request) -> Summary {
    format!("{r:?}")
}

fn bound(limits: &Limits) -> usize {
    2 * limits.max_head_bytes + limits.max_body_bytes
}

/// Parses `input` once and checks the contract. Returns the request's length and summary,
/// `None` to wait, or the error.
fn checked(input: &[u8], limits: &Limits) -> Result<Option<(usize, Summary)>, HttpError> {
    match parse(input, limits) {
        Ok(None) => {
            assert!(input.len() <= bound(limits), "Ok(None) on {} bytes", input.len());
            Ok(None)
        }
        Ok(Some(r)) => {
            assert!(r.len > 0 && r.len <= input.len(), "len {} of {}", r.len, input.len());
            let body_len = match &r.body {
                Body::Empty => 0,
                Body::Bytes(bytes) => {
                    let start = bytes.as_ptr() as usize - input.as_ptr() as usize;
                    assert!(start + bytes.len() == r.len, "a Content-Length body ends the request");
                    bytes.len()
                }
                Body::Chunked(bytes) => bytes.len(),
            };
            assert!(body_len <= limits.max_body_bytes);
            assert!(r.path.starts_with('/') || r.path == "*", "path {:?}", r.path);
            Ok(Some((r.len, summary(&r))))
        }
        Err(e) => {
            assert!(matches!(e.status(), 400 | 413 | 414 | 431 | 501 | 505), "{e:?}");
            assert!(!e.message().is_empty() && !e.message().contains('\n'), "{e:?}");
            Err(e)
        }
    }
}

/// The checks that need more parses: a request is decided by its own bytes, an error by any
/// prefix that does not wait.
fn check_split_independence(input: &[u8], limits: &Limits, verdict: &Result<Option<(usize, Summary)>, HttpError>) {
    match verdict {
        Ok(None) => {}
        Ok(Some((len, summary))) => {
            let own = &input[..*len];
            assert_eq!(checked(own, limits), Ok(Some((*len, summary.clone()))), "{own:?}");
            assert_eq!(checked(&own[..len - 1], limits), Ok(None), "{own:?}");
        }
        Err(e) => {
            for cut in [input.len() / 2, input.len().saturating_sub(1), input.len() / 4 * 3] {
                match checked(&input[..cut], limits) {
                    Ok(None) => {}
                    Err(early) => assert_eq!(early.status(), e.status(), "prefix {cut} of {input:?}"),
                    Ok(Some(r)) => panic!("prefix {cut} of a refused input gave {r:?}"),
                }
            }
        }
    }
}

/// What a connection makes of `pieces`, read by read, as the server's loop does: the
/// requests, then the error that ended it or the bytes left waiting.
fn drive(pieces: &[&[u8]], limits: &Limits) -> (Vec<Summary>, Result<usize, u16>) {
    let (mut buffer, mut requests) = (Vec::new(), Vec::new());
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            let verdict = checked(&buffer, limits);
            check_split_independence(&buffer, limits, &verdict);
            match verdict {
                Ok(None) => break,
                Ok(Some((len, summary))) => {
                    requests.push(summary);
                    buffer.drain(..len);
                }
                Err(e) => return (requests, Err(e.status())),
            }
        }
    }
    (requests, Ok(buffer.len()))
}

fuzz_target!(|data: &[u8]| {
    // Three reads, cut where the first two bytes say (so the fuzzer controls the split).
    let (a, b) = match data {
        [x, y, ..] => (usize::from(*x) * data.len() / 256, usize::from(*y) * data.len() / 256),
        _ => (0, 0),
    };
    let (a, b) = (a.min(b), a.max(b));
    for limits in &LIMITS {
        let whole = drive(&[data], limits);
        let split = drive(&[&data[..a], &data[a..b], &data[b..]], limits);
        assert_eq!(whole, split, "split at {a} and {b}");
    }
});
