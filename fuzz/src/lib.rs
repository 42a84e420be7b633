//! The bodies of berth's fuzz targets.
//!
//! Each `fn(&[u8])` here is one target: `fuzz_targets/<name>.rs` hands libFuzzer's
//! input to it, and `integration-tests/tests/fuzz_regressions.rs` compiles this same
//! file on stable to replay every input kept under `fuzz/corpus-regressions/<name>/`.
//! A body panics (an assertion) when a property breaks; errors for bad input are
//! fine, panics, hangs and escapes are findings.
//!
//! Only the dependencies the regression test also has may be used here: the berth
//! crates, `arbitrary`, `tar` and `serde_json`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};

/// A target body: one fuzz input in, a panic when a property breaks.
pub type Body = fn(&[u8]);

/// Every target by name, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[(&str, Body)] = &[
    ("dockerfile", dockerfile),
    ("shell_word", shell_word),
    ("dockerignore", dockerignore),
    ("image_manifest", image_manifest),
    ("layer_unpack", layer_unpack),
    ("oci_config", oci_config),
    ("kube_manifest", kube_manifest),
    ("image_ref", image_ref),
];

/// Inputs larger than this are ignored: libFuzzer's default `-max_len` is far below
/// it, and replayed files stay small.
const MAX_INPUT: usize = 1 << 16;

fn text(data: &[u8]) -> Option<&str> {
    if data.len() > MAX_INPUT {
        return None;
    }
    std::str::from_utf8(data).ok()
}

/// 1-based line count as an editor shows it (a trailing newline opens no new line).
fn line_count(src: &str) -> usize {
    src.split('\n').count().max(1)
}

/// The Dockerfile parser, then the ARG/ENV scope rules and variable expansion over
/// what it parsed.
///
/// Properties: never panics; an error names a line and column inside the file; every
/// instruction's position is inside the file; expansion of parsed words never panics.
pub fn dockerfile(data: &[u8]) {
    use berth_build::scope::{MetaArgs, StageScope, stages};
    use berth_build::shell::Lexer;

    let Some(src) = text(data) else { return };
    // BuildKit counts lines on \n and on a lone \r alike
    let lines = line_count(src) + src.matches('\r').count();
    let df = match berth_build::parse(src) {
        Ok(df) => df,
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= lines,
                "error line {} outside 1..={lines}: {e}",
                e.line
            );
            assert!(
                e.column >= 1,
                "error column {} is not 1-based: {e}",
                e.column
            );
            assert!(!e.message.is_empty(), "error without a message at {e}");
            return;
        }
    };
    for inst in &df.instructions {
        assert!(
            inst.start_line >= 1 && inst.start_line <= inst.end_line && inst.end_line <= lines,
            "instruction {:?} at lines {}..{} outside 1..={lines}",
            inst.name,
            inst.start_line,
            inst.end_line
        );
        assert!(inst.column >= 1, "instruction {:?} at column 0", inst.name);
        let _ = inst.onbuild_trigger();
        for h in &inst.heredocs {
            let _ = h.data();
        }
    }
    let _ = df.check_config();
    let Ok((meta, stages)) = stages(&df) else {
        return;
    };
    let lexer = Lexer::new(df.escape);
    let build_args: BTreeMap<String, String> =
        [("FUZZ_ARG".to_string(), "v a l".to_string())].into();
    let automatic = [("TARGETOS".to_string(), "linux".to_string())];
    let Ok(meta) = MetaArgs::new(&meta, &build_args, &automatic, &lexer) else {
        return;
    };
    for stage in &stages {
        let _ = meta.expand_from(stage, &lexer);
        let image_env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
        let mut scope = StageScope::new(&meta, &build_args, image_env, df.escape);
        for inst in stage.body {
            if scope.apply(inst).is_err() {
                break;
            }
            if !inst.json && inst.command.expands_variables() {
                for arg in &inst.args {
                    let _ = scope.expand(arg, inst.start_line);
                    let _ = scope.expand_words(arg, inst.start_line);
                }
            }
        }
        let _ = scope.run_env();
    }
}

