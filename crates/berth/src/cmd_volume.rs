//! Volume verbs: volume create, ls, rm, inspect, prune (local driver).

use std::collections::BTreeMap;

use berth_engine::{Engine, volume};

use crate::Global;

/// `berth volume ...`, flattened into the top-level command.
#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeSub),
}

/// Volume subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum VolumeSub {
    /// Create a volume (a random name when none is given).
    Create {
        /// Label (key=value).
        #[arg(short, long)]
        label: Vec<String>,
        /// Name.
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
        /// Format: table, json or a template (`{{.Name}}`).
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove volumes.
    #[command(alias = "remove")]
    Rm {
        /// Remove even when a container uses it.
        #[arg(short, long)]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show volumes as JSON.
    Inspect {
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes no container uses (anonymous ones; all with -a).
    Prune {
        /// Named volumes too.
        #[arg(short, long)]
        all: bool,
        /// Do not ask (accepted; berth never asks).
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs a volume verb.
pub fn run(g: &Global, cmd: VolumeCommand) -> anyhow::Result<u8> {
    let eng = Engine::open(&g.root, &g.state)?;
    let VolumeCommand::Volume(sub) = cmd;
    match sub {
        VolumeSub::Create { label, name } => {
            let mut labels = BTreeMap::new();
            for l in label {
                let (k, v) = l.split_once('=').unwrap_or((&l, ""));
                labels.insert(k.to_string(), v.to_string());
            }
            let name = name.unwrap_or_else(berth_engine::names::new_id);
            let (v, _) = volume::create(&eng.conn, &eng.root, &name, &labels, false)?;
            println!("{}", v.name);
        }
        VolumeSub::Ls { quiet, format } => {
            let list = volume::list(&eng.conn, &eng.root)?;
            match (quiet, format.as_deref()) {
                (true, _) => list.iter().for_each(|v| println!("{}", v.name)),
                (_, Some("json")) => {
                    for v in &list {
                        println!("{}", serde_json::to_string(v)?);
                    }
                }
                (_, Some(t)) if t != "table" => {
                    for v in &list {
                        println!(
                            "{}",
                            crate::cmd_container::render(t, &serde_json::to_value(v)?)
                        );
                    }
                }
                _ => {
                    println!("{:<10}VOLUME NAME", "DRIVER");
                    for v in &list {
                        println!("{:<10}{}", v.driver, v.name);
                    }
                }
            }
        }
        VolumeSub::Rm { force, names } => {
            let mut rc = 0;
            for n in names {
                match volume::remove(&eng.conn, &eng.root, &n, force) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("berth: {e}");
                        rc = 1;
                    }
                }
            }
            return Ok(rc);
        }
        VolumeSub::Inspect { names } => {
            let vs = names
                .iter()
                .map(|n| volume::get(&eng.conn, &eng.root, n))
                .collect::<Result<Vec<_>, _>>()?;
            println!("{}", serde_json::to_string_pretty(&vs)?);
        }
        VolumeSub::Prune { all, force: _ } => {
            let removed = volume::prune(&eng.conn, &eng.root, all)?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &removed {
                    println!("{n}");
                }
            }
        }
    }
    Ok(0)
}
