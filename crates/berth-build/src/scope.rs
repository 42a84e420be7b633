//! Stages and the scope rules of ARG and ENV.
//!
//! - ARGs before the first FROM are *meta args*: they are visible in FROM lines
//!   (image and `--platform`) only. A stage sees one only after redeclaring it with
//!   `ARG NAME` (which takes the meta value as its default).
//! - A `--build-arg` overrides an ARG's default; it has no effect on a name no ARG
//!   declares.
//! - Each stage starts with no ARGs; ENV values win over ARG values of the same name.
//! - Automatic platform args (`TARGETPLATFORM`, `BUILDOS`, ...) supplied by the caller
//!   are meta args.

use std::collections::BTreeMap;

use crate::ast::{ArgDecl, Command, Dockerfile, From, Instruction, KeyValue};
use crate::shell::{Lexer, Lookup, ShellError};

/// A failure to resolve a stage or a variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Expansion failed (`${V:?}` and the like).
    #[error("line {line}: {source}")]
    Expand {
        /// Line of the instruction.
        line: usize,
        /// The lexer's error.
        source: ShellError,
    },
    /// No FROM in the Dockerfile.
    #[error("the dockerfile has no FROM instruction")]
    NoStages,
    /// `--target` names no stage.
    #[error("target stage {0:?} could not be found")]
    UnknownTarget(String),
    /// Two stages share a name.
    #[error("line {line}: duplicate stage name {name:?}")]
    DuplicateStage {
        /// Line of the second FROM.
        line: usize,
        /// The name.
        name: String,
    },
}

/// One build stage: its FROM and the instructions after it.
#[derive(Debug, Clone, Copy)]
pub struct Stage<'a> {
    /// Position among stages (what `COPY --from=0` refers to).
    pub index: usize,
    /// The FROM instruction.
    pub from_instruction: &'a Instruction,
    /// The FROM's fields.
    pub from: &'a From,
    /// The stage's instructions after FROM.
    pub body: &'a [Instruction],
}

impl Stage<'_> {
    /// The stage name (`AS name`), lowercased.
    pub fn name(&self) -> Option<&str> {
        self.from.stage_name.as_deref()
    }
}

/// Splits a Dockerfile into its meta ARG instructions and its stages.
pub fn stages(df: &Dockerfile) -> Result<(Vec<&Instruction>, Vec<Stage<'_>>), ScopeError> {
    let first = df
        .instructions
        .iter()
        .position(|i| matches!(i.command, Command::From(_)))
        .ok_or(ScopeError::NoStages)?;
    let meta: Vec<&Instruction> = df.instructions[..first].iter().collect();
    let mut out: Vec<Stage<'_>> = Vec::new();
    let mut i = first;
    while i < df.instructions.len() {
        let inst = &df.instructions[i];
        let Command::From(from) = &inst.command else {
            unreachable!("stages start at FROM");
        };
        let end = df.instructions[i + 1..]
            .iter()
            .position(|x| matches!(x.command, Command::From(_)))
            .map_or(df.instructions.len(), |p| i + 1 + p);
        if let Some(name) = &from.stage_name
            && out.iter().any(|s| s.name() == Some(name))
        {
            return Err(ScopeError::DuplicateStage {
                line: inst.start_line,
                name: name.clone(),
            });
        }
        out.push(Stage {
            index: out.len(),
            from_instruction: inst,
            from,
            body: &df.instructions[i + 1..end],
        });
        i = end;
    }
    Ok((meta, out))
}

/// Finds the `--target` stage by name (case-insensitive) or index; the last stage
/// when no target is given.
pub fn target_stage<'a>(
    stages: &[Stage<'a>],
    target: Option<&str>,
) -> Result<Stage<'a>, ScopeError> {
    match target {
        None => stages.last().copied().ok_or(ScopeError::NoStages),
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            stages
                .iter()
                .find(|s| s.name() == Some(lower.as_str()))
                .or_else(|| t.parse::<usize>().ok().and_then(|i| stages.get(i)))
                .copied()
                .ok_or_else(|| ScopeError::UnknownTarget(t.to_string()))
        }
    }
}

