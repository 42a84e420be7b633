//! The Dockerfile parser: lines, directives, continuations, flags, heredocs and the
//! typed instructions, following BuildKit's `frontend/dockerfile/parser` and
//! `instructions` packages rule for rule.

use crate::ast::{
    Add, ArgDecl, CmdLine, Command, Copy, Directive, Dockerfile, Flag, From, Healthcheck, Heredoc,
    Instruction, KeyValue, NetworkMode, Run, SecurityMode, Source, Warning,
};
use crate::shell::{Lexer, NoEnv};

/// A parse failure with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong, lowercase first word.
    pub message: String,
}

/// Parses a whole Dockerfile. Never panics, whatever the input.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    Parser::new(src).run()
}

/// Go's `unicode.IsSpace`.
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]`.
fn is_ws_sep(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_newline(line)
        .trim_start_matches(is_space)
        .starts_with('#')
}

/// One piece of a logical line: where it sits in the joined text and in the file.
#[derive(Debug, Clone, Copy)]
struct Seg {
    joined: usize,
    line: usize,
    col_base: usize,
}

/// A logical line: physical lines joined by continuations.
#[derive(Debug)]
struct Logical {
    text: String,
    segs: Vec<Seg>,
}

impl Logical {
    fn loc(&self, off: usize) -> (usize, usize) {
        let off = off.min(self.text.len());
        let seg = self
            .segs
            .iter()
            .rev()
            .find(|s| s.joined <= off)
            .or(self.segs.first())
            .copied()
            .unwrap_or(Seg {
                joined: 0,
                line: 1,
                col_base: 0,
            });
        let start = seg.joined.min(off);
        let chars = self.text.get(start..off).map_or(0, |s| s.chars().count());
        (seg.line, seg.col_base + chars + 1)
    }
}

/// An error inside one instruction: message and byte offset in the logical line.
#[derive(Debug)]
struct E {
    msg: String,
    off: usize,
}

fn err<T>(off: usize, msg: impl Into<String>) -> Result<T, E> {
    Err(E {
        msg: msg.into(),
        off,
    })
}

struct Directives {
    escape: char,
    done: bool,
    list: Vec<Directive>,
}

impl Directives {
    /// BuildKit's directive regexp `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
    fn possible(&mut self, line: &str, lineno: usize) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = match_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.list.iter().any(|d| d.name == name) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        if name == "escape" {
            match value {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                other => {
                    return Err(format!(
                        "invalid escape token '{other}' does not match ` or \\"
                    ));
                }
            }
        }
        self.list.push(Directive {
            name,
            value: value.to_string(),
            line: lineno,
        });
        Ok(())
    }
}

fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')
}

fn match_directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('#')?.trim_start_matches(is_re_space);
    let name_len = rest
        .char_indices()
        .take_while(|(i, c)| {
            if *i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric()
            }
        })
        .count();
    if name_len == 0 {
        return None;
    }
    let (name, rest) = rest.split_at(name_len);
    let rest = rest.trim_start_matches(is_re_space).strip_prefix('=')?;
    if rest.is_empty() {
        return None;
    }
    let trimmed = rest.trim_start_matches(is_re_space);
    if trimmed.is_empty() {
        // `.+?` takes the last blank when nothing else is left
        let last = rest.char_indices().last().map_or(0, |(i, _)| i);
        return Some((name, &rest[last..]));
    }
    Some((name, trimmed.trim_end_matches(is_re_space)))
}

