//! HTTP/1.1 without sockets: `request` turns bytes into requests (or a precise error, `error`), `response`
//! turns answers into bytes, and `date` keeps the `Date` header's text fresh once a second.
//!
//! Nothing in here reads or writes a socket, so every rule is tested with byte strings.

/// A 400 whose message is assembled at compile time.
macro_rules! bad {
    ($why:literal) => {
        $crate::http::error::HttpError::BadRequest(concat!("bad request: ", $why))
    };
}

mod chunked;
pub mod cors;
pub mod date;
pub mod error;
mod grammar;
pub mod request;
pub mod response;
mod target;
