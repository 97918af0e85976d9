//! Which endpoint a request is for. Routing is a pure function of method and path, so the table
//! is tested without a server; answering a route is the server's job.

use crate::http::request::Method;

/// An endpoint a request may be answered by.
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
    /// `GET /poll?topic=A&topic=B`: one long poll on several topics (the query names them).
    PollMany,
    /// `GET /events/{topic}`: an event stream (Server-Sent Events). `/events/$stats` streams
    /// the cost view once a second, for the live page.
    Events(&'a str),
    /// `GET /events?topic=A&topic=B`: one event stream of several topics.
    EventsMany,
    /// `GET /`: the live page.
    Live,
    /// `GET /ws`: a WebSocket upgrade; its topics are subscribed to in messages.
    WebSocket,
    /// `OPTIONS` on an endpoint, or `OPTIONS *` on the server: `204` with this `Allow` header.
    Options(AllowHeader),
}

impl Route<'_> {
    /// A poll or a stream: what a page of another origin may read (CORS), refusals included.
    pub fn subscribes(self) -> bool {
        matches!(self, Route::Poll(_) | Route::PollMany | Route::Events(_) | Route::EventsMany)
    }
}

/// Why no endpoint answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    NotFound,
    /// The path exists but not for this method: `405` with this `Allow` header.
    MethodNotAllowed(AllowHeader),
}

/// An `Allow` header, ready to be a response's extra headers.
pub type AllowHeader = &'static [(&'static str, &'static str)];

const GET_OR_HEAD: AllowHeader = &[("Allow", "GET, HEAD, OPTIONS")];
const POST: AllowHeader = &[("Allow", "POST, OPTIONS")];
const GET: AllowHeader = &[("Allow", "GET, OPTIONS")];
/// What `OPTIONS *` answers: every method some endpoint takes.
const ANY: AllowHeader = &[("Allow", "GET, HEAD, POST, OPTIONS")];

/// The methods an endpoint answers (and `OPTIONS` on every one).
#[derive(Debug, Clone, Copy)]
enum Methods {
    GetOrHead,
    /// An upgrade has no `HEAD`: nothing about it could be answered without switching.
    Get,
    Post,
}

impl Methods {
    fn allow(self, method: Method) -> bool {
        match self {
            Methods::GetOrHead => matches!(method, Method::Get | Method::Head),
            Methods::Get => method == Method::Get,
            Methods::Post => method == Method::Post,
        }
    }

    fn header(self) -> AllowHeader {
        match self {
            Methods::GetOrHead => GET_OR_HEAD,
            Methods::Get => GET,
            Methods::Post => POST,
        }
    }
}

/// The topic name is returned as written; whether it is a valid name is the topic table's
/// rule (`pubsub::valid_topic_name`), answered 400 there. The asterisk-form target `*` reaches
/// here only with `OPTIONS` (the parser refuses it with any other method).
pub fn route<'a>(method: Method, path: &'a str) -> Result<Route<'a>, NoRoute> {
    let (found, methods) = if let Some(topic) = path.strip_prefix("/publish/") {
        (Route::Publish(topic), Methods::Post)
    } else if let Some(topic) = path.strip_prefix("/poll/") {
        (Route::Poll(topic), Methods::GetOrHead)
    } else if let Some(topic) = path.strip_prefix("/events/") {
        (Route::Events(topic), Methods::GetOrHead)
    } else {
        match path {
            "/" => (Route::Live, Methods::GetOrHead),
            "/plaintext" => (Route::Plaintext, Methods::GetOrHead),
            "/stats" => (Route::Stats, Methods::GetOrHead),
            "/metrics" => (Route::Metrics, Methods::GetOrHead),
            "/poll" => (Route::PollMany, Methods::GetOrHead),
            "/events" => (Route::EventsMany, Methods::GetOrHead),
            "/ws" => (Route::WebSocket, Methods::Get),
            "*" if method == Method::Options => return Ok(Route::Options(ANY)),
            _ => return Err(NoRoute::NotFound),
        }
    };
    if method == Method::Options {
        Ok(Route::Options(methods.header()))
    } else if methods.allow(method) {
        Ok(found)
    } else {
        Err(NoRoute::MethodNotAllowed(methods.header()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_table() {
        let cases = [
            (Method::Get, "/plaintext", Ok(Route::Plaintext)),
            (Method::Head, "/plaintext", Ok(Route::Plaintext)),
            (Method::Get, "/stats", Ok(Route::Stats)),
            (Method::Get, "/metrics", Ok(Route::Metrics)),
            (Method::Post, "/publish/news", Ok(Route::Publish("news"))),
            (Method::Get, "/poll/news", Ok(Route::Poll("news"))),
            (Method::Head, "/poll/news", Ok(Route::Poll("news"))),
            (Method::Get, "/poll/", Ok(Route::Poll(""))),
            (Method::Options, "/poll/news", Ok(Route::Options(GET_OR_HEAD))),
            (Method::Options, "/publish/news", Ok(Route::Options(POST))),
            (Method::Options, "/stats", Ok(Route::Options(GET_OR_HEAD))),
            (Method::Options, "*", Ok(Route::Options(ANY))),
            (Method::Get, "/publish/news", Err(NoRoute::MethodNotAllowed(POST))),
            (Method::Post, "/poll/news", Err(NoRoute::MethodNotAllowed(GET_OR_HEAD))),
            (Method::Post, "/plaintext", Err(NoRoute::MethodNotAllowed(GET_OR_HEAD))),
            (Method::Other("DELETE"), "/stats", Err(NoRoute::MethodNotAllowed(GET_OR_HEAD))),
            (Method::Get, "/", Ok(Route::Live)),
            (Method::Get, "/events/news", Ok(Route::Events("news"))),
            (Method::Get, "/events/$stats", Ok(Route::Events("$stats"))),
            (Method::Post, "/events/news", Err(NoRoute::MethodNotAllowed(GET_OR_HEAD))),
            (Method::Get, "/index.html", Err(NoRoute::NotFound)),
            (Method::Get, "*", Err(NoRoute::NotFound)),
            (Method::Options, "/nowhere", Err(NoRoute::NotFound)),
            (Method::Get, "/plaintext/", Err(NoRoute::NotFound)),
            (Method::Get, "/poll", Ok(Route::PollMany)),
            (Method::Head, "/poll", Ok(Route::PollMany)),
            (Method::Get, "/events", Ok(Route::EventsMany)),
            (Method::Get, "/ws", Ok(Route::WebSocket)),
            (Method::Head, "/ws", Err(NoRoute::MethodNotAllowed(GET))),
            (Method::Options, "/ws", Ok(Route::Options(GET))),
            (Method::Options, "/events", Ok(Route::Options(GET_OR_HEAD))),
            (Method::Post, "/poll", Err(NoRoute::MethodNotAllowed(GET_OR_HEAD))),
            (Method::Get, "/poll/a/b", Ok(Route::Poll("a/b"))),
            (Method::Get, "/polls", Err(NoRoute::NotFound)),
            (Method::Post, "/nowhere", Err(NoRoute::NotFound)),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(method, path), expected, "{method:?} {path}");
        }
    }
}
