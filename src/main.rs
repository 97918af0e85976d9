//! The `tether` command line: parses arguments and hands them to the server (`serve`), to the
//! client commands (`publish`, `poll`, in `tether::commands`) or to the lab (`bench`).

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use tether::commands::{self, PollOptions};
use tether::config::{parse_duration, parse_size, Config};
use tether::server::Workers;
use tether::token::{Claims, TokenKey};

#[derive(Parser)]
#[command(name = "tether", version, about = "HTTP/1.1 keep-alive and long polling, and what each costs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Publish one message to a topic and print the server's reply.
    Publish(PublishArgs),
    /// Long-poll a topic and print each message as it arrives, until SIGINT.
    Poll(PollArgs),
    /// Mint a bearer token (JWT, HS256) under the server's secret, for scripts and tests.
    Token(TokenArgs),
    /// The lab: measure a server running on this machine (keep-alive, long and short polling,
    /// fan-out, hold deadlines, exhaustion, slowloris).
    Bench(tether::bench::BenchArgs),
}

#[derive(Args)]
struct PublishArgs {
    /// The topic's publish URL, like http://127.0.0.1:8080/publish/news (plain http only).
    url: String,
    /// The message; `-` or nothing reads it from standard input, less its final newline.
    #[arg(allow_hyphen_values = true)]
    data: Option<String>,
    #[command(flatten)]
    token: BearerArg,
}

/// The token a client command sends, when the server asks for one.
#[derive(Args)]
struct BearerArg {
    /// A bearer token (`tether token` mints one), sent as `Authorization: Bearer`.
    #[arg(long, env = "TETHER_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    /// The server's secret [env: TETHER_JWT_SECRET] (the environment keeps it out of `ps`).
    #[arg(long, env = "TETHER_JWT_SECRET", hide_env = true, hide_env_values = true)]
    jwt_secret: String,
    /// A topic, or a prefix ending in `*`, the token may poll and stream; repeatable.
    #[arg(long, value_name = "TOPIC")]
    subscribe: Vec<String>,
    /// A topic, or a prefix ending in `*`, the token may publish to; repeatable.
    #[arg(long, value_name = "TOPIC")]
    publish: Vec<String>,
    /// The token may read the cost view (`/stats`, `/metrics`, the live page).
    #[arg(long)]
    admin: bool,
    /// How long the token lasts from now (its `exp`).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    lifetime: Duration,
}

#[derive(Args)]
struct PollArgs {
    /// The topic's poll URL, like http://127.0.0.1:8080/poll/news (plain http only).
    url: String,
    /// Start after message N [default: the URL's cursor=, else the next message published].
    #[arg(long, value_name = "N")]
    cursor: Option<u64>,
    /// Print each message as a JSON object {"seq":N,"epoch":"...","data":"..."} instead of its data
    /// alone ((epoch, seq) names a message: seq starts over when the server restarts).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    token: BearerArg,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on: an IP address or a host name (`localhost:8080`, resolved once, an
    /// IPv4 loopback address preferred) and a port; port 0 lets the kernel choose.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Reactors to run, each on its own thread with its own listener on the same port (the
    /// kernel spreads connections over them); they share the topics. About one per core.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Close a keep-alive connection idle this long (as nginx's keepalive_timeout).
    #[arg(long, default_value = "75s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// A request must arrive whole within this, else 408 (nginx's client_header_timeout is 60s;
    /// shorter here because a long-poll server holds many connections, and a slow or stuck peer
    /// costs a descriptor and buffers while it lasts).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Drop a peer that accepts no bytes for this long (nginx's send_timeout is 60s; shorter here
    /// for the same reason as --header-timeout).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    write_timeout: Duration,
    /// Requests served on one connection before `Connection: close` (as nginx's
    /// keepalive_requests).
    #[arg(long, default_value_t = 1000)]
    max_requests: u32,
    /// Connections open at once [default: the open-file limit minus a reserve].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Long polls held at once, beyond that 503 [default: --max-connections].
    #[arg(long)]
    max_held: Option<usize>,
    /// Default hold time of a long poll.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    poll_timeout: Duration,
    /// Upper bound on a client's `timeout=`.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    max_poll_timeout: Duration,
    /// Messages retained per topic (a ring buffer).
    #[arg(long, default_value_t = 1024)]
    topic_capacity: usize,
    /// Topics that may exist, beyond that 503.
    #[arg(long, default_value_t = 100_000)]
    max_topics: usize,
    /// Message data kept across all topics, counted as stored (escaped JSON and event-stream
    /// lines, plus a fixed overhead per message); past it the oldest messages of the largest rings go first, and
    /// their readers are told how many they missed. A size is plain bytes or a whole number of
    /// KiB, MiB or GiB: 65536, 64KiB, 256MiB, 1GiB.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    max_retained_bytes: usize,
    /// Forget a topic (its messages and its epoch) after this long with no held poll and no
    /// publish.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    topic_idle_timeout: Duration,
    /// Largest request head, else 431 (a size, like --max-retained-bytes).
    #[arg(long, default_value = "16KiB", value_parser = parse_size)]
    max_head_bytes: usize,
    /// Largest request body (a published message), else 413 (a size, like
    /// --max-retained-bytes).
    #[arg(long, default_value = "64KiB", value_parser = parse_size)]
    max_message_bytes: usize,
    /// How long a graceful shutdown waits for in-flight responses.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// An idle event stream gets a `: heartbeat` comment this often.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    sse_heartbeat: Duration,
    /// A browser origin (`http://host:port`) whose pages may read polls and event streams
    /// across origins (CORS); repeatable; `*` allows any.
    #[arg(long)]
    allow_origin: Vec<String>,
    /// Publishing, polling, streaming and the cost view then need a bearer token (JWT, HS256)
    /// signed with this secret, of at least 32 bytes [env: TETHER_JWT_SECRET] (the environment
    /// keeps it out of `ps`).
    #[arg(long, env = "TETHER_JWT_SECRET", hide_env = true, hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Keep the topics' log in Redis (`redis://HOST:PORT[/DB]`), shared by every tether that
    /// names the same Redis, and kept across restarts [default: in this process's memory].
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
}

