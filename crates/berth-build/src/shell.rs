//! Variable expansion and word splitting the way Dockerfiles define it.
//!
//! This follows BuildKit's shell lexer (not a real shell): `$V`, `${V}`, `${V:-x}`,
//! `${V-x}`, `${V:+x}`, `${V+x}`, `${V:?msg}`, `${V?msg}`, `${V#p}`, `${V##p}`,
//! `${V%p}`, `${V%%p}`, `${V/p/r}` and `${V//p/r}`; single quotes keep everything
//! literal, double quotes allow `$` expansion, and the escape token (`\` or the
//! backtick chosen by the `escape` directive) escapes the next character.

use std::collections::{BTreeMap, HashMap};

/// Where the lexer looks variables up.
pub trait Lookup {
    /// The value of `name`, or `None` when it is unset.
    fn lookup(&self, name: &str) -> Option<String>;
}

impl Lookup for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Lookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Lookup for [(&str, &str)] {
    fn lookup(&self, name: &str) -> Option<String> {
        // last one wins, like repeated ENV lines
        self.iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

impl Lookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// An environment with no variables set.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Lookup for NoEnv {
    fn lookup(&self, _name: &str) -> Option<String> {
        None
    }
}

/// A failed expansion, such as `${V:?msg}` on an unset variable or a missing quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {message}")]
pub struct ShellError {
    /// The word that was being processed.
    pub word: String,
    /// What went wrong, lowercase.
    pub message: String,
}

/// BuildKit's shell-word lexer, configured by the escape token.
#[derive(Debug, Clone)]
pub struct Lexer {
    /// The escape token: `\` by default, or a backtick.
    pub escape: char,
    /// Keep quote characters in the output (used to detect quoted heredoc names).
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written instead of expanding to "".
    pub skip_unset_env: bool,
    /// Treat quotes as ordinary characters (heredoc bodies).
    pub skip_process_quotes: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer with the given escape token and default options.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Expands `word` as one word: quotes are removed, whitespace is kept.
    pub fn process_word(
        &self,
        word: &str,
        env: &(impl Lookup + ?Sized),
    ) -> Result<String, ShellError> {
        self.process(word, env).map(|(w, _)| w)
    }

    /// Expands `word` and splits the result into words on unquoted whitespace
    /// (whitespace produced by a variable's value splits too, as in BuildKit).
    pub fn process_words(
        &self,
        word: &str,
        env: &(impl Lookup + ?Sized),
    ) -> Result<Vec<String>, ShellError> {
        self.process(word, env).map(|(_, ws)| ws)
    }

