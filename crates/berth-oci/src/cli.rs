//! runc's command line, parsed by hand.
//!
//! berth-oci is started once per container verb, so its start-up (code pages touched,
//! heap, peak RSS) is on every container's path; a hand-written parser for this small
//! command line costs a fraction of a general one. Accepted forms: `--opt VALUE`,
//! `--opt=VALUE`, `-o VALUE`, `-oVALUE`, clustered short switches (`-ad`), switches as
//! `--flag` or `--flag=true|false`, and `--` to end options. Global options may come
//! before or after the verb. `exec` and `ps` stop at the container id: what follows is
//! the command (as runc).

use std::path::PathBuf;

const HELP: &str = "berth-oci: runc-compatible OCI runtime

Usage: berth-oci [GLOBAL OPTIONS] COMMAND [OPTIONS] ARGS

Commands:
  create    Create a container (init waits for start)
  start     Start a created container
  state     Print the state of a container
  kill      Send a signal to the container init (or all processes)
  delete    Delete a container
  run       Create and start a container
  exec      Run a new process inside a container
  ps        List the processes of a container
  pause     Freeze all processes of a container
  resume    Thaw a paused container
  update    Update resource limits
  events    Container events and stats
  list      List containers
  spec      Write a default config.json
  features  Print the features JSON

Global options:
      --root DIR          Root directory for container state (default: /run/berth-oci,
                          or $XDG_RUNTIME_DIR/berth-oci when not root)
      --log FILE          Log file (errors)
      --log-format FMT    Log format: text or json [default: text]
      --debug             Accepted (errors are logged either way)
      --systemd-cgroup    Use the systemd cgroup driver (not supported)
  -h, --help              Print help (also after a command)
  -V, --version           Print version

Command options:
  create ID       -b, --bundle DIR  --console-socket SOCK  --pid-file FILE
                  --preserve-fds N  --no-pivot  --no-new-keyring
  run ID          as create, and -d, --detach  (--keep: accepted)
  start|state|pause|resume ID
  kill ID [SIGNAL]          -a, --all (SIGNAL: name or number, default SIGTERM)
  delete ID                 -f, --force
  exec ID [COMMAND...]      -p, --process FILE  -t, --tty  -d, --detach  --pid-file FILE
                            --console-socket SOCK  -e, --env K=V  --cwd DIR  -u, --user UID[:GID]
                            -g, --additional-gids GID  --no-new-privs  --preserve-fds N
  ps ID [PS ARGS...]        -f, --format table|json
  update ID                 -r, --resources FILE|-
  events ID                 --stats  --interval DURATION [default: 5s]
  list                      -f, --format table|json  -q, --quiet
  spec                      -b, --bundle DIR  --rootless
  features
";

/// The parsed command line.
#[derive(Debug)]
pub struct Cli {
    /// `--root`: state root.
    pub root: Option<PathBuf>,
    /// `--log`: log file.
    pub log: Option<PathBuf>,
    /// `--log-format`: `text` or `json`.
    pub log_format: String,
    /// `--systemd-cgroup` (refused).
    pub systemd_cgroup: bool,
    /// The verb.
    pub cmd: Cmd,
}

/// Verbs.
#[derive(Debug)]
pub enum Cmd {
    /// Create a container (init waits for start).
    Create(Create),
    /// Start a created container.
    Start(Id),
    /// Print the state of a container.
    State(Id),
    /// Send a signal to the container init (or all processes).
    Kill(Kill),
    /// Delete a container.
    Delete(Delete),
    /// Create and start a container.
    Run(Run),
    /// Run a new process inside a container.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps(Ps),
    /// Freeze all processes of a container.
    Pause(Id),
    /// Thaw a paused container.
    Resume(Id),
    /// Update resource limits.
    Update(Update),
    /// Container events and stats.
    Events(Events),
    /// List containers.
    List(List),
    /// Write a default config.json.
    Spec(Spec),
    /// Print the features JSON.
    Features,
}