/// Removes a trailing escape token (followed only by blanks); true if it was there.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(p) => (p, true),
        None => (line, false),
    }
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    pos: usize,
    dirs: Directives,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        Parser {
            lines: src.split_inclusive('\n').collect(),
            pos: 0,
            dirs: Directives {
                escape: '\\',
                done: false,
                list: Vec::new(),
            },
        }
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut instructions: Vec<Instruction> = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        let mut seen_from = false;
        while self.pos < self.lines.len() {
            let raw = self.lines[self.pos];
            self.pos += 1;
            let lineno = self.pos;
            let t = trim_newline(raw);
            let stripped = t.trim_start_matches(is_space);
            self.dirs
                .possible(stripped, lineno)
                .map_err(|m| ParseError {
                    line: lineno,
                    column: 1,
                    message: m,
                })?;
            if let Some(c) = stripped.strip_prefix('#') {
                let c = c.trim_matches(is_space);
                if c.is_empty() {
                    comments.clear();
                } else {
                    comments.push(c.to_string());
                }
                continue;
            }
            let lead = t[..t.len() - stripped.len()].chars().count();
            let escape = self.dirs.escape;
            let (first, mut cont) = trim_continuation(stripped, escape);
            if !cont && first.is_empty() {
                continue;
            }
            let start_line = lineno;
            let mut end_line = lineno;
            let mut logical = Logical {
                text: first.to_string(),
                segs: vec![Seg {
                    joined: 0,
                    line: lineno,
                    col_base: lead,
                }],
            };
            let mut empty_cont = false;
            while cont && self.pos < self.lines.len() {
                let raw = self.lines[self.pos];
                self.pos += 1;
                end_line = self.pos;
                let t = trim_newline(raw);
                if is_comment(t) {
                    continue;
                }
                if t.trim_start_matches(is_space).is_empty() {
                    empty_cont = true;
                    continue;
                }
                let (piece, c) = trim_continuation(t, escape);
                cont = c;
                logical.segs.push(Seg {
                    joined: logical.text.len(),
                    line: end_line,
                    col_base: 0,
                });
                logical.text.push_str(piece);
            }
            if logical.text.trim_matches(is_space).is_empty() {
                continue;
            }
            if empty_cont {
                warnings.push(Warning {
                    line: start_line,
                    message: format!("empty continuation line found in: {}", logical.text),
                });
            }
            let located = |e: E| {
                let (line, column) = logical.loc(e.off);
                ParseError {
                    line,
                    column,
                    message: e.msg,
                }
            };
            let mut inst = parse_instruction(&logical, 0, escape, std::mem::take(&mut comments))
                .map_err(located)?;
            inst.start_line = start_line;
            if inst.can_contain_heredoc() && logical.text.contains("<<") {
                let docs = heredocs_from_line(&logical.text).map_err(|m| ParseError {
                    line: start_line,
                    column: inst.column,
                    message: m,
                })?;
                for mut doc in docs {
                    let mut terminated = false;
                    while self.pos < self.lines.len() {
                        let raw = self.lines[self.pos];
                        self.pos += 1;
                        end_line = self.pos;
                        let mut possible = trim_newline(raw);
                        if doc.chomp {
                            possible = possible.trim_start_matches('\t');
                        }
                        if possible == doc.name {
                            terminated = true;
                            break;
                        }
                        doc.content.push_str(raw);
                    }
                    if !terminated {
                        return Err(ParseError {
                            line: start_line,
                            column: inst.column,
                            message: format!("unterminated heredoc {}", doc.name),
                        });
                    }
                    inst.heredocs.push(doc);
                }
                if let Command::Onbuild(child) = &mut inst.command {
                    child.heredocs = inst.heredocs.clone();
                }
            }
            inst.end_line = end_line;
            if let Command::Onbuild(child) = &mut inst.command {
                child.start_line = start_line;
                child.end_line = end_line;
            }
            match &inst.command {
                Command::From(_) => seen_from = true,
                Command::Arg(_) => {}
                _ if !seen_from => {
                    return Err(ParseError {
                        line: start_line,
                        column: inst.column,
                        message: format!(
                            "no build stage in current context: {} before the first FROM",
                            inst.name
                        ),
                    });
                }
                _ => {}
            }
            instructions.push(inst);
        }
        Ok(Dockerfile {
            escape: self.dirs.escape,
            directives: self.dirs.list,
            instructions,
            warnings,
        })
    }
}

impl Instruction {
    fn can_contain_heredoc(&self) -> bool {
        let node = match &self.command {
            Command::Onbuild(child) => child.as_ref(),
            _ => self,
        };
        matches!(
            node.command,
            Command::Run(_) | Command::Copy(_) | Command::Add(_)
        ) && !node.json
    }
}

