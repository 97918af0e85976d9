//! What `http::request::parse_progress`, the parser as the server calls it, costs per request,
//! for the shapes of request the server meets: `cargo bench --bench parse`. Throughput is
//! reported in requests, so criterion's "elem/s" is requests per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tether::http::request::{parse_progress, Limits, Progress};

/// What wrk sends.
const MINIMAL_GET: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\n\r\n";

/// What a browser sends: 12 header fields, about 600 bytes.
const BROWSER_GET: &[u8] = b"GET /static/js/app.3f9a1c.js?v=42 HTTP/1.1\r\n\
Host: www.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Accept: */*\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Referer: https://www.example.com/dashboard/overview?tab=activity\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en-US;q=0.9,en;q=0.8\r\n\
Cookie: session=7f3c9a1e5b2d4c8f9e0a1b2c3d4e5f60; theme=dark\r\n\r\n";

fn post_content_length() -> Vec<u8> {
    let head = b"POST /api/items HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n";
    [&head[..], &[b'x'; 1024]].concat()
}

fn post_chunked() -> Vec<u8> {
    let mut input = b"POST /api/items HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        input.extend_from_slice(b"100\r\n");
        input.extend_from_slice(&[b'x'; 256]);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b"0\r\n\r\n");
    input
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse");

    group.throughput(Throughput::Elements(1));
    let single = [
        ("minimal_get", MINIMAL_GET.to_vec()),
        ("browser_get", BROWSER_GET.to_vec()),
        ("post_1k_content_length", post_content_length()),
        ("post_1k_chunked_4", post_chunked()),
    ];
    for (name, input) in &single {
        // Measure the success path only.
        assert!(matches!(parse_progress(input, &limits), Ok(Progress::Complete(r)) if r.len == input.len()));
        group.bench_function(*name, |b| b.iter(|| parse_progress(black_box(input), &limits)));
    }

    // The server drops `len` bytes and parses again, as it does for pipelined requests.
    let pipelined = MINIMAL_GET.repeat(16);
    group.throughput(Throughput::Elements(16));
    group.bench_function("pipelined_16_minimal_gets", |b| {
        b.iter(|| {
            let mut rest = black_box(&pipelined[..]);
            while let Ok(Progress::Complete(request)) = parse_progress(rest, &limits) {
                rest = &rest[request.len..];
            }
            assert!(rest.is_empty());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
