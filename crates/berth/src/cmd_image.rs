//! Image verbs: images, tag, rmi, image inspect/ls/prune, save, load, system check.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use berth_image::{Platform, Store, desc_digest, gc};

use crate::Global;

/// Image verbs, flattened into the top-level command.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// List images.
    Images(ListArgs),
    /// Give an image another name.
    Tag {
        /// Existing image (name or id).
        source: String,
        /// New name.
        target: String,
    },
    /// Remove images (their names; content nothing else uses is deleted).
    Rmi {
        /// Images (names or ids).
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Write images to a tar archive that `docker load` reads.
    Save {
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Images (names or ids).
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Read images from a docker-archive or oci-archive tar.
    Load {
        /// Input file (default: stdin).
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Print only the loaded names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageSub),
    /// Store maintenance.
    #[command(subcommand)]
    System(SystemSub),
}

/// `berth image ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ImageSub {
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show details of images as JSON.
    Inspect {
        /// Images (names or ids).
        #[arg(required = true)]
        images: Vec<String>,
        /// Platform to pick from a multi-platform image.
        #[arg(long, default_value = "linux/amd64")]
        platform: String,
    },
    /// Remove content no image references.
    Prune,
    /// Remove images (same as `berth rmi`).
    Rm {
        /// Images (names or ids).
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Give an image another name (same as `berth tag`).
    Tag {
        /// Existing image.
        source: String,
        /// New name.
        target: String,
    },
    /// Unpack an image's layers into snapshots (what `run` does first); prints them.
    Unpack {
        /// Image (name or id).
        image: String,
        /// Platform to pick from a multi-platform image.
        #[arg(long, default_value = "linux/amd64")]
        platform: String,
    },
    /// Make a deterministic test image (for xtask fixtures and benchmarks).
    #[command(hide = true)]
    Fixture {
        /// `busybox` or `generated`.
        kind: String,
        /// Name to tag it with.
        tag: String,
        /// Generator seed (generated only).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Layers (generated only).
        #[arg(long, default_value_t = 6)]
        layers: usize,
        /// Compressed size in MiB (generated only).
        #[arg(long, default_value_t = 360)]
        size_mib: u64,
    },
}

/// `berth system ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SystemSub {
    /// Remove stopped containers, unused networks, unreferenced image content, and
    /// with --volumes unused anonymous volumes.
    Prune {
        /// Also remove unused anonymous volumes.
        #[arg(long)]
        volumes: bool,
        /// Do not ask (berth never asks; accepted for docker's habit).
        #[arg(short, long)]
        force: bool,
    },
    /// Verify every blob and snapshot and report what is broken.
    Check {
        /// Remove what is broken (corrupt blobs, incomplete snapshots, leftovers).
        #[arg(long)]
        repair: bool,
    },
}

/// Options of a listing.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    format: String,
    /// Only show image ids.
    #[arg(short, long)]
    quiet: bool,
}

/// Store of the images under the global root.
pub fn store(global: &Global) -> anyhow::Result<Store> {
    let root = global.root.join("images");
    Store::open(&root).with_context(|| format!("open image store {}", root.display()))
}

