//! Every token case, on the clock given: no sleep, no wall time.

use super::*;

const SECRET: &[u8] = b"a test secret of thirty-two bytes or more";
/// 2026-11-29T00:00:00Z, in milliseconds.
const NOW_MS: u64 = 1_795_910_400_000;
const NOW: u64 = NOW_MS / 1000;

fn key() -> TokenKey {
    TokenKey::new(SECRET).unwrap()
}

fn claims(exp: u64) -> Claims {
    Claims {
        exp,
        subscribe: vec!["news".into(), "chat.*".into()],
        publish: vec!["chat.room1".into()],
        ..Claims::default()
    }
}

#[test]
fn a_good_token_gives_its_claims() {
    let token = key().mint(&claims(NOW + 60)).unwrap();
    assert_eq!(key().verify(&token, NOW_MS), Ok(claims(NOW + 60)));
}

#[test]
fn a_token_is_good_until_exp_and_from_nbf() {
    let key = key();
    let token = key.mint(&claims(NOW + 60)).unwrap();
    assert!(key.verify(&token, NOW_MS + 59_999).is_ok());
    assert_eq!(key.verify(&token, NOW_MS + 60_000), Err(Refusal::Expired), "exp itself is past");
    assert_eq!(key.verify(&token, NOW_MS + 3_600_000), Err(Refusal::Expired));
    let later = key.mint(&Claims { nbf: Some(NOW + 10), ..claims(NOW + 60) }).unwrap();
    assert_eq!(key.verify(&later, NOW_MS + 9_999), Err(Refusal::NotYetValid));
    assert!(key.verify(&later, NOW_MS + 10_000).is_ok(), "nbf itself is valid");
}

#[test]
fn a_token_of_another_secret_is_badly_signed() {
    let other = TokenKey::new(b"another secret, thirty-two bytes long").unwrap();
    let token = other.mint(&claims(NOW + 60)).unwrap();
    assert_eq!(key().verify(&token, NOW_MS), Err(Refusal::BadSignature));
    // The same claims with one character of the signature changed.
    let mut forged = key().mint(&claims(NOW + 60)).unwrap();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(matches!(key().verify(&forged, NOW_MS), Err(Refusal::BadSignature | Refusal::Malformed)));
    // Claims changed under a good signature: an admin claim added.
    let good = key().mint(&claims(NOW + 60)).unwrap();
    let admin = key().mint(&Claims { admin: true, ..claims(NOW + 60) }).unwrap();
    let (head, rest) = good.split_once('.').unwrap();
    let signature = rest.rsplit_once('.').unwrap().1;
    let payload = admin.split('.').nth(1).unwrap();
    assert_eq!(key().verify(&format!("{head}.{payload}.{signature}"), NOW_MS), Err(Refusal::BadSignature));
}

#[test]
fn only_hs256_is_taken() {
    // `{"alg":"none","typ":"JWT"}.{"exp":4000000000,"subscribe":["*"],"admin":true}.` unsigned.
    let none =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjQwMDAwMDAwMDAsInN1YnNjcmliZSI6WyIqIl0sImFkbWluIjp0cnVlfQ.";
    assert_eq!(key().verify(none, NOW_MS), Err(Refusal::Malformed));
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims(NOW + 60),
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap();
    assert_eq!(key().verify(&hs512, NOW_MS), Err(Refusal::Algorithm));
}

#[test]
fn malformed_tokens() {
    let good = key().mint(&claims(NOW + 60)).unwrap();
    let header_only = good.split('.').next().unwrap();
    let without_signature = good.rsplit_once('.').unwrap().0;
    for bad in ["", "x", "a.b", "a.b.c", "...", header_only, without_signature, &format!("{good}.x"), "é.é.é"] {
        assert_eq!(key().verify(bad, NOW_MS), Err(Refusal::Malformed), "{bad:?}");
    }
    // Signed, but with no `exp`: a token that never expires is not taken.
    #[derive(Serialize)]
    struct NoExp {
        subscribe: Vec<String>,
    }
    let forever = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &NoExp { subscribe: vec!["*".into()] },
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap();
    assert_eq!(key().verify(&forever, NOW_MS), Err(Refusal::Malformed));
}