/// BuildKit's `extractBuilderFlags`: leading `--flag` words, quotes removed.
/// Returns the flags with their offsets and the offset where arguments start.
fn extract_builder_flags(line: &str) -> (Vec<(String, usize)>, usize) {
    let b: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut word_start = 0;
    let mut blank_ok = false;
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut phase = Phase::Spaces;
    let mut i = 0;
    loop {
        let at_end = i >= b.len();
        let (off, ch) = if at_end { (line.len(), '\0') } else { b[i] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                i += 1;
                continue;
            }
            if ch != '-' || b.get(i + 1).map(|x| x.1) != Some('-') {
                return (words, off);
            }
            phase = Phase::Word;
            word_start = off;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push((word, word_start));
            }
            return (words, line.len());
        }
        match phase {
            Phase::Word => {
                if is_space(ch) {
                    phase = Phase::Spaces;
                    if word == "--" {
                        return (words, off);
                    }
                    if blank_ok || !word.is_empty() {
                        words.push((std::mem::take(&mut word), word_start));
                    }
                    word.clear();
                    blank_ok = false;
                    i += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                    i += 1;
                    continue;
                }
                let mut c = ch;
                if ch == '\\' {
                    if i + 1 >= b.len() {
                        i += 1;
                        continue;
                    }
                    i += 1;
                    c = b[i].1;
                }
                word.push(c);
                i += 1;
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                    i += 1;
                    continue;
                }
                let mut c = ch;
                if ch == '\\' {
                    if i + 1 >= b.len() {
                        phase = Phase::Word;
                        i += 1;
                        continue;
                    }
                    i += 1;
                    c = b[i].1;
                }
                word.push(c);
                i += 1;
            }
            Phase::Spaces => unreachable!("handled above"),
        }
    }
    (words, line.len())
}

