//! `.dockerignore` reading and matching, as moby's `patternmatcher` and `ignorefile`
//! do it: `*` and `?` stay within one path element, `**` crosses elements, `[...]`
//! classes, `\` escapes, `!` re-includes (the last matching pattern wins), a pattern
//! matches a path or any of its parents, leading `/` and `./` are cleaned away,
//! comments start with `#` in the first column.

/// A malformed pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A lone `!`.
    #[error("illegal exclusion pattern: \"!\"")]
    LoneBang,
    /// An unclosed `[` or a trailing `\`.
    #[error("syntax error in pattern: {0:?}")]
    BadPattern(String),
}

/// The patterns of a `.dockerignore` file: comments and blank lines dropped,
/// whitespace trimmed, paths cleaned, `!` kept in front.
pub fn parse_dockerignore(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        // comments are recognised before trimming, like moby
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut cleaned = String::new();
        if !p.is_empty() {
            cleaned = clean(p);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run without `/`.
    Star,
    /// `**` followed by more pattern: `(.*/)?`.
    AnyDirs,
    /// `**` at the end: `.*`.
    AnyRest,
    /// `[...]`.
    Class(Vec<(char, char)>, bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regexp,
}

#[derive(Debug, Clone)]
struct Pattern {
    exclusion: bool,
    cleaned: String,
    kind: Kind,
    toks: Vec<Tok>,
    dirs: Vec<String>,
}

fn parse_class(chars: &[char], start: usize) -> Option<(Tok, usize)> {
    let mut i = start + 1;
    let neg = chars.get(i) == Some(&'^');
    if neg {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut lo = *chars.get(i)?;
        if lo == ']' && !first {
            return Some((Tok::Class(ranges, neg), i + 1));
        }
        first = false;
        if lo == '\\' {
            i += 1;
            lo = *chars.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
            hi = chars[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *chars.get(i)?;
                i += 1;
            }
            if hi < lo {
                return None;
            }
        }
        ranges.push((lo, hi));
    }
}

/// Compiles a cleaned pattern the way patternmatcher's `compile` classifies it.
fn compile(p: &str) -> Result<(Kind, Vec<Tok>), IgnoreError> {
    let chars: Vec<char> = p.chars().collect();
    let mut kind = Kind::Exact;
    let mut toks = Vec::new();
    let mut i = 0;
    let mut n = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' => {
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i >= chars.len() {
                        if kind == Kind::Exact {
                            kind = Kind::Prefix;
                        } else {
                            kind = Kind::Regexp;
                        }
                        toks.push(Tok::AnyRest);
                    } else {
                        toks.push(Tok::AnyDirs);
                        kind = Kind::Regexp;
                    }
                    if n == 0 {
                        kind = Kind::Suffix;
                    }
                } else {
                    toks.push(Tok::Star);
                    kind = Kind::Regexp;
                }
            }
            '?' => {
                toks.push(Tok::One);
                kind = Kind::Regexp;
            }
            '\\' => match chars.get(i) {
                Some(&c) => {
                    toks.push(Tok::Lit(c));
                    i += 1;
                    // moby's fast path compares escaped patterns verbatim, so `\*` never
                    // matches there; the documented meaning (a literal `*`) is kept here
                    kind = Kind::Regexp;
                }
                None => return Err(IgnoreError::BadPattern(p.to_string())),
            },
            '[' => {
                let (tok, next) = parse_class(&chars, i - 1)
                    .ok_or_else(|| IgnoreError::BadPattern(p.to_string()))?;
                toks.push(tok);
                i = next;
                kind = Kind::Regexp;
            }
            ']' => {
                toks.push(Tok::Lit(']'));
                kind = Kind::Regexp;
            }
            c => toks.push(Tok::Lit(c)),
        }
        n += 1;
    }
    Ok((kind, toks))
}

