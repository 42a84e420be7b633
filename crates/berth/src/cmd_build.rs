//! `berth build`: builds from a Dockerfile.
//!
//! Only the parser exists so far: `--dump-ast` prints the parsed Dockerfile as JSON.
//! Without it, the Dockerfile is still parsed (so syntax errors show) and then the
//! command fails saying that building is not implemented yet: it never pretends.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The `build` verb.
#[derive(Debug, clap::Subcommand)]
pub enum BuildCommand {
    /// Build an image from a Dockerfile (not implemented yet: use --dump-ast to see the
    /// parsed Dockerfile).
    Build(BuildArgs),
}

/// Options of `berth build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Print the parsed instructions as JSON (name as written, flags, arguments,
    /// heredocs, start and end line) and build nothing.
    #[arg(long)]
    pub dump_ast: bool,
    /// The build context directory.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
}

/// Runs `berth build`.
pub fn run(_global: &crate::Global, cmd: BuildCommand) -> Result<u8> {
    let BuildCommand::Build(args) = cmd;
    let (name, text) = match &args.file {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the dockerfile from standard input")?;
            ("<stdin>".to_string(), s)
        }
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p)
                .with_context(|| format!("reading dockerfile {}", p.display()))?,
        ),
        None => {
            let p = args.context.join("Dockerfile");
            (
                p.display().to_string(),
                std::fs::read_to_string(&p)
                    .with_context(|| format!("reading dockerfile {}", p.display()))?,
            )
        }
    };
    let df = berth_build::parse(&text).with_context(|| format!("parsing {name}"))?;
    for w in &df.warnings {
        eprintln!("warning: {name}: line {}: {}", w.line, w.message);
    }
    if args.dump_ast {
        let json = serde_json::to_string_pretty(&df).context("encoding the parsed dockerfile")?;
        println!("{json}");
        return Ok(0);
    }
    bail!(
        "building images is not implemented yet ({name} parsed fine: {} instructions); \
         `berth build --dump-ast` prints the parsed dockerfile",
        df.instructions.len()
    )
}
