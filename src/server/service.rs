//! What the server's endpoints answer, behind the machine's `Endpoints` interface: routing, the
//! cost view, and (in `poll`) publishing and long polling on the topics.
//!
//! The service owns what outlives a connection: the topics and the polls held on them, the
//! subscriptions of several topics, the counters the cost view reports, and the spare
//! descriptor that a snapshot borrows at the open-file limit. It never touches a socket; the
//! reactor tells it its own figures (`ReactorFigures`) before each connection's event, so a
//! snapshot costs O(1) in connections.
//!
//! Invariants:
//! - Every request the machine hands over is answered or held; a refusal of a connection
//!   admitted only to be refused is a 503, except `/stats` and `/metrics`.
//! - `costs.polls.held` counts the polls held (woken ones too, until answered), a poll on several
//!   topics once; `--max-held` is checked against it.
//! - A connection waits on one topic or on one subscription of several (`HoldKey::on`); every
//!   call about its wait goes to the one it names.
//! - A publish from a page (it has an `Origin`) of neither the server's own origin nor an allowed
//!   one is refused before any topic is touched (`may_write`).
//! - With `--jwt-secret`, every request for a topic or the cost view is checked once, before
//!   anything is stored or held (`authorize`); what it may wait for ends when its token does: a
//!   held poll's deadline is never past it, and a stream ends at it.

use std::collections::HashMap;
use std::fs::File;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use log::warn;

use super::poll::{poll_response, topic_error, Acks, Member, Subscriptions, Wire};
use crate::backoff::XorShift;
use crate::config::Config;
use crate::connection::{EndSecond, Endpoints, Reply, Socket, StateKind, Stream, Wait};
use crate::http::cors::{AllowedOrigins, Grant};
use crate::http::request::{Method, Request};
use crate::http::response::{self, Cors, Response, Status};
use crate::pubsub::{valid_topic_name, HoldKey, HoldOn, TopicError, TopicLimits, Topics};
use crate::redis_log::LinkState;
use crate::routes::{self, NoRoute, Route};
use crate::shared_log::LogFigures;
use crate::stats::{self, Backplane, ByState, Polls, Snapshot, Totals, WorkerLine};
use crate::timer::Tick;
use crate::token::{bearer, Action, Claims, Refusal, VerifiedTokens};

/// `Retry-After` values for a 503, picked at random: refused clients should not all come back
/// in the same second.
const RETRY_AFTER_SECS: [(&str, &str); 3] = [("Retry-After", "1"), ("Retry-After", "2"), ("Retry-After", "3")];
/// What a newcomer refused at the connection limit is told.
const AT_THE_LIMIT: &[u8] = b"at the connection limit, retry later\n";
/// The stream of cost-view snapshots, `/events/$stats`: not a topic (a topic name has no `$`).
pub(super) const COST_VIEW_TOPIC: &str = "$stats";
/// The live page (docs/browser.md), compiled in: nothing is fetched from anywhere else.
const LIVE_PAGE: &[u8] = include_bytes!("live.html");
/// What a 401 asks for (RFC 6750 §3): a bearer token, and why the one given is not good.
const NO_TOKEN: &[(&str, &str)] = &[("WWW-Authenticate", "Bearer realm=\"tether\"")];
const INVALID_TOKEN: &[(&str, &str)] = &[("WWW-Authenticate", "Bearer realm=\"tether\", error=\"invalid_token\"")];
const INVALID_REQUEST: &[(&str, &str)] = &[("WWW-Authenticate", "Bearer realm=\"tether\", error=\"invalid_request\"")];
/// What a publish Redis did not acknowledge is told (it may retry: at least once, never lost).
const NOT_ACKNOWLEDGED: &[u8] = b"Redis did not acknowledge the publish, retry later\n";
/// What a 403 for a poll or a stream says, of one topic or several.
const NOT_EVERY_TOPIC: &[u8] = b"the token does not let its holder subscribe to every topic asked for\n";

/// What the cost view counts as it happens, so that a snapshot never walks the connections.
#[derive(Debug, Default, Clone)]
pub(super) struct Costs {
    pub(super) totals: Totals,
    pub(super) by_state: ByState,
    pub(super) polls: Polls,
    /// Event streams open, the live page's included.
    pub(super) streams_open: u64,
    /// WebSockets open.
    pub(super) sockets_open: u64,
}