/// Options shared by create and run.
#[derive(Debug, Default)]
pub struct CreateArgs {
    /// Bundle directory.
    pub bundle: Option<PathBuf>,
    /// Console socket receiving the pty master.
    pub console_socket: Option<PathBuf>,
    /// File to write the init pid to.
    pub pid_file: Option<PathBuf>,
    /// Number of extra fds (from 3) to pass to the container.
    pub preserve_fds: u32,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    pub no_new_keyring: bool,
}

/// `create`.
#[derive(Debug)]
pub struct Create {
    /// Shared options.
    pub common: CreateArgs,
    /// Container id.
    pub id: String,
}

/// `run`.
#[derive(Debug)]
pub struct Run {
    /// Shared options.
    pub common: CreateArgs,
    /// Detach from the container.
    pub detach: bool,
    /// Container id.
    pub id: String,
}

/// A verb taking just an id.
#[derive(Debug)]
pub struct Id {
    /// Container id.
    pub id: String,
}

/// `kill`.
#[derive(Debug)]
pub struct Kill {
    /// Send to all processes of the container.
    pub all: bool,
    /// Container id.
    pub id: String,
    /// Signal name or number (default SIGTERM).
    pub signal: Option<String>,
}

/// `delete`.
#[derive(Debug)]
pub struct Delete {
    /// Kill a running container first; a missing container is not an error.
    pub force: bool,
    /// Container id.
    pub id: String,
}

/// `exec`.
#[derive(Debug, Default)]
pub struct ExecArgs {
    /// process.json to run.
    pub process: Option<PathBuf>,
    /// Allocate a pty.
    pub tty: bool,
    /// Detach.
    pub detach: bool,
    /// File to write the process pid to.
    pub pid_file: Option<PathBuf>,
    /// Console socket receiving the pty master.
    pub console_socket: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// uid[:gid].
    pub user: Option<String>,
    /// Additional gids.
    pub additional_gids: Vec<u32>,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// Extra fds to pass.
    pub preserve_fds: u32,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    pub command: Vec<String>,
}

/// `ps`.
#[derive(Debug)]
pub struct Ps {
    /// table or json.
    pub format: String,
    /// Container id.
    pub id: String,
    /// Arguments for ps(1).
    pub ps_args: Vec<String>,
}

/// `update`.
#[derive(Debug)]
pub struct Update {
    /// Resources JSON file, or - for stdin.
    pub resources: Option<String>,
    /// Container id.
    pub id: String,
}

/// `events`.
#[derive(Debug)]
pub struct Events {
    /// Print stats once and exit.
    pub stats: bool,
    /// Interval between stats.
    pub interval: String,
    /// Container id.
    pub id: String,
}

/// `list`.
#[derive(Debug)]
pub struct List {
    /// table or json.
    pub format: String,
    /// Only ids.
    pub quiet: bool,
}

/// `spec`.
#[derive(Debug)]
pub struct Spec {
    /// Bundle directory to write config.json into.
    pub bundle: Option<PathBuf>,
    /// A config for rootless containers.
    pub rootless: bool,
}

/// What parsing ends with besides a command line to run.
#[derive(Debug, PartialEq)]
pub enum Stop {
    /// `--help`: print this text, exit 0.
    Help(&'static str),
    /// `--version`: print this text, exit 0.
    Version(String),
    /// A usage error (exit 2, as runc and clap).
    Usage(String),
}

impl Cli {
    /// Parse the process's arguments; prints help, version or a usage error and exits
    /// when there is no command to run.
    pub fn parse() -> Self {
        use std::io::Write as _;
        let args = std::env::args_os().skip(1).map(|a| {
            a.into_string()
                .map_err(|a| a.to_string_lossy().into_owned())
        });
        let args: Result<Vec<String>, String> = args.collect();
        let r = match args {
            Ok(a) => Self::parse_from(a),
            Err(bad) => Err(Stop::Usage(format!("argument {bad:?} is not valid UTF-8"))),
        };
        match r {
            Ok(cli) => cli,
            Err(Stop::Help(h)) => {
                let _ = std::io::stdout().write_all(h.as_bytes());
                std::process::exit(0)
            }
            Err(Stop::Version(v)) => {
                let _ = writeln!(std::io::stdout(), "{v}");
                std::process::exit(0)
            }
            Err(Stop::Usage(m)) => {
                let _ = writeln!(std::io::stderr(), "berth-oci: {m}\n(see berth-oci --help)");
                std::process::exit(2)
            }
        }
    }