/// The Dockerfile word lexer on its own. The first byte picks the escape token and
/// the lexer's options, the first line is the word, the other lines `KEY=value`
/// variables.
///
/// Properties: never panics; a word without `$`, quotes or the escape token comes
/// back unchanged.
pub fn shell_word(data: &[u8]) {
    use berth_build::shell::Lexer;

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some(src) = text(rest) else { return };
    let (word, vars) = src.split_once('\n').unwrap_or((src, ""));
    let env: Vec<(String, String)> = vars
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut lex = Lexer::new(if mode & 1 == 0 { '\\' } else { '`' });
    lex.raw_quotes = mode & 2 != 0;
    lex.raw_escapes = mode & 4 != 0;
    lex.skip_unset_env = mode & 8 != 0;
    lex.skip_process_quotes = mode & 16 != 0;
    let one = lex.process_word(word, &env);
    let _ = lex.process_words(word, &env);
    let plain = !word.contains(['$', '\'', '"', lex.escape]);
    if plain {
        assert_eq!(
            one.as_deref(),
            Ok(word),
            "a word without $, quotes or escapes changed"
        );
    }
}

/// The `.dockerignore` reader and matcher. The text up to a line `--` is the file,
/// the lines after it are context paths to ask about.
///
/// Properties: never panics; `clean` is idempotent; when a directory is excluded but
/// a path below it is not, `may_contain_reincluded` says so (a walker that trusted a
/// wrong `false` would leave re-included files out of the build context).
pub fn dockerignore(data: &[u8]) {
    use berth_build::dockerignore::{Matcher, clean, parse_dockerignore};

    let Some(src) = text(data) else { return };
    let (file, paths) = src.split_once("\n--\n").unwrap_or((src, ""));
    let patterns = parse_dockerignore(file);
    for p in &patterns {
        let body = p.strip_prefix('!').unwrap_or(p);
        let once = clean(body);
        assert_eq!(clean(&once), once, "clean is not idempotent on {body:?}");
    }
    let Ok(m) = Matcher::new(&patterns) else {
        return;
    };
    // ask about the given paths and, for cheap extra reach, the patterns themselves
    let mut asked: Vec<String> = paths.lines().map(str::to_string).collect();
    asked.extend(patterns.iter().map(|p| {
        p.trim_start_matches('!')
            .replace(['*', '?', '[', ']', '\\'], "x")
    }));
    for path in asked.iter().take(64) {
        let path = path.trim_matches('/');
        // only plain relative paths walk up through real parent directories (`.` is
        // the context root, which the walker never asks about)
        if path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == ".." || c == ".")
        {
            let _ = m.matches(path);
            continue;
        }
        let excluded = m.matches(path);
        let mut dir = path;
        while let Some(i) = dir.rfind('/') {
            dir = &dir[..i];
            if m.matches(dir) && !excluded {
                assert!(
                    m.may_contain_reincluded(dir),
                    "{dir:?} is excluded and {path:?} below it is re-included, \
                     but may_contain_reincluded({dir:?}) is false"
                );
            }
        }
    }
}

