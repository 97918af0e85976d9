//! The request-target (RFC 9112 §3.2): which of its forms a request may use, and the path and
//! query that routing gets from it.
//!
//! Invariants: a target that is not a URI (a byte above 0x7F, a `#`) or not a form this server
//! serves is refused with 400 (RFC 9112 §3); the path of an accepted target starts with `/`, or
//! is `*` for `OPTIONS`; nothing is percent-decoded or normalised.

use super::error::HttpError;
use super::grammar::is_host_byte;

/// Splits the request-target (RFC 9112 §3.2) into path and query, after checking that it is
/// a URI (RFC 3986) in a form the request may use: the asterisk-form only for `OPTIONS`
/// (`options`). RFC 9112 §3: an invalid request-line gets 400.
pub(super) fn split_target(target: &str, options: bool) -> Result<(&str, &str), HttpError> {
    // httparse lets through two things that no request-target holds: bytes above 0x7F (when
    // they are UTF-8), where RFC 3986 §2 has only ASCII, and '#': no form has a fragment
    // (RFC 3986 §4.3), a client strips it. Read as they come, they would reach the router as
    // a path that no client meant.
    if !target.is_ascii() {
        return Err(bad!("non-ASCII byte in the request-target (percent-encode it)"));
    }
    if target.contains('#') {
        return Err(bad!("fragment (#) in the request-target"));
    }
    // origin-form, the usual case.
    if target.starts_with('/') {
        return Ok(target.split_once('?').unwrap_or((target, "")));
    }
    // asterisk-form is a server-wide OPTIONS and nothing else (RFC 9112 §3.2.4); routing
    // decides what it means.
    if target == "*" {
        return if options { Ok(("*", "")) } else { Err(bad!("asterisk-form (*) is only for OPTIONS")) };
    }
    // absolute-form: the server must accept it (RFC 9112 §3.2.2) and use its
    // authority in place of Host, which this server does not need.
    let Some(rest) = strip_scheme(target) else {
        return Err(bad!("request-target is not origin-form, absolute-form or *"));
    };
    let (authority, path_query) = match rest.find(['/', '?']) {
        Some(end) => rest.split_at(end),
        None => (rest, ""),
    };
    // RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid. Userinfo
    // ('@') is refused too (RFC 9110 §4.2.4), by is_host_byte.
    if authority.is_empty() || !authority.bytes().all(is_host_byte) {
        return Err(bad!("invalid authority in the request-target"));
    }
    Ok(match path_query.strip_prefix('?') {
        Some(query) => ("/", query),
        None if path_query.is_empty() => ("/", ""),
        None => path_query.split_once('?').unwrap_or((path_query, "")),
    })
}

/// The rest of an `http://` or `https://` target; schemes are case-insensitive (RFC 3986 §3.1).
fn strip_scheme(target: &str) -> Option<&str> {
    ["http://", "https://"].iter().find_map(|scheme| {
        let prefix = target.get(..scheme.len())?;
        prefix.eq_ignore_ascii_case(scheme).then(|| &target[scheme.len()..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_what_routing_gets() {
        let (get, options) = (false, true);
        // (is it OPTIONS, target, path and query, or part of the refusal)
        let table = [
            (get, "/p?q", Ok(("/p", "q"))),
            (get, "/p", Ok(("/p", ""))),
            (get, "/p?", Ok(("/p", ""))),
            (get, "/caf%C3%A9", Ok(("/caf%C3%A9", ""))),
            (get, "/a|b^c", Ok(("/a|b^c", ""))),
            (get, "HTTP://h:80", Ok(("/", ""))),
            (get, "https://h?q", Ok(("/", "q"))),
            (get, "http://h/p?q", Ok(("/p", "q"))),
            (options, "*", Ok(("*", ""))),
            (options, "/x", Ok(("/x", ""))),
            (get, "*", Err("asterisk-form")),
            (options, "*x", Err("not origin-form")),
            (get, "/p#f", Err("fragment")),
            (get, "#", Err("fragment")),
            (get, "http://h/#", Err("fragment")),
            (options, "*#", Err("fragment")),
            (get, "/caf\u{e9}", Err("non-ASCII")),
            (get, "/?\u{20ac}", Err("non-ASCII")),
            (get, "http://h\u{e9}/", Err("non-ASCII")),
            (get, "p", Err("not origin-form")),
            (get, "h:443", Err("not origin-form")),
            (get, "http://", Err("authority")),
            (get, "http://u@h/", Err("authority")),
        ];
        for (method, target, expected) in table {
            match (split_target(target, method), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{method:?} {target:?}"),
                (Err(error), Err(why)) => {
                    assert_eq!(error.status(), 400, "{target:?}");
                    assert!(error.message().contains(why), "{method:?} {target:?}: {error:?}");
                }
                (got, _) => panic!("{method:?} {target:?}: {got:?}"),
            }
        }
    }
}
