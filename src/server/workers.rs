//! Several reactors in one process (`--workers N`, docs/scale-out.md). Each worker is a whole
//! `Server` on its own thread: its own listener on the same port (`SO_REUSEPORT`: the kernel
//! spreads new connections over the listeners), its own slab, wheel and buffer pool, the same
//! single-threaded loop. They share two things: the topics' log (`shared_log`), through which a
//! publish on any worker reaches the waiters of every worker in one order, and the `Board` on
//! which each posts its figures, so that `/stats` on any worker sums them all.
//!
//! Invariants:
//! - Every worker is bound, on the calling thread, before any serves: the port is known (the
//!   first listener's, when `--listen` asks for port 0) and each worker's own descriptors are
//!   counted while nothing else opens any.
//! - Workers share one start, so a tick means the same instant on every worker.
//! - A worker writes only its own place on the board, once per turn; a snapshot reads the
//!   others' as of their last turn (a worker asleep in `epoll_wait` has posted its current
//!   figures before sleeping).
//! - `--workers 1` without `--redis` is the server alone: no shared log, no board, no thread.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use crate::redis_log::LogSettings;

use mio::Waker;

use super::poll::Member;
use super::service::WorkerFigures;
use super::Server;
use crate::config::Config;
use crate::pubsub::TopicLimits;
use crate::shared_log::{Inbound, SharedLog};
use crate::stats;

/// Where each worker posts its figures for the cost view of all.
pub(super) struct Board {
    /// The process's descriptors that belong to no worker (stdio, and what was open before the
    /// workers): a snapshot adds them once to the workers' own.
    pub(super) fds_base: u64,
    figures: Mutex<Vec<WorkerFigures>>,
}

impl Board {
    /// Worker `worker`'s figures as of its last turn replace those it posted before.
    pub(super) fn post(&self, worker: usize, figures: WorkerFigures) {
        let mut board = self.figures.lock().unwrap_or_else(PoisonError::into_inner);
        board[worker] = figures;
    }

    /// Every worker's figures as last posted, in worker order.
    pub(super) fn figures(&self) -> Vec<WorkerFigures> {
        self.figures.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// What a worker is given when it is bound: its number, the port, the start, and what it
/// shares with the others.
pub(super) struct Seat {
    pub(super) worker: usize,
    pub(super) listen: SocketAddr,
    pub(super) started: Instant,
    log: Arc<SharedLog>,
    board: Arc<Board>,
}

impl Seat {
    /// Takes the seat: the worker's inbox in the shared log, woken by `waker`.
    pub(super) fn join(self, waker: Arc<Waker>) -> Member {
        let (worker, inbox): (usize, Receiver<Inbound>) = self.log.join(waker);
        debug_assert_eq!(worker, self.worker, "workers join in their order");
        Member { log: self.log, worker, inbox, board: self.board }
    }
}

/// The reactors of this process, bound and ready to serve.
pub struct Workers {
    servers: Vec<Server>,
}

impl Workers {
    /// Binds `config.workers` reactors on `config.listen`; with `--redis`, starts the link to
    /// Redis (which connects in the background).
    pub fn bind(config: Config) -> io::Result<Workers> {
        let limits = TopicLimits::from(&config);
        let log = match &config.redis {
            None if config.workers <= 1 => return Ok(Workers { servers: vec![Server::bind(config)?] }),
            None => Arc::new(SharedLog::new(limits)),
            Some(url) => {
                let settings = LogSettings::new(config.topic_capacity, config.topic_idle_timeout);
                SharedLog::in_redis(limits, url, settings)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
            }
        };
        let board = Arc::new(Board {
            fds_base: stats::fds_open(),
            figures: Mutex::new(vec![WorkerFigures::default(); config.workers]),
        });
        let started = log.started();
        let mut servers: Vec<Server> = Vec::with_capacity(config.workers);
        for worker in 0..config.workers {
            // The first listener's address: port 0 becomes the port the kernel chose.
            let listen = match servers.first() {
                Some(first) => first.local_addr()?,
                None => config.listen,
            };
            let seat = Seat { worker, listen, started, log: log.clone(), board: board.clone() };
            servers.push(Server::bind_worker(config.clone(), Some(seat))?);
        }
        Ok(Workers { servers })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.servers[0].local_addr()
    }

    /// Serves on every worker until each has drained (a signal reaches them all); the first
    /// worker runs on this thread.
    pub fn run(self) -> io::Result<()> {
        let mut servers = self.servers.into_iter();
        let Some(mut first) = servers.next() else {
            return Ok(());
        };
        let others: Vec<thread::JoinHandle<io::Result<()>>> = servers
            .enumerate()
            .map(|(i, mut server)| thread::Builder::new().name(format!("worker-{}", i + 1)).spawn(move || server.run()))
            .collect::<io::Result<_>>()?;
        let mut result = first.run();
        for handle in others {
            let outcome = handle.join().unwrap_or_else(|_| Err(io::Error::other("a worker panicked")));
            result = result.and(outcome);
        }
        result
    }
}