/// Registry and store manifest parsing: berth-image's OCI manifest, index and image
/// config readers (and the config's resolution into what a container runs), and
/// berth-registry's lenient manifest reader with platform selection.
///
/// Properties: never panics; a document the registry reader accepts as an image has a
/// media type; a config resolves with PATH set.
pub fn image_manifest(data: &[u8]) {
    use berth_image::manifest::{
        parse_index, parse_manifest, select_platform, sniff_manifest_type,
    };
    use berth_image::oci_spec::image::ImageConfiguration;

    if data.len() > MAX_INPUT {
        return;
    }
    let digest = berth_image::Digest::of(data);
    let _ = sniff_manifest_type(data);
    if let Ok(m) = parse_manifest(data, &digest) {
        for d in std::iter::once(m.config()).chain(m.layers()) {
            let _ = berth_image::desc_digest(d);
            let _ = berth_image::Compression::from_media_type(d.media_type());
        }
    }
    if let Ok(index) = parse_index(data, &digest) {
        let _ = select_platform(&index, &berth_image::Platform::default());
        let arm = "linux/arm64/v8".parse().expect("a valid platform");
        let _ = select_platform(&index, &arm);
    }
    if let Ok(config) = serde_json::from_slice::<ImageConfiguration>(data) {
        for d in config.rootfs().diff_ids() {
            let _ = d.parse::<berth_image::Digest>();
        }
        if let Ok(rc) = berth_image::runtime_config(&config, empty_rootfs()) {
            assert!(
                rc.env.iter().any(|e| e.starts_with("PATH=")),
                "resolved env has no PATH: {:?}",
                rc.env
            );
            let _ = berth_image::spec::spec_from(&rc, empty_rootfs());
        }
    }
    let content_type = Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8");
    if let Ok(parsed) = berth_registry::manifest::Parsed::parse(data, content_type, "fuzz") {
        assert!(
            !parsed.media_type().is_empty(),
            "parsed manifest without a media type"
        );
        if let berth_registry::manifest::Parsed::Index { manifests, .. } = &parsed {
            let want = berth_registry::Platform::linux_amd64();
            let _ = berth_registry::manifest::select_platform(manifests, &want, "fuzz");
        }
    }
}

/// An empty directory standing for an image's root file system.
fn empty_rootfs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch().join("empty-rootfs");
        fs::create_dir_all(&d).expect("create the empty rootfs");
        d
    })
}

/// This process's scratch directory under the temp dir, removed by [`cleanup`].
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("berth-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("create the fuzz scratch directory");
        d
    })
}

/// Removes what the targets made under the temp dir (call once, at the end).
pub fn cleanup() {
    let d = std::env::temp_dir().join(format!("berth-fuzz-{}", std::process::id()));
    if d.exists() {
        make_removable(&d);
        fs::remove_dir_all(&d).expect("remove the fuzz scratch directory");
    }
}

// ---------------------------------------------------------------------------------
// layer extraction

/// Names the archive entries are made of: a few ordinary ones, whiteout forms, the
/// sentinel's own name (one level up) and the components that try to leave.
const NAMES: &[&str] = &[
    "fza",
    "fzb",
    "fzc",
    ".wh.fza",
    ".wh..wh..opq",
    "sentinel",
    "..",
    ".",
    "",
];

#[derive(Debug, Arbitrary)]
enum Comp {
    Name(u8),
    /// Free text, for what the alphabet misses.
    Raw(String),
}

/// A path as an entry name or link target.
#[derive(Debug, Arbitrary)]
struct PathSpec {
    /// Starts at `/`.
    absolute: bool,
    /// Starts at the sentinel directory's absolute path (wins over `absolute`).
    at_sentinel: bool,
    comps: Vec<Comp>,
    trailing_slash: bool,
}

impl PathSpec {
    fn bytes(&self, sentinel: &Path) -> Vec<u8> {
        let mut parts: Vec<String> = self
            .comps
            .iter()
            .map(|c| match c {
                Comp::Name(i) => NAMES[*i as usize % NAMES.len()].to_string(),
                Comp::Raw(s) => s.replace('\0', ""),
            })
            .collect();
        if self.at_sentinel {
            parts.insert(0, sentinel.to_string_lossy().into_owned());
        } else if self.absolute {
            parts.insert(0, String::new());
        }
        let mut s = parts.join("/");
        if self.trailing_slash {
            s.push('/');
        }
        s.into_bytes()
    }
}

#[derive(Debug, Arbitrary)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(PathSpec),
    Hardlink(PathSpec),
    Fifo,
    /// 0/0, what overlay uses for whiteouts.
    CharDev,
}