/// The reactor's own figures for the cost view, each O(1) to read.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ReactorFigures {
    pub(super) fds_open: u64,
    pub(super) connections_open: u64,
    pub(super) connection_bytes: u64,
    pub(super) timers_armed: u64,
    pub(super) buffer_bytes: u64,
    pub(super) pool_bytes: u64,
}

/// What one worker posts for the cost view of all (`workers::Board`): its counters, its
/// reactor's figures, and what its hold lists and subscriptions take.
#[derive(Debug, Clone, Default)]
pub(super) struct WorkerFigures {
    pub(super) costs: Costs,
    pub(super) reactor: ReactorFigures,
    pub(super) wait_bytes: u64,
    /// Publishes waiting for Redis, and those answered 503 for want of it.
    pub(super) acks_pending: u64,
    pub(super) backplane_refused: u64,
}

impl WorkerFigures {
    fn add(&mut self, other: &WorkerFigures) {
        let (c, o) = (&mut self.costs, &other.costs);
        c.totals += &o.totals;
        c.by_state += &o.by_state;
        c.polls += &o.polls;
        c.streams_open += o.streams_open;
        c.sockets_open += o.sockets_open;
        let (r, o) = (&mut self.reactor, &other.reactor);
        r.fds_open += o.fds_open;
        r.connections_open += o.connections_open;
        r.connection_bytes += o.connection_bytes;
        r.timers_armed += o.timers_armed;
        r.buffer_bytes += o.buffer_bytes;
        r.pool_bytes += o.pool_bytes;
        self.wait_bytes += other.wait_bytes;
        self.acks_pending += other.acks_pending;
        self.backplane_refused += other.backplane_refused;
    }

    fn line(&self) -> WorkerLine {
        let c = &self.costs;
        WorkerLine {
            connections_open: self.reactor.connections_open,
            waiting: c.polls.held + c.streams_open + c.sockets_open,
            accepted: c.totals.accepted,
            requests: c.totals.requests,
        }
    }
}

pub(super) struct Service {
    /// The topics clients of this worker wait on: the log itself, or copies of the shared
    /// log's (`poll::copies`).
    pub(super) topics: Topics,
    /// With several workers: this one's place in the shared log and on the board of figures.
    pub(super) shared: Option<Member>,
    /// Publishes waiting for Redis to acknowledge them (`--redis`).
    pub(super) acks: Acks,
    /// Publishes answered `503` because Redis did not acknowledge them.
    pub(super) backplane_refused: u64,
    /// Polls and streams on several topics, which their connections' waits name.
    pub(super) subscriptions: Subscriptions,
    pub(super) costs: Costs,
    /// Connections whose held polls a publish woke; the reactor moves them to its flush queue.
    pub(super) woken: Vec<usize>,
    /// When the last publish that woke polls was parsed: the flush phase reports how long
    /// writing all their answers took.
    pub(super) fanout_started: Option<Instant>,
    /// Kept open to be closed on demand, at the open-file limit: a snapshot's `/proc` reads
    /// borrow it, and so does admission to refuse a newcomer (`admission::refuse_on_spare`).
    pub(super) spare: Option<File>,
    pub(super) reactor: ReactorFigures,
    /// `--allow-origin`: the pages that may publish besides the server's own.
    origins: AllowedOrigins,
    /// `--jwt-secret`: when set, who may do what is a token's say.
    tokens: Option<VerifiedTokens>,
    /// What the token of each socket opened with one lets it do, by connection: its messages are
    /// checked against it one by one.
    pub(super) socket_claims: HashMap<usize, Claims>,
    /// The Unix time of tick 0, in milliseconds: tokens' times are Unix seconds.
    unix_ms_at_tick_zero: u64,
    pub(super) config: Config,
    /// `--max-held`, checked against `costs.polls.held`.
    pub(super) max_held: usize,
    started: Instant,
    /// Spreads the `Retry-After` of refusals.
    jitter: XorShift,
    /// The body of the answer being built, reused: an answer borrows it until it is written.
    pub(super) body: String,
}