/// `name` with `:latest` added when it has no tag or digest.
pub fn normalize(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The descriptor for a user-given name: the normalized tag first, then ids.
fn lookup(store: &Store, name: &str) -> anyhow::Result<(Option<String>, oci_desc::Descriptor)> {
    let norm = normalize(name);
    if let Ok(d) = store.resolve(&norm) {
        return Ok((Some(norm), d));
    }
    if let Ok(d) = store.resolve(name) {
        return Ok((Some(name.to_string()), d));
    }
    Ok((None, store.lookup(name)?))
}

mod oci_desc {
    pub use berth_image::oci_spec::image::Descriptor;
}

/// Runs an image verb; returns the exit code.
pub fn run(global: &Global, cmd: ImageCommand) -> anyhow::Result<u8> {
    let store = store(global)?;
    match cmd {
        ImageCommand::Images(a) | ImageCommand::Image(ImageSub::Ls(a)) => list(&store, &a),
        ImageCommand::Tag { source, target }
        | ImageCommand::Image(ImageSub::Tag { source, target }) => {
            let (_, desc) = lookup(&store, &source)?;
            let mut desc = desc;
            desc.set_annotations(None);
            store.tag(&normalize(&target), desc)?;
            Ok(0)
        }
        ImageCommand::Rmi { images } | ImageCommand::Image(ImageSub::Rm { images }) => {
            rmi(&store, &images)
        }
        ImageCommand::Image(ImageSub::Inspect { images, platform }) => {
            inspect(&store, &images, &platform)
        }
        ImageCommand::Image(ImageSub::Unpack { image, platform }) => {
            let (_, desc) = lookup(&store, &image)?;
            let img = store.image_from_desc(&desc, &platform.parse()?)?;
            for dir in store.unpack_image(&img)? {
                println!("{}", dir.display());
            }
            Ok(0)
        }
        ImageCommand::Image(ImageSub::Fixture {
            kind,
            tag,
            seed,
            layers,
            size_mib,
        }) => {
            let tag = normalize(&tag);
            let desc = match kind.as_str() {
                "busybox" => berth_image::fixtures::busybox_image(&store, &tag)?,
                "generated" => berth_image::fixtures::generated_image(
                    &store,
                    &tag,
                    seed,
                    layers,
                    size_mib << 20,
                )?,
                other => bail!("unknown fixture {other:?} (busybox or generated)"),
            };
            println!("{tag} {}", desc.digest());
            Ok(0)
        }
        ImageCommand::Image(ImageSub::Prune) => {
            let r = gc::prune(&store)?;
            for d in &r.blobs {
                println!("deleted: {d}");
            }
            println!(
                "Total reclaimed space: {} ({} blobs, {} snapshots)",
                human(r.bytes),
                r.blobs.len(),
                r.snapshots.len()
            );
            Ok(0)
        }
        ImageCommand::Save { output, images } => {
            let names: Vec<String> = images
                .iter()
                .map(|n| {
                    lookup(&store, n).map(|(tag, d)| tag.unwrap_or_else(|| d.digest().to_string()))
                })
                .collect::<anyhow::Result<_>>()?;
            match output {
                Some(path) => {
                    // write next to the target and rename: no half-written archive
                    let mut tmp = path.clone().into_os_string();
                    tmp.push(format!(".tmp{}", std::process::id()));
                    let tmp = PathBuf::from(tmp);
                    let f =
                        File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
                    let res = berth_image::archive::save(&store, &names, BufWriter::new(f))
                        .map_err(anyhow::Error::from)
                        .and_then(|w| Ok(w.into_inner().map_err(|e| e.into_error())?.sync_all()?))
                        .and_then(|()| Ok(std::fs::rename(&tmp, &path)?));
                    if let Err(e) = res {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e.context(format!("save to {}", path.display())));
                    }
                }
                None => {
                    if atty_stdout() {
                        bail!(
                            "refusing to write an archive to a terminal: use -o FILE or redirect stdout"
                        );
                    }
                    let mut w = berth_image::archive::save(
                        &store,
                        &names,
                        BufWriter::new(io::stdout().lock()),
                    )?;
                    w.flush()?;
                }
            }
            Ok(0)
        }
        ImageCommand::Load { input, quiet } => {
            let names = match input {
                Some(path) => {
                    let f =
                        File::open(&path).with_context(|| format!("open {}", path.display()))?;
                    berth_image::archive::load(&store, BufReader::with_capacity(1 << 20, f))
                        .with_context(|| format!("load {}", path.display()))?
                }
                None => berth_image::archive::load(&store, BufReader::new(io::stdin().lock()))?,
            };
            for n in names {
                if quiet {
                    println!("{n}");
                } else {
                    println!("Loaded image: {n}");
                }
            }
            Ok(0)
        }
        ImageCommand::System(SystemSub::Prune { volumes, force: _ }) => {
            let eng = berth_engine::Engine::open(&global.root, &global.state)?;
            let mut removed = Vec::new();
            for c in eng.list()? {
                if !c.is_active() {
                    eng.remove(&c.id, false, false)?;
                    removed.push(c.id);
                }
            }
            if !removed.is_empty() {
                println!("Deleted Containers:\n{}\n", removed.join("\n"));
            }
            let nets = berth_engine::network::prune(&eng.conn)?;
            if !nets.is_empty() {
                println!("Deleted Networks:\n{}\n", nets.join("\n"));
            }
            if volumes {
                let vols = berth_engine::volume::prune(&eng.conn, &global.root, false)?;
                if !vols.is_empty() {
                    println!("Deleted Volumes:\n{}\n", vols.join("\n"));
                }
            }
            // all build cache goes too (its layers are then unreferenced content)
            let cache = berth_build::prune::prune(
                &store,
                &global.root,
                &berth_build::prune::PruneOptions {
                    all: true,
                    until: None,
                },
            )?;
            if !cache.removed.is_empty() {
                println!("Deleted build cache objects: {}\n", cache.removed.len());
            }
            let r = gc::prune(&store)?;
            println!(
                "Total reclaimed space: {} ({} blobs, {} snapshots)",
                human(r.bytes + cache.bytes),
                r.blobs.len(),
                r.snapshots.len()
            );
            Ok(0)
        }
        ImageCommand::System(SystemSub::Check { repair }) => {
            crate::cmd_system::check(global, &store, repair)
        }
    }
}

fn atty_stdout() -> bool {
    use std::io::IsTerminal;
    io::stdout().is_terminal()
}

pub(crate) fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1}kB", b / 1e3)
    } else {
        format!("{bytes}B")
    }
}