    fn process(
        &self,
        word: &str,
        env: &(impl Lookup + ?Sized),
    ) -> Result<(String, Vec<String>), ShellError> {
        let mut sw = ShellWord {
            chars: word.chars().collect(),
            pos: 0,
            lex: self,
            env,
            raw_escapes: self.raw_escapes,
        };
        sw.process_stop_on(None, self.raw_escapes)
            .map_err(|message| ShellError {
                word: word.to_string(),
                message,
            })
    }
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct ShellWord<'a, E: ?Sized> {
    chars: Vec<char>,
    pos: usize,
    lex: &'a Lexer,
    env: &'a E,
    raw_escapes: bool,
}

type R<T> = Result<T, String>;

impl<E: Lookup + ?Sized> ShellWord<'_, E> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> R<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = saved || raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> R<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let quotes = !self.lex.skip_process_quotes;
            if ch == '$' {
                let tmp = self.process_dollar()?;
                result.push_str(&tmp);
                words.add_string(&tmp);
            } else if quotes && ch == '\'' {
                let tmp = self.process_single_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else if quotes && ch == '"' {
                let tmp = self.process_double_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else {
                let ch = self.next().unwrap_or(ch);
                if ch == self.lex.escape {
                    if self.raw_escapes {
                        words.add_raw_char(ch);
                        result.push(ch);
                    }
                    match self.next() {
                        // an escape at the very end is dropped
                        None => break,
                        Some(c) => {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                    }
                } else {
                    words.add_char(ch);
                    result.push(ch);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> R<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> R<String> {
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let ch = self.next().unwrap_or_default();
                    if ch == self.lex.escape {
                        match self.peek() {
                            // an escape before the end of the word is ignored
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                if self.raw_escapes {
                                    result.push(ch);
                                }
                                self.next();
                                result.push(c);
                                continue;
                            }
                            // other escapes stay literal inside double quotes
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn get_env(&self, name: &str) -> Option<String> {
        self.env.lookup(name)
    }

    fn process_dollar(&mut self) -> R<String> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        let mut chs = ch.to_string();
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let mut null_is_unset = false;
                if ch == ':' {
                    null_is_unset = true;
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            chs.push(c);
                        }
                        None => return Err("syntax error: missing '}'".into()),
                    }
                }
                let raw = ch == '#' || ch == '%';
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let unset = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
                match ch {
                    '-' => Ok(if unset {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if unset { String::new() } else { word }),
                    '?' => {
                        if value.is_none() {
                            let msg = if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            };
                            return Err(format!("{name}: {msg}"));
                        }
                        if null_is_unset && value.as_deref() == Some("") {
                            let msg = if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            };
                            return Err(format!("{name}: {msg}"));
                        }
                        Ok(value.unwrap_or_default())
                    }
                    '#' | '%' if !null_is_unset => {
                        let value = value.unwrap_or_default();
                        let mut pat = word.as_str();
                        let mut greedy = false;
                        if pat.starts_with(ch) {
                            greedy = true;
                            pat = &pat[ch.len_utf8()..];
                        }
                        let pat: Vec<char> = pat.chars().collect();
                        Ok(if ch == '%' {
                            trim_suffix(&pat, &value, greedy)
                        } else {
                            trim_prefix(&pat, &value, greedy)
                        })
                    }
                    _ => Err(format!("unsupported modifier ({chs}) in substitution")),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '/' in ${}".into());
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err("syntax error: missing '}'".into());
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                let Some(value) = value else {
                    if self.lex.skip_unset_env {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return Ok(String::new());
                };
                let pat: Vec<char> = pattern.chars().collect();
                Ok(replace(&pat, &value, &replacement, all))
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }
}

/// Matches `c` against the bracket expression starting at `pat[start] == '['`.
/// Returns (matched, index after `]`), or `None` when the bracket is not closed.
pub(crate) fn match_class(pat: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pat.get(i), Some('^' | '!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *pat.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if lo == '\\' {
            i += 1;
            lo = *pat.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if pat.get(i) == Some(&'-') && pat.get(i + 1).is_some_and(|&h| h != ']') {
            hi = pat[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *pat.get(i)?;
                i += 1;
            }
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

/// One element of a shell pattern: each matches exactly one character, except `*`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
    /// A bracket expression starting at this index of the pattern.
    Class(usize),
}

/// The pattern as a shell reads it: `\x` is a literal x, an unclosed `[` a
/// literal `[`.
fn tokens(pat: &[char]) -> Vec<Tok> {
    let mut out = Vec::with_capacity(pat.len());
    let mut p = 0;
    while p < pat.len() {
        match pat[p] {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '[' => {
                if let Some((_, next)) = match_class(pat, p, '\0') {
                    out.push(Tok::Class(p));
                    p = next;
                    continue;
                }
                out.push(Tok::Lit('['));
            }
            '\\' if p + 1 < pat.len() => {
                out.push(Tok::Lit(pat[p + 1]));
                p += 2;
                continue;
            }
            c => out.push(Tok::Lit(c)),
        }
        p += 1;
    }
    out
}

/// Which prefixes of `s` the whole pattern matches: `out[k]` for `s[..k]`. One pass
/// over `s` with the set of pattern positions reached (O(len(s) * len(pat))), where
/// matching each prefix on its own costs a factor len(s) more: a long value under
/// `${V/pattern/...}` made expansion take seconds (found by fuzzing).
fn matching_prefixes(pat: &[char], toks: &[Tok], s: impl Iterator<Item = char>) -> Vec<bool> {
    let n = toks.len();
    let close = |set: &mut Vec<bool>| {
        for t in 0..n {
            if set[t] && toks[t] == Tok::Star {
                set[t + 1] = true;
            }
        }
    };
    let mut set = vec![false; n + 1];
    set[0] = true;
    close(&mut set);
    let mut out = vec![set[n]];
    let mut alive = true;
    for c in s {
        if !alive {
            out.push(false);
            continue;
        }
        let mut next = vec![false; n + 1];
        for t in (0..n).filter(|&t| set[t]) {
            match toks[t] {
                Tok::Star => next[t] = true,
                Tok::Any => next[t + 1] = true,
                Tok::Lit(x) if x == c => next[t + 1] = true,
                Tok::Class(start) if match_class(pat, start, c).is_some_and(|(ok, _)| ok) => {
                    next[t + 1] = true
                }
                _ => {}
            }
        }
        close(&mut next);
        alive = next.iter().any(|&b| b);
        out.push(next[n]);
        set = next;
    }
    out
}

fn trim_prefix(pat: &[char], value: &str, greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    let ends = matching_prefixes(pat, &tokens(pat), chars.iter().copied());
    let mut lens = (0..=chars.len()).filter(|&k| ends[k]);
    match if greedy {
        lens.next_back()
    } else {
        lens.next()
    } {
        Some(n) => chars[n..].iter().collect(),
        None => value.to_string(),
    }
}

fn trim_suffix(pat: &[char], value: &str, greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    // every token but `*` takes one character: the reversed pattern matches the
    // reversed suffixes
    let mut toks = tokens(pat);
    toks.reverse();
    let ends = matching_prefixes(pat, &toks, chars.iter().rev().copied());
    let mut lens = (0..=chars.len()).filter(|&k| ends[k]);
    match if greedy {
        lens.next_back()
    } else {
        lens.next()
    } {
        Some(k) => chars[..chars.len() - k].iter().collect(),
        None => value.to_string(),
    }
}

/// The leftmost, then longest, match of the pattern in `s` at or after `from`, as
/// (start, end). One pass over `s` keeping, per pattern position, the earliest start
/// that reaches it (O(len(s) * len(pat))), where trying every start costs a factor
/// len(s) more.
fn find_match(pat: &[char], toks: &[Tok], s: &[char], from: usize) -> Option<(usize, usize)> {
    let n = toks.len();
    let close = |set: &mut [Option<usize>]| {
        for t in 0..n {
            if toks[t] == Tok::Star
                && let Some(st) = set[t]
            {
                set[t + 1] = Some(set[t + 1].map_or(st, |x| x.min(st)));
            }
        }
    };
    let mut set: Vec<Option<usize>> = vec![None; n + 1];
    let mut next: Vec<Option<usize>> = vec![None; n + 1];
    let mut best: Option<(usize, usize)> = None;
    let mut j = from;
    loop {
        // a thread starting here, while no match has been found yet
        if best.is_none() && set[0].is_none() {
            set[0] = Some(j);
        }
        close(&mut set);
        if let Some(st) = set[n] {
            match best {
                Some((bs, _)) if st > bs => {}
                _ => best = Some((st, j)),
            }
        }
        if let Some((bs, _)) = best
            && !set.iter().flatten().any(|&st| st <= bs)
        {
            break;
        }
        if j == s.len() {
            break;
        }
        let c = s[j];
        next.iter_mut().for_each(|x| *x = None);
        for t in 0..n {
            let Some(st) = set[t] else { continue };
            let to = match toks[t] {
                Tok::Star => t,
                Tok::Any => t + 1,
                Tok::Lit(x) if x == c => t + 1,
                Tok::Class(start) if match_class(pat, start, c).is_some_and(|(ok, _)| ok) => t + 1,
                _ => continue,
            };
            next[to] = Some(next[to].map_or(st, |x| x.min(st)));
        }
        std::mem::swap(&mut set, &mut next);
        j += 1;
    }
    best
}

fn replace(pat: &[char], value: &str, replacement: &str, all: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    // an empty pattern replaces nothing
    if pat.is_empty() {
        return value.to_string();
    }
    let toks = tokens(pat);
    let mut out = String::new();
    let mut i = 0;
    while i <= chars.len() {
        let Some((start, end)) = find_match(pat, &toks, &chars, i) else {
            break;
        };
        out.extend(&chars[i..start]);
        out.push_str(replacement);
        if end == start {
            if start < chars.len() {
                out.push(chars[start]);
            }
            i = start + 1;
        } else {
            i = end;
        }
        if !all {
            break;
        }
    }
    out.extend(&chars[i.min(chars.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [
            ("V", "val"),
            ("E", ""),
            ("SP", "a b  c"),
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("FILE", "archive.tar.gz"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn process_word_table() {
        let cases: &[(&str, &str)] = &[
            ("$V", "val"),
            ("${V}", "val"),
            ("x${V}y", "xvaly"),
            ("$Vx", ""),
            ("${U}", ""),
            ("$U", ""),
            ("${U:-def}", "def"),
            ("${E:-def}", "def"),
            ("${E-def}", ""),
            ("${U-def}", "def"),
            ("${V:-def}", "val"),
            ("${V:+alt}", "alt"),
            ("${E:+alt}", ""),
            ("${E+alt}", "alt"),
            ("${U+alt}", ""),
            ("${U:-$V}", "val"),
            ("${U:-${V}x}", "valx"),
            ("\\$V", "$V"),
            ("'$V'", "$V"),
            ("\"$V\"", "val"),
            ("\"\\$V\"", "$V"),
            ("\"a\\b\"", "a\\b"),
            ("\"a\\\"b\"", "a\"b"),
            ("'a\\b'", "a\\b"),
            ("a b", "a b"),
            ("\"a  b\"", "a  b"),
            ("$", "$"),
            ("a$", "a$"),
            ("$1", ""),
            ("${V}$V", "valval"),
            ("\\\\", "\\"),
            ("foo\\", "foo"),
            ("${FILE%.gz}", "archive.tar"),
            ("${FILE%%.*}", "archive"),
            ("${FILE#*.}", "tar.gz"),
            ("${FILE##*.}", "gz"),
            ("${PATH/bin/sbin}", "/usr/local/sbin:/usr/bin:/bin"),
            ("${PATH//bin/sbin}", "/usr/local/sbin:/usr/sbin:/sbin"),
            ("${U/a/b}", ""),
            ("$$", ""),
            ("a'b c'd", "ab cd"),
            ("\"'$V'\"", "'val'"),
        ];
        let lex = Lexer::default();
        for (input, want) in cases {
            let got = lex
                .process_word(input, &env())
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn errors() {
        let lex = Lexer::default();
        let cases: &[(&str, &str)] = &[
            ("${U:?}", "U: is not allowed to be unset"),
            ("${U:?must be set}", "U: must be set"),
            ("${E:?}", "E: is not allowed to be empty"),
            ("${U?}", "U: is not allowed to be unset"),
            ("${V", "syntax error: missing '}'"),
            ("${", "syntax error: missing '}'"),
            ("${}", "syntax error: bad substitution"),
            ("${:x}", "syntax error: bad substitution"),
            (
                "'abc",
                "unexpected end of statement while looking for matching single-quote",
            ),
            (
                "\"abc",
                "unexpected end of statement while looking for matching double-quote",
            ),
            ("${V:x}", "unsupported modifier (:x) in substitution"),
            ("${V^}", "unsupported modifier (^) in substitution"),
        ];
        for (input, want) in cases {
            let err = lex.process_word(input, &env()).unwrap_err();
            assert_eq!(err.message, *want, "input {input:?}");
        }
        // ${E?} is fine: set but empty
        assert_eq!(lex.process_word("${E?}", &env()).unwrap(), "");
        let err = lex.process_word("${U:?}", &env()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to process \"${U:?}\": U: is not allowed to be unset"
        );
    }

    #[test]
    fn words() {
        let lex = Lexer::default();
        let cases: &[(&str, &[&str])] = &[
            ("a b", &["a", "b"]),
            ("  a   b  ", &["a", "b"]),
            ("\"a b\" c", &["a b", "c"]),
            ("$SP", &["a", "b", "c"]),
            ("\"$SP\"", &["a b  c"]),
            ("a\\ b", &["a b"]),
            ("a \"\"", &["a"]),
            ("8080/tcp ${V}", &["8080/tcp", "val"]),
        ];
        for (input, want) in cases {
            assert_eq!(
                lex.process_words(input, &env()).unwrap(),
                *want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn backtick_escape() {
        let lex = Lexer::new('`');
        assert_eq!(lex.process_word("`$V", &env()).unwrap(), "$V");
        assert_eq!(
            lex.process_word("c:\\dir\\$V", &env()).unwrap(),
            "c:\\dir\\val"
        );
        assert_eq!(lex.process_word("\"a`\"b\"", &env()).unwrap(), "a\"b");
    }

    #[test]
    fn skip_unset_and_raw() {
        let lex = Lexer {
            skip_unset_env: true,
            ..Lexer::default()
        };
        assert_eq!(
            lex.process_word("$U ${U} ${U:-x} $V", &env()).unwrap(),
            "$U ${U} ${U:-x} val"
        );
        let raw = Lexer {
            raw_quotes: true,
            ..Lexer::default()
        };
        assert_eq!(raw.process_word("\"EOF\"", &NoEnv).unwrap(), "\"EOF\"");
        assert_eq!(raw.process_word("'EOF'", &NoEnv).unwrap(), "'EOF'");
        let q = Lexer {
            skip_process_quotes: true,
            ..Lexer::default()
        };
        assert_eq!(
            q.process_word("'$V' \"$V\"", &env()).unwrap(),
            "'val' \"val\""
        );
    }

    #[test]
    fn prefix_matching_agrees_with_glob() {
        let pats = [
            "", "*", "a*", "*a", "a*b*c", "?", "a?c", "[a-c]*", "*[!b]", "\\*x", "[", "[a", "a[",
            "**", "*\\", "x*y*", "[]a]*", "*[a-]",
        ];
        let texts = [
            "", "a", "abc", "aabbcc", "xayb*x", "[a", "c]a-", "ab\\", "*x", "]a",
        ];
        for p in pats {
            let pat: Vec<char> = p.chars().collect();
            let toks = tokens(&pat);
            let mut rev = toks.clone();
            rev.reverse();
            for t in texts {
                let s: Vec<char> = t.chars().collect();
                let ends = matching_prefixes(&pat, &toks, s.iter().copied());
                let rends = matching_prefixes(&pat, &rev, s.iter().rev().copied());
                for k in 0..=s.len() {
                    assert_eq!(ends[k], shell_glob(&pat, &s[..k]), "{p:?} on {:?}", &t[..k]);
                    let suffix = &s[s.len() - k..];
                    assert_eq!(
                        rends[k],
                        shell_glob(&pat, suffix),
                        "{p:?} on suffix {suffix:?}"
                    );
                }
            }
        }
    }

    /// The matcher expansion used before `matching_prefixes` (single-star backtracking,
    /// one whole string at a time): the reference the new matcher is checked against.
    fn shell_glob(pat: &[char], s: &[char]) -> bool {
        // iterative matcher with single-star backtracking
        let (mut p, mut i) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while i < s.len() {
            if p < pat.len() {
                match pat[p] {
                    '*' => {
                        star = Some((p, i));
                        p += 1;
                        continue;
                    }
                    '?' => {
                        p += 1;
                        i += 1;
                        continue;
                    }
                    '[' => {
                        if let Some((ok, next)) = match_class(pat, p, s[i])
                            && ok
                        {
                            p = next;
                            i += 1;
                            continue;
                        }
                        if match_class(pat, p, s[i]).is_none() && s[i] == '[' {
                            p += 1;
                            i += 1;
                            continue;
                        }
                    }
                    '\\' if p + 1 < pat.len() => {
                        if pat[p + 1] == s[i] {
                            p += 2;
                            i += 1;
                            continue;
                        }
                    }
                    c => {
                        if c == s[i] {
                            p += 1;
                            i += 1;
                            continue;
                        }
                    }
                }
            }
            match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            }
        }
        while p < pat.len() && pat[p] == '*' {
            p += 1;
        }
        p == pat.len()
    }

    /// `replace` as it was, trying every start and every end with shell_glob.
    fn replace_slow(pat: &[char], value: &str, replacement: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i <= chars.len() {
            let found = (i..=chars.len())
                .rev()
                .find(|&end| shell_glob(pat, &chars[i..end]));
            match found {
                Some(end) if !(pat.is_empty() && end == i) => {
                    out.push_str(replacement);
                    if end == i {
                        if i < chars.len() {
                            out.push(chars[i]);
                        }
                        i += 1;
                    } else {
                        i = end;
                    }
                    if !all {
                        out.extend(&chars[i.min(chars.len())..]);
                        return out;
                    }
                }
                _ => {
                    if i < chars.len() {
                        out.push(chars[i]);
                    }
                    i += 1;
                }
            }
        }
        out
    }

    #[test]
    fn replace_agrees_with_trying_every_start() {
        let pats = [
            "", "*", "a*", "*a", "a*b", "?", "b?", "[a-c]", "[!b]*", "\\*", "[", "ab", "b*c", "**",
            "x",
        ];
        let texts = [
            "", "a", "abc", "aabbcc", "xayb*x", "[a", "cba", "bbbb", "abcabc",
        ];
        for p in pats {
            let pat: Vec<char> = p.chars().collect();
            for t in texts {
                for all in [false, true] {
                    assert_eq!(
                        replace(&pat, t, "<>", all),
                        replace_slow(&pat, t, "<>", all),
                        "{p:?} in {t:?} (all: {all})"
                    );
                }
            }
        }
    }

    #[test]
    fn long_values_expand_quickly() {
        // ${V/pattern/...} over a long value took seconds (fuzzing found it)
        let env = vec![("D".to_string(), "x".repeat(3000))];
        let t = std::time::Instant::now();
        let out = Lexer::new('\\')
            .process_word("${D//*y/z}${D%%*y}${D##*y}${D/x*/a}", &env)
            .unwrap();
        assert_eq!(out.len(), 3000 * 3 + 1);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn glob() {
        let g = |p: &str, s: &str| {
            let pat: Vec<char> = p.chars().collect();
            matching_prefixes(&pat, &tokens(&pat), s.chars())[s.chars().count()]
        };
        assert!(g("*", ""));
        assert!(g("a*c", "abbbc"));
        assert!(g("a?c", "abc"));
        assert!(!g("a?c", "ac"));
        assert!(g("[a-c]x", "bx"));
        assert!(!g("[!a-c]x", "bx"));
        assert!(g("\\*", "*"));
        assert!(!g("\\*", "a"));
    }
}