impl Service {
    /// A service whose ticks count from `started`.
    pub(super) fn new(config: Config, max_held: usize, jitter: XorShift, started: Instant) -> Service {
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let unix_at_start = unix_now.saturating_sub(started.elapsed());
        Service {
            topics: Topics::new(TopicLimits::from(&config)),
            shared: None,
            acks: Acks::default(),
            backplane_refused: 0,
            subscriptions: Subscriptions::default(),
            costs: Costs::default(),
            woken: Vec::new(),
            fanout_started: None,
            spare: open_spare(),
            reactor: ReactorFigures::default(),
            origins: AllowedOrigins::new(&config.allow_origin),
            tokens: config.tokens.clone().map(VerifiedTokens::new),
            socket_claims: HashMap::new(),
            unix_ms_at_tick_zero: u64::try_from(unix_at_start.as_millis()).unwrap_or(0),
            config,
            max_held,
            started,
            jitter,
            body: String::new(),
        }
    }

    /// One `Retry-After` header for a 503.
    pub(super) fn retry_after(&mut self) -> &'static [(&'static str, &'static str)] {
        let pick = self.jitter.next_u64() as usize % RETRY_AFTER_SECS.len();
        std::slice::from_ref(&RETRY_AFTER_SECS[pick])
    }

    /// The 503 a newcomer gets at the limit.
    pub(super) fn refusal(&mut self) -> Response<'static> {
        Response::error(Status::SERVICE_UNAVAILABLE, AT_THE_LIMIT).with_headers(self.retry_after())
    }

    /// The route of a request whose head alone is known, or the refusal that head already
    /// decides: no such endpoint, a method the endpoint does not take, a malformed topic name,
    /// or a connection admitted over the limit only to be refused.
    fn route_by_head<'p>(
        &mut self,
        method: Method,
        path: &'p str,
        refused: bool,
    ) -> Result<Route<'p>, Response<'static>> {
        let route = routes::route(method, path).map_err(|no_route| match no_route {
            NoRoute::NotFound => Response::error(Status::NOT_FOUND, b"no such endpoint\n"),
            NoRoute::MethodNotAllowed(allow) => {
                Response::error(Status::METHOD_NOT_ALLOWED, b"method not allowed here\n").with_headers(allow)
            }
        })?;
        match route {
            Route::Stats | Route::Metrics => {} // answered even over the limit
            _ if refused => return Err(self.refusal()),
            Route::Events(COST_VIEW_TOPIC) => {}
            Route::Publish(topic) | Route::Poll(topic) | Route::Events(topic) if !valid_topic_name(topic) => {
                return Err(topic_error(TopicError::BadName))
            }
            _ => {}
        }
        Ok(route)
    }

    /// Connection `key` waits no more, whether it was a poll, a stream or a socket: off every
    /// list it is on, its topics no longer watched by it.
    fn stop_waiting(&mut self, key: usize, hold: HoldKey, now: Tick) {
        match hold.on() {
            HoldOn::One(topic) => {
                self.topics.release(hold, key, now);
                self.topics.unwatch(topic, now);
            }
            HoldOn::Many(n) => self.end_subscription(key, n, now),
            HoldOn::Nowhere | HoldOn::Ack(_) => {}
        }
    }

    /// What a request's token allows, checked before anything is stored or held: `Ok` with the
    /// tick its token expires at (`Tick::MAX` without `--jwt-secret`, or for an endpoint open to
    /// all), else the 401 of a missing or bad token, or the 403 of one that does not cover what
    /// is asked (on a subscription, every topic of it). A socket's messages are checked one by
    /// one later, against the claims it keeps (`Pass::claims`).
    fn authorize(&mut self, req: &Request, route: Route, now: Tick) -> Result<Pass, Response<'static>> {
        let open = Pass { until: Tick::MAX, claims: None };
        let Some(tokens) = &mut self.tokens else {
            return Ok(open);
        };
        if matches!(route, Route::Plaintext | Route::Live | Route::Options(_)) {
            return Ok(open); // no data in them; a preflight never carries credentials
        }
        let unix_ms = self.unix_ms_at_tick_zero + now;
        let verified = bearer(req.authorization, req.query)
            .and_then(|token| token.ok_or(Refusal::Missing))
            .and_then(|token| tokens.check(token, unix_ms));
        let claims = match verified {
            Ok(claims) => claims,
            Err(refusal) => {
                self.costs.totals.unauthorized += 1;
                let (status, challenge) = match refusal {
                    Refusal::Missing => (Status::UNAUTHORIZED, NO_TOKEN),
                    Refusal::TwoTokens => (Status::BAD_REQUEST, INVALID_REQUEST),
                    _ => (Status::UNAUTHORIZED, INVALID_TOKEN),
                };
                return Err(Response::error(status, refusal.reason().as_bytes()).with_headers(challenge));
            }
        };
        let subscribe = |topic| claims.allows(Action::Subscribe(topic));
        let (allowed, refusal): (bool, &'static [u8]) = match route {
            Route::Stats | Route::Metrics | Route::Events(COST_VIEW_TOPIC) => {
                (claims.allows(Action::Admin), b"the cost view needs a token with \"admin\": true\n")
            }
            Route::Publish(topic) => {
                (claims.allows(Action::Publish(topic)), b"the token does not let its holder publish to this topic\n")
            }
            Route::Poll(topic) | Route::Events(topic) => (subscribe(topic), NOT_EVERY_TOPIC),
            // A name that is not one is the query's 400, answered once the token is known good.
            Route::PollMany | Route::EventsMany => {
                (asked_topics(req.query).filter(|topic| valid_topic_name(topic)).all(subscribe), NOT_EVERY_TOPIC)
            }
            // Any good token opens a socket: what it may do there is checked message by message.
            Route::WebSocket | Route::Plaintext | Route::Live | Route::Options(_) => (true, b""),
        };
        if !allowed {
            self.costs.totals.forbidden += 1;
            return Err(Response::error(Status::FORBIDDEN, refusal));
        }
        let until = claims.exp.saturating_mul(1000).saturating_sub(self.unix_ms_at_tick_zero);
        let claims = (route == Route::WebSocket).then(|| claims.clone());
        Ok(Pass { until, claims })
    }

    /// Whether a request may write: unless it comes from a web page (it has an `Origin`), or
    /// from a page of the server's own origin or of one allowed by `--allow-origin`. A page of
    /// any other site can make the browser send a "simple" cross-origin POST without asking
    /// first (no preflight), and the browser only hides the answer, after the message was
    /// stored: the server must refuse it itself.
    pub(super) fn may_write(&self, req: &Request) -> bool {
        let Some(origin) = req.origin else {
            return true; // not a page: curl, a server, `tether publish`
        };
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        let own = authority.is_some() && authority == req.host;
        own || self.origins.grant(Some(origin)) != Grant::NONE
    }

    /// This worker's figures for the cost view, O(1): what it posts on the board each turn.
    pub(super) fn own_figures(&self) -> WorkerFigures {
        WorkerFigures {
            costs: self.costs.clone(),
            reactor: self.reactor,
            wait_bytes: (self.topics.hold_list_bytes() + self.subscriptions.memory_bytes()) as u64,
            acks_pending: self.acks.len() as u64,
            backplane_refused: self.backplane_refused,
        }
    }

    /// The cost view now: this worker's figures, or every worker's summed. Reading `/proc` takes
    /// a descriptor, which at the open-file limit only the spare can lend.
    pub(super) fn snapshot(&mut self) -> Snapshot {
        let own = self.own_figures();
        let (sum, workers, log) = match &self.shared {
            None => {
                let t = &self.topics;
                let log = LogFigures {
                    topics: t.count() as u64,
                    messages: t.retained(),
                    retained_bytes: t.retained_bytes() as u64,
                    evicted: t.evicted(),
                    forgotten: t.forgotten(),
                    link: None,
                };
                (own.clone(), vec![own.line()], log)
            }
            Some(member) => {
                let mut sum = WorkerFigures::default();
                sum.reactor.fds_open = member.board.fds_base;
                let mut lines = Vec::new();
                for (worker, posted) in member.board.figures().iter().enumerate() {
                    let figures = if worker == member.worker { &own } else { posted };
                    sum.add(figures);
                    lines.push(figures.line());
                }
                (sum, lines, member.log.figures())
            }
        };
        // Counted with the spare: the `/proc` reads below borrow its descriptor, not another.
        let r = sum.reactor;
        self.spare = None;
        let snapshot = Snapshot {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            fds_open: r.fds_open,
            fds_limit: stats::fds_limit(),
            connections_open: r.connections_open,
            by_state: sum.costs.by_state,
            totals: sum.costs.totals,
            polls: sum.costs.polls,
            streams_open: sum.costs.streams_open,
            sockets_open: sum.costs.sockets_open,
            topics: log.topics,
            messages: log.messages,
            retained_bytes: log.retained_bytes,
            max_retained_bytes: self.topics.max_retained_bytes() as u64,
            evicted: log.evicted,
            forgotten: log.forgotten,
            timers_armed: r.timers_armed,
            rss_bytes: stats::rss_bytes(),
            connection_bytes: r.connection_bytes + sum.wait_bytes,
            buffer_bytes: r.buffer_bytes,
            pool_bytes: r.pool_bytes,
            kernel: stats::sockstat(),
            backplane: Backplane {
                redis: u64::from(log.link.is_some()),
                up: u64::from(log.link.is_some_and(|link| link.state == LinkState::Up)),
                pending: sum.acks_pending,
                acked: log.link.map_or(0, |link| link.acked),
                refused: sum.backplane_refused,
                appended: log.link.map_or(0, |link| link.appended),
                reconnects: log.link.map_or(0, |link| link.reconnects),
            },
            workers,
        };
        self.spare = open_spare();
        snapshot
    }
}

