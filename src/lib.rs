//! tether: a single-threaded HTTP/1.1 server on mio that serves keep-alive, long polling,
//! event streams and WebSockets (to browsers too: CORS, tokens, a live page) and shows, in
//! numbers, what each costs.
//!
//! ```text
//!   main.rs ── Config ──> Server::run ──> run_once, forever:
//!
//!   next_deadline ─> poll ─> dispatch ─────────────> expire_timers ─> flush ─> reap
//!   (timer wheel)  (epoll)   listener: accept       head: 408        queued    free Closed
//!                            connection: read,      idle: close      answers   slab keys
//!                            parse, answer, write   hold: timeout    (timers,
//!                            publish: wake holds    write: drop      publish,
//!                                                   stream: beat     streams)
//! ```
//!
//! Who owns what:
//! - `server` owns every socket, the `Slab` of connections (token = slab key), the timer wheel
//!   and the buffer pool; it is the only module that does I/O. Its service answers the
//!   endpoints and keeps the topics and the counters. With `--workers N` there are N of it,
//!   one per thread, sharing the topics through `shared_log`, which `--redis` keeps in step
//!   with Redis through `redis_log` (its own threads).
//! - `connection` is one connection's protocol as a sans-IO machine: an event, the socket seen
//!   as `Read + Write` and the turn's `now` in, what to do out (a deadline, a flush, a close).
//!   `http` turns bytes into requests and answers into bytes, `ws` WebSocket frames into
//!   messages and back; `token` checks bearer tokens; `routes` maps a request to an
//!   endpoint; `pubsub` keeps topics, their message rings and the polls held on them; `stats`
//!   renders the cost view; `timer` holds every deadline; `buffer` lends I/O buffers to busy
//!   connections.
//! - The client side: `client` is a blocking HTTP/1.1 client that reuses its connection,
//!   `commands` runs `tether publish` and `tether poll` on it, `backoff` times their retries.
//! - The lab: `bench` is a single-threaded mio load generator in the server's style, which
//!   measures keep-alive against close-per-request, long polling against short polling, and
//!   what idle connections cost. One engine (one loop, one connection type, one response
//!   reader) runs every scenario; the server core does not depend on it.

pub mod backoff;
pub mod bench;
pub mod buffer;
pub mod client;
pub mod commands;
pub mod config;
pub mod connection;
pub mod http;
pub mod json;
pub mod pubsub;
pub mod redis_log;
pub mod routes;
pub mod server;
pub mod shared_log;
pub mod stats;
pub mod timer;
pub mod token;
pub mod ws;