#[test]
fn a_huge_token_is_only_refused() {
    let huge = format!("{}.{}.{}", "e".repeat(40_000), "e".repeat(40_000), "e".repeat(100));
    assert_eq!(key().verify(&huge, NOW_MS), Err(Refusal::Malformed));
}

#[test]
fn claims_cover_names_and_prefixes() {
    let claims = claims(NOW + 60);
    assert!(claims.allows(Action::Subscribe("news")));
    assert!(claims.allows(Action::Subscribe("chat.room1")));
    assert!(claims.allows(Action::Subscribe("chat.")), "a prefix covers itself");
    assert!(!claims.allows(Action::Subscribe("chat")));
    assert!(!claims.allows(Action::Subscribe("newsroom")), "a name is not a prefix");
    assert!(!claims.allows(Action::Subscribe("sport")));
    assert!(claims.allows(Action::Publish("chat.room1")));
    assert!(!claims.allows(Action::Publish("news")), "subscribe does not give publish");
    assert!(!claims.allows(Action::Admin));
    let all = Claims { subscribe: vec!["*".into()], admin: true, ..Claims::default() };
    assert!(all.allows(Action::Subscribe("anything")) && all.allows(Action::Admin));
    assert!(!all.allows(Action::Publish("anything")));
}

#[test]
fn a_token_comes_from_the_header_or_the_query() {
    assert_eq!(bearer(Some("Bearer abc"), ""), Ok(Some("abc")));
    assert_eq!(bearer(Some("bearer  abc"), "x=1"), Ok(Some("abc")), "the scheme is case-insensitive");
    assert_eq!(bearer(None, "cursor=3&token=abc&x=1"), Ok(Some("abc")));
    assert_eq!(bearer(Some("Basic dXNlcjpwYXNz"), ""), Ok(None), "another scheme carries no bearer token");
    assert_eq!(bearer(None, "mytoken=abc"), Ok(None));
    assert_eq!(bearer(None, ""), Ok(None));
    assert_eq!(bearer(Some("Bearer abc"), "token=abc"), Err(Refusal::TwoTokens));
}

#[test]
fn the_secret_is_long_enough_and_never_shown() {
    let error = TokenKey::new(b"short secret").unwrap_err();
    assert!(error.contains("32 bytes") && !error.contains("short secret"), "{error}");
    assert_eq!(format!("{:?}", key()), "TokenKey(hidden)");
    for refusal in [Refusal::Missing, Refusal::Malformed, Refusal::BadSignature, Refusal::Expired] {
        assert!(!refusal.reason().contains("secret"), "{refusal:?}");
    }
}

#[test]
fn a_remembered_token_still_expires_and_its_forgeries_are_refused() {
    let mut tokens = VerifiedTokens::new(key());
    let token = key().mint(&claims(NOW + 60)).unwrap();
    assert_eq!(tokens.check(&token, NOW_MS), Ok(&claims(NOW + 60)));
    assert_eq!(tokens.check(&token, NOW_MS + 1), Ok(&claims(NOW + 60)), "recognised");
    assert_eq!(tokens.remembered(), 1);
    assert_eq!(tokens.check(&token, NOW_MS + 60_000), Err(Refusal::Expired), "times are checked every time");
    // The remembered token's claims under another signature, and with its last character cut.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", signature.chars().rev().collect::<String>());
    assert!(tokens.check(&forged, NOW_MS).is_err());
    assert!(tokens.check(&token[..token.len() - 1], NOW_MS).is_err());
    assert_eq!(tokens.remembered(), 1, "bad tokens are not remembered");
}

#[test]
fn remembered_tokens_are_bounded() {
    let mut tokens = VerifiedTokens::new(key());
    // Half of them expire a second from now, half in an hour.
    for i in 0..MAX_REMEMBERED as u64 {
        let token = key().mint(&Claims { nbf: Some(i), ..claims(NOW + 1 + (i % 2) * 3600) }).unwrap();
        assert!(tokens.check(&token, NOW_MS).is_ok());
    }
    assert_eq!(tokens.remembered(), MAX_REMEMBERED);
    let later = NOW_MS + 2_000;
    let one_more = key().mint(&claims(NOW + 60)).unwrap();
    assert!(tokens.check(&one_more, later).is_ok());
    assert_eq!(tokens.remembered(), MAX_REMEMBERED / 2 + 1, "the expired ones went first");
}