/// What a request's token lets it do: until when, and for a socket, its claims to check message
/// by message.
struct Pass {
    until: Tick,
    claims: Option<Claims>,
}

/// The `topic=` values of a query, as given.
fn asked_topics(query: &str) -> impl Iterator<Item = &str> {
    query.split('&').filter_map(|pair| pair.strip_prefix("topic="))
}

/// A descriptor held open so that one can be freed on demand.
pub(super) fn open_spare() -> Option<File> {
    File::open("/dev/null").map_err(|e| warn!("no spare descriptor: {e}")).ok()
}

impl Endpoints for Service {
    fn count_request(&mut self, reused: bool) {
        self.costs.totals.requests += 1;
        self.costs.totals.reused += u64::from(reused);
    }

    fn count_state(&mut self, from: StateKind, to: StateKind) {
        self.costs.by_state.count(from, -1);
        self.costs.by_state.count(to, 1);
    }

    fn refuse_by_head(&mut self, method: Method, path: &str, refused: bool) -> Option<Response<'static>> {
        self.route_by_head(method, path, refused).err()
    }

    fn answer(&mut self, key: usize, req: &Request, refused: bool, now: Tick) -> Reply<'_> {
        let route = match self.route_by_head(req.method, req.path, refused) {
            Ok(route) => route,
            Err(refusal) => return Reply::Now(refusal),
        };
        let Pass { until, claims } = match self.authorize(req, route, now) {
            Ok(pass) => pass,
            // A page that subscribes across origins may read why it was refused.
            Err(refusal) if route.subscribes() => return Reply::Now(refusal.with_cors(Cors::Shared)),
            Err(refusal) => return Reply::Now(refusal),
        };
        self.body.clear();
        let content_type = match route {
            Route::Plaintext => return Reply::Now(Response::new(Status::OK, "text/plain", b"Hello, World!")),
            Route::Live => return Reply::Now(Response::new(Status::OK, "text/html; charset=utf-8", LIVE_PAGE)),
            Route::Options(allow) => {
                // Polls, streams and OPTIONS may be read by the pages of allowed origins (the
                // machine names the origin).
                let cors = if req.preflight { Cors::Preflight { methods: allow[0].1 } } else { Cors::Shared };
                return Reply::Now(Response::new(Status::NO_CONTENT, "", b"").with_headers(allow).with_cors(cors));
            }
            Route::Stats => {
                self.body = self.snapshot().to_json();
                "application/json"
            }
            Route::Metrics => {
                self.body = self.snapshot().to_prometheus();
                "text/plain; version=0.0.4"
            }
            Route::Publish(_) if !self.may_write(req) => {
                self.costs.totals.forbidden += 1;
                return Reply::Now(Response::error(
                    Status::FORBIDDEN,
                    b"a page of another origin may not publish here\n",
                ));
            }
            Route::Publish(topic) => match self.publish(key, req, topic, now) {
                Ok(None) => return Reply::Now(Response::new(Status::OK, "application/json", self.body.as_bytes())),
                Ok(Some(wait)) => return Reply::Wait(wait),
                Err(refusal) => return Reply::Now(refusal),
            },
            Route::Poll(_) | Route::PollMany => {
                let polled = match route {
                    Route::Poll(topic) => self.poll(key, req, topic, now),
                    _ => self.poll_many(key, req, now),
                };
                return match polled {
                    Ok(None) => Reply::Now(poll_response(self.body.as_bytes())),
                    Ok(Some(wait)) => Reply::Wait(Wait { deadline: wait.deadline.min(until), ..wait }),
                    Err(refusal) => Reply::Now(refusal.with_cors(Cors::Shared)),
                };
            }
            Route::WebSocket => {
                return match self.open_socket(key, req, claims, until, now) {
                    Ok((accept, socket)) => Reply::Upgrade { accept, socket },
                    Err(refusal) => Reply::Now(refusal),
                }
            }
            Route::Events(_) | Route::EventsMany => {
                let opened = match route {
                    Route::Events(topic) => self.open_stream(req, topic, now),
                    _ => self.open_stream_many(key, req, now),
                };
                return match opened {
                    Ok(stream) => {
                        let stream = Stream { ends: EndSecond::at(until), ..stream };
                        let head = Response::new(Status::OK, "text/event-stream", b"");
                        Reply::Stream(head.with_headers(response::NO_STORE).with_cors(Cors::Shared), stream)
                    }
                    Err(refusal) => Reply::Now(refusal.with_cors(Cors::Shared)),
                };
            }
        };
        // The cost view changes from one moment to the next: never cached.
        Reply::Now(Response::new(Status::OK, content_type, self.body.as_bytes()).with_headers(response::NO_STORE))
    }

    fn answer_held(&mut self, key: usize, wait: &Wait, now: Tick) -> Response<'_> {
        self.body.clear();
        match wait.hold.on() {
            HoldOn::One(topic) => self.held_answer(key, topic, wait, now),
            HoldOn::Many(n) => self.held_answer_many(key, n, now),
            HoldOn::Ack(n) if self.ack_answer(n, key) => {
                return Response::new(Status::OK, "application/json", self.body.as_bytes());
            }
            HoldOn::Ack(_) => {
                return Response::error(Status::SERVICE_UNAVAILABLE, NOT_ACKNOWLEDGED).with_headers(self.retry_after())
            }
            HoldOn::Nowhere => debug_assert!(false, "a poll waits on a topic"),
        }
        poll_response(self.body.as_bytes())
    }

    fn still_waiting(&self, key: usize, hold: HoldKey) -> bool {
        match hold.on() {
            HoldOn::One(_) => self.topics.holds(hold, key),
            HoldOn::Many(n) => self.subscriptions.waiting(n, key, &self.topics),
            HoldOn::Nowhere => true, // nothing to be woken by
            HoldOn::Ack(n) => self.awaits_ack(n, key),
        }
    }

    fn release(&mut self, key: usize, wait: &Wait, now: Tick) {
        if let HoldOn::Ack(n) = wait.hold.on() {
            return self.drop_ack(n, key);
        }
        self.stop_waiting(key, wait.hold, now);
        self.costs.polls.held -= 1;
    }

    fn stream_news(&mut self, key: usize, wait: &mut Wait, out: &mut Vec<u8>, now: Tick) {
        match wait.hold.on() {
            HoldOn::One(topic) => self.stream_events(key, topic, wait, out, now),
            HoldOn::Many(n) => self.feed_subscription(key, n, Wire::EventStream, out, now),
            HoldOn::Nowhere | HoldOn::Ack(_) => {}
        }
    }

    fn stream_costs(&mut self, out: &mut Vec<u8>) {
        let json = self.snapshot().to_json();
        out.extend_from_slice(crate::pubsub::data_lines(json.trim_end()).as_bytes());
        out.push(b'\n');
    }

    fn end_stream(&mut self, key: usize, stream: &Stream, now: Tick) {
        self.stop_waiting(key, stream.wait.hold, now);
        self.costs.streams_open -= 1;
    }

    fn socket_message(&mut self, key: usize, socket: &Socket, text: &str, out: &mut Vec<u8>, now: Tick) {
        match socket.hold.on() {
            HoldOn::Many(n) => self.answer_message(key, n, text, out, now),
            _ => debug_assert!(false, "a socket waits on its subscription"),
        }
    }

    fn socket_news(&mut self, key: usize, socket: &Socket, out: &mut Vec<u8>, now: Tick) {
        match socket.hold.on() {
            HoldOn::Many(n) => self.feed_subscription(key, n, Wire::WebSocket, out, now),
            _ => debug_assert!(false, "a socket waits on its subscription"),
        }
    }

    fn end_socket(&mut self, key: usize, socket: &Socket, now: Tick) {
        let hold = socket.hold;
        self.stop_waiting(key, hold, now);
        self.socket_claims.remove(&key);
        self.costs.sockets_open -= 1;
    }
}
