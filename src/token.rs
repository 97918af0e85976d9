//! Bearer tokens: who may publish, subscribe and read the cost view (docs/security.md).
//!
//! A token is a JWT signed with HS256 under the server's secret (`--jwt-secret`). Its claims:
//! `exp` (required), `nbf` (optional), `subscribe` and `publish` (lists of topic names, or
//! prefixes ending in `*`), `admin` (the cost view). The decoding and the HMAC are the
//! `jsonwebtoken` crate's, which compares signatures in constant time; what is ours is the rule
//! of what a token covers, the clock, which is the reactor's (`now`), not the crate's, so a
//! deadline, an answer and a check all agree on the time, and the memory of tokens already
//! verified (`VerifiedTokens`), so that a client sending the same token with every request pays
//! for its signature once.
//!
//! Invariants:
//! - Only HS256 is accepted: a token whose header names another algorithm, or `none`, is refused
//!   before its signature is looked at.
//! - The secret is never printed: `TokenKey`'s `Debug` hides it, and no refusal carries it or
//!   the token.
//! - A token is valid from `nbf` (inclusive) until `exp` (exclusive), to the millisecond, whether
//!   its signature was checked now or remembered.
//! - Only tokens whose signature was good are remembered, at most `MAX_REMEMBERED`, and one is
//!   recognised by its whole text compared in constant time.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The shortest secret taken: HS256 wants a key at least as long as its hash (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// What a token's holder may do, as its claims say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before this, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Topics it may poll or stream: names, or prefixes ending in `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    /// Topics it may publish to, written the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// It may read `/stats`, `/metrics` and `/events/$stats`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

impl Claims {
    /// Whether they are good at `now_unix_ms`: from `nbf`, before `exp`.
    fn valid_at(&self, now_unix_ms: u64) -> Result<(), Refusal> {
        if now_unix_ms >= self.exp.saturating_mul(1000) {
            return Err(Refusal::Expired);
        }
        if self.nbf.is_some_and(|nbf| now_unix_ms < nbf.saturating_mul(1000)) {
            return Err(Refusal::NotYetValid);
        }
        Ok(())
    }
}

/// What a request asks a token for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Subscribe(&'a str),
    Publish(&'a str),
    /// The cost view.
    Admin,
}

impl Claims {
    pub fn allows(&self, action: Action) -> bool {
        match action {
            Action::Subscribe(topic) => self.subscribe.iter().any(|pattern| covers(pattern, topic)),
            Action::Publish(topic) => self.publish.iter().any(|pattern| covers(pattern, topic)),
            Action::Admin => self.admin,
        }
    }
}

/// Whether a claim's pattern names a topic: the name itself, or a prefix of it followed by `*`
/// (`chat.*` covers `chat.room1`; `*` covers every topic).
fn covers(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

/// Why a request's token does not authenticate it: each is a 401, but for `TwoTokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token: no `Authorization: Bearer`, no `token=`.
    Missing,
    /// Not three base64url parts of JSON, claims of the wrong shape (no `exp`, say), or a header
    /// naming an algorithm that is none at all (`"alg":"none"` does not parse as one).
    Malformed,
    /// Signed with another algorithm than HS256.
    Algorithm,
    /// The signature is not the secret's.
    BadSignature,
    Expired,
    /// Its `nbf` has not come yet.
    NotYetValid,
    /// Both a header and a query carry a token (RFC 6750 §2: a client uses one method): 400.
    TwoTokens,
}

impl Refusal {
    /// The line a refusal is answered with: it names the fault, never the token.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN\n",
            Refusal::Malformed => "the token is malformed\n",
            Refusal::Algorithm => "the token is not signed with HS256\n",
            Refusal::BadSignature => "the token's signature is not valid\n",
            Refusal::Expired => "the token has expired\n",
            Refusal::NotYetValid => "the token is not valid yet\n",
            Refusal::TwoTokens => "give the token once: in the Authorization header or in the query, not both\n",
        }
    }
}

/// The token a request carries, if any: `Authorization: Bearer TOKEN` or `token=TOKEN` in the
/// query (an `EventSource` and a WebSocket cannot set headers). An `Authorization` header of
/// another scheme carries no bearer token.
pub fn bearer<'a>(authorization: Option<&'a str>, query: &'a str) -> Result<Option<&'a str>, Refusal> {
    let header = authorization.and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches(' '))
    });
    let in_query = query.split('&').find_map(|pair| pair.strip_prefix("token="));
    match (header, in_query) {
        (Some(_), Some(_)) => Err(Refusal::TwoTokens),
        (token, None) | (None, token) => Ok(token),
    }
}

