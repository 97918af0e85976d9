//! Table-driven tests for `ws::handshake`: each row is a request as it arrives on the wire, so
//! the HTTP parser's reading of the upgrade fields is tested with the check.

use super::*;
use crate::http::request::{parse, Limits};

/// RFC 6455 §1.3's example key.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A valid handshake with `fields` in place of its upgrade fields.
fn handshake(request_line: &str, fields: &str) -> String {
    format!("{request_line}\r\nHost: tether.test\r\n{fields}\r\n")
}

/// The extra header fields of a refusal.
type Headers = &'static [(&'static str, &'static str)];

/// Parses `input` and checks it: the key, or why not.
fn verdict(input: &str) -> Result<String, UpgradeRefusal> {
    let request = parse(input.as_bytes(), &Limits::default());
    let Ok(Some(request)) = request else { panic!("{input:?} does not parse: {request:?}") };
    check_upgrade(&request).map(str::to_owned)
}

const GOOD: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

#[test]
fn valid_handshakes_give_the_key() {
    let rows = [
        GOOD,
        // Tokens are case-insensitive and may sit in lists (RFC 6455 §4.2.1, RFC 9110 §7.6.1).
        "upgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n",
        "Upgrade: h2c, websocket\r\nConnection: close\r\nConnection: upgrade\r\nSec-WebSocket-Version:  13 \r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    ];
    for fields in rows {
        assert_eq!(verdict(&handshake("GET /ws HTTP/1.1", fields)), Ok(KEY.to_owned()), "{fields:?}");
    }
    let other = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n";
    assert_eq!(verdict(&handshake("GET /ws?x=1 HTTP/1.1", other)), Ok("AAAAAAAAAAAAAAAAAAAAAA==".to_owned()));
}

#[test]
fn refused_handshakes_say_why() {
    const UPGRADE: Headers = &[("Upgrade", "websocket"), ("Connection", "Upgrade")];
    const VERSION_13: Headers = &[("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")];
    let without = |name: &str| {
        GOOD.lines().filter(|line| !line.starts_with(name)).map(|line| format!("{line}\r\n")).collect::<String>()
    };
    let with = |name: &str, value: &str| format!("{}{name}: {value}\r\n", without(name));
    let rows: Vec<(String, String, u16, &str, Headers)> = vec![
        // Not an upgrade: 426 names the protocol (RFC 9110 §15.5.22).
        ("GET /ws HTTP/1.1".into(), String::new(), 426, "speaks WebSocket only", UPGRADE),
        ("GET /ws HTTP/1.1".into(), without("Upgrade"), 426, "speaks WebSocket only", UPGRADE),
        ("GET /ws HTTP/1.1".into(), with("Upgrade", "h2c"), 426, "speaks WebSocket only", UPGRADE),
        ("GET /ws HTTP/1.1".into(), with("Upgrade", "websocket/13"), 426, "speaks WebSocket only", UPGRADE),
        // HTTP/1.0: Upgrade MUST be ignored (RFC 9110 §7.8).
        ("GET /ws HTTP/1.0".into(), GOOD.into(), 426, "needs HTTP/1.1", UPGRADE),
        // A handshake with a part missing or wrong: 400 (RFC 6455 §4.2.1).
        ("POST /ws HTTP/1.1".into(), GOOD.into(), 400, "is a GET", &[]),
        ("HEAD /ws HTTP/1.1".into(), GOOD.into(), 400, "is a GET", &[]),
        ("GET /ws HTTP/1.1".into(), without("Connection"), 400, "upgrade option", &[]),
        ("GET /ws HTTP/1.1".into(), with("Connection", "keep-alive"), 400, "upgrade option", &[]),
        ("GET /ws HTTP/1.1".into(), without("Sec-WebSocket-Key"), 400, "missing Sec-WebSocket-Key", &[]),
        // A key that is not base64 of exactly 16 bytes: too short, unpadded, non-zero unused
        // bits (which a lenient decoder reads as "the sample nonce" too), a character after
        // the padding, the URL-safe alphabet, 15 or 17 bytes, a space inside.
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Key", ""), 400, "not 16 bytes", &[]),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ"), 400, "not 16 bytes", &[]),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZR=="), 400, "not 16 bytes", &[]),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=a"), 400, "not 16 bytes", &[]),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ-_"), 400, "not 16 bytes", &[]),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25j"), 400, "not 16 bytes", &[]),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZXM="), 400, "not 16 bytes", &[]),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZXMh"), 400, "not 16 bytes", &[]),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Key", "dGhlIHNh bXBsZSBub25jZQ=="), 400, "not 16 bytes", &[]),
        // Another version, or none: 426 with the version served (RFC 6455 §4.4), checked
        // before the key, which an older draft's client would not send in this shape.
        ("GET /ws HTTP/1.1".into(), without("Sec-WebSocket-Version"), 426, "version 13", VERSION_13),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Version", "8"), 426, "version 13", VERSION_13),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Version", "13, 8"), 426, "version 13", VERSION_13),
        ("GET /ws HTTP/1.1".into(), with("Sec-WebSocket-Version", "013"), 426, "version 13", VERSION_13),
        ("GET /ws HTTP/1.1".into(), without("Sec-WebSocket-Version").replace(KEY, "x"), 426, "version 13", VERSION_13),
    ];
    for (line, fields, status, words, headers) in rows {
        let input = handshake(&line, &fields);
        let Err(refusal) = verdict(&input) else { panic!("{input:?} accepted") };
        let reason = refusal.reason();
        assert_eq!((refusal.status(), refusal.headers()), (status, headers), "{input:?}: {reason}");
        assert!(reason.contains(words) && !reason.contains('\n'), "{input:?}: {reason}");
    }
}

#[test]
fn the_accept_key_is_rfc_6455s_example() {
    // RFC 6455 §1.3.
    assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    // Another, computed apart: printf '%s' "$KEY$GUID" | openssl sha1 -binary | base64
    assert_eq!(accept_key("AAAAAAAAAAAAAAAAAAAAAA=="), "ICX+Yqv66kxgM0FcWaLWlFLwTAI=");
}
