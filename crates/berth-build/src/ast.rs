//! The parsed form of a Dockerfile.
//!
//! Arguments are kept as written (quotes and `$` references included) wherever
//! BuildKit expands them later with the stage's variables: see [`crate::shell::Lexer`]
//! and [`crate::scope`]. Exec-form (JSON) arguments are already decoded.

use std::time::Duration;

use serde::Serialize;

/// A whole Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The escape token in force (`\` unless a directive says otherwise).
    pub escape: char,
    /// Parser directives from the top of the file.
    pub directives: Vec<Directive>,
    /// Instructions in file order.
    pub instructions: Vec<Instruction>,
    /// Things BuildKit warns about (empty continuation lines).
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// The value of a parser directive (`syntax`, `escape`, `check`), if given.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}

/// The `# check=` directive: which build checks to skip and whether findings fail
/// the build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckConfig {
    /// Check names to skip.
    pub skip: Vec<String>,
    /// `skip=all`.
    pub skip_all: bool,
    /// `error=true`: findings are errors.
    pub error: bool,
    /// `experimental=` checks to enable.
    pub experimental: Vec<String>,
}

impl Dockerfile {
    /// Parses the `check` directive (`skip=A,B;error=true`); default when absent.
    pub fn check_config(&self) -> Result<CheckConfig, String> {
        let mut c = CheckConfig::default();
        let Some(v) = self.directive("check") else {
            return Ok(c);
        };
        for part in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, val)) = part.split_once('=') else {
                return Err(format!("invalid check option {part:?}: expected key=value"));
            };
            let list = || {
                val.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    let l = list();
                    c.skip_all = l.iter().any(|x| x.eq_ignore_ascii_case("all"));
                    c.skip = l;
                }
                "error" => {
                    c.error = match val.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => return Err(format!("invalid check error value {other:?}")),
                    }
                }
                "experimental" => c.experimental = list(),
                other => return Err(format!("invalid check option {other:?}")),
            }
        }
        Ok(c)
    }
}

/// A parser directive such as `# syntax=docker/dockerfile:1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// Lowercased name.
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// A non-fatal finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// 1-based line of the instruction concerned.
    pub line: usize,
    /// What was found, lowercase.
    pub message: String,
}

/// One instruction with its position and raw pieces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// The instruction keyword as written (`copy`, `COPY`, `Copy`).
    pub name: String,
    /// First line (1-based).
    pub start_line: usize,
    /// Last line, including continuation lines and heredoc bodies.
    pub end_line: usize,
    /// Column of the keyword (1-based).
    pub column: usize,
    /// The logical line after joining continuations, as BuildKit keeps it.
    pub original: String,
    /// `--name[=value]` flags as written (quotes removed).
    pub flags: Vec<Flag>,
    /// Arguments as the parser splits them (exec form decoded; shell form one string).
    pub args: Vec<String>,
    /// True when the arguments were written in exec (JSON) form.
    pub json: bool,
    /// Heredoc bodies read after this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// Comment lines right above the instruction (without `#`).
    pub comments: Vec<String>,
    /// The typed meaning of the instruction.
    pub command: Command,
}

impl Instruction {
    /// For ONBUILD: the trigger as the image config stores it (the instruction text
    /// after `ONBUILD`, each heredoc body and terminator appended, like BuildKit).
    pub fn onbuild_trigger(&self) -> Option<String> {
        let Command::Onbuild(child) = &self.command else {
            return None;
        };
        let mut out = child.original.trim().to_string();
        for h in &self.heredocs {
            out.push('\n');
            out.push_str(&h.content);
            out.push_str(&h.name);
        }
        Some(out)
    }
}

/// A `--name=value` flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// Name without the leading `--`.
    pub name: String,
    /// The value after `=`; `None` for a bare `--name`.
    pub value: Option<String>,
    /// Line of the flag.
    pub line: usize,
    /// Column of the flag's first `-`.
    pub column: usize,
}

