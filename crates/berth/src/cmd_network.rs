//! Network verbs: network create, ls, rm, prune, inspect.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use berth_engine::network;

use crate::Global;

/// Network verbs, flattened into the top-level command.
#[derive(Debug, clap::Subcommand)]
pub enum NetworkCommand {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkSub),
}

/// `berth network ...`.
#[derive(Debug, clap::Subcommand)]
pub enum NetworkSub {
    /// Create a bridge network whose containers resolve each other by name.
    Create {
        /// Subnet in CIDR form (default: a free /24 in 10.128.0.0/10).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address (default: the subnet's first address).
        #[arg(long)]
        gateway: Option<String>,
        /// Label KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Driver: only bridge.
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Network name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
        /// Full ids.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Remove networks (refused while containers are attached).
    #[command(alias = "remove")]
    Rm {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks and sandboxes no running container uses (the default bridge
    /// too: it is made again on next use).
    Prune {
        /// Do not ask (there is no prompt; accepted for docker compatibility).
        #[arg(short, long)]
        force: bool,
    },
    /// Show networks as JSON.
    Inspect {
        /// Network names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Runs a network verb; returns the exit code.
pub fn run(global: &Global, cmd: NetworkCommand) -> anyhow::Result<u8> {
    let NetworkCommand::Network(sub) = cmd;
    let conn = berth_engine::store::open(&global.root)?;
    match sub {
        NetworkSub::Create {
            subnet,
            gateway,
            labels,
            driver,
            name,
        } => {
            if driver != "bridge" {
                bail!("network driver {driver:?} is not supported (only bridge)");
            }
            let mut map = BTreeMap::new();
            for l in labels {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                if k.is_empty() {
                    bail!("invalid label {l:?}: expected KEY=VALUE");
                }
                map.insert(k.to_owned(), v.to_owned());
            }
            let info = network::create_network(
                &conn,
                &global.root,
                &name,
                subnet.as_deref(),
                gateway.as_deref(),
                &map,
            )?;
            println!("{}", info.id);
            Ok(0)
        }
        NetworkSub::Ls { quiet, no_trunc } => {
            let nets = network::list_networks(&conn, &global.root)?;
            let short = |id: &str| {
                if no_trunc {
                    id.to_owned()
                } else {
                    id.chars().take(12).collect()
                }
            };
            if quiet {
                for n in &nets {
                    println!("{}", short(&n.id));
                }
                return Ok(0);
            }
            let w = if no_trunc { 64 } else { 12 };
            let nw = nets.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
            println!(
                "{:<w$}   {:<nw$}   {:<7}   {:<18}   SCOPE",
                "NETWORK ID", "NAME", "DRIVER", "SUBNET"
            );
            for n in &nets {
                println!(
                    "{:<w$}   {:<nw$}   {:<7}   {:<18}   local",
                    short(&n.id),
                    n.name,
                    n.driver,
                    n.subnet
                );
            }
            Ok(0)
        }
        NetworkSub::Rm { names } => {
            let mut code = 0;
            for name in names {
                match network::remove_network(&conn, &name) {
                    Ok(()) => println!("{name}"),
                    Err(e) => {
                        eprintln!("berth: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        NetworkSub::Prune { force: _ } => {
            let removed = network::prune(&conn)?;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in removed {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        NetworkSub::Inspect { names } => {
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for name in &names {
                match network::inspect_network(&conn, &global.root, name) {
                    Ok(info) => out.push(info),
                    Err(network::Error::UnknownNetwork { .. }) => missing.push(name.clone()),
                    Err(e) => return Err(e.into()),
                }
            }
            if !out.is_empty() || missing.is_empty() {
                let text = serde_json::to_string_pretty(&out).context("encode networks")?;
                println!("{text}");
            }
            for name in &missing {
                eprintln!("berth: network {name} not found");
            }
            Ok(if missing.is_empty() { 0 } else { 1 })
        }
    }
}