/// BuildKit's `parseWords`: split on blanks outside quotes, keeping quotes and escapes.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    #[derive(PartialEq, Clone, Copy)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut phase = Phase::Spaces;
    let mut it = rest.chars().peekable();
    loop {
        let next = it.next();
        let Some(ch) = next else {
            if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            return words;
        };
        if phase == Phase::Spaces {
            if is_space(ch) {
                continue;
            }
            phase = Phase::Word;
        }
        match phase {
            Phase::Word => {
                if is_space(ch) {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    match it.next() {
                        None => continue,
                        Some(c) => {
                            word.push(ch);
                            word.push(c);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                }
                if ch == escape && q != '\'' {
                    match it.next() {
                        None => {
                            phase = Phase::Word;
                            continue;
                        }
                        Some(c) => {
                            word.push(ch);
                            word.push(c);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Phase::Spaces => {}
        }
    }
}

enum JsonErr {
    NotJson,
    NotStringArray,
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// Decodes a leading JSON array of strings; like Go's `json.Decoder`, text after the
/// array is ignored.
fn parse_json(rest: &str) -> Result<Vec<String>, JsonErr> {
    let r = rest.trim_start_matches(is_space);
    if !r.starts_with('[') {
        return Err(JsonErr::NotJson);
    }
    let mut stream = serde_json::Deserializer::from_str(r).into_iter::<serde_json::Value>();
    match stream.next() {
        Some(Ok(serde_json::Value::Array(items))) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(JsonErr::NotStringArray),
            })
            .collect(),
        _ => Err(JsonErr::NotJson),
    }
}

/// `parseMaybeJSON`: exec form when the text is a JSON string array, else shell form.
fn maybe_json(rest: &str, off: usize) -> Result<(Vec<String>, bool), E> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest) {
        Ok(v) => Ok((v, true)),
        Err(JsonErr::NotStringArray) => err(off, NOT_STRING_ARRAY),
        Err(JsonErr::NotJson) => Ok((vec![rest.to_string()], false)),
    }
}

/// `parseStringsWhitespaceDelimited`.
fn split_ws(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_ws_sep)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `parseMaybeJSONToList`.
fn maybe_json_list(rest: &str, off: usize) -> Result<(Vec<String>, bool), E> {
    match parse_json(rest) {
        Ok(v) => Ok((v, true)),
        Err(JsonErr::NotStringArray) => err(off, NOT_STRING_ARRAY),
        Err(JsonErr::NotJson) => Ok((split_ws(rest), false)),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Bool,
    Str,
    Strs,
}

#[derive(Default)]
struct FlagVals {
    vals: Vec<(&'static str, Vec<String>)>,
}

impl FlagVals {
    fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.vals.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|v| v.last().cloned())
    }
    fn boolean(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
    fn strings(&self, name: &str) -> Vec<String> {
        self.get(name).cloned().unwrap_or_default()
    }
}

/// BuildKit's `BFlags.Parse` against the flags an instruction accepts.
fn parse_flags(
    flags: &[(String, usize)],
    spec: &[(&'static str, FlagKind)],
) -> Result<FlagVals, E> {
    let mut out = FlagVals::default();
    for (word, off) in flags {
        let off = *off;
        let Some(arg) = word.strip_prefix("--") else {
            return err(off, format!("arg should start with -- : {word}"));
        };
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (arg, None),
        };
        let Some(&(sname, kind)) = spec.iter().find(|(n, _)| *n == name) else {
            return err(off, format!("unknown flag: {name}"));
        };
        let used = out.vals.iter().position(|(n, _)| *n == sname);
        if used.is_some() && kind != FlagKind::Strs {
            return err(off, format!("duplicate flag specified: {name}"));
        }
        let v = match kind {
            FlagKind::Bool => match value {
                Some("") => return err(off, format!("missing a value on flag: {name}")),
                None => "true".to_string(),
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_string(),
                    "false" => "false".to_string(),
                    _ => {
                        return err(
                            off,
                            format!("expecting boolean value for flag {name}, not: {v}"),
                        );
                    }
                },
            },
            FlagKind::Str | FlagKind::Strs => match value {
                None => return err(off, format!("missing a value on flag: {name}")),
                Some(v) => v.to_string(),
            },
        };
        match used {
            Some(i) => out.vals[i].1.push(v),
            None => out.vals.push((sname, vec![v])),
        }
    }
    Ok(out)
}

/// `^(\d*)<<(-?)([^<]*)$` plus BuildKit's quoted-name detection.
pub(crate) fn parse_heredoc(src: &str) -> Result<Option<Heredoc>, String> {
    let digits = src.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = src[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let fd = src[..digits].parse::<u32>().unwrap_or(0);
    let mut lex = Lexer::new('\\');
    lex.skip_unset_env = true;
    let words = lex.process_words(rest, &NoEnv).map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex.process_words(rest, &NoEnv).map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let name = words.into_iter().next().unwrap_or_default();
    let expand = quotes(&name) == quotes(&raw[0]);
    Ok(Some(Heredoc {
        name,
        expand,
        chomp,
        fd,
        content: String::new(),
    }))
}

fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let mut lex = Lexer::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    let words = lex.process_words(line, &NoEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        if let Some(d) = parse_heredoc(&w)? {
            docs.push(d);
        }
    }
    Ok(docs)
}

fn cmdline(args: &[String], json: bool) -> CmdLine {
    if json {
        CmdLine::Exec(args.to_vec())
    } else {
        CmdLine::Shell(args.join(" "))
    }
}

/// `parseNameVal` for ENV and LABEL.
fn name_vals(rest: &str, escape: char, key: &str, off: usize) -> Result<Vec<KeyValue>, E> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return err(off, format!("{key} requires at least one argument"));
    }
    let mut out = Vec::new();
    if !words[0].contains('=') {
        let mut parts = rest.splitn(2, is_ws_sep);
        let k = parts.next().unwrap_or_default();
        let v = parts.next().map(|v| v.trim_start_matches(is_ws_sep));
        let Some(v) = v else {
            return err(off, format!("{key} must have two arguments"));
        };
        out.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        });
    } else {
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                return err(
                    off,
                    format!(
                        "syntax error - can't find = in {w:?}. must be of the form: name=value"
                    ),
                );
            };
            out.push(KeyValue {
                key: k.to_string(),
                value: v.to_string(),
            });
        }
    }
    if out.iter().any(|kv| kv.key.is_empty()) {
        return err(off, format!("{key} names can not be blank"));
    }
    Ok(out)
}

fn exactly_one(args: &[String], name: &str, off: usize) -> Result<String, E> {
    match args {
        [one] => Ok(one.clone()),
        _ => err(off, format!("{name} requires exactly one argument")),
    }
}

fn parse_duration_flag(
    vals: &FlagVals,
    name: &str,
    off: usize,
) -> Result<Option<std::time::Duration>, E> {
    let Some(s) = vals.string(name) else {
        return Ok(None);
    };
    if s.is_empty() {
        return Ok(None);
    }
    let Some(ns) = crate::duration::parse_go_duration(&s) else {
        return err(off, format!("invalid duration {s:?} for --{name}"));
    };
    if ns == 0 {
        return Ok(None);
    }
    if ns < 1_000_000 {
        return err(off, format!("interval {name:?} cannot be less than 1ms"));
    }
    Ok(Some(std::time::Duration::from_nanos(ns as u64)))
}

