//! What a WebSocket's messages do in the service (docs/transports.md): the upgrade's checks, then
//! `{"subscribe":T}` (with a cursor, as a poll), `{"unsubscribe":T}` and `{"publish":T,"data":D}`,
//! each answered with `{"error":...}` when it cannot be done, the socket staying open.
//!
//! A socket waits like a stream of several topics: its subscription (`HoldKey::many`) starts
//! with no topic, and its messages add and remove them; its news is written as frames by the
//! same feed as a stream's events (`Wire::WebSocket`).
//!
//! Invariants:
//! - A page may open a socket only from the server's own origin or one allowed: browsers apply
//!   no CORS to WebSockets, so without this check any site could read topics (and publish) in
//!   its visitors' name. Its messages are then checked only against its token.
//! - With tokens, every `subscribe` and `publish` is checked against the claims of the token the
//!   socket was opened with; the socket closes when that token expires.
//! - `sockets_open` counts the sockets from the upgrade to their end, and `--max-held` counts
//!   them with polls and streams.

use serde::Deserialize;

use super::subscription_query::TopicStart;
use crate::connection::{EndSecond, Socket};
use crate::http::request::Request;
use crate::http::response::{Response, Status};
use crate::pubsub::{valid_topic_name, Cursor, HoldKey, TopicError};
use crate::server::service::Service;
use crate::timer::Tick;
use crate::token::{Action, Claims};
use crate::ws::{self, frame};

/// A client's message, one JSON object: exactly one of `subscribe`, `unsubscribe`, `publish`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    subscribe: Option<String>,
    unsubscribe: Option<String>,
    publish: Option<String>,
    /// A publish's message.
    data: Option<String>,
    /// A subscribe's start, as a poll's: after this seq, or `from: "oldest"`, else the next one.
    cursor: Option<u64>,
    from: Option<String>,
    /// The epoch the cursor is of: another one makes the first news a `reset`.
    epoch: Option<String>,
}

const NOT_A_MESSAGE: &str =
    r#"a message is {"subscribe":TOPIC}, {"unsubscribe":TOPIC} or {"publish":TOPIC,"data":TEXT}"#;

impl Service {
    /// `GET /ws` on connection `key`: the accept key and the socket, or the refusal (400 or 426
    /// for a bad upgrade, 403 for a page of another origin, 503 at `--max-held`). `claims` and
    /// `until` are its token's, when tokens are on.
    pub(in crate::server) fn open_socket(
        &mut self,
        key: usize,
        req: &Request,
        claims: Option<Claims>,
        until: Tick,
        now: Tick,
    ) -> Result<([u8; 28], Socket), Response<'_>> {
        let client_key = match ws::handshake::check_upgrade(req) {
            Ok(key) => key,
            Err(refusal) => {
                let status = if refusal.status() == 426 { Status::UPGRADE_REQUIRED } else { Status::BAD_REQUEST };
                self.body.clear();
                self.body.push_str(refusal.reason());
                self.body.push('\n');
                return Err(Response::error(status, self.body.as_bytes()).with_headers(refusal.headers()));
            }
        };
        if !self.may_write(req) {
            self.costs.totals.forbidden += 1;
            return Err(Response::error(
                Status::FORBIDDEN,
                b"a page of another origin may not open a WebSocket here\n",
            ));
        }
        self.check_max_held()?;
        let n = self.start_socket_subscription(key).ok_or_else(|| self.too_many_held())?;
        if let Some(claims) = claims {
            self.socket_claims.insert(key, claims);
        }
        self.costs.sockets_open += 1;
        let socket = Socket::new(HoldKey::many(n), now, self.config.sse_heartbeat, EndSecond::at(until));
        let mut accept = [0; 28];
        accept.copy_from_slice(ws::handshake::accept_key(client_key).as_bytes());
        Ok((accept, socket))
    }

    /// One text message of socket `key`, whose subscription is `n`: done, or `{"error":...}`
    /// appended to `out`.
    pub(in crate::server) fn answer_message(&mut self, key: usize, n: u32, text: &str, out: &mut Vec<u8>, now: Tick) {
        if let Err(error) = self.do_message(key, n, text, now) {
            let mut frame = String::from("{\"error\":");
            crate::json::push_string(&mut frame, &error);
            frame.push('}');
            frame::write_text(out, &frame);
        }
    }

    fn do_message(&mut self, key: usize, n: u32, text: &str, now: Tick) -> Result<(), String> {
        let message: ClientMessage = serde_json::from_str(text).map_err(|_| NOT_A_MESSAGE.to_string())?;
        let allowed = |claims: Option<&Claims>, action: Action| claims.is_none_or(|claims| claims.allows(action));
        match message {
            ClientMessage { subscribe: Some(name), unsubscribe: None, publish: None, data: None, .. } => {
                check_name(&name)?;
                if !allowed(self.socket_claims.get(&key), Action::Subscribe(&name)) {
                    return Err(format!("the token does not let its holder subscribe to {name}"));
                }
                let start = match (message.cursor, message.from.as_deref()) {
                    (Some(seq), None) => Cursor::After(seq),
                    (None, Some("oldest")) => Cursor::Oldest,
                    (None, None) => Cursor::Next,
                    _ => return Err(r#"a subscribe starts at a "cursor" or "from":"oldest", not both"#.into()),
                };
                let start = TopicStart { name: &name, start, epoch: message.epoch.as_deref() };
                self.subscribe(key, n, start, now).map_err(str::to_string)
            }
            ClientMessage { unsubscribe: Some(name), subscribe: None, publish: None, data: None, .. }
                if message.cursor.is_none() && message.from.is_none() && message.epoch.is_none() =>
            {
                if !self.unsubscribe(key, n, &name, now) {
                    return Err(format!("not subscribed to {}", shown(&name)));
                }
                Ok(())
            }
            ClientMessage { publish: Some(name), data: Some(data), subscribe: None, unsubscribe: None, .. }
                if message.cursor.is_none() && message.from.is_none() && message.epoch.is_none() =>
            {
                check_name(&name)?;
                if !allowed(self.socket_claims.get(&key), Action::Publish(&name)) {
                    return Err(format!("the token does not let its holder publish to {name}"));
                }
                match self.append_message(key, &name, &data, false, now) {
                    Ok(_) => Ok(()),
                    Err(TopicError::Unavailable) => {
                        Err("the topics' log in Redis cannot be reached, retry later".into())
                    }
                    Err(_) => Err("too many topics".into()),
                }
            }
            _ => Err(NOT_A_MESSAGE.to_string()),
        }
    }
}

/// A topic name as the topic table takes it (`pubsub::valid_topic_name`).
fn check_name(name: &str) -> Result<(), String> {
    if valid_topic_name(name) {
        Ok(())
    } else {
        Err(format!("{} is not a topic name: 1 to 64 characters of A-Z a-z 0-9 . _ -", shown(name)))
    }
}

/// A name from a client, short enough to repeat in an error.
fn shown(name: &str) -> &str {
    match name.char_indices().nth(64) {
        Some((end, _)) => &name[..end],
        None => name,
    }
}
