//! The `standin` binary: parse the CLI, bind, announce the address on stdout, serve until killed.

use anyhow::Context as _;
use clap::Parser;
use std::io::Write as _;
use std::net::SocketAddr;

/// Stand-in for the OpenAI API: speaks its JSON and SSE, records what it receives, misbehaves on cue.
#[derive(Debug, Parser)]
#[command(name = "standin", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer KEY` on every /v1 call.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr()?;
    // The one stdout line; callers read it to learn the port.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "standin listening on http://{addr}")?;
    stdout.flush()?;
    drop(stdout);
    standin::serve(listener, cli.api_key).await
}