/// Parses one logical line (or its tail, for ONBUILD) starting at byte `base`.
fn parse_instruction(
    logical: &Logical,
    base: usize,
    escape: char,
    comments: Vec<String>,
) -> Result<Instruction, E> {
    let text = &logical.text[base..];
    let lead = text.len() - text.trim_start_matches(is_space).len();
    let trimmed = text.trim_matches(is_space);
    let cmd_off = base + lead;
    let name_len = trimmed.find(is_ws_sep).unwrap_or(trimmed.len());
    let name = &trimmed[..name_len];
    let after = &trimmed[name_len..];
    let rest_rel = after.len() - after.trim_start_matches(is_ws_sep).len();
    let rest_all = &after[rest_rel..];
    let rest_off = cmd_off + name_len + rest_rel;
    let (raw_flags, args_start) = extract_builder_flags(rest_all);
    let raw_flags: Vec<(String, usize)> = raw_flags
        .into_iter()
        .map(|(w, o)| (w, rest_off + o))
        .collect();
    let rest_tail = &rest_all[args_start..];
    let rest = rest_tail.trim_matches(is_space);
    let args_off =
        rest_off + args_start + (rest_tail.len() - rest_tail.trim_start_matches(is_space).len());
    let lname = name.to_ascii_lowercase();
    let upper = lname.to_ascii_uppercase();
    let flags: Vec<Flag> = raw_flags
        .iter()
        .map(|(w, o)| {
            let (line, column) = logical.loc(*o);
            let body = w.strip_prefix("--").unwrap_or(w);
            let (n, v) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            Flag {
                name: n,
                value: v,
                line,
                column,
            }
        })
        .collect();
    let no_flags = |raw: &[(String, usize)]| parse_flags(raw, &[]).map(|_| ());
    use FlagKind::{Bool, Str, Strs};

    let mut json = false;
    let args: Vec<String>;
    let command = match lname.as_str() {
        "from" => {
            let f = parse_flags(&raw_flags, &[("platform", Str)])?;
            args = split_ws(rest);
            let stage_name = match args.as_slice() {
                [_, as_kw, stage] if as_kw.eq_ignore_ascii_case("as") => {
                    let lower = stage.to_ascii_lowercase();
                    if !valid_stage_name(&lower) {
                        return err(
                            cmd_off,
                            format!(
                                "invalid name for build stage: {stage:?}, name can't start with a number or contain symbols"
                            ),
                        );
                    }
                    Some(lower)
                }
                [_] => None,
                _ => return err(cmd_off, "FROM requires either one or three arguments"),
            };
            Command::From(From {
                image: args[0].clone(),
                stage_name,
                platform: f.string("platform"),
            })
        }
        "run" => {
            let f = parse_flags(
                &raw_flags,
                &[("mount", Strs), ("network", Str), ("security", Str)],
            )?;
            (args, json) = maybe_json(rest, args_off)?;
            if args.is_empty() {
                return err(cmd_off, "RUN requires at least one argument");
            }
            let mut mounts = Vec::new();
            for m in f.strings("mount") {
                let off = mount_flag_off(&raw_flags, &m).unwrap_or(cmd_off);
                mounts.push(crate::mount::parse_mount(&m).map_err(|msg| E { msg, off })?);
            }
            let network = match f.string("network").as_deref() {
                None => None,
                Some("default") => Some(NetworkMode::Default),
                Some("none") => Some(NetworkMode::None),
                Some("host") => Some(NetworkMode::Host),
                Some(other) => {
                    return err(
                        flag_off(&raw_flags, "network", cmd_off),
                        format!("unsupported network mode {other:?}"),
                    );
                }
            };
            let security = match f.string("security").as_deref() {
                None => None,
                Some("sandbox") => Some(SecurityMode::Sandbox),
                Some("insecure") => Some(SecurityMode::Insecure),
                Some(other) => {
                    return err(
                        flag_off(&raw_flags, "security", cmd_off),
                        format!("unsupported security mode {other:?}"),
                    );
                }
            };
            Command::Run(Run {
                cmd: cmdline(&args, json),
                mounts,
                network,
                security,
            })
        }
        "cmd" | "entrypoint" => {
            no_flags(&raw_flags)?;
            (args, json) = maybe_json(rest, args_off)?;
            let c = cmdline(&args, json);
            if lname == "cmd" {
                Command::Cmd(c)
            } else {
                Command::Entrypoint(c)
            }
        }
        "shell" => {
            no_flags(&raw_flags)?;
            (args, json) = maybe_json(rest, args_off)?;
            if !json {
                return err(cmd_off, "SHELL requires the arguments to be in JSON form");
            }
            if args.is_empty() {
                return err(cmd_off, "SHELL requires at least one argument");
            }
            Command::Shell(args.clone())
        }
        "label" | "env" => {
            no_flags(&raw_flags)?;
            let kvs = name_vals(rest, escape, &upper, cmd_off)?;
            args = kvs
                .iter()
                .flat_map(|kv| [kv.key.clone(), kv.value.clone()])
                .collect();
            if lname == "env" {
                Command::Env(kvs)
            } else {
                Command::Label(kvs)
            }
        }
        "maintainer" | "user" | "workdir" | "stopsignal" => {
            no_flags(&raw_flags)?;
            args = if rest.is_empty() {
                Vec::new()
            } else {
                vec![rest.to_string()]
            };
            let v = exactly_one(&args, &upper, cmd_off)?;
            match lname.as_str() {
                "maintainer" => Command::Maintainer(v),
                "user" => Command::User(v),
                "workdir" => Command::Workdir(v),
                _ => Command::Stopsignal(v),
            }
        }
        "expose" => {
            no_flags(&raw_flags)?;
            args = split_ws(rest);
            if args.is_empty() {
                return err(cmd_off, "EXPOSE requires at least one argument");
            }
            Command::Expose(args.clone())
        }
        "volume" => {
            no_flags(&raw_flags)?;
            (args, json) = maybe_json_list(rest, args_off)?;
            if args.is_empty() {
                return err(cmd_off, "VOLUME requires at least one argument");
            }
            if args.iter().any(|a| a.trim_matches(is_space).is_empty()) {
                return err(cmd_off, "VOLUME specified can not be an empty string");
            }
            Command::Volume(args.clone())
        }
        "add" | "copy" => {
            let is_copy = lname == "copy";
            let f = if is_copy {
                parse_flags(
                    &raw_flags,
                    &[
                        ("from", Str),
                        ("chown", Str),
                        ("chmod", Str),
                        ("link", Bool),
                        ("parents", Bool),
                        ("exclude", Strs),
                    ],
                )?
            } else {
                parse_flags(
                    &raw_flags,
                    &[
                        ("chown", Str),
                        ("chmod", Str),
                        ("link", Bool),
                        ("keep-git-dir", Bool),
                        ("checksum", Str),
                        ("exclude", Strs),
                        ("unpack", Bool),
                    ],
                )?
            };
            (args, json) = maybe_json_list(rest, args_off)?;
            if args.len() < 2 {
                return err(
                    cmd_off,
                    format!(
                        "{upper} requires at least two arguments, but only one was provided. destination could not be determined"
                    ),
                );
            }
            let dest = args[args.len() - 1].clone();
            let heredoc_name = |s: &str| {
                if json {
                    None
                } else {
                    parse_heredoc(s).ok().flatten().map(|h| h.name)
                }
            };
            if heredoc_name(&dest).is_some() {
                return err(
                    args_off,
                    format!("{upper} cannot accept a heredoc as a destination"),
                );
            }
            let sources = args[..args.len() - 1]
                .iter()
                .map(|s| match heredoc_name(s) {
                    Some(n) => Source::Heredoc(n),
                    None => Source::Path(s.clone()),
                })
                .collect();
            if is_copy {
                Command::Copy(Copy {
                    sources,
                    dest,
                    from: f.string("from"),
                    chown: f.string("chown"),
                    chmod: f.string("chmod"),
                    link: f.boolean("link").unwrap_or(false),
                    parents: f.boolean("parents").unwrap_or(false),
                    exclude: f.strings("exclude"),
                })
            } else {
                Command::Add(Add {
                    sources,
                    dest,
                    chown: f.string("chown"),
                    chmod: f.string("chmod"),
                    link: f.boolean("link").unwrap_or(false),
                    keep_git_dir: f.boolean("keep-git-dir").unwrap_or(false),
                    checksum: f.string("checksum"),
                    exclude: f.strings("exclude"),
                    unpack: f.boolean("unpack"),
                })
            }
        }
        "arg" => {
            no_flags(&raw_flags)?;
            args = parse_words(rest, escape);
            if args.is_empty() {
                return err(cmd_off, "ARG requires at least one argument");
            }
            let mut decls = Vec::new();
            for a in &args {
                let d = match a.split_once('=') {
                    Some((k, v)) => ArgDecl {
                        key: k.to_string(),
                        value: Some(v.to_string()),
                    },
                    None => ArgDecl {
                        key: a.clone(),
                        value: None,
                    },
                };
                if d.key.is_empty() {
                    return err(cmd_off, "ARG names can not be blank");
                }
                decls.push(d);
            }
            Command::Arg(decls)
        }
        "onbuild" => {
            no_flags(&raw_flags)?;
            if rest.is_empty() {
                return err(cmd_off, "ONBUILD requires at least one argument");
            }
            let trigger = rest
                .split(is_space)
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return err(
                        args_off,
                        "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    );
                }
                "MAINTAINER" | "FROM" => {
                    return err(
                        args_off,
                        format!("{trigger} isn't allowed as an ONBUILD trigger"),
                    );
                }
                _ => {}
            }
            let child = parse_instruction(logical, args_off, escape, Vec::new())?;
            args = vec![rest.to_string()];
            Command::Onbuild(Box::new(child))
        }
        "healthcheck" => {
            let sep = rest.find(is_space).unwrap_or(rest.len());
            if sep == 0 {
                return err(cmd_off, "HEALTHCHECK requires at least one argument");
            }
            let typ = &rest[..sep];
            let tail = rest[sep..].trim_start_matches(is_space);
            let tail_off = args_off + (rest.len() - tail.len());
            let (cmd_args, j) = maybe_json(tail, tail_off)?;
            json = j;
            args = std::iter::once(typ.to_string())
                .chain(cmd_args.iter().cloned())
                .collect();
            let f = parse_flags(
                &raw_flags,
                &[
                    ("interval", Str),
                    ("timeout", Str),
                    ("start-period", Str),
                    ("start-interval", Str),
                    ("retries", Str),
                ],
            )?;
            match typ.to_ascii_uppercase().as_str() {
                "NONE" => {
                    if !cmd_args.is_empty() {
                        return err(tail_off, "HEALTHCHECK NONE takes no arguments");
                    }
                    Command::Healthcheck(Healthcheck::None)
                }
                "CMD" => {
                    if cmd_args.is_empty() {
                        return err(cmd_off, "missing command after HEALTHCHECK CMD");
                    }
                    let d = |n: &str| parse_duration_flag(&f, n, flag_off(&raw_flags, n, cmd_off));
                    let retries = match f.string("retries").filter(|s| !s.is_empty()) {
                        None => None,
                        Some(s) => {
                            let off = flag_off(&raw_flags, "retries", cmd_off);
                            let n: i64 = s.parse().map_err(|_| E {
                                msg: format!("invalid value {s:?} for --retries"),
                                off,
                            })?;
                            if n < 0 {
                                return err(off, format!("--retries cannot be negative ({n})"));
                            }
                            Some(u32::try_from(n).map_err(|_| E {
                                msg: format!("invalid value {s:?} for --retries"),
                                off,
                            })?)
                        }
                    };
                    Command::Healthcheck(Healthcheck::Cmd {
                        cmd: cmdline(&cmd_args, json),
                        interval: d("interval")?,
                        timeout: d("timeout")?,
                        start_period: d("start-period")?,
                        start_interval: d("start-interval")?,
                        retries,
                    })
                }
                _ => {
                    return err(
                        args_off,
                        format!("unknown type {typ:?} in HEALTHCHECK (try CMD)"),
                    );
                }
            }
        }
        _ => return err(cmd_off, format!("unknown instruction: {name}")),
    };
    let (start_line, column) = logical.loc(cmd_off);
    Ok(Instruction {
        name: name.to_string(),
        start_line,
        end_line: start_line,
        column,
        original: text.to_string(),
        flags,
        args,
        json,
        heredocs: Vec::new(),
        comments,
        command,
    })
}

fn flag_off(raw: &[(String, usize)], name: &str, default: usize) -> usize {
    raw.iter()
        .rev()
        .find(|(w, _)| {
            w.strip_prefix("--")
                .and_then(|b| b.split('=').next())
                .is_some_and(|n| n == name)
        })
        .map_or(default, |(_, o)| *o)
}

fn mount_flag_off(raw: &[(String, usize)], value: &str) -> Option<usize> {
    raw.iter()
        .find(|(w, _)| w.strip_prefix("--mount=") == Some(value))
        .map(|(_, o)| *o)
}

fn valid_stage_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
#[path = "parser_tests.rs"]
mod tests;
