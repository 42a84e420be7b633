//! Label selectors: the structured form in manifests and the string form of `-l`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `matchLabels` + `matchExpressions`, as in Deployments and ReplicaSets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Every pair must be present.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Every requirement must hold.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// In, NotIn, Exists, DoesNotExist (also `=`, `==`, `!=` from the string form).
    pub operator: String,
    /// Values for In and NotIn.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A selector that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {text:?}: {why}")]
pub struct SelectorError {
    /// What was written.
    pub text: String,
    /// What is wrong.
    pub why: String,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator.as_str() {
            "In" | "=" | "==" => value.is_some_and(|v| self.values.contains(v)),
            "NotIn" | "!=" => value.is_none_or(|v| !self.values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    }

    fn check(&self) -> Result<(), String> {
        match self.operator.as_str() {
            "In" | "NotIn" if self.values.is_empty() => Err(format!(
                "operator {} on {:?} needs values",
                self.operator, self.key
            )),
            "Exists" | "DoesNotExist" if !self.values.is_empty() => Err(format!(
                "operator {} on {:?} takes no values",
                self.operator, self.key
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" | "=" | "==" | "!=" => Ok(()),
            other => Err(format!("unknown operator {other:?}")),
        }
    }
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector. An empty selector matches everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector selects nothing in particular (matches every object).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Problems with the operators, as messages.
    pub fn check(&self) -> Result<(), String> {
        self.match_expressions
            .iter()
            .try_for_each(Requirement::check)
    }

    /// Parse kubectl's `-l` syntax: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let err = |why: &str| SelectorError {
            text: text.to_string(),
            why: why.to_string(),
        };
        let mut sel = LabelSelector::default();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(key) = term.strip_prefix('!') {
                Requirement {
                    key: key.trim().into(),
                    operator: "DoesNotExist".into(),
                    values: vec![],
                }
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement {
                    key: k.trim().into(),
                    operator: "NotIn".into(),
                    values: vec![v.trim().into()],
                }
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                sel.match_labels.insert(k.trim().into(), v.trim().into());
                continue;
            } else if let Some((k, rest)) = split_set_op(term) {
                let (op, list) = rest;
                let inner = list
                    .trim()
                    .strip_prefix('(')
                    .and_then(|l| l.strip_suffix(')'))
                    .ok_or_else(|| err("a set needs parentheses: key in (a,b)"))?;
                Requirement {
                    key: k.into(),
                    operator: op.into(),
                    values: inner.split(',').map(|v| v.trim().to_string()).collect(),
                }
            } else {
                Requirement {
                    key: term.into(),
                    operator: "Exists".into(),
                    values: vec![],
                }
            };
            if req.key.is_empty() || req.key.contains(char::is_whitespace) {
                return Err(err(&format!("bad key in {term:?}")));
            }
            sel.match_expressions.push(req);
        }
        sel.check().map_err(|w| err(&w))?;
        Ok(sel)
    }
}

/// Split on commas that are not inside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn split_set_op(term: &str) -> Option<(&str, (&'static str, &str))> {
    for (word, op) in [(" notin ", "NotIn"), (" in ", "In")] {
        if let Some((k, rest)) = term.split_once(word) {
            return Some((k.trim(), (op, rest)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn string_form_like_kubectl() {
        let s =
            LabelSelector::parse("app=web,tier!=db,env in (prod, staging),!legacy,team").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("team", "a")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("legacy", "1")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("team", "a"),
            ("tier", "db")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "prod")])));
    }

    #[test]
    fn empty_matches_all() {
        let s = LabelSelector::parse("").unwrap();
        assert!(s.is_empty() && s.matches(&labels(&[("x", "y")])));
    }

    #[test]
    fn bad_selectors_say_why() {
        let e = LabelSelector::parse("env in prod").unwrap_err();
        assert!(e.to_string().contains("parentheses"), "{e}");
        let yaml: LabelSelector =
            serde_json::from_str(r#"{"matchExpressions":[{"key":"a","operator":"Near"}]}"#)
                .unwrap();
        assert!(yaml.check().unwrap_err().contains("unknown operator"));
    }
}
