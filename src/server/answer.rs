//! Turning a connection's input into answers: read what the socket has, parse every complete
//! request in order (pipelining), route it, and serialise the answer into the output buffer.
//!
//! Invariant: answers are appended in request order, and nothing after an answer that closes
//! the connection is parsed.

use std::io::ErrorKind;

use log::debug;

use super::poll::{poll_response, topic_error, PollAnswer};
use super::{Server, OUTPUT_CAP};
use crate::buffer::Buffers;
use crate::connection::{self, CloseReason, Conversation, HeldPoll, KeepAliveInput, State};
use crate::http::request::{self, HttpError, Method, Progress, Request, Version};
use crate::http::response::{self, Persistence, Response, Status};
use crate::pubsub::{valid_topic_name, TopicError};
use crate::routes::{self, NoRoute, Route};

/// What answering a request asks of its connection.
enum Outcome {
    /// The answer is written; the connection closes after it if a reason is given.
    Answered(Option<CloseReason>),
    /// Nothing to say yet: hold the connection until a message or the deadline.
    Hold(HeldPoll),
}

impl Server {
    /// Reads what the socket has, answers every complete request in order, writes the
    /// answers, and repeats while backpressure left readable input behind.
    pub(super) fn serve(&mut self, key: usize) {
        loop {
            let answered = self.read_and_answer(key);
            self.write_output(key, answered);
            match self.connections.get(key) {
                Some(conn) if conn.input_ready && matches!(conn.state, State::Reading | State::Idle) => {}
                _ => return,
            }
        }
    }

    /// Writes output queued for a connection outside its own read (the socket became
    /// writable, or a held poll was answered), then takes up the input that waited meanwhile:
    /// readiness left unread, or pipelined requests buffered behind the answer.
    pub(super) fn write_and_resume(&mut self, key: usize, fresh: bool) {
        self.write_output(key, fresh);
        let Some(conn) = self.connections.get(key) else {
            return;
        };
        if conn.input_waiting() && matches!(conn.state, State::Reading | State::Idle) {
            self.serve(key);
        }
    }

