//! Why a request is refused, and the limits that decide some of the refusals: the verdicts
//! that every part of the parser (`request`, `chunked`, `target`) returns, kept apart from all
//! of them so that none imports another for its error type.
//!
//! Invariant: every refusal maps to exactly one status code (`HttpError::status`) and one line
//! of text; a limit's refusal depends only on the limit and the bytes, never on how they were
//! split into reads (`wait_unless`).

use std::fmt;

/// Size limits for one request. Each has its own status code when exceeded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and header section, up to and including the empty line (431).
    pub max_head_bytes: usize,
    /// The request-target (414).
    pub max_uri_bytes: usize,
    /// The body, after chunked decoding (413).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head_bytes: 16 * 1024, max_uri_bytes: 8 * 1024, max_body_bytes: 64 * 1024 }
    }
}

/// Why a request was refused. The server answers [`HttpError::status`] and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The request breaks the grammar or its framing is ambiguous. Holds the whole message.
    BadRequest(&'static str),
    PayloadTooLarge,
    UriTooLong,
    HeaderFieldsTooLarge,
    /// A well-formed request asks for something not implemented. Holds the whole message.
    NotImplemented(&'static str),
    VersionNotSupported,
}

impl HttpError {
    /// The response status code.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::PayloadTooLarge => 413,
            HttpError::UriTooLong => 414,
            HttpError::HeaderFieldsTooLarge => 431,
            HttpError::NotImplemented(_) => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// One line of text for the response body.
    #[must_use]
    pub fn message(&self) -> &'static str {
        match *self {
            HttpError::BadRequest(message) | HttpError::NotImplemented(message) => message,
            HttpError::PayloadTooLarge => "payload too large: the body exceeds the server's limit",
            HttpError::UriTooLong => "URI too long: the request-target exceeds the server's limit",
            HttpError::HeaderFieldsTooLarge => "request header fields too large: the head exceeds the server's limits",
            HttpError::VersionNotSupported => "HTTP version not supported: use HTTP/1.1 or HTTP/1.0",
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for HttpError {}

/// `Ok(None)`, to wait for more bytes, unless `full`: all the bytes that this
/// part of the request may occupy have arrived, so waiting cannot help.
pub(super) fn wait_unless<T>(full: bool, error: HttpError) -> Result<Option<T>, HttpError> {
    if full {
        Err(error)
    } else {
        Ok(None)
    }
}
