//! The chunked transfer coding (RFC 9112 §7.1): walking a chunked body that is buffered whole
//! or in part, checking its framing strictly, and handing each chunk's data to the caller.
//!
//! Invariants: only CRLF ends a framing line; a chunk size has at most 16 hex digits; the
//! decoded body never exceeds `max_body_bytes` (413 as soon as a size line says it would); the
//! trailer section never exceeds `max_head_bytes` (400 as soon as a line would take it past);
//! `Ok(None)` means "a valid prefix, wait for more", and an error is the one that any longer
//! input gets too: no check waits for bytes that cannot change its verdict.

use super::error::{wait_unless, HttpError, Limits};
use super::grammar::{is_text, skip_ows, skip_quoted_string, skip_token};

/// The longest chunk extension accepted on one chunk-size line.
pub(super) const MAX_CHUNK_EXT: usize = 1024;

/// Walks the chunked body (RFC 9112 §7.1) at the start of `b`, handing each
/// chunk's data to `data`. Returns the lengths of the encoding and of the
/// decoded body, or `None` if `b` ends first.
pub(super) fn walk_chunked(
    b: &[u8],
    limits: &Limits,
    mut data: impl FnMut(&[u8]),
) -> Result<Option<(usize, usize)>, HttpError> {
    let (mut pos, mut body_len) = (0, 0);
    loop {
        let Some((size, line_len)) = chunk_size_line(&b[pos..])? else {
            return Ok(None);
        };
        pos += line_len;
        if size == 0 {
            break; // last-chunk
        }
        // 413 as soon as a size line shows the body outgrowing the limit,
        // before its data arrives. body_len <= max_body_bytes holds throughout.
        let size = usize::try_from(size)
            .ok()
            .filter(|&size| size <= limits.max_body_bytes - body_len)
            .ok_or(HttpError::PayloadTooLarge)?;
        let end = pos.saturating_add(size); // saturates only under absurd limits, then waits
        let Some(next) = crlf(b, end, bad!("chunk data not followed by CRLF"))? else {
            return Ok(None);
        };
        data(&b[pos..end]);
        body_len += size;
        pos = next;
    }
    // trailer-section = *( field-line CRLF ), then an empty line. Trailer
    // fields are checked like header fields, then dropped (RFC 9112 §7.1.2).
    let trailer_start = pos;
    loop {
        let rest = &b[pos..];
        // A field line counts with its CRLF (the final empty line does not), and is refused
        // as soon as it is too long, whether or not its CRLF has arrived: waiting for an LF
        // that the encoding's cap may cut off would turn this 400 into a 413.
        let line_end = rest.iter().position(|&c| c == b'\r' || c == b'\n');
        let line = line_end.unwrap_or(rest.len());
        if line > 0 && pos + line + 2 - trailer_start > limits.max_head_bytes {
            return Err(bad!("trailer section too large"));
        }
        let Some(eol) = line_end else {
            return Ok(None);
        };
        let Some(next) = crlf(b, pos + eol, bad!("trailer line not ended by CRLF"))? else {
            return Ok(None);
        };
        if eol == 0 {
            return Ok(Some((next, body_len)));
        }
        if !field_line_ok(&rest[..eol]) {
            return Err(bad!("invalid trailer field"));
        }
        pos = next;
    }
}

/// Parses `chunk-size [ chunk-ext ] CRLF` at the start of `b`: the size and
/// the line's length, or `None` if `b` ends first.
fn chunk_size_line(b: &[u8]) -> Result<Option<(u64, usize)>, HttpError> {
    let (mut size, mut digits) = (0u64, 0);
    for &c in b {
        let Some(digit) = char::from(c).to_digit(16) else {
            break;
        };
        // 16 hex digits fill a u64; more could only overflow.
        if digits == 16 {
            return Err(bad!("chunk size longer than 16 hex digits"));
        }
        size = (size << 4) | u64::from(digit);
        digits += 1;
    }
    if digits == b.len() {
        return Ok(None);
    }
    // chunk-size = 1*HEXDIG: this also refuses a sign, "0x" or leading whitespace.
    if digits == 0 {
        return Err(bad!("chunk size is not a hex number"));
    }
    // The extension runs to the first CR or LF; only CRLF may end the line.
    let rest = &b[digits..];
    let Some(ext_len) = rest.iter().take(MAX_CHUNK_EXT + 1).position(|&c| c == b'\r' || c == b'\n') else {
        return wait_unless(rest.len() > MAX_CHUNK_EXT, bad!("chunk extension too long"));
    };
    let ext = &rest[..ext_len];
    // Whitespace that ends the line (`5 \r\n`) is in no production: a lenient parser skips it,
    // a strict one stops at it, and the two frame the body differently. Refused, with its own
    // message.
    if ext.last().is_some_and(|&c| c == b' ' || c == b'\t') {
        return Err(bad!("whitespace at the end of a chunk size line"));
    }
    if !chunk_ext_ok(ext) {
        return Err(bad!("invalid chunk extension"));
    }
    let line_end = crlf(rest, ext_len, bad!("chunk size line not ended by CRLF"))?;
    Ok(line_end.map(|end| (size, digits + end)))
}

