//! Which browser origins may read answers across origins (`--allow-origin`), and the grant a
//! request carries until its answer is written (the Fetch standard's CORS protocol).
//!
//! The service says which answers may be shared at all (polls, streams, `OPTIONS`:
//! `response::Cors`); this says with whom, and (the service's `may_write`) which pages of other
//! origins may publish. A request's grant is decided once, from its `Origin`,
//! and is one byte, so that a held poll keeps it without keeping the origin's text: its answer,
//! written later, names the listed origin, or `*` when any origin is allowed.
//!
//! Invariant: an origin is granted only if it is listed exactly as a browser sends it
//! (`scheme://host[:port]`, compared as a string) or `*` is listed.

/// The origins of `--allow-origin`.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    listed: Vec<Box<str>>,
    any: bool,
}

/// What a request's `Origin` was granted: nothing, the listed origin at index `n - 1`, or any
/// origin (`u8::MAX`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grant(u8);

/// Origins that can be listed: a grant must fit in a byte beside `ANY` and "none".
pub const MAX_LISTED_ORIGINS: usize = 254;

impl Grant {
    pub const NONE: Grant = Grant(0);
    const ANY: Grant = Grant(u8::MAX);
}

impl AllowedOrigins {
    /// From `--allow-origin` as validated by the configuration (at most `MAX_LISTED_ORIGINS`).
    pub fn new(origins: &[String]) -> AllowedOrigins {
        AllowedOrigins {
            listed: origins.iter().filter(|o| *o != "*").take(MAX_LISTED_ORIGINS).map(|o| o.as_str().into()).collect(),
            any: origins.iter().any(|o| o == "*"),
        }
    }

    /// The grant for a request's `Origin` header (none without one: a same-origin request, or
    /// not a browser).
    pub fn grant(&self, origin: Option<&str>) -> Grant {
        let Some(origin) = origin else {
            return Grant::NONE;
        };
        match self.listed.iter().position(|listed| **listed == *origin) {
            Some(index) => Grant(index as u8 + 1),
            None if self.any => Grant::ANY,
            None => Grant::NONE,
        }
    }

    /// What `Access-Control-Allow-Origin` says for a grant: the listed origin, or `*`.
    pub fn allowed(&self, grant: Grant) -> Option<&str> {
        match grant {
            Grant::NONE => None,
            Grant::ANY => Some("*"),
            Grant(n) => self.listed.get(usize::from(n) - 1).map(|origin| &**origin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_granted_as_listed_or_as_any() {
        let listed = AllowedOrigins::new(&["http://a.test".into(), "https://b.test:8443".into()]);
        fn grant<'a>(origins: &'a AllowedOrigins, origin: Option<&str>) -> Option<&'a str> {
            origins.allowed(origins.grant(origin))
        }
        assert_eq!(grant(&listed, Some("https://b.test:8443")), Some("https://b.test:8443"));
        assert_eq!(grant(&listed, Some("http://a.test")), Some("http://a.test"));
        assert_eq!(grant(&listed, Some("http://a.test:80")), None, "compared as sent");
        assert_eq!(grant(&listed, Some("http://c.test")), None);
        assert_eq!(grant(&listed, None), None);
        let any = AllowedOrigins::new(&["*".into()]);
        assert_eq!(grant(&any, Some("http://c.test")), Some("*"));
        assert_eq!(grant(&any, None), None, "no Origin, nothing to say");
        let both = AllowedOrigins::new(&["*".into(), "http://a.test".into()]);
        assert_eq!(grant(&both, Some("http://a.test")), Some("http://a.test"));
        assert_eq!(grant(&AllowedOrigins::default(), Some("http://a.test")), None, "none allowed by default");
    }
}