fn list(store: &Store, a: &ListArgs) -> anyhow::Result<u8> {
    let mut rows = Vec::new();
    for (name, desc) in store.list()? {
        let (repo, tag) = match name.rfind(':').filter(|&i| !name[i..].contains('/')) {
            Some(i) => (name[..i].to_string(), name[i + 1..].to_string()),
            None => (name.clone(), "<none>".to_string()),
        };
        let (id, size, created) = match store.image_from_desc(&desc, &Platform::default()) {
            Ok(img) => {
                let size: u64 = img.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
                    + img.manifest.config().size();
                (
                    img.config_digest.to_string(),
                    size,
                    img.config.created().clone().unwrap_or_default(),
                )
            }
            Err(_) => (desc.digest().to_string(), desc.size(), String::new()),
        };
        rows.push(serde_json::json!({
            "Repository": repo, "Tag": tag, "Name": name, "Id": id,
            "Digest": desc.digest().to_string(), "Size": size, "Created": created,
        }));
    }
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    if a.format != "table" {
        bail!("unknown format {:?} (table or json)", a.format);
    }
    let short = |id: &str| {
        id.trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect::<String>()
    };
    if a.quiet {
        let mut seen = HashSet::new();
        for r in &rows {
            let id = short(r["Id"].as_str().unwrap_or_default());
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(0);
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{:<40} {:<16} {:<14} {:>10}",
        "REPOSITORY", "TAG", "IMAGE ID", "SIZE"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<40} {:<16} {:<14} {:>10}",
            r["Repository"].as_str().unwrap_or_default(),
            r["Tag"].as_str().unwrap_or_default(),
            short(r["Id"].as_str().unwrap_or_default()),
            human(r["Size"].as_u64().unwrap_or(0))
        )?;
    }
    Ok(0)
}

fn rmi(store: &Store, images: &[String]) -> anyhow::Result<u8> {
    let mut code = 0;
    for name in images {
        let (tag, desc) = match lookup(store, name) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("berth: {e:#}");
                code = 1;
                continue;
            }
        };
        // blobs and snapshots of this image, to delete once nothing else uses them
        let mut blobs = vec![desc_digest(&desc)?];
        let mut chains = Vec::new();
        if let Ok(img) = store.image_from_desc(&desc, &Platform::default()) {
            blobs.push(img.digest());
            blobs.push(img.config_digest.clone());
            for l in img.manifest.layers() {
                blobs.push(desc_digest(l)?);
            }
            chains = img.chain_ids()?;
        }
        match tag {
            Some(t) => {
                store.untag(&t)?;
                println!("Untagged: {t}");
            }
            None => {
                // removing by id removes every name of it
                for (t, d) in store.list()? {
                    if d.digest() == desc.digest() {
                        store.untag(&t)?;
                        println!("Untagged: {t}");
                    }
                }
            }
        }
        let (reachable, live_chains) = gc::reachable(store)?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for b in blobs {
            if !reachable.contains(&b) && store.has_blob(&b) {
                store.remove_blob(&b)?;
                println!("Deleted: {b}");
            }
        }
        for c in chains {
            if !live_chains.contains(&c) && !mounts.contains(c.hex()) {
                store.remove_snapshot(&c)?;
            }
        }
    }
    Ok(code)
}

fn inspect(store: &Store, images: &[String], platform: &str) -> anyhow::Result<u8> {
    let platform: Platform = platform.parse()?;
    let tags = store.list()?;
    let mut out = Vec::new();
    for name in images {
        let (_, desc) = lookup(store, name)?;
        let img = store.image_from_desc(&desc, &platform)?;
        let repo_tags: Vec<&String> = tags
            .iter()
            .filter(|(_, d)| d.digest() == desc.digest())
            .map(|(t, _)| t)
            .collect();
        let size: u64 = img.manifest.layers().iter().map(|l| l.size()).sum();
        let mut labels = BTreeMap::new();
        if let Some(c) = img.config.config() {
            labels.extend(c.labels().clone().unwrap_or_default());
        }
        out.push(serde_json::json!({
            "Id": img.config_digest.to_string(),
            "Digest": img.digest().to_string(),
            "RepoTags": repo_tags,
            "Created": img.config.created(),
            "Architecture": img.config.architecture().to_string(),
            "Os": img.config.os().to_string(),
            "Config": img.config.config(),
            "Labels": labels,
            "RootFS": img.config.rootfs(),
            "Size": size,
            "MediaType": img.manifest_desc.media_type().to_string(),
            "Layers": img.manifest.layers(),
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("busybox"), "busybox:latest");
        assert_eq!(normalize("busybox:1"), "busybox:1");
        assert_eq!(normalize("localhost:5000/a"), "localhost:5000/a:latest");
        assert_eq!(normalize("a@sha256:00"), "a@sha256:00");
    }
}