/// The server's secret, ready to check tokens and to mint them.
#[derive(Clone)]
pub struct TokenKey {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("TokenKey(hidden)")
    }
}

impl TokenKey {
    /// # Errors
    /// A secret shorter than `MIN_SECRET_BYTES`; the message does not repeat it.
    pub fn new(secret: &[u8]) -> Result<TokenKey, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!("the JWT secret must be at least {MIN_SECRET_BYTES} bytes (it is {})", secret.len()));
        }
        let unusable = |e: jsonwebtoken::errors::Error| format!("the JWT secret cannot be used: {e}");
        let mut validation = Validation::new(Algorithm::HS256);
        // Times are checked against the reactor's clock in `verify`; the crate only makes sure
        // `exp` is there.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
        Ok(TokenKey {
            decoding: DecodingKey::from_secret(secret).map_err(unusable)?,
            encoding: EncodingKey::from_secret(secret).map_err(unusable)?,
            validation,
        })
    }

    /// The claims of a token good at `now_unix_ms`.
    ///
    /// # Errors
    /// Why it is not.
    pub fn verify(&self, token: &str, now_unix_ms: u64) -> Result<Claims, Refusal> {
        let claims = self.signed_claims(token)?;
        claims.valid_at(now_unix_ms)?;
        Ok(claims)
    }

    /// The claims of a token signed with this secret, whatever their times.
    fn signed_claims(&self, token: &str) -> Result<Claims, Refusal> {
        let decoded = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation);
        decoded.map(|data| data.claims).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => Refusal::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                Refusal::Algorithm
            }
            _ => Refusal::Malformed,
        })
    }

    /// A token for these claims (for `tether token`, and tests).
    ///
    /// # Errors
    /// Only if the crate cannot sign, which with an HMAC key it always can.
    pub fn mint(&self, claims: &Claims) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| format!("cannot sign the token: {e}"))
    }
}

/// The most tokens remembered. Each costs its text and its claims, a few hundred bytes.
pub const MAX_REMEMBERED: usize = 1024;

/// The server's secret and the tokens it has verified. A client sends the same token with every
/// request of a keep-alive connection, every poll and every reconnect; its signature is checked
/// the first time, and after that the token is recognised by its text: the same bytes were
/// signed the same way. Its times are checked every time.
///
/// A token is found by a keyed hash of its text and then compared whole in constant time, so
/// that how long a lookup takes says nothing about how much of a forged token matched a good
/// one. Only good signatures are remembered: a flood of bad tokens costs a check each and
/// fills nothing. When `MAX_REMEMBERED` are kept, the expired ones are forgotten, and if none
/// had expired, all of them.
#[derive(Debug)]
pub struct VerifiedTokens {
    key: TokenKey,
    hasher: RandomState,
    /// By the keyed hash of their text; two tokens of one hash keep the later.
    remembered: HashMap<u64, Remembered>,
}

#[derive(Debug)]
struct Remembered {
    token: Box<str>,
    claims: Claims,
}

impl VerifiedTokens {
    pub fn new(key: TokenKey) -> VerifiedTokens {
        VerifiedTokens { key, hasher: RandomState::new(), remembered: HashMap::new() }
    }

    /// The claims of a token good at `now_unix_ms`, as `TokenKey::verify` would say, its
    /// signature checked only if it was not seen before.
    ///
    /// # Errors
    /// Why it is not good.
    pub fn check(&mut self, token: &str, now_unix_ms: u64) -> Result<&Claims, Refusal> {
        let hash = self.hasher.hash_one(token);
        let seen = self.remembered.get(&hash).is_some_and(|r| bool::from(r.token.as_bytes().ct_eq(token.as_bytes())));
        if !seen {
            let claims = self.key.signed_claims(token)?;
            if self.remembered.len() >= MAX_REMEMBERED {
                self.remembered.retain(|_, r| r.claims.valid_at(now_unix_ms).is_ok());
                if self.remembered.len() >= MAX_REMEMBERED {
                    self.remembered.clear();
                }
            }
            self.remembered.insert(hash, Remembered { token: token.into(), claims });
        }
        let claims = &self.remembered[&hash].claims;
        claims.valid_at(now_unix_ms)?;
        Ok(claims)
    }

    pub fn remembered(&self) -> usize {
        self.remembered.len()
    }
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