    /// Parse arguments (without the program name).
    pub fn parse_from(args: Vec<String>) -> Result<Self, Stop> {
        let mut p = Parser {
            args: args.into_iter(),
            verb: None,
            pending: None,
            no_more_options: false,
            global: Global {
                log_format: "text".into(),
                ..Global::default()
            },
        };
        // Global options up to the verb.
        let verb = loop {
            match p.next()? {
                None => return Err(Stop::Usage("a command is required".into())),
                Some(Tok::Pos(v)) => break v,
                Some(Tok::Opt(o)) => {
                    if !p.global_opt(&o)? {
                        return Err(Stop::Usage(format!("unknown global option {}", o.shown())));
                    }
                }
            }
        };
        if verb == "help" {
            return Err(Stop::Help(HELP));
        }
        p.verb = Some(verb.clone());
        let cmd = match verb.as_str() {
            "create" => {
                let mut c = CreateArgs::default();
                let id = p.one_id(|p, o| p.create_opt(&mut c, o))?;
                Cmd::Create(Create { common: c, id })
            }
            "run" => {
                let (mut c, mut detach) = (CreateArgs::default(), false);
                let id = p.one_id(|p, o| match o.name() {
                    "d" | "detach" => p.switch(o, &mut detach),
                    // Keep the container after it exits: accepted, not needed.
                    "keep" => p.switch(o, &mut false),
                    _ => p.create_opt(&mut c, o),
                })?;
                Cmd::Run(Run {
                    common: c,
                    detach,
                    id,
                })
            }
            "start" | "state" | "pause" | "resume" => {
                let id = Id {
                    id: p.one_id(|_, _| Ok(false))?,
                };
                match verb.as_str() {
                    "start" => Cmd::Start(id),
                    "state" => Cmd::State(id),
                    "pause" => Cmd::Pause(id),
                    _ => Cmd::Resume(id),
                }
            }
            "kill" => {
                let mut all = false;
                let mut pos = p.positionals(2, |p, o| match o.name() {
                    "a" | "all" => p.switch(o, &mut all),
                    _ => Ok(false),
                })?;
                let signal = (pos.len() == 2).then(|| pos.remove(1));
                let id = p.required_id(pos)?;
                Cmd::Kill(Kill { all, id, signal })
            }
            "delete" => {
                let mut force = false;
                let id = p.one_id(|p, o| match o.name() {
                    "f" | "force" => p.switch(o, &mut force),
                    _ => Ok(false),
                })?;
                Cmd::Delete(Delete { force, id })
            }
            "exec" => {
                let mut e = ExecArgs::default();
                let (id, command) = p.until_id(|p, o| p.exec_opt(&mut e, o))?;
                e.id = id;
                e.command = command;
                Cmd::Exec(e)
            }
            "ps" => {
                let mut format = "table".to_string();
                let (id, ps_args) = p.until_id(|p, o| match o.name() {
                    "f" | "format" => p.value(o).map(|v| format = v).map(|()| true),
                    _ => Ok(false),
                })?;
                Cmd::Ps(Ps {
                    format,
                    id,
                    ps_args,
                })
            }
            "update" => {
                let mut resources = None;
                let id = p.one_id(|p, o| match o.name() {
                    "r" | "resources" => p.value(o).map(|v| resources = Some(v)).map(|()| true),
                    _ => Ok(false),
                })?;
                Cmd::Update(Update { resources, id })
            }
            "events" => {
                let (mut stats, mut interval) = (false, "5s".to_string());
                let id = p.one_id(|p, o| match o.name() {
                    "stats" => p.switch(o, &mut stats),
                    "interval" => p.value(o).map(|v| interval = v).map(|()| true),
                    _ => Ok(false),
                })?;
                Cmd::Events(Events {
                    stats,
                    interval,
                    id,
                })
            }
            "list" => {
                let (mut format, mut quiet) = ("table".to_string(), false);
                p.positionals(0, |p, o| match o.name() {
                    "f" | "format" => p.value(o).map(|v| format = v).map(|()| true),
                    "q" | "quiet" => p.switch(o, &mut quiet),
                    _ => Ok(false),
                })?;
                Cmd::List(List { format, quiet })
            }
            "spec" => {
                let (mut bundle, mut rootless) = (None, false);
                p.positionals(0, |p, o| match o.name() {
                    "b" | "bundle" => p.value(o).map(|v| bundle = Some(v.into())).map(|()| true),
                    "rootless" => p.switch(o, &mut rootless),
                    _ => Ok(false),
                })?;
                Cmd::Spec(Spec { bundle, rootless })
            }
            "features" => {
                p.positionals(0, |_, _| Ok(false))?;
                Cmd::Features
            }
            other => return Err(Stop::Usage(format!("unknown command {other:?}"))),
        };
        let g = p.global;
        Ok(Cli {
            root: g.root,
            log: g.log,
            log_format: g.log_format,
            systemd_cgroup: g.systemd_cgroup,
            cmd,
        })
    }
}

#[derive(Debug, Default)]
struct Global {
    root: Option<PathBuf>,
    log: Option<PathBuf>,
    log_format: String,
    systemd_cgroup: bool,
}

/// One option as written: its name without dashes, whether it was long, and an
/// attached value (`--name=value`, `-nvalue`).
#[derive(Debug)]
struct Opt {
    name: String,
    long: bool,
    value: Option<String>,
}

impl Opt {
    fn name(&self) -> &str {
        &self.name
    }