/// A heredoc body (`<<EOF ... EOF`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word with quotes removed; also the file name for `COPY <<name`.
    pub name: String,
    /// False when the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body lines.
    pub chomp: bool,
    /// File descriptor written before `<<` (`3<<EOF`), 0 when none.
    pub fd: u32,
    /// The body as read, every line with its newline.
    pub content: String,
}

impl Heredoc {
    /// The body with leading tabs removed when the heredoc is `<<-`.
    pub fn data(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        let mut out = String::with_capacity(self.content.len());
        for line in self.content.split_inclusive('\n') {
            out.push_str(line.trim_start_matches('\t'));
        }
        out
    }
}

/// Exec form (`["a","b"]`) or shell form (`a b`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CmdLine {
    /// Run directly, no shell.
    Exec(Vec<String>),
    /// Run through the stage's SHELL.
    Shell(String),
}

/// A `KEY=value` pair of ENV or LABEL, raw (quotes and `$` kept for expansion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value as written.
    pub value: String,
}

/// One name of an ARG line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The name as written.
    pub key: String,
    /// The default as written, if any (`ARG A=1`; `ARG A=` gives `Some("")`).
    pub value: Option<String>,
}

/// A source of COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A path, glob or URL as written.
    Path(String),
    /// The heredoc with this name (see [`Instruction::heredocs`]).
    Heredoc(String),
}

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The image reference as written (expanded later with meta ARGs).
    pub image: String,
    /// The stage name, lowercased, if `AS name` was given.
    pub stage_name: Option<String>,
    /// `--platform` as written.
    pub platform: Option<String>,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// The command.
    pub cmd: CmdLine,
    /// `--mount` flags.
    pub mounts: Vec<crate::mount::Mount>,
    /// `--network`.
    pub network: Option<NetworkMode>,
    /// `--security`.
    pub security: Option<SecurityMode>,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The builder's default.
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Normal confinement.
    Sandbox,
    /// Privileged.
    Insecure,
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// Sources in order.
    pub sources: Vec<Source>,
    /// Destination as written.
    pub dest: String,
    /// `--from=stage|image|index`.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    /// Sources in order.
    pub sources: Vec<Source>,
    /// Destination as written.
    pub dest: String,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum=sha256:...`.
    pub checksum: Option<String>,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--unpack` (`None` when not given: archives from the context are unpacked).
    pub unpack: Option<bool>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [options] CMD ...`.
    Cmd {
        /// The test command.
        cmd: CmdLine,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// What an instruction means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// `FROM`.
    From(From),
    /// `RUN`.
    Run(Run),
    /// `CMD`.
    Cmd(CmdLine),
    /// `ENTRYPOINT`.
    Entrypoint(CmdLine),
    /// `SHELL` (exec form only).
    Shell(Vec<String>),
    /// `LABEL`.
    Label(Vec<KeyValue>),
    /// `MAINTAINER`.
    Maintainer(String),
    /// `EXPOSE` ports as written.
    Expose(Vec<String>),
    /// `ENV`.
    Env(Vec<KeyValue>),
    /// `ADD`.
    Add(Add),
    /// `COPY`.
    Copy(Copy),
    /// `VOLUME` paths.
    Volume(Vec<String>),
    /// `USER`.
    User(String),
    /// `WORKDIR`.
    Workdir(String),
    /// `ARG`.
    Arg(Vec<ArgDecl>),
    /// `ONBUILD` with its trigger instruction.
    Onbuild(Box<Instruction>),
    /// `STOPSIGNAL`.
    Stopsignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
}

impl Command {
    /// Whether BuildKit expands `$` references in this instruction's arguments with the
    /// stage's variables (ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME WORKDIR
    /// ARG; not RUN CMD ENTRYPOINT SHELL HEALTHCHECK ONBUILD MAINTAINER, whose text goes
    /// to a shell or is kept verbatim).
    pub fn expands_variables(&self) -> bool {
        matches!(
            self,
            Command::Add(_)
                | Command::Copy(_)
                | Command::Env(_)
                | Command::Expose(_)
                | Command::From(_)
                | Command::Label(_)
                | Command::Stopsignal(_)
                | Command::User(_)
                | Command::Volume(_)
                | Command::Workdir(_)
                | Command::Arg(_)
        )
    }
}