#[derive(Debug, Arbitrary)]
struct Entry {
    path: PathSpec,
    /// Overrides the header's name through a PAX `path` record.
    pax_path: Option<PathSpec>,
    kind: Kind,
    mode: u16,
    uid: u16,
    gid: u16,
    mtime: u32,
    xattr: Option<(bool, Vec<u8>)>,
}

#[derive(Debug, Arbitrary)]
enum Layer {
    Entries {
        apply_whiteouts: bool,
        entries: Vec<Entry>,
    },
    /// Bytes straight into the tar reader.
    Raw {
        apply_whiteouts: bool,
        bytes: Vec<u8>,
    },
}

/// Where each run unpacks: `base/a/b/root`, with sentinels at `base/a/sentinel`,
/// `base/a/b/sentinel` and `base/sentinel` whose trees must never change.
struct Sandbox {
    base: PathBuf,
    root: PathBuf,
    /// What is under `base` outside `root` before any run.
    before: Vec<(PathBuf, String)>,
}

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| {
        let base = scratch().join("unpack");
        let root = base.join("a/b/root");
        fs::create_dir_all(&root).expect("create the unpack root");
        for s in ["sentinel", "a/sentinel", "a/b/sentinel"] {
            let s = base.join(s);
            fs::create_dir_all(s.join("fza")).expect("create a sentinel");
            fs::write(s.join("fzb"), b"sentinel").expect("write a sentinel file");
            std::os::unix::fs::symlink("fzb", s.join("fzc")).expect("sentinel symlink");
        }
        let before = snapshot(&base, &root);
        Sandbox { base, root, before }
    })
}

/// Every path under `dir` except `skip`, with what must not change about it.
fn snapshot(dir: &Path, skip: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let md = fs::symlink_metadata(&d).expect("stat a sandbox path");
        out.push((d.clone(), describe(&d, &md)));
        if !md.is_dir() {
            continue;
        }
        let mut names: Vec<PathBuf> = fs::read_dir(&d)
            .expect("list a sandbox directory")
            .map(|e| e.expect("read a directory entry").path())
            .filter(|p| p != skip)
            .collect();
        names.sort();
        stack.extend(names.into_iter().rev());
    }
    out
}

fn describe(p: &Path, md: &fs::Metadata) -> String {
    let content = if md.is_file() {
        format!("{:?}", fs::read(p).unwrap_or_default())
    } else if md.file_type().is_symlink() {
        format!("-> {:?}", fs::read_link(p).unwrap_or_default())
    } else {
        String::new()
    };
    // directory mtimes move when a sibling is created: compare them too, an entry
    // written next to a sentinel is exactly what must not happen
    format!(
        "mode={:o} uid={} gid={} nlink={} size={} mtime={}.{} {content}",
        md.mode(),
        md.uid(),
        md.gid(),
        md.nlink(),
        md.size(),
        md.mtime(),
        md.mtime_nsec()
    )
}

/// Makes everything under `p` writable and searchable again (an unprivileged run may
/// have unpacked 000 directories).
fn make_removable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(md) = fs::symlink_metadata(p) else {
        return;
    };
    if md.is_dir() {
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                make_removable(&e.path());
            }
        }
    }
}

fn header_for(e: &Entry, name: &[u8], sentinel: &Path) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    h.set_mode(u32::from(e.mode) & 0o7777);
    h.set_uid(u64::from(e.uid));
    h.set_gid(u64::from(e.gid));
    h.set_mtime(u64::from(e.mtime));
    h.set_size(0);
    let link = |h: &mut tar::Header, t: &PathSpec| {
        let t = t.bytes(sentinel);
        let n = t.len().min(100);
        h.as_old_mut().linkname[..n].copy_from_slice(&t[..n]);
    };
    match &e.kind {
        Kind::Dir => h.set_entry_type(tar::EntryType::Directory),
        Kind::File(data) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
        }
        Kind::Symlink(t) => {
            h.set_entry_type(tar::EntryType::Symlink);
            link(&mut h, t);
        }
        Kind::Hardlink(t) => {
            h.set_entry_type(tar::EntryType::Link);
            link(&mut h, t);
        }
        Kind::Fifo => h.set_entry_type(tar::EntryType::Fifo),
        Kind::CharDev => {
            h.set_entry_type(tar::EntryType::Char);
            let _ = h.set_device_major(0);
            let _ = h.set_device_minor(0);
        }
    }
    h.set_cksum();
    h
}