    /// Returns whether at least one request was answered (a new request starts a new head
    /// deadline).
    fn read_and_answer(&mut self, key: usize) -> bool {
        let Some(conn) = self.connections.get_mut(key) else {
            return false;
        };
        // A short read means the socket's receive queue was empty when the read returned:
        // anything arriving later, data or FIN, raises a new edge. Not so for readiness whose
        // edge was already consumed: an event that said read-closed (the FIN may sit behind the
        // bytes this read returns), or input left unread for backpressure. Then only the end of
        // the stream or `WouldBlock` says drained.
        let to_the_end = std::mem::take(&mut conn.input_ready);
        let mut buffers = conn.buffers.take().unwrap_or_else(|| self.pool.take());
        loop {
            if buffers.unread_len() >= self.input_cap {
                conn.input_ready = true;
                break;
            }
            match buffers.read_from(&mut conn.stream, self.input_cap) {
                Ok(0) => {
                    conn.read_closed = true;
                    break;
                }
                Ok(_) if buffers.is_full() || to_the_end => {} // maybe more: read again
                Ok(_) => break,                                // a short read drained the socket
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("read failed on {key}: {e}");
                    conn.buffers = Some(buffers);
                    self.close(key, CloseReason::ByClient);
                    return false;
                }
            }
        }
        if conn.state == State::Idle && buffers.unread_len() > 0 {
            self.enter(key, State::Reading, true); // the request's head deadline starts now
        }
        let answered = self.answer_requests(key, &mut buffers);
        self.connections[key].buffers = Some(buffers);
        answered
    }

    /// Parses and answers every complete request in `buffers`, in order (pipelining).
    fn answer_requests(&mut self, key: usize, buffers: &mut Buffers) -> bool {
        let mut answered = false;
        while buffers.unread_len() > 0 {
            let conn = &mut self.connections[key];
            let Conversation::Open { continued } = conn.conversation else {
                // Nothing after a closing answer is parsed (its presence means lingering), and
                // requests behind a held poll wait for its answer, to keep answers in order.
                break;
            };
            if buffers.pending_output().len() >= OUTPUT_CAP {
                conn.input_ready = true; // resumes once the output drains
                break;
            }
            let served_before = conn.served;
            let (input, output) = buffers.split();
            let (len, outcome) = match request::parse_progress(input, &self.limits) {
                Ok(Progress::Waiting { awaits_continue }) if input.len() < self.input_cap => {
                    // Once per request: its body may take many reads to arrive.
                    let Some((method, path)) = awaits_continue.filter(|_| !continued) else {
                        break;
                    };
                    // A head that decides a refusal gets it now: the client then need not
                    // send a body that would only be thrown away.
                    match self.route_by_head(key, method, path) {
                        Err(refusal) => (input.len(), self.answer_before_body(key, method, &refusal, output)),
                        Ok(_) => {
                            output.extend_from_slice(response::CONTINUE);
                            self.connections[key].conversation = Conversation::Open { continued: true };
                            break;
                        }
                    }
                }
                Ok(Progress::Waiting { .. }) => {
                    (input.len(), self.answer_error(HttpError::HeaderFieldsTooLarge, input, output))
                }
                Ok(Progress::Complete(req)) => (req.len, self.answer(key, &req, served_before, output)),
                Err(e) => (input.len(), self.answer_error(e, input, output)),
            };
            buffers.consume(len);
            let conn = &mut self.connections[key];
            conn.served = conn.served.saturating_add(1);
            conn.conversation = match outcome {
                Outcome::Answered(closing) => Conversation::after_answer(closing),
                Outcome::Hold(held) => Conversation::Holding(held),
            };
            answered = true;
        }
        answered
    }

    /// Answers one request into `out`, or asks for the connection to be held (a long poll
    /// with nothing to say yet).
    fn answer(&mut self, key: usize, req: &Request, served_before: u32, out: &mut Vec<u8>) -> Outcome {
        self.costs.totals.requests += 1;
        if served_before > 0 {
            self.costs.totals.reused += 1;
        }
        let body: String;
        let over_limit = self.connections[key].over_limit;
        let response = match self.route_by_head(key, req.method, req.path) {
            Err(refusal) => refusal,
            Ok(Route::Plaintext) => Response::new(Status::OK, "text/plain", b"Hello, World!"),
            Ok(Route::Options(allow)) => Response::new(Status::NO_CONTENT, "", b"").with_headers(allow),
            Ok(Route::Stats) => {
                body = self.snapshot().to_json();
                Response::new(Status::OK, "application/json", body.as_bytes()).with_headers(response::NO_STORE)
            }
            Ok(Route::Metrics) => {
                body = self.snapshot().to_prometheus();
                Response::new(Status::OK, "text/plain; version=0.0.4", body.as_bytes()).with_headers(response::NO_STORE)
            }
            Ok(Route::Publish(topic)) => match self.publish(req, topic) {
                Ok(json) => {
                    body = json;
                    Response::new(Status::OK, "application/json", body.as_bytes())
                }
                Err(refusal) => refusal,
            },
            Ok(Route::Poll(topic)) => match self.poll(key, req, topic) {
                Ok(PollAnswer::Now(json)) => {
                    body = json;
                    poll_response(body.as_bytes())
                }
                Ok(PollAnswer::Hold(held)) => return Outcome::Hold(held),
                Err(refusal) => refusal,
            },
        };
        let (persistence, closing) = if over_limit {
            (Persistence::Close, Some(CloseReason::Rejected))
        } else {
            self.keep_alive(req.version, req.close, req.keep_alive, served_before)
        };
        response::write(out, &response, persistence, req.method == Method::Head, &self.date);
        Outcome::Answered(closing)
    }

    /// The route of a request whose head alone is known, or the refusal that head already
    /// decides: no such endpoint, a method the endpoint does not take, a malformed topic name,
    /// or a connection admitted over the limit only to be refused. Used before the body is read
    /// (for `Expect: 100-continue`) and again when the whole request is answered.
    fn route_by_head<'p>(&mut self, key: usize, method: Method, path: &'p str) -> Result<Route<'p>, Response<'static>> {
        let route = routes::route(method, path).map_err(|no_route| match no_route {
            NoRoute::NotFound => Response::error(Status::NOT_FOUND, b"no such endpoint\n"),
            NoRoute::MethodNotAllowed(allow) => {
                Response::error(Status::METHOD_NOT_ALLOWED, b"method not allowed here\n").with_headers(allow)
            }
        })?;
        match route {
            Route::Stats | Route::Metrics => {} // answered even over the limit
            _ if self.connections[key].over_limit => return Err(self.refusal()),
            Route::Publish(topic) | Route::Poll(topic) if !valid_topic_name(topic) => {
                return Err(topic_error(TopicError::BadName))
            }
            _ => {}
        }
        Ok(route)
    }

    /// Answers a refusal decided by a request's head before its body came: the connection
    /// closes after it, since the client may or may not send the body it announced.
    fn answer_before_body(&mut self, key: usize, method: Method, refusal: &Response, out: &mut Vec<u8>) -> Outcome {
        self.costs.totals.requests += 1;
        response::write(out, refusal, Persistence::Close, method == Method::Head, &self.date);
        let reason = if self.connections[key].over_limit { CloseReason::Rejected } else { CloseReason::Error };
        Outcome::Answered(Some(reason))
    }

    /// The keep-alive rule (`connection::keep_alive`) with this server's settings and state.
    pub(super) fn keep_alive(
        &self,
        version: Version,
        close_requested: bool,
        keep_alive_requested: bool,
        served_before: u32,
    ) -> (Persistence, Option<CloseReason>) {
        connection::keep_alive(&KeepAliveInput {
            version,
            close_requested,
            keep_alive_requested,
            served_before,
            max_requests: self.config.max_requests,
            idle_timeout_secs: self.config.idle_timeout.as_secs(),
            draining: self.draining,
        })
    }

    /// Answers a request that could not be parsed; the connection closes after it, because
    /// where the next request starts is no longer known.
    fn answer_error(&mut self, error: HttpError, input: &[u8], out: &mut Vec<u8>) -> Outcome {
        self.costs.totals.requests += 1;
        debug!("bad request: {}", error.message());
        let line = format!("{}\n", error.message());
        let response = Response::error(Status::from_code(error.status()), line.as_bytes());
        response::write(out, &response, Persistence::Close, request::says_head(input), &self.date);
        Outcome::Answered(Some(CloseReason::Error))
    }

    /// Serialises an answer after which the connection closes, outside of request parsing
    /// (408 from a timer).
    pub(super) fn queue_final_answer(&mut self, key: usize, response: &Response, reason: CloseReason) {
        let conn = &mut self.connections[key];
        let buffers = conn.buffers.get_or_insert_with(|| self.pool.take());
        let head_only = request::says_head(buffers.unread());
        buffers.discard_input();
        response::write(buffers.output(), response, Persistence::Close, head_only, &self.date);
        conn.conversation = Conversation::Ending(reason);
    }
}
