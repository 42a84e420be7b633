//! The berth Dockerfile builder.
//!
//! The parser half is pure: [`parse`] reads the whole Dockerfile language as BuildKit
//! reads it (parser directives, comments, continuations, exec and shell forms, every
//! instruction with its flags, heredocs), [`shell::Lexer`] expands variables exactly as
//! Dockerfiles define it, [`scope`] applies the ARG/ENV scope rules, and
//! [`dockerignore`] matches `.dockerignore` patterns; none of it does I/O.
//!
//! The executor ([`executor::build`]) runs the stages a target needs: metadata
//! instructions update the image config, RUN steps run in containers through the
//! runc-compatible `berth-oci` binary on overlay snapshots of the berth-image store,
//! COPY/ADD copy from the context (honouring `.dockerignore`) or other stages, and
//! each layer step is cached by its parent, expanded instruction and input digests.
//! ADD fetches `http://` and `https://` URLs (TLS always verified, `--checksum`) and
//! git repositories (through the `git` command, `--keep-git-dir`); RUN mounts include
//! ssh agent sockets. This crate does not pull or push images (that is berth-registry).

pub mod ast;
pub mod dockerignore;
pub mod duration;
pub mod executor;
pub mod fetch;
pub mod fsutil;
pub mod git;
pub mod mount;
pub mod parser;
pub mod prune;
pub mod runner;
pub mod scope;
pub mod shell;
pub mod ssh;

pub use ast::{Command, Dockerfile, Instruction};
pub use parser::{ParseError, parse};