impl TryFrom<ServeArgs> for Config {
    type Error = String;

    fn try_from(args: ServeArgs) -> Result<Config, String> {
        // Not a clap value parser: clap's error would quote the value, the secret.
        let tokens = args.jwt_secret.map(|secret| TokenKey::new(secret.as_bytes())).transpose()?;
        Ok(Config {
            listen: args.listen,
            workers: args.workers,
            idle_timeout: args.idle_timeout,
            header_timeout: args.header_timeout,
            write_timeout: args.write_timeout,
            max_requests: args.max_requests,
            max_connections: args.max_connections,
            max_held: args.max_held,
            poll_timeout: args.poll_timeout,
            max_poll_timeout: args.max_poll_timeout,
            topic_capacity: args.topic_capacity,
            max_topics: args.max_topics,
            max_retained_bytes: args.max_retained_bytes,
            topic_idle_timeout: args.topic_idle_timeout,
            max_head_bytes: args.max_head_bytes,
            max_message_bytes: args.max_message_bytes,
            drain_timeout: args.drain_timeout,
            sse_heartbeat: args.sse_heartbeat,
            allow_origin: args.allow_origin,
            tokens,
            redis: args.redis,
        })
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let (name, result) = match cli.command {
        Command::Serve(args) => ("tether", Config::try_from(args).and_then(serve)),
        Command::Publish(args) => {
            ("tether publish", commands::publish(&args.url, args.data.as_deref(), args.token.token))
        }
        Command::Poll(args) => {
            let options = PollOptions { url: args.url, cursor: args.cursor, json: args.json, token: args.token.token };
            ("tether poll", commands::poll(&options))
        }
        Command::Token(args) => ("tether token", token(args)),
        Command::Bench(args) => ("tether bench", tether::bench::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{name}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `--listen`: `IP:PORT`, or `NAME:PORT` resolved once with the system's resolver. Of several
/// addresses an IPv4 loopback one is taken (`localhost` may also name `::1`), else the first.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> =
        text.to_socket_addrs().map_err(|e| format!("cannot resolve {text}: {e} (give HOST:PORT)"))?.collect();
    let loopback_v4 = addrs.iter().find(|a| a.is_ipv4() && a.ip().is_loopback());
    loopback_v4.or(addrs.first()).copied().ok_or_else(|| format!("{text} resolves to no address"))
}

/// `tether token`: prints a token for the claims asked, good from now for `--lifetime`.
fn token(args: TokenArgs) -> Result<(), String> {
    let key = TokenKey::new(args.jwt_secret.as_bytes())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| format!("the clock is before 1970: {e}"))?;
    let claims = Claims {
        exp: (now + args.lifetime).as_secs(),
        nbf: None,
        subscribe: args.subscribe,
        publish: args.publish,
        admin: args.admin,
    };
    println!("{}", key.mint(&claims)?);
    Ok(())
}

fn serve(config: Config) -> Result<(), String> {
    config.validate()?;
    let listen = config.listen;
    let workers = Workers::bind(config).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = workers.local_addr().map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "tether listening on http://{addr}").and_then(|()| stdout.flush()).map_err(|e| e.to_string())?;
    drop(stdout);
    workers.run().map_err(|e| format!("server failed: {e}"))
}