/// Checks for CRLF at `at`: the position after it, `None` if `b` ends
/// first, or `error` for anything else, a bare LF included (as in the head,
/// see `crlf_line_ends`).
fn crlf(b: &[u8], at: usize, error: HttpError) -> Result<Option<usize>, HttpError> {
    match b.get(at..).unwrap_or_default() {
        [b'\r', b'\n', ..] => Ok(Some(at + 2)),
        [] | [b'\r'] => Ok(None),
        _ => Err(error),
    }
}

/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`
/// (RFC 9112 §7.1.1). Extensions are ignored, but only after checking that
/// nothing but this grammar hides in them. BWS stands only before a `;` or
/// around an `=`, so whitespace that ends the line is refused.
fn chunk_ext_ok(mut ext: &[u8]) -> bool {
    while !ext.is_empty() {
        let Some(rest) = skip_ows(ext).strip_prefix(b";") else {
            return false;
        };
        let Some(after_name) = skip_token(skip_ows(rest)) else {
            return false;
        };
        // Whitespace after the name belongs to an `=` or to the next `;`.
        ext = match skip_ows(after_name).strip_prefix(b"=") {
            Some(rest) => {
                let rest = skip_ows(rest);
                let value = match rest.first() {
                    Some(b'"') => skip_quoted_string(rest),
                    _ => skip_token(rest),
                };
                let Some(rest) = value else {
                    return false;
                };
                rest
            }
            None => after_name,
        };
    }
    true
}

/// `field-name ":" OWS field-value OWS` (RFC 9112 §5), as httparse checks a header line.
fn field_line_ok(line: &[u8]) -> bool {
    match skip_token(line).and_then(|rest| rest.strip_prefix(b":")) {
        Some(value) => value.iter().all(|&c| is_text(c)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head_bytes: 16, max_uri_bytes: 16, max_body_bytes: 16 };

    fn walk(encoding: &[u8]) -> Result<Option<(usize, usize)>, u16> {
        walk_chunked(encoding, &LIMITS, |_| {}).map_err(|e| e.status())
    }

    #[test]
    fn chunk_extension_grammar() {
        // (what follows the chunk size on its line, accepted): RFC 9112 §7.1.1, where BWS
        // stands before ";" and around "=" only.
        let table: &[(&[u8], bool)] = &[
            (b"", true),
            (b";a", true),
            (b";a=b;c", true),
            (b" ;a", true),
            (b"\t; a = \"q \\\" ;\" ;b", true),
            (b" ", false),
            (b"\t", false),
            (b";a ", false),
            (b";a=b\t", false),
            (b";a=\"b\" ", false),
            (b";", false),
            (b"; ", false),
            (b";a=", false),
            (b";a b", false),
            (b"a", false),
            (b" a", false),
            (b";a=\"b", false),
        ];
        for &(ext, accepted) in table {
            assert_eq!(chunk_ext_ok(ext), accepted, "{:?}", String::from_utf8_lossy(ext));
        }
    }

    #[test]
    fn a_trailer_section_is_measured_with_its_line_ends() {
        // "X: " and 11 bytes, then CRLF: 16 bytes, the limit; the final empty line is not counted.
        assert_eq!(walk(b"0\r\nX: aaaaaaaaaaa\r\n\r\n"), Ok(Some((21, 0))));
        assert_eq!(walk(b"0\r\nX: aaaaaaaaaaa"), Ok(None));
        // One byte more is refused however much of its line end has arrived. Found by fuzzing:
        // with only the CR, it used to wait, and could meet the encoding's cap (413) first.
        for end in [&b""[..], b"\r", b"\r\n", b"\n"] {
            let encoding = [&b"0\r\nX: aaaaaaaaaaaa"[..], end].concat();
            assert_eq!(walk(&encoding), Err(400), "{:?}", String::from_utf8_lossy(&encoding));
        }
    }
}
