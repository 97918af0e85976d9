//! Which endpoint a request is for. Routing is a pure function of method and path, so the table
//! is tested without a server; answering a route is the server's job.

use crate::http::request::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /plaintext`: the TechEmpower plaintext answer, the benchmark endpoint.
    Plaintext,
    /// `GET /stats`: the cost view as JSON.
    Stats,
    /// `GET /metrics`: the cost view in Prometheus text format.
    Metrics,
    /// `POST /publish/{topic}`: append the body to the topic and wake its held polls.
    Publish(&'a str),
    /// `GET /poll/{topic}`: a long poll.
    Poll(&'a str),
    NotFound,
    /// The path exists but not for this method; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
}

/// The methods an endpoint answers.
#[derive(Debug, Clone, Copy)]
enum Methods {
    GetOrHead,
    Post,
}

impl Methods {
    fn allow(self, method: Method) -> bool {
        match self {
            Methods::GetOrHead => matches!(method, Method::Get | Method::Head),
            Methods::Post => method == Method::Post,
        }
    }

    /// The `Allow` header of a 405.
    fn header(self) -> &'static str {
        match self {
            Methods::GetOrHead => GET_OR_HEAD,
            Methods::Post => POST,
        }
    }
}

const GET_OR_HEAD: &str = "GET, HEAD";
const POST: &str = "POST";

/// The topic name is returned as written; whether it is a valid name is the topic table's
/// rule (`pubsub::valid_topic_name`), answered 400 there.
pub fn route<'a>(method: Method, path: &'a str) -> Route<'a> {
    let (found, methods) = if let Some(topic) = path.strip_prefix("/publish/") {
        (Route::Publish(topic), Methods::Post)
    } else if let Some(topic) = path.strip_prefix("/poll/") {
        (Route::Poll(topic), Methods::GetOrHead)
    } else {
        match path {
            "/plaintext" => (Route::Plaintext, Methods::GetOrHead),
            "/stats" => (Route::Stats, Methods::GetOrHead),
            "/metrics" => (Route::Metrics, Methods::GetOrHead),
            _ => return Route::NotFound,
        }
    };
    if methods.allow(method) {
        found
    } else {
        Route::MethodNotAllowed(methods.header())
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
            (Method::Post, "/publish/news", Route::Publish("news")),
            (Method::Get, "/poll/news", Route::Poll("news")),
            (Method::Head, "/poll/news", Route::Poll("news")),
            (Method::Get, "/poll/", Route::Poll("")),
            (Method::Get, "/publish/news", Route::MethodNotAllowed(POST)),
            (Method::Post, "/poll/news", Route::MethodNotAllowed(GET_OR_HEAD)),
            (Method::Post, "/plaintext", Route::MethodNotAllowed(GET_OR_HEAD)),
            (Method::Other("DELETE"), "/stats", Route::MethodNotAllowed(GET_OR_HEAD)),
            (Method::Get, "/", Route::NotFound),
            (Method::Get, "/plaintext/", Route::NotFound),
            (Method::Get, "/poll", Route::NotFound),
            (Method::Post, "/nowhere", Route::NotFound),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(method, path), expected, "{method:?} {path}");
        }
    }
}