    fn shown(&self) -> String {
        if self.long {
            format!("--{}", self.name)
        } else {
            format!("-{}", self.name)
        }
    }
}

enum Tok {
    Opt(Opt),
    Pos(String),
}

struct Parser {
    args: std::vec::IntoIter<String>,
    verb: Option<String>,
    /// The rest of a short-switch cluster (`-ad` after `-a`).
    pending: Option<String>,
    no_more_options: bool,
    global: Global,
}

impl Parser {
    fn next(&mut self) -> Result<Option<Tok>, Stop> {
        if let Some(rest) = self.pending.take() {
            return Ok(Some(Tok::Opt(short(&rest))));
        }
        let Some(a) = self.args.next() else {
            return Ok(None);
        };
        if self.no_more_options || a == "-" || !a.starts_with('-') {
            return Ok(Some(Tok::Pos(a)));
        }
        if a == "--" {
            self.no_more_options = true;
            return self.next();
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (long.to_string(), None),
            };
            return Ok(Some(Tok::Opt(Opt {
                name,
                long: true,
                value,
            })));
        }
        Ok(Some(Tok::Opt(short(&a[1..]))))
    }

    /// The value of an option: attached, or the next argument.
    fn value(&mut self, o: &Opt) -> Result<String, Stop> {
        if let Some(v) = &o.value {
            return Ok(v.clone());
        }
        match self.args.next() {
            Some(v) => Ok(v),
            None => Err(Stop::Usage(format!("{} needs a value", o.shown()))),
        }
    }

    fn number(&mut self, o: &Opt) -> Result<u32, Stop> {
        let v = self.value(o)?;
        v.parse()
            .map_err(|_| Stop::Usage(format!("{}: {v:?} is not a non-negative number", o.shown())))
    }

    /// A switch: `--flag`, `--flag=true|false`, or a letter of a short cluster.
    fn switch(&mut self, o: &Opt, flag: &mut bool) -> Result<bool, Stop> {
        *flag = match o.value.as_deref() {
            None => true,
            Some("true") if o.long => true,
            Some("false") if o.long => false,
            Some(v) if !o.long => {
                // `-ad`: the rest is more switches.
                self.pending = Some(v.to_string());
                true
            }
            Some(v) => {
                return Err(Stop::Usage(format!(
                    "{} takes no value (got {v:?}; true or false allowed)",
                    o.shown()
                )));
            }
        };
        Ok(true)
    }

