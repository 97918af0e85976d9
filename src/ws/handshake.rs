//! The WebSocket opening handshake (RFC 6455 §4.2) on a request the HTTP parser has read:
//! [`check_upgrade`] says whether it may become a WebSocket and, if not, with which status and
//! headers to refuse it; [`accept_key`] computes the `Sec-WebSocket-Accept` of the `101`.
//!
//! Invariants: a request is upgraded only with all six parts RFC 6455 §4.2.1 asks for (GET,
//! HTTP/1.1, `Upgrade: websocket`, `Connection: upgrade`, a key of 16 bytes in base64, version
//! 13); a request that is no upgrade at all is told which protocol the resource speaks (426), a
//! client of another version which version to speak (426), and anything else what is wrong
//! (400), each in one line. The choices and their reasons are in `docs/http.md` ("WebSocket").

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::http::request::{Method, Request, Version};

/// The only protocol version served (RFC 6455 §4.1, item 9).
pub const VERSION: &str = "13";

/// Appended to the client's key before hashing (RFC 6455 §1.3): a value no other protocol
/// would use, so that an accept key proves the server read the handshake as WebSocket.
const KEY_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The bytes a `Sec-WebSocket-Key` carries, once decoded (RFC 6455 §4.1, item 7).
const NONCE_BYTES: usize = 16;

/// Why a request to a WebSocket endpoint is not upgraded. Answer [`status`](Self::status) with
/// [`reason`](Self::reason) as the body and [`headers`](Self::headers) as extra header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRefusal {
    /// Not a WebSocket handshake at all (no `Upgrade: websocket`, or HTTP/1.0, whose `Upgrade`
    /// a server must ignore): 426, naming the protocol the resource speaks.
    NotAnUpgrade(&'static str),
    /// A handshake of another version, or of none: 426, naming the version served (RFC 6455
    /// §4.4).
    Version,
    /// A handshake with a missing or malformed part: 400 (RFC 6455 §4.2.1).
    Malformed(&'static str),
}

/// RFC 9110 §15.5.22: a 426 MUST carry `Upgrade`; §7.8: whoever sends `Upgrade` MUST send
/// the `upgrade` connection option with it.
const UPGRADE_REQUIRED: &[(&str, &str)] = &[("Upgrade", "websocket"), ("Connection", "Upgrade")];
/// RFC 6455 §4.4: the versions the server speaks, beside what every 426 carries.
const VERSION_REQUIRED: &[(&str, &str)] =
    &[("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", VERSION)];

impl UpgradeRefusal {
    /// The response status code: 400 or 426.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            UpgradeRefusal::NotAnUpgrade(_) | UpgradeRefusal::Version => 426,
            UpgradeRefusal::Malformed(_) => 400,
        }
    }

    /// One line of text for the response body.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match *self {
            UpgradeRefusal::NotAnUpgrade(reason) | UpgradeRefusal::Malformed(reason) => reason,
            UpgradeRefusal::Version => "upgrade required: only WebSocket version 13 is served",
        }
    }

    /// The header fields the answer must carry besides the usual ones, in the form
    /// `Response::with_headers` takes. A 400 needs none.
    #[must_use]
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            UpgradeRefusal::NotAnUpgrade(_) => UPGRADE_REQUIRED,
            UpgradeRefusal::Version => VERSION_REQUIRED,
            UpgradeRefusal::Malformed(_) => &[],
        }
    }
}

/// Whether `req` is a valid WebSocket opening handshake (RFC 6455 §4.2.1). Returns its
/// `Sec-WebSocket-Key`, from which [`accept_key`] computes the answer's.
///
/// The parts are judged in this order, so that each refusal tells the client what it can act
/// on first: whether it asked for WebSocket at all, then the method and the connection option,
/// then the version (a client of another version may not even send a key of this shape), then
/// the key.
///
/// # Errors
///
/// The first part that is missing or wrong, as an [`UpgradeRefusal`].
pub fn check_upgrade<'r>(req: &Request<'r>) -> Result<&'r str, UpgradeRefusal> {
    if req.version == Version::Http10 {
        // RFC 9110 §7.8: a server MUST ignore Upgrade in an HTTP/1.0 request.
        return Err(UpgradeRefusal::NotAnUpgrade("upgrade required: WebSocket needs HTTP/1.1"));
    }
    if !req.upgrade_websocket {
        return Err(UpgradeRefusal::NotAnUpgrade("upgrade required: this resource speaks WebSocket only"));
    }
    if req.method != Method::Get {
        return Err(UpgradeRefusal::Malformed("bad request: a WebSocket handshake is a GET"));
    }
    if !req.connection_upgrade {
        return Err(UpgradeRefusal::Malformed("bad request: Connection lacks the upgrade option"));
    }
    if req.websocket_version != Some(VERSION) {
        return Err(UpgradeRefusal::Version);
    }
    let Some(key) = req.websocket_key else {
        return Err(UpgradeRefusal::Malformed("bad request: missing Sec-WebSocket-Key"));
    };
    if !is_nonce(key) {
        return Err(UpgradeRefusal::Malformed("bad request: Sec-WebSocket-Key is not 16 bytes in base64"));
    }
    Ok(key)
}

/// Whether `key` is the base64 of exactly 16 bytes: 24 characters of the standard alphabet,
/// `==` at the end, and the unused bits zero (the one encoding a conforming encoder produces).
fn is_nonce(key: &str) -> bool {
    // decode_slice wants room for its estimate, 18 bytes for 24 characters.
    let mut nonce = [0u8; NONCE_BYTES + 2];
    key.len() == 24 && STANDARD.decode_slice(key, &mut nonce) == Ok(NONCE_BYTES)
}

/// The `Sec-WebSocket-Accept` value for a client's key: base64(SHA-1(key + GUID)), 28
/// characters (RFC 6455 §4.2.2, item 5.4).
#[must_use]
pub fn accept_key(key: &str) -> String {
    let digest = Sha1::new().chain_update(key).chain_update(KEY_GUID).finalize();
    STANDARD.encode(digest)
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