/// Regexp-style match of `toks` against `s`; with `tail`, descendants of a match
/// match too (`(/.*)?$`).
fn tok_match(toks: &[Tok], s: &[char], tail: bool) -> bool {
    let w = s.len() + 1;
    let mut failed = vec![false; (toks.len() + 1) * w];
    fn go(
        toks: &[Tok],
        s: &[char],
        ti: usize,
        si: usize,
        tail: bool,
        failed: &mut [bool],
        w: usize,
    ) -> bool {
        if ti == toks.len() {
            return si == s.len() || (tail && s[si] == '/');
        }
        if failed[ti * w + si] {
            return false;
        }
        let ok = match &toks[ti] {
            Tok::Lit(c) => {
                si < s.len() && s[si] == *c && go(toks, s, ti + 1, si + 1, tail, failed, w)
            }
            Tok::One => {
                si < s.len() && s[si] != '/' && go(toks, s, ti + 1, si + 1, tail, failed, w)
            }
            Tok::Class(ranges, neg) => {
                si < s.len()
                    && (ranges.iter().any(|(lo, hi)| *lo <= s[si] && s[si] <= *hi) != *neg)
                    && go(toks, s, ti + 1, si + 1, tail, failed, w)
            }
            Tok::Star => {
                let mut k = si;
                loop {
                    if go(toks, s, ti + 1, k, tail, failed, w) {
                        break true;
                    }
                    if k >= s.len() || s[k] == '/' {
                        break false;
                    }
                    k += 1;
                }
            }
            Tok::AnyDirs => {
                go(toks, s, ti + 1, si, tail, failed, w)
                    || (si..s.len())
                        .any(|k| s[k] == '/' && go(toks, s, ti + 1, k + 1, tail, failed, w))
            }
            Tok::AnyRest => (si..=s.len()).any(|k| go(toks, s, ti + 1, k, tail, failed, w)),
        };
        if !ok {
            failed[ti * w + si] = true;
        }
        ok
    }
    go(toks, s, 0, 0, tail, &mut failed, w)
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            Kind::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Regexp => {
                let chars: Vec<char> = path.chars().collect();
                tok_match(&self.toks, &chars, true)
            }
        }
    }
}

/// Decides which context paths a `.dockerignore` excludes.
#[derive(Debug, Clone)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl Matcher {
    /// Compiles patterns (as from [`parse_dockerignore`]; raw lines are cleaned too).
    pub fn new<I, S>(patterns: I) -> Result<Matcher, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        let mut exclusions = false;
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let (exclusion, body) = match p.strip_prefix('!') {
                Some(b) => {
                    let b = b.trim();
                    if b.is_empty() {
                        return Err(IgnoreError::LoneBang);
                    }
                    (true, b)
                }
                None => (false, p),
            };
            let mut cleaned = clean(body);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let (kind, toks) = compile(&cleaned)?;
            exclusions |= exclusion;
            out.push(Pattern {
                exclusion,
                dirs: cleaned.split('/').map(str::to_string).collect(),
                cleaned,
                kind,
                toks,
            });
        }
        Ok(Matcher {
            patterns: out,
            exclusions,
        })
    }

    /// Builds a matcher straight from the text of a `.dockerignore` file.
    pub fn from_dockerignore(text: &str) -> Result<Matcher, IgnoreError> {
        Matcher::new(parse_dockerignore(text))
    }

    /// True when the context path (relative, `/`-separated) is excluded: the last
    /// pattern matching it or one of its parents decides.
    pub fn matches(&self, path: &str) -> bool {
        let path = normalize(path);
        let parent = match path.rfind('/') {
            Some(i) => &path[..i],
            None => ".",
        };
        let mut matched = false;
        for p in &self.patterns {
            // an include pattern cannot change an already excluded path, nor an
            // exception an included one
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&path);
            if !m && parent != "." {
                m = parent
                    .char_indices()
                    .chain(std::iter::once((parent.len(), '/')))
                    .any(|(i, c)| c == '/' && p.matches(&parent[..i]));
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// True when an excluded directory may still hold files that a `!` pattern
    /// re-includes, so a walker must descend into it; false means the whole
    /// directory can be skipped. Conservative: it may say true needlessly, never false
    /// wrongly.
    pub fn may_contain_reincluded(&self, dir: &str) -> bool {
        if !self.exclusions {
            return false;
        }
        let dir = normalize(dir);
        let segs: Vec<&str> = if dir == "." {
            Vec::new()
        } else {
            dir.split('/').collect()
        };
        'patterns: for p in self.patterns.iter().filter(|p| p.exclusion) {
            for (i, seg) in segs.iter().enumerate() {
                let Some(pd) = p.dirs.get(i) else {
                    // the exception matches this directory or a parent
                    return true;
                };
                if pd.contains("**") {
                    return true;
                }
                // a component that does not compile alone was cut through an escaped
                // `/` or a `[/]` class: the whole pattern may still match below here
                let Ok((_, toks)) = compile(pd) else {
                    return true;
                };
                let chars: Vec<char> = seg.chars().collect();
                if !tok_match(&toks, &chars, false) {
                    continue 'patterns;
                }
            }
            return true;
        }
        false
    }
}

