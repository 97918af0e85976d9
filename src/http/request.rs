//! TEMPORARY stand-in until the real parser lands.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: usize,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method<'b> {
    Get,
    Head,
    Post,
    Other(&'b str),
}
#[derive(Debug, PartialEq, Eq)]
pub enum Body<'b> {
    Empty,
    Bytes(&'b [u8]),
    Chunked(Vec<u8>),
}
#[derive(Debug)]
pub struct Request<'b> {
    pub method: Method<'b>,
    pub path: &'b str,
    pub query: &'b str,
    pub version: Version,
    pub close: bool,
    pub keep_alive: bool,
    pub last_event_id: Option<&'b str>,
    pub body: Body<'b>,
    pub len: usize,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    BadRequest(&'static str),
    PayloadTooLarge,
    UriTooLong,
    HeaderFieldsTooLarge,
    NotImplemented(&'static str),
    VersionNotSupported,
}
impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::PayloadTooLarge => 413,
            HttpError::UriTooLong => 414,
            HttpError::HeaderFieldsTooLarge => 431,
            HttpError::NotImplemented(_) => 501,
            HttpError::VersionNotSupported => 505,
        }
    }
    pub fn message(&self) -> &'static str {
        "bad request"
    }
}
pub fn parse<'b>(input: &'b [u8], limits: &Limits) -> Result<Option<Request<'b>>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if input.len() > limits.max_head_bytes {
                return Err(HttpError::HeaderFieldsTooLarge);
            }
            return Ok(None);
        }
        Err(_) => return Err(HttpError::BadRequest("x")),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        m => Method::Other(m),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let version = if req.version == Some(0) { Version::Http10 } else { Version::Http11 };
    let mut close = false;
    let mut keep_alive = false;
    let mut cl = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            let v = std::str::from_utf8(h.value).unwrap_or("").to_ascii_lowercase();
            close |= v.contains("close");
            keep_alive |= v.contains("keep-alive");
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            cl = std::str::from_utf8(h.value).ok().and_then(|v| v.parse().ok()).ok_or(HttpError::BadRequest("cl"))?;
        }
    }
    if input.len() < n + cl {
        return Ok(None);
    }
    Ok(Some(Request {
        method,
        path,
        query,
        version,
        close,
        keep_alive,
        last_event_id: None,
        body: Body::Bytes(&input[n..n + cl]),
        len: n + cl,
    }))
}
