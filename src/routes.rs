//! Which endpoint a request is for. Routing is a pure function of method and path, so the table
//! is tested without a server; answering a route is the server's job.

use crate::http::request::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /plaintext`: the TechEmpower plaintext answer, the benchmark endpoint.
    Plaintext,
    /// `GET /stats`: the cost view as JSON.
    Stats,
    /// `GET /metrics`: the cost view in Prometheus text format.
    Metrics,
    NotFound,
    /// The path exists but not for this method; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
}

const GET_OR_HEAD: &str = "GET, HEAD";

pub fn route(method: Method, path: &str) -> Route {
    let found = match path {
        "/plaintext" => Route::Plaintext,
        "/stats" => Route::Stats,
        "/metrics" => Route::Metrics,
        _ => return Route::NotFound,
    };
    match method {
        Method::Get | Method::Head => found,
        _ => Route::MethodNotAllowed(GET_OR_HEAD),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table() {
        let cases = [
            (Method::Get, "/plaintext", Route::Plaintext),
            (Method::Head, "/plaintext", Route::Plaintext),
            (Method::Get, "/stats", Route::Stats),
            (Method::Get, "/metrics", Route::Metrics),
            (Method::Post, "/plaintext", Route::MethodNotAllowed(GET_OR_HEAD)),
            (Method::Other("DELETE"), "/stats", Route::MethodNotAllowed(GET_OR_HEAD)),
            (Method::Get, "/", Route::NotFound),
            (Method::Get, "/plaintext/", Route::NotFound),
            (Method::Post, "/nowhere", Route::NotFound),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(method, path), expected, "{method:?} {path}");
        }
    }
}