/// The meta args (ARG before the first FROM, plus automatic args).
#[derive(Debug, Clone, Default)]
pub struct MetaArgs {
    values: Vec<(String, Option<String>)>,
}

impl Lookup for MetaArgs {
    fn lookup(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }
}

impl MetaArgs {
    /// Evaluates the meta ARG instructions in order: each default is expanded with the
    /// meta args before it; a build arg replaces the default.
    pub fn new(
        meta: &[&Instruction],
        build_args: &BTreeMap<String, String>,
        automatic: &[(String, String)],
        lexer: &Lexer,
    ) -> Result<MetaArgs, ScopeError> {
        let mut out = MetaArgs {
            values: automatic
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
        };
        for inst in meta {
            let Command::Arg(decls) = &inst.command else {
                continue;
            };
            for d in decls {
                let (k, v) = expand_decl(d, &out, lexer, inst.start_line)?;
                let v = build_args.get(&k).cloned().or(v);
                out.values.push((k, v));
            }
        }
        Ok(out)
    }

    /// Whether `name` is declared as a meta arg (with or without a value).
    pub fn declared(&self, name: &str) -> bool {
        self.values.iter().any(|(k, _)| k == name)
    }

    /// The FROM image and `--platform` with meta args expanded.
    pub fn expand_from(
        &self,
        stage: &Stage<'_>,
        lexer: &Lexer,
    ) -> Result<(String, Option<String>), ScopeError> {
        let line = stage.from_instruction.start_line;
        let ex = |w: &str| {
            lexer
                .process_word(w, self)
                .map_err(|source| ScopeError::Expand { line, source })
        };
        let image = ex(&stage.from.image)?;
        let platform = stage.from.platform.as_deref().map(ex).transpose()?;
        Ok((image, platform))
    }
}

fn expand_decl(
    d: &ArgDecl,
    env: &(impl Lookup + ?Sized),
    lexer: &Lexer,
    line: usize,
) -> Result<(String, Option<String>), ScopeError> {
    let ex = |w: &str| {
        lexer
            .process_word(w, env)
            .map_err(|source| ScopeError::Expand { line, source })
    };
    let k = ex(&d.key)?;
    let v = d.value.as_deref().map(ex).transpose()?;
    Ok((k, v))
}

/// Variables visible inside one stage while walking its instructions.
#[derive(Debug, Clone)]
pub struct StageScope<'m> {
    meta: &'m MetaArgs,
    build_args: &'m BTreeMap<String, String>,
    env: Vec<(String, String)>,
    args: Vec<(String, Option<String>)>,
    lexer: Lexer,
}

impl Lookup for StageScope<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.env.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }
}

impl<'m> StageScope<'m> {
    /// A stage starting from its base image's environment.
    pub fn new(
        meta: &'m MetaArgs,
        build_args: &'m BTreeMap<String, String>,
        image_env: Vec<(String, String)>,
        escape: char,
    ) -> Self {
        StageScope {
            meta,
            build_args,
            env: image_env,
            args: Vec::new(),
            lexer: Lexer::new(escape),
        }
    }

    /// Expands one word with the stage's variables (quotes removed).
    pub fn expand(&self, word: &str, line: usize) -> Result<String, ScopeError> {
        self.lexer
            .process_word(word, self)
            .map_err(|source| ScopeError::Expand { line, source })
    }

    /// Expands a COPY/ADD heredoc body as BuildKit does: variables only, quotes kept
    /// as ordinary characters, and a backslash as the escape whatever the escape directive.
    pub fn expand_raw(&self, text: &str, line: usize) -> Result<String, ScopeError> {
        let mut lex = Lexer::new('\\');
        lex.skip_process_quotes = true;
        lex.process_word(text, self)
            .map_err(|source| ScopeError::Expand { line, source })
    }

