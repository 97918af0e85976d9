//! What checking a bearer token costs per request (`tether::token`), its signature checked and
//! remembered: `cargo bench --bench token`.
//! The baseline, measured in the same run, is parsing the request that carries it: the check
//! is judged against work every request already does. The whole server's figure (CPU per
//! keep-alive poll with and without `--jwt-secret`) is `benches/wrk/tokens.sh`'s.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tether::http::request::{parse_progress, Limits, Progress};
use tether::token::{bearer, Action, Claims, TokenKey, VerifiedTokens};

/// 2026-11-29T00:00:00Z, in milliseconds; the token expires an hour later.
const NOW_MS: u64 = 1_795_910_400_000;

fn bench(c: &mut Criterion) {
    let key = TokenKey::new(b"a benchmark secret of thirty-two bytes or more").expect("a long secret");
    // A typical reader's token: a few topics and a prefix.
    let claims = Claims {
        exp: NOW_MS / 1000 + 3600,
        subscribe: vec!["news".into(), "sport".into(), "chat.*".into()],
        ..Claims::default()
    };
    let token = key.mint(&claims).expect("minted");
    let request = format!(
        "GET /poll/chat.room1?cursor=0 HTTP/1.1\r\nHost: localhost:8080\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let limits = Limits::default();
    assert!(matches!(parse_progress(request.as_bytes(), &limits), Ok(Progress::Complete(_))));

    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_the_request (baseline)", |b| {
        b.iter(|| parse_progress(black_box(request.as_bytes()), &limits))
    });
    let authorization = format!("Bearer {token}");
    group.bench_function("check_the_token", |b| {
        b.iter(|| {
            let token = bearer(Some(black_box(&authorization)), "").ok().flatten().unwrap_or_default();
            key.verify(token, NOW_MS).is_ok_and(|claims| claims.allows(Action::Subscribe("chat.room1")))
        })
    });
    // What the server does: the token's text recognised, its times and its claims checked.
    let mut remembered = VerifiedTokens::new(key.clone());
    group.bench_function("check_a_remembered_token", |b| {
        b.iter(|| {
            let token = bearer(Some(black_box(&authorization)), "").ok().flatten().unwrap_or_default();
            remembered.check(token, NOW_MS).is_ok_and(|claims| claims.allows(Action::Subscribe("chat.room1")))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
