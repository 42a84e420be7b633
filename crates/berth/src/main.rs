//! `berth`: the user CLI with docker-like and kubectl-like verbs.
//!
//! Glue only: it parses arguments and calls the library crates.

use clap::Parser;

/// berth: a container toolkit.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Show berth's version.
    Version,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => println!("berth {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