    /// Expands and splits into words (EXPOSE, VOLUME in shell form).
    pub fn expand_words(&self, word: &str, line: usize) -> Result<Vec<String>, ScopeError> {
        self.lexer
            .process_words(word, self)
            .map_err(|source| ScopeError::Expand { line, source })
    }

    /// Expands ENV or LABEL pairs.
    pub fn expand_pairs(
        &self,
        kvs: &[KeyValue],
        line: usize,
    ) -> Result<Vec<(String, String)>, ScopeError> {
        kvs.iter()
            .map(|kv| Ok((self.expand(&kv.key, line)?, self.expand(&kv.value, line)?)))
            .collect()
    }

    /// Applies ARG and ENV instructions to the scope (others change nothing here).
    pub fn apply(&mut self, inst: &Instruction) -> Result<(), ScopeError> {
        let line = inst.start_line;
        match &inst.command {
            Command::Arg(decls) => {
                for d in decls {
                    let (k, v) = expand_decl(d, &*self, &self.lexer, line)?;
                    let v = self
                        .build_args
                        .get(&k)
                        .cloned()
                        .or(v)
                        .or_else(|| self.meta.lookup(&k));
                    self.args.push((k, v));
                }
            }
            Command::Env(kvs) => {
                // all pairs of one ENV line see the values from before the line
                let pairs = self.expand_pairs(kvs, line)?;
                self.env.extend(pairs);
            }
            _ => {}
        }
        Ok(())
    }

    /// The environment a RUN sees: ENV values plus declared ARGs with a value
    /// (ENV wins), in declaration order.
    pub fn run_env(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.env {
            match out.iter_mut().find(|(ok, _)| ok == k) {
                Some(slot) => slot.1 = v.clone(),
                None => out.push((k.clone(), v.clone())),
            }
        }
        for (k, v) in &self.args {
            if let Some(v) = v
                && !self.env.iter().any(|(ek, _)| ek == k)
            {
                match out.iter_mut().find(|(ok, _)| ok == k) {
                    Some(slot) => slot.1 = v.clone(),
                    None => out.push((k.clone(), v.clone())),
                }
            }
        }
        out
    }

    /// The ENV values only (what goes into the image config).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Walks `stage` and returns what `WORKDIR` lines expand to, in order.
    fn workdirs(src: &str, build: &[(&str, &str)], stage: Option<&str>) -> Vec<String> {
        let df = parse(src).unwrap();
        let (meta_insts, st) = stages(&df).unwrap();
        let ba = args(build);
        let lexer = Lexer::new(df.escape);
        let meta = MetaArgs::new(&meta_insts, &ba, &[], &lexer).unwrap();
        let s = target_stage(&st, stage).unwrap();
        let mut scope = StageScope::new(&meta, &ba, Vec::new(), df.escape);
        let mut out = Vec::new();
        for inst in s.body {
            if let Command::Workdir(w) = &inst.command {
                out.push(scope.expand(w, inst.start_line).unwrap());
            }
            scope.apply(inst).unwrap();
        }
        out
    }

    #[test]
    fn meta_args_only_in_from_until_redeclared() {
        let src = "ARG V=1.0\nARG IMG=alpine:${V}\nFROM $IMG AS base\nWORKDIR /a$V\nARG V\nWORKDIR /b$V\n";
        assert_eq!(workdirs(src, &[], None), ["/a", "/b1.0"]);
        assert_eq!(workdirs(src, &[("V", "2")], None), ["/a", "/b2"]);
        let df = parse(src).unwrap();
        let (m, st) = stages(&df).unwrap();
        let lexer = Lexer::default();
        let meta = MetaArgs::new(&m, &BTreeMap::new(), &[], &lexer).unwrap();
        assert_eq!(meta.expand_from(&st[0], &lexer).unwrap().0, "alpine:1.0");
        let ba = args(&[("V", "3.1")]);
        let meta = MetaArgs::new(&m, &ba, &[], &lexer).unwrap();
        assert_eq!(meta.expand_from(&st[0], &lexer).unwrap().0, "alpine:3.1");
    }

