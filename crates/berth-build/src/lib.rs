//! The berth Dockerfile builder.
//!
//! Today this crate holds the pure parser half: [`parse`] reads the whole Dockerfile
//! language as BuildKit reads it (parser directives, comments, continuations, exec and
//! shell forms, every instruction with its flags, heredocs), [`shell::Lexer`] expands
//! variables exactly as Dockerfiles define it, [`scope`] applies the ARG/ENV scope
//! rules, and [`dockerignore`] matches `.dockerignore` patterns. None of it does I/O.
//! The build executor (running steps through berth-runtime on berth-image snapshots)
//! is not written yet. This crate does not push images (that is berth-registry).

pub mod ast;
pub mod dockerignore;
pub mod duration;
pub mod mount;
pub mod parser;
pub mod scope;
pub mod shell;

pub use ast::{Command, Dockerfile, Instruction};
pub use parser::{ParseError, parse};
