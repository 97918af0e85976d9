//! Turning a connection's input into answers: read what the socket has, parse every complete
//! request in order (pipelining), route it, and serialise the answer into the output buffer.
//!
//! Invariant: answers are appended in request order, and nothing after an answer that closes
//! the connection is parsed.

use std::io::ErrorKind;

use log::debug;

use super::poll::{poll_response, PollAnswer};
use super::{Server, OUTPUT_CAP};
use crate::buffer::Buffers;
use crate::connection::{self, HeldPoll, KeepAliveInput, State};
use crate::http::request::{self, HttpError, Method, Progress, Request, Version};
use crate::http::response::{self, Persistence, Response, Status};
use crate::routes::{self, Route};
use crate::stats::CloseReason;

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
        conn.input_ready = false;
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
                Ok(_) if buffers.is_full() => {} // maybe more: read again
                Ok(_) => break,                  // a short read drained the socket
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
            if conn.closing.is_some() || conn.hold.is_some() {
                // Nothing after a closing answer is parsed (its presence means lingering), and
                // requests behind a held poll wait for its answer, to keep answers in order.
                break;
            }
            if buffers.pending_output().len() >= OUTPUT_CAP {
                conn.input_ready = true; // resumes once the output drains
                break;
            }
            let served_before = conn.served;
            let (input, output) = buffers.split();
            let (len, outcome) = match request::parse_progress(input, &self.limits) {
                Ok(Progress::Waiting { expects_continue }) if input.len() < self.input_cap => {
                    // Once per request: its body may take many reads to arrive.
                    if expects_continue && !conn.continued {
                        output.extend_from_slice(response::CONTINUE);
                        conn.continued = true;
                    }
                    break;
                }
                Ok(Progress::Waiting { .. }) => {
                    (input.len(), self.answer_error(HttpError::HeaderFieldsTooLarge, output))
                }
                Ok(Progress::Complete(req)) => (req.len, self.answer(key, &req, served_before, output)),
                Err(e) => (input.len(), self.answer_error(e, output)),
            };
            buffers.consume(len);
            let conn = &mut self.connections[key];
            conn.served = conn.served.saturating_add(1);
            conn.continued = false;
            match outcome {
                Outcome::Answered(closing) => conn.closing = closing,
                Outcome::Hold(held) => conn.hold = Some(held),
            }
            answered = true;
        }
        answered
    }

    /// Answers one request into `out`, or asks for the connection to be held (a long poll
    /// with nothing to say yet).
    fn answer(&mut self, key: usize, req: &Request, served_before: u32, out: &mut Vec<u8>) -> Outcome {
        self.totals.requests += 1;
        if served_before > 0 {
            self.totals.reused += 1;
        }
        let body: String;
        let allow: [(&str, &str); 1];
        let route = routes::route(req.method, req.path);
        let over_limit = self.connections[key].over_limit;
        let response = match route {
            _ if over_limit && !matches!(route, Route::Stats | Route::Metrics) => self.refusal(),
            Route::Plaintext => Response::new(Status::OK, "text/plain", b"Hello, World!"),
            Route::Stats => {
                body = self.snapshot().to_json();
                Response::new(Status::OK, "application/json", body.as_bytes()).with_headers(response::NO_STORE)
            }
            Route::Metrics => {
                body = self.snapshot().to_prometheus();
                Response::new(Status::OK, "text/plain; version=0.0.4", body.as_bytes()).with_headers(response::NO_STORE)
            }
            Route::Publish(topic) => match self.publish(req, topic) {
                Ok(json) => {
                    body = json;
                    Response::new(Status::OK, "application/json", body.as_bytes())
                }
                Err(refusal) => refusal,
            },
            Route::Poll(topic) => match self.poll(key, req, topic) {
                Ok(PollAnswer::Now(json)) => {
                    body = json;
                    poll_response(body.as_bytes())
                }
                Ok(PollAnswer::Hold(held)) => return Outcome::Hold(held),
                Err(refusal) => refusal,
            },
            Route::NotFound => Response::error(Status::NOT_FOUND, b"no such endpoint\n"),
            Route::MethodNotAllowed(methods) => {
                allow = [("Allow", methods)];
                Response::error(Status::METHOD_NOT_ALLOWED, b"method not allowed here\n").with_headers(&allow)
            }
        };
        let (persistence, closing) = if over_limit {
            (Persistence::Close, Some(CloseReason::Rejected))
        } else {
            self.keep_alive(req.version, req.close, req.keep_alive, served_before)
        };
        response::write(out, &response, persistence, req.method == Method::Head, &self.date);
        Outcome::Answered(closing)
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
    fn answer_error(&mut self, error: HttpError, out: &mut Vec<u8>) -> Outcome {
        self.totals.requests += 1;
        debug!("bad request: {}", error.message());
        let line = format!("{}\n", error.message());
        let response = Response::error(Status::from_code(error.status()), line.as_bytes());
        response::write(out, &response, Persistence::Close, false, &self.date);
        Outcome::Answered(Some(CloseReason::Error))
    }

    /// Serialises an answer after which the connection closes, outside of request parsing
    /// (408 from a timer).
    pub(super) fn queue_final_answer(&mut self, key: usize, response: &Response, reason: CloseReason) {
        let conn = &mut self.connections[key];
        let buffers = conn.buffers.get_or_insert_with(|| self.pool.take());
        buffers.discard_input();
        response::write(buffers.output(), response, Persistence::Close, false, &self.date);
        conn.closing = Some(reason);
    }
}