    #[test]
    fn arg_defaults_build_args_and_env_precedence() {
        let src = "FROM scratch\nARG A=one B\nWORKDIR /$A/$B\nENV A=env\nWORKDIR /$A\nARG A=again\nWORKDIR /$A\n";
        assert_eq!(workdirs(src, &[], None), ["/one/", "/env", "/env"]);
        assert_eq!(
            workdirs(src, &[("B", "bee")], None),
            ["/one/bee", "/env", "/env"]
        );
        // a build arg without ARG has no effect
        assert_eq!(
            workdirs("FROM scratch\nWORKDIR /$X\n", &[("X", "x")], None),
            ["/"]
        );
    }

    #[test]
    fn stages_do_not_share_args() {
        let src = "FROM scratch AS one\nARG A=1\nWORKDIR /$A\nFROM scratch AS two\nWORKDIR /$A\n";
        assert_eq!(workdirs(src, &[], Some("one")), ["/1"]);
        assert_eq!(workdirs(src, &[], Some("two")), ["/"]);
        assert_eq!(workdirs(src, &[], Some("1")), ["/"]);
        let df = parse(src).unwrap();
        let (_, st) = stages(&df).unwrap();
        assert!(matches!(
            target_stage(&st, Some("nope")),
            Err(ScopeError::UnknownTarget(_))
        ));
    }

    #[test]
    fn env_line_sees_old_values() {
        let src = "FROM scratch\nENV A=1\nENV A=2 B=$A\nWORKDIR /$B\n";
        assert_eq!(workdirs(src, &[], None), ["/1"]);
    }

    #[test]
    fn run_env_and_errors() {
        let df = parse("FROM scratch\nARG A=1 B\nENV C=3 A=0\n").unwrap();
        let (m, st) = stages(&df).unwrap();
        let ba = BTreeMap::new();
        let lexer = Lexer::default();
        let meta = MetaArgs::new(&m, &ba, &[], &lexer).unwrap();
        let mut sc = StageScope::new(&meta, &ba, vec![("PATH".into(), "/bin".into())], '\\');
        for i in st[0].body {
            sc.apply(i).unwrap();
        }
        assert_eq!(
            sc.run_env(),
            [
                ("PATH".to_string(), "/bin".to_string()),
                ("C".into(), "3".into()),
                ("A".into(), "0".into())
            ]
        );
        assert!(matches!(
            sc.expand("${NOPE:?required}", 9),
            Err(ScopeError::Expand { line: 9, .. })
        ));
        assert_eq!(
            stages(&parse("ARG A\n").unwrap()).unwrap_err(),
            ScopeError::NoStages
        );
        let dup = parse("FROM a AS x\nFROM b AS X\n").unwrap();
        assert!(matches!(
            stages(&dup),
            Err(ScopeError::DuplicateStage { line: 2, .. })
        ));
    }

    #[test]
    fn automatic_platform_args() {
        let df =
            parse("FROM --platform=$BUILDPLATFORM busybox\nARG TARGETARCH\nWORKDIR /$TARGETARCH\n")
                .unwrap();
        let (m, st) = stages(&df).unwrap();
        let ba = BTreeMap::new();
        let lexer = Lexer::default();
        let auto = vec![
            ("BUILDPLATFORM".to_string(), "linux/amd64".to_string()),
            ("TARGETARCH".to_string(), "arm64".to_string()),
        ];
        let meta = MetaArgs::new(&m, &ba, &auto, &lexer).unwrap();
        let (_, platform) = meta.expand_from(&st[0], &lexer).unwrap();
        assert_eq!(platform.as_deref(), Some("linux/amd64"));
        let mut sc = StageScope::new(&meta, &ba, Vec::new(), '\\');
        sc.apply(&st[0].body[0]).unwrap();
        if let Command::Workdir(w) = &st[0].body[1].command {
            assert_eq!(sc.expand(w, 3).unwrap(), "/arm64");
        }
    }
}
