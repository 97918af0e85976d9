//! No cross-site writes (docs/browser.md): a publish that a page of another site makes the
//! browser send, a "simple" POST without a preflight, is refused 403 and stores nothing; the
//! server's own pages, allowed origins, and clients that are not pages (no `Origin`) publish.

mod common;

use common::{num, Server};

fn publish_from(server: &Server, origin: Option<&str>, host: &str) -> common::Response {
    let mut client = server.connect();
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    client.send(
        format!("POST /publish/t HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi")
            .as_bytes(),
    );
    client.read_response()
}

#[test]
fn a_page_of_another_site_cannot_publish_and_nothing_is_stored() {
    let server = Server::start(&["--allow-origin", "http://app.test"]);
    let own_host = server.addr.to_string();
    let refused = publish_from(&server, Some("http://evil.example"), &own_host);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.text(), "a page of another origin may not publish here\n");
    let stats = server.stats();
    assert_eq!((num(&stats, "topics.count"), num(&stats, "topics.messages")), (0, 0), "nothing stored: {stats}");
    let refused = publish_from(&server, Some("null"), &own_host);
    assert_eq!(refused.status, 403, "a sandboxed page or a file: {refused:?}");

    let own = format!("http://{own_host}");
    for (origin, what) in [
        (Some(own.as_str()), "the server's own page"),
        (Some("http://app.test"), "an allowed origin"),
        (None, "not a page"),
    ] {
        assert_eq!(publish_from(&server, origin, &own_host).status, 200, "{what}");
    }
    assert_eq!(num(&server.stats(), "topics.messages"), 3);
}

#[test]
fn with_any_origin_allowed_every_page_may_publish() {
    let server = Server::start(&["--allow-origin", "*"]);
    assert_eq!(publish_from(&server, Some("http://anyone.test"), "tether.test").status, 200);
}