fn build_tar(entries: &[Entry], sentinel: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries.iter().take(64) {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(p) = &e.pax_path {
            pax.push(("path".into(), p.bytes(sentinel)));
        }
        if let Some((overlay, value)) = &e.xattr {
            let key = if *overlay {
                "SCHILY.xattr.trusted.overlay.opaque"
            } else {
                "SCHILY.xattr.user.fuzz"
            };
            pax.push((key.into(), value.clone()));
        }
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .expect("append pax records to a Vec");
        }
        let name = e.path.bytes(sentinel);
        let h = header_for(e, &name, sentinel);
        let data: &[u8] = match &e.kind {
            Kind::File(d) => d,
            _ => &[],
        };
        b.append(&h, data).expect("append to a Vec");
    }
    b.into_inner().expect("finish a tar in a Vec")
}

/// Layer extraction into a temporary root. The input describes tar entries (names
/// with `..`, absolute paths, symlinks and hardlinks leading out, whiteouts, PAX
/// overrides) or is raw tar bytes.
///
/// Properties: never panics; after every run nothing outside the root changed (the
/// sentinel trees beside and above it are byte-for-byte and stat-for-stat the same,
/// and nothing new appeared next to them).
pub fn layer_unpack(data: &[u8]) {
    use berth_image::unpack::{Whiteouts, unpack_layer};

    if data.len() > MAX_INPUT {
        return;
    }
    let sb = sandbox();
    let sentinel = sb.base.join("a/sentinel");
    let Ok(layer) = Layer::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let (apply, tar) = match &layer {
        Layer::Entries {
            apply_whiteouts,
            entries,
        } => (*apply_whiteouts, build_tar(entries, &sentinel)),
        Layer::Raw {
            apply_whiteouts,
            bytes,
        } => (*apply_whiteouts, bytes.clone()),
    };
    let mode = if apply {
        Whiteouts::Apply
    } else {
        Whiteouts::Overlay
    };
    let result = unpack_layer(&tar[..], &sb.root, mode);
    let after = snapshot(&sb.base, &sb.root);
    if after != sb.before {
        let changed: Vec<String> = after
            .iter()
            .filter(|a| !sb.before.contains(a))
            .chain(sb.before.iter().filter(|b| !after.contains(b)))
            .map(|(p, d)| format!("{}: {d}", p.display()))
            .collect();
        panic!(
            "unpack ({:?}) changed paths outside its root:\n{}\nentries: {layer:#?}",
            result.as_ref().map(|s| s.entries),
            changed.join("\n")
        );
    }
    // and nothing landed above the sandbox
    if let Some(parent) = sb.base.parent() {
        for name in NAMES.iter().filter(|n| n.starts_with("fz")) {
            assert!(
                fs::symlink_metadata(parent.join(name)).is_err(),
                "unpack created {} above its sandbox",
                parent.join(name).display()
            );
        }
    }
    // empty the root without replacing it: its parent's mtime is part of the snapshot
    make_removable(&sb.root);
    for e in fs::read_dir(&sb.root).expect("list the unpack root") {
        let p = e.expect("read a root entry").path();
        let is_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        if is_dir {
            fs::remove_dir_all(&p).expect("empty the unpack root");
        } else {
            fs::remove_file(&p).expect("empty the unpack root");
        }
    }
}

// ---------------------------------------------------------------------------------