fn normalize(path: &str) -> String {
    let c = clean(path);
    let c = c.trim_start_matches('/');
    if c.is_empty() {
        ".".into()
    } else {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str]) -> Matcher {
        Matcher::new(patterns).unwrap()
    }

    #[test]
    fn clean_like_go() {
        for (i, o) in [
            ("", "."),
            ("a/b/", "a/b"),
            ("./a", "a"),
            ("a//b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("/", "/"),
            (".", "."),
            ("a/./b/.", "a/b"),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
    }

    #[test]
    fn read_file() {
        let text = "# comment\n\n  *.log  \n!important.log\n/abs/path/\n./rel\n ! spaced \n#!notexception\n \t\n";
        assert_eq!(
            parse_dockerignore(text),
            ["*.log", "!important.log", "abs/path", "rel", "!spaced"]
        );
        // a '#' after leading blanks is a pattern, as in moby
        assert_eq!(parse_dockerignore("  #x"), ["#x"]);
    }

    #[test]
    fn table() {
        // (patterns, path, excluded)
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*.md"], "README.md", true),
            (&["*.md"], "docs/README.md", false),
            (&["*/*.md"], "docs/README.md", true),
            (&["**/*.md"], "docs/a/README.md", true),
            (&["**/*.md"], "README.md", true),
            (&["node_modules"], "node_modules/x/y.js", true),
            (&["node_modules"], "a/node_modules", false),
            (&["**/node_modules"], "a/b/node_modules/c", true),
            (&["a/**/b"], "a/b", true),
            (&["a/**/b"], "a/x/y/b", true),
            (&["a/**/b"], "a/x/y/c", false),
            (&["dir/"], "dir/file", true),
            (&["/dir"], "dir/file", true),
            (&["./dir"], "dir", true),
            (&["?.txt"], "a.txt", true),
            (&["?.txt"], "ab.txt", false),
            (&["[a-c].txt"], "b.txt", true),
            (&["[a-c].txt"], "d.txt", false),
            (&["[^a-c].txt"], "d.txt", true),
            (&["\\*.txt"], "*.txt", true),
            (&["\\*.txt"], "a.txt", false),
            (&["*"], "anything/at/all", true),
            (&["**"], "x/y", true),
            (&["foo/**"], "foo/bar", true),
            (&["foo/**"], "foo", false),
            (&["*.log", "!keep.log"], "keep.log", false),
            (&["*.log", "!keep.log"], "other.log", true),
            (&["!keep.log", "*.log"], "keep.log", true),
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs", "!docs/README.md"], "docs/other.md", true),
            (
                &["docs", "!docs/README.md", "docs/README.md"],
                "docs/README.md",
                true,
            ),
            (&["*", "!src", "src/*.tmp"], "src/main.rs", false),
            (&["*", "!src", "src/*.tmp"], "src/x.tmp", true),
            (&["a.b"], "axb", false),
            (&["a+b(c)"], "a+b(c)", true),
            (&["**.go"], "x/.go", true),
            (&["Dockerfile"], "Dockerfile", true),
            (&["x"], "./x", true),
            (&["x"], "/x/y", true),
        ];
        for (pats, path, want) in cases {
            assert_eq!(
                m(pats).matches(path),
                *want,
                "patterns {pats:?} path {path}"
            );
        }
    }

    #[test]
    fn reinclusion_hint() {
        let mm = m(&["docs", "!docs/README.md"]);
        assert!(mm.may_contain_reincluded("docs"));
        assert!(!mm.may_contain_reincluded("other"));
        assert!(!m(&["build"]).may_contain_reincluded("build"));
        let deep = m(&["*", "!**/keep"]);
        assert!(deep.may_contain_reincluded("any/dir"));
        let star = m(&["vendor", "!vendor/*/LICENSE"]);
        assert!(star.may_contain_reincluded("vendor/foo"));
        assert!(!star.may_contain_reincluded("src"));
        // an escaped `/` or a `[/]` class spans directories (found by fuzzing)
        for p in ["!a\\/b", "!a[/]b"] {
            let x = m(&["a", p]);
            assert!(x.matches("a") && !x.matches("a/b"), "{p}");
            assert!(x.may_contain_reincluded("a"), "{p}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(Matcher::new(["!"]).unwrap_err(), IgnoreError::LoneBang);
        assert!(matches!(
            Matcher::new(["a["]),
            Err(IgnoreError::BadPattern(_))
        ));
        assert!(matches!(
            Matcher::new(["a\\"]),
            Err(IgnoreError::BadPattern(_))
        ));
    }
}
