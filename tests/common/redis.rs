//! A real `redis-server` for the tests of the shared topic log (tests/redis_log.rs): one per
//! test, on a free loopback port, with its own fresh directory, persisting the way
//! docs/scale-out.md asks for no loss (`appendonly yes`, `appendfsync always`, no snapshots).
//!
//! Rules:
//! - If `redis-server` is not on PATH the test fails and says how to install it; it never skips
//!   (tests/run installs the Debian package `redis-server`).
//! - Every wait is bounded (`START_TIMEOUT`, `STOP_TIMEOUT`); the server is killed and its
//!   directory removed when the guard drops, whatever the test did.

use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a starting server gets to answer PING (it replays its append-only file first).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server`; killed, and its directory removed, when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    /// More `--name value` options after the usual ones (the last of a name wins).
    options: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free loopback port in a fresh directory and waits for its PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// The same with more options, e.g. `["--appendfsync", "everysec"]` (for the bench).
    pub fn start_with(options: &[&str]) -> RedisServer {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tether-redis-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("cannot create the Redis directory");
        let options = options.iter().map(|option| option.to_string()).collect();
        let mut server = RedisServer { child: None, port: 0, dir, options };
        // A port found free may be taken before redis-server binds it: try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.launch() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ports; its log:\n{}", server.log());
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGTERM (Redis flushes its append-only file and exits), then waits for the exit.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        self.reap();
    }

    /// SIGKILL: a crash. With `appendfsync always` nothing acknowledged is lost even so.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
        self.reap();
    }

    /// Starts the server again on the same port and directory (it replays its append-only file).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a stopped server only");
        assert!(self.launch(), "redis-server did not start again on port {}; its log:\n{}", self.port, self.log());
    }

    /// SIGSTOP: the server keeps its connections open but answers nothing, like a hung host.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// A new connection for looking at what the log wrote.
    pub fn connection(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        let connection =
            client.get_connection_with_timeout(Duration::from_secs(5)).expect("cannot connect to redis-server");
        connection.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
        connection
    }

    /// Runs redis-server and waits for PING; `false` if it exited first (its port was taken).
    fn launch(&mut self) -> bool {
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--dir", &self.dir.to_string_lossy(), "--logfile", "redis.log"])
            .args(&self.options)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: these tests need a real Redis; install the Debian package \
                 redis-server (tests/run does it), or put redis-server on PATH"
            ),
            Err(error) => panic!("cannot run redis-server: {error}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if self.answers_ping() {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    fn answers_ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else { return false };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(1)) else { return false };
        // While it loads its append-only file, Redis answers -LOADING.
        matches!(redis::cmd("PING").query::<String>(&mut connection), Ok(pong) if pong == "PONG")
    }

    fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("redis-server is running");
        let pid = i32::try_from(child.id()).expect("pid fits in pid_t");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits for the exit, for at most `STOP_TIMEOUT`, then kills.
    fn reap(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("redis.log")).unwrap_or_else(|error| format!("(no log: {error})"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGKILL ends a frozen (SIGSTOPped) server too.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A port the kernel says is free now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}