/// `config.json` loading and validation, exactly as berth-oci's create does it.
///
/// Properties: never panics; an accepted config has everything `create` takes for
/// granted (root with a path, process with a program and an absolute cwd, linux with
/// a new mount namespace); a rejected one names the field.
pub fn oci_config(data: &[u8]) {
    use berth_image::oci_spec::runtime::LinuxNamespaceType;

    if data.len() > MAX_INPUT {
        return;
    }
    match berth_runtime::config::parse(Path::new("config.json"), data) {
        Ok(spec) => {
            let root = spec.root().as_ref().expect("accepted config without root");
            assert!(
                !root.path().as_os_str().is_empty(),
                "accepted an empty root.path"
            );
            let process = spec
                .process()
                .as_ref()
                .expect("accepted config without process");
            assert!(
                process
                    .args()
                    .as_ref()
                    .is_some_and(|a| !a.is_empty() && !a[0].is_empty()),
                "accepted config without a program"
            );
            assert!(process.cwd().is_absolute(), "accepted a relative cwd");
            let linux = spec
                .linux()
                .as_ref()
                .expect("accepted config without linux");
            assert!(
                linux
                    .namespaces()
                    .iter()
                    .flatten()
                    .any(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none()),
                "accepted config without a new mount namespace"
            );
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty(), "config error without a message");
        }
    }
}

/// Kubernetes manifests as `berth apply` reads them (YAML streams, JSON, `List`),
/// plus the quantity and label-selector syntaxes.
///
/// Properties: never panics; an error names the source and document; quantities
/// print back to themselves.
pub fn kube_manifest(data: &[u8]) {
    use berth_orchestrator::manifest::{self, LabelSelector, Quantity};

    let Some(src) = text(data) else { return };
    match manifest::parse("fuzz.yaml", src) {
        Ok(parsed) => {
            assert_eq!(
                parsed.objects.len(),
                parsed.values.len(),
                "objects and values differ"
            );
            for o in &parsed.objects {
                let _ = o.kind();
                let _ = o.namespace();
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("fuzz.yaml: document "),
                "error without a location: {msg}"
            );
        }
    }
    let first = src.lines().next().unwrap_or("");
    if let Ok(q) = Quantity::parse(first) {
        let shown = q.to_string();
        let again = Quantity::parse(&shown)
            .unwrap_or_else(|e| panic!("{first:?} parsed as {shown:?} which does not parse: {e}"));
        assert_eq!(
            again, q,
            "{first:?} printed as {shown:?} reads back differently"
        );
        let _ = q.value();
    }
    if let Ok(sel) = LabelSelector::parse(first) {
        let labels: BTreeMap<String, String> = src
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let _ = sel.matches(&labels);
        let _ = sel.check();
    }
}

/// Image references, digests and platform strings.
///
/// Properties: never panics; a parsed reference prints to a string that parses back
/// to the same reference; digests and platforms print back to themselves.
pub fn image_ref(data: &[u8]) {
    use berth_registry::ImageRef;

    let Some(src) = text(data) else { return };
    if let Ok(r) = ImageRef::parse(src) {
        let shown = r.to_string();
        let again = ImageRef::parse(&shown)
            .unwrap_or_else(|e| panic!("{src:?} parsed, but its display {shown:?} does not: {e}"));
        assert_eq!(
            again, r,
            "{src:?} displayed as {shown:?} parses differently"
        );
        let _ = (r.name(), r.api_host(), r.manifest_reference());
        let _ = berth_registry::reference::is_loopback(&r.registry);
    }
    if let Ok(d) = src.parse::<berth_image::Digest>() {
        let shown = d.to_string();
        assert_eq!(
            shown.parse::<berth_image::Digest>().ok(),
            Some(d.clone()),
            "{src:?}"
        );
        let _ = d.to_oci();
    }
    if let Ok(p) = src.parse::<berth_image::Platform>() {
        let shown = p.to_string();
        assert_eq!(
            shown.parse::<berth_image::Platform>().ok(),
            Some(p),
            "{src:?}"
        );
    }
    if let Ok(p) = berth_registry::Platform::parse(src) {
        let shown = p.to_string();
        assert_eq!(
            berth_registry::Platform::parse(&shown).ok(),
            Some(p),
            "{src:?}"
        );
    }
}
