//! Where Redis is: `--redis redis://HOST[:PORT][/DB]` parsed into a host, a port and a database
//! number, or refused with the reason.
//!
//! Invariants:
//! - Only what the link does is accepted: plain TCP (`redis://`), a host name, an IPv4 address
//!   or a bracketed IPv6 one, a port (6379 when left out) and a database number (0 when left
//!   out). Everything else is an error that names the part at fault, never ignored: `rediss://`
//!   (the client is built without TLS), `unix://`, a user or password (a URL on the command line
//!   is visible to every local user in `ps`, so tether does not invite a secret there), a query
//!   or a fragment (the client would read options from them).
//! - Parsing is a pure function of the text: no name is resolved here, so a host that does not
//!   resolve yet is a link that stays down and keeps retrying, not a refusal at start.

use std::fmt;

/// The port Redis listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 6379;

/// A parsed `redis://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A name or an address, IPv6 without its brackets.
    pub host: String,
    pub port: u16,
    pub db: u32,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError {
    pub url: String,
    pub reason: &'static str,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--redis {:?}: {} (expected redis://HOST[:PORT][/DB])", self.url, self.reason)
    }
}

impl std::error::Error for UrlError {}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "redis://[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "redis://{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

impl Endpoint {
    /// Parses `redis://HOST[:PORT][/DB]`.
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let refuse = |reason| UrlError { url: url.to_string(), reason };
        let Some(rest) = url.strip_prefix("redis://") else {
            return Err(refuse(if url.starts_with("rediss://") {
                "TLS (rediss://) is not supported"
            } else {
                "the scheme must be redis://"
            }));
        };
        if rest.contains(['?', '#']) {
            return Err(refuse("a query or fragment is not supported"));
        }
        if rest.contains('@') {
            return Err(refuse("a user or password in the URL is not supported"));
        }
        let (authority, db) = match rest.split_once('/') {
            Some((authority, "")) => (authority, 0),
            Some((authority, db)) => {
                (authority, parse_digits(db).ok_or_else(|| refuse("the database must be a number"))?)
            }
            None => (rest, 0),
        };
        let (host, port) = split_host_port(authority).map_err(refuse)?;
        Ok(Endpoint { host: host.to_string(), port, db })
    }
}

/// `HOST[:PORT]` or `[V6][:PORT]`.
fn split_host_port(authority: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or("an IPv6 address needs its closing ]")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("the bracketed host is not an IPv6 address");
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or("only :PORT may follow the host")?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    if !host.contains(':') && !host.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_')) {
        return Err("the host must be a name or an address");
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => parse_digits(port)
            .and_then(|port| u16::try_from(port).ok())
            .filter(|&port| port != 0)
            .ok_or("the port must be a number from 1 to 65535")?,
    };
    Ok((host, port))
}

/// Decimal digits only (no sign, no spaces), as a `u32`.
fn parse_digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_are_refused_with_their_reason() {
        let ok = |host: &str, port, db| Ok::<_, &str>(Endpoint { host: host.into(), port, db });
        let cases: &[(&str, Result<Endpoint, &str>)] = &[
            ("redis://127.0.0.1:6380", ok("127.0.0.1", 6380, 0)),
            ("redis://127.0.0.1:6380/", ok("127.0.0.1", 6380, 0)),
            ("redis://localhost", ok("localhost", 6379, 0)),
            ("redis://cache.internal:7000/3", ok("cache.internal", 7000, 3)),
            ("redis://[::1]:6390/15", ok("::1", 6390, 15)),
            ("redis://[::1]", ok("::1", 6379, 0)),
            ("rediss://127.0.0.1:6380", Err("TLS (rediss://) is not supported")),
            ("http://127.0.0.1:6380", Err("the scheme must be redis://")),
            ("unix:///run/redis.sock", Err("the scheme must be redis://")),
            ("127.0.0.1:6379", Err("the scheme must be redis://")),
            ("", Err("the scheme must be redis://")),
            ("redis://:secret@127.0.0.1:6379", Err("a user or password in the URL is not supported")),
            ("redis://user:secret@host", Err("a user or password in the URL is not supported")),
            ("redis://host:6379/0?protocol=resp3", Err("a query or fragment is not supported")),
            ("redis://host:6379/#insecure", Err("a query or fragment is not supported")),
            ("redis://", Err("the host is missing")),
            ("redis://:6379", Err("the host is missing")),
            ("redis://host:", Err("the port must be a number from 1 to 65535")),
            ("redis://host:0", Err("the port must be a number from 1 to 65535")),
            ("redis://host:65536", Err("the port must be a number from 1 to 65535")),
            ("redis://host:+80", Err("the port must be a number from 1 to 65535")),
            ("redis://host:80:81", Err("the port must be a number from 1 to 65535")),
            ("redis://host:6379/x", Err("the database must be a number")),
            ("redis://host:6379/-1", Err("the database must be a number")),
            ("redis://host:6379/1/2", Err("the database must be a number")),
            ("redis://ho st:6379", Err("the host must be a name or an address")),
            ("redis://[::1", Err("an IPv6 address needs its closing ]")),
            ("redis://[nope]:1", Err("the bracketed host is not an IPv6 address")),
            ("redis://[::1]x", Err("only :PORT may follow the host")),
        ];
        for (url, expected) in cases {
            let got = Endpoint::parse(url).map_err(|e| e.reason);
            assert_eq!(&got, expected, "{url:?}");
        }
    }

    #[test]
    fn an_endpoint_prints_as_a_url_that_parses_back() {
        for url in ["redis://127.0.0.1:6380/2", "redis://[::1]:6379/0", "redis://cache:7000/0"] {
            let endpoint = Endpoint::parse(url).expect("valid");
            assert_eq!(endpoint.to_string(), url);
            assert_eq!(Endpoint::parse(&endpoint.to_string()), Ok(endpoint));
        }
        let error = Endpoint::parse("rediss://x").expect_err("refused");
        assert!(error.to_string().contains("rediss://x") && error.to_string().contains("TLS"), "{error}");
    }
}