    /// The global options; also accepted after the verb. Ok(true) if taken.
    fn global_opt(&mut self, o: &Opt) -> Result<bool, Stop> {
        match o.name() {
            "root" if o.long => self.global.root = Some(self.value(o)?.into()),
            "log" if o.long => self.global.log = Some(self.value(o)?.into()),
            "log-format" if o.long => {
                let v = self.value(o)?;
                if v != "text" && v != "json" {
                    return Err(Stop::Usage(format!(
                        "--log-format: {v:?} is not one of text, json"
                    )));
                }
                self.global.log_format = v;
            }
            // accepted; errors are logged either way, there are no debug lines yet
            "debug" if o.long => {
                self.switch(o, &mut false)?;
            }
            "systemd-cgroup" if o.long => {
                let mut s = false;
                self.switch(o, &mut s)?;
                self.global.systemd_cgroup = s;
            }
            // accepted for runc compatibility (no checkpoint support)
            "criu" if o.long => {
                self.value(o)?;
            }
            "h" | "help" => return Err(Stop::Help(HELP)),
            "V" | "version" => {
                return Err(Stop::Version(format!(
                    "berth-oci {}",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Options (the verb's, then global ones) and up to `max` positionals; more is an
    /// error. Options may follow positionals (as clap allowed).
    fn positionals(
        &mut self,
        max: usize,
        mut own: impl FnMut(&mut Parser, &Opt) -> Result<bool, Stop>,
    ) -> Result<Vec<String>, Stop> {
        let mut pos = Vec::new();
        while let Some(t) = self.next()? {
            match t {
                Tok::Pos(v) if pos.len() < max => pos.push(v),
                Tok::Pos(v) => {
                    return Err(Stop::Usage(format!(
                        "{}: unexpected argument {v:?}",
                        self.verb_name()
                    )));
                }
                Tok::Opt(o) => self.option(&mut own, &o)?,
            }
        }
        Ok(pos)
    }

    /// Options until the first positional (the id); returns it and every argument
    /// after it untouched (`exec ID CMD...`, `ps ID ARGS...`).
    fn until_id(
        &mut self,
        mut own: impl FnMut(&mut Parser, &Opt) -> Result<bool, Stop>,
    ) -> Result<(String, Vec<String>), Stop> {
        while let Some(t) = self.next()? {
            match t {
                Tok::Pos(id) => {
                    let id = self.required_id(vec![id])?;
                    let mut tail: Vec<String> = self.args.by_ref().collect();
                    // `exec ID -- CMD`: the separator is not part of the command.
                    if !self.no_more_options && tail.first().is_some_and(|a| a == "--") {
                        tail.remove(0);
                    }
                    return Ok((id, tail));
                }
                Tok::Opt(o) => self.option(&mut own, &o)?,
            }
        }
        Err(self.required_id(Vec::new()).unwrap_err())
    }

    fn option(
        &mut self,
        own: &mut impl FnMut(&mut Parser, &Opt) -> Result<bool, Stop>,
        o: &Opt,
    ) -> Result<(), Stop> {
        if own(self, o)? || self.global_opt(o)? {
            return Ok(());
        }
        Err(Stop::Usage(format!(
            "{}: unknown option {}",
            self.verb_name(),
            o.shown()
        )))
    }

    fn one_id(
        &mut self,
        own: impl FnMut(&mut Parser, &Opt) -> Result<bool, Stop>,
    ) -> Result<String, Stop> {
        let pos = self.positionals(1, own)?;
        self.required_id(pos)
    }

    fn required_id(&self, pos: Vec<String>) -> Result<String, Stop> {
        match pos.into_iter().next() {
            Some(id) if !id.is_empty() => Ok(id),
            _ => Err(Stop::Usage(format!(
                "{}: a container id is required",
                self.verb_name()
            ))),
        }
    }

    fn verb_name(&self) -> &str {
        self.verb.as_deref().unwrap_or("berth-oci")
    }

    fn create_opt(&mut self, c: &mut CreateArgs, o: &Opt) -> Result<bool, Stop> {
        match o.name() {
            "b" | "bundle" => c.bundle = Some(self.value(o)?.into()),
            "console-socket" => c.console_socket = Some(self.value(o)?.into()),
            "pid-file" => c.pid_file = Some(self.value(o)?.into()),
            "preserve-fds" => c.preserve_fds = self.number(o)?,
            "no-pivot" => return self.switch(o, &mut c.no_pivot),
            "no-new-keyring" => return self.switch(o, &mut c.no_new_keyring),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn exec_opt(&mut self, e: &mut ExecArgs, o: &Opt) -> Result<bool, Stop> {
        match o.name() {
            "p" | "process" => e.process = Some(self.value(o)?.into()),
            "t" | "tty" => return self.switch(o, &mut e.tty),
            "d" | "detach" => return self.switch(o, &mut e.detach),
            "pid-file" => e.pid_file = Some(self.value(o)?.into()),
            "console-socket" => e.console_socket = Some(self.value(o)?.into()),
            "e" | "env" => {
                let v = self.value(o)?;
                e.env.push(v);
            }
            "cwd" => e.cwd = Some(self.value(o)?.into()),
            "u" | "user" => e.user = Some(self.value(o)?),
            "g" | "additional-gids" => {
                let g = self.number(o)?;
                e.additional_gids.push(g);
            }
            "no-new-privs" => return self.switch(o, &mut e.no_new_privs),
            "preserve-fds" => e.preserve_fds = self.number(o)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `-x`, `-xVALUE`: one letter, the rest as an attached value (or more switches).
fn short(s: &str) -> Opt {
    let mut chars = s.chars();
    let name = chars.next().map(String::from).unwrap_or_default();
    let rest = chars.as_str();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    Opt {
        name,
        long: false,
        value: (!rest.is_empty()).then(|| rest.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, Stop> {
        Cli::parse_from(args.iter().map(|s| s.to_string()).collect())
    }

    fn usage(args: &[&str]) -> String {
        match parse(args) {
            Err(Stop::Usage(m)) => m,
            other => panic!("{args:?}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn engine_command_lines() {
        // containerd's shim: globals before the verb.
        let c = parse(&[
            "--root",
            "/r",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/pid",
            "--console-socket",
            "/s",
            "id1",
        ])
        .unwrap();
        assert_eq!(c.root.as_deref(), Some(std::path::Path::new("/r")));
        assert_eq!(c.log_format, "json");
        let Cmd::Create(cr) = c.cmd else { panic!() };
        assert_eq!(cr.id, "id1");
        assert_eq!(cr.common.bundle.unwrap().to_str(), Some("/b"));
        assert_eq!(cr.common.pid_file.unwrap().to_str(), Some("/b/pid"));
        assert_eq!(cr.common.console_socket.unwrap().to_str(), Some("/s"));
        // podman: `--opt=value` forms.
        let c = parse(&["--log-format=json", "--log=/l", "kill", "--all", "id2", "9"]).unwrap();
        assert_eq!(c.log.unwrap().to_str(), Some("/l"));
        let Cmd::Kill(k) = c.cmd else { panic!() };
        assert!(k.all);
        assert_eq!((k.id.as_str(), k.signal.as_deref()), ("id2", Some("9")));
        // Global options after the verb, options after the id.
        let c = parse(&["delete", "id3", "--force", "--root", "/x"]).unwrap();
        assert_eq!(c.root.unwrap().to_str(), Some("/x"));
        let Cmd::Delete(d) = c.cmd else { panic!() };
        assert!(d.force && d.id == "id3");
        let c = parse(&["run", "-db", "/bundle", "--preserve-fds=2", "id4"]).unwrap();
        let Cmd::Run(r) = c.cmd else { panic!() };
        assert!(r.detach);
        assert_eq!(r.common.bundle.unwrap().to_str(), Some("/bundle"));
        assert_eq!(r.common.preserve_fds, 2);
        let c = parse(&["--systemd-cgroup", "state", "id5"]).unwrap();
        assert!(c.systemd_cgroup);
        assert!(matches!(c.cmd, Cmd::State(Id { id }) if id == "id5"));
    }

    #[test]
    fn exec_and_ps_stop_at_the_id() {
        let c = parse(&[
            "exec",
            "-t",
            "-e",
            "A=1",
            "--env=B=2",
            "-u",
            "1:2",
            "-g",
            "5",
            "-g6",
            "--cwd",
            "/w",
            "id",
            "sh",
            "-c",
            "--tty x",
        ])
        .unwrap();
        let Cmd::Exec(e) = c.cmd else { panic!() };
        assert!(e.tty && !e.detach);
        assert_eq!(e.env, ["A=1", "B=2"]);
        assert_eq!(e.user.as_deref(), Some("1:2"));
        assert_eq!(e.additional_gids, [5, 6]);
        assert_eq!(e.cwd.unwrap().to_str(), Some("/w"));
        assert_eq!(e.id, "id");
        assert_eq!(e.command, ["sh", "-c", "--tty x"]);
        let c = parse(&["exec", "--process", "/p.json", "--detach", "id", "--", "ls"]).unwrap();
        let Cmd::Exec(e) = c.cmd else { panic!() };
        assert_eq!(e.process.unwrap().to_str(), Some("/p.json"));
        assert!(e.detach);
        assert_eq!(e.command, ["ls"]);
        let c = parse(&["ps", "--format", "json", "id", "-ef"]).unwrap();
        let Cmd::Ps(p) = c.cmd else { panic!() };
        assert_eq!((p.format.as_str(), p.id.as_str()), ("json", "id"));
        assert_eq!(p.ps_args, ["-ef"]);
    }

    #[test]
    fn defaults_and_other_verbs() {
        let Cmd::Events(e) = parse(&["events", "id"]).unwrap().cmd else {
            panic!()
        };
        assert_eq!((e.interval.as_str(), e.stats), ("5s", false));
        let Cmd::List(l) = parse(&["list", "-q"]).unwrap().cmd else {
            panic!()
        };
        assert!(l.quiet && l.format == "table");
        let Cmd::Spec(s) = parse(&["spec", "--rootless", "-b", "/d"]).unwrap().cmd else {
            panic!()
        };
        assert!(s.rootless && s.bundle.unwrap().to_str() == Some("/d"));
        let Cmd::Update(u) = parse(&["update", "-r", "-", "id"]).unwrap().cmd else {
            panic!()
        };
        assert_eq!(u.resources.as_deref(), Some("-"));
        assert!(matches!(parse(&["features"]).unwrap().cmd, Cmd::Features));
        let c = parse(&["--debug=false", "pause", "id", "--debug"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Pause(_)));
        let c = parse(&["run", "--keep", "-b", "/b", "id"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Run(Run { detach: false, .. })));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["--help"]).unwrap_err(), Stop::Help(HELP));
        assert_eq!(parse(&["create", "-h"]).unwrap_err(), Stop::Help(HELP));
        assert_eq!(parse(&["help"]).unwrap_err(), Stop::Help(HELP));
        assert!(matches!(parse(&["-V"]), Err(Stop::Version(v)) if v.starts_with("berth-oci ")));
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        assert_eq!(usage(&[]), "a command is required");
        assert_eq!(
            usage(&["frobnicate", "x"]),
            "unknown command \"frobnicate\""
        );
        assert_eq!(usage(&["start"]), "start: a container id is required");
        assert_eq!(
            usage(&["start", "a", "b"]),
            "start: unexpected argument \"b\""
        );
        assert_eq!(
            usage(&["create", "--bundel", "/b", "id"]),
            "create: unknown option --bundel"
        );
        assert_eq!(
            usage(&["create", "id", "--bundle"]),
            "--bundle needs a value"
        );
        assert_eq!(
            usage(&["create", "--preserve-fds", "x", "id"]),
            "--preserve-fds: \"x\" is not a non-negative number"
        );
        assert_eq!(
            usage(&["--log-format", "xml", "state", "id"]),
            "--log-format: \"xml\" is not one of text, json"
        );
        assert_eq!(
            usage(&["delete", "--force=yes", "id"]),
            "--force takes no value (got \"yes\"; true or false allowed)"
        );
        assert_eq!(
            usage(&["--bogus", "state", "id"]),
            "unknown global option --bogus"
        );
        assert_eq!(usage(&["exec", "-t"]), "exec: a container id is required");
        assert_eq!(
            usage(&["kill", "a", "9", "x"]),
            "kill: unexpected argument \"x\""
        );
    }
}
