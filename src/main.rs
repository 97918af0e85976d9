//! The `tether` command line: parses arguments into a `Config` and runs the server.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tether::config::{parse_duration, Config};
use tether::server::Server;

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
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 lets the kernel choose.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Close a keep-alive connection idle this long.
    #[arg(long, default_value = "75s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// A request must arrive whole within this, else 408.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Drop a peer that accepts no bytes for this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    write_timeout: Duration,
    /// Requests served on one connection before `Connection: close`.
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
    /// Largest request head, else 431.
    #[arg(long, default_value_t = 16 * 1024)]
    max_head_bytes: usize,
    /// Largest request body (a published message), else 413.
    #[arg(long, default_value_t = 64 * 1024)]
    max_message_bytes: usize,
    /// How long a graceful shutdown waits for in-flight responses.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

impl From<ServeArgs> for Config {
    fn from(args: ServeArgs) -> Config {
        Config {
            listen: args.listen,
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
            max_head_bytes: args.max_head_bytes,
            max_message_bytes: args.max_message_bytes,
            drain_timeout: args.drain_timeout,
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tether: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> Result<(), String> {
    config.validate()?;
    let mut server = Server::bind(config).map_err(|e| format!("cannot listen: {e}"))?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "tether listening on http://{addr}").and_then(|()| stdout.flush()).map_err(|e| e.to_string())?;
    server.run().map_err(|e| format!("server failed: {e}"))
}
