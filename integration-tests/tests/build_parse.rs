//! `berth build --dump-ast` end to end, and buildah (which reads Dockerfiles with the
//! upstream Go parser) as an oracle for what the parser and the scope rules produce.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command as Proc, Output, Stdio};

use anyhow::{Context, Result};
use berth_build::ast::{CmdLine, Command};
use berth_build::scope::{MetaArgs, StageScope, stages, target_stage};
use berth_build::shell::Lexer;
use integration_tests::{bin_path, require_cmd, unique_id};
use serde_json::{Value, json};

fn berth(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Proc::new(bin_path("berth"));
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn berth");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait berth")
}

#[test]
fn dump_ast_prints_instructions_as_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "# syntax=docker/dockerfile:1\nARG V=1\nFROM alpine:$V AS base\nRUN --mount=type=cache,target=/c \\\n    echo hi\nCOPY <<EOF /etc/motd\nhello\nEOF\nCMD [\"sh\"]\n",
    )
    .unwrap();
    let out = berth(&["build", "--dump-ast", dir.path().to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    let insts = v["instructions"].as_array().unwrap();
    let names: Vec<&str> = insts.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ARG", "FROM", "RUN", "COPY", "CMD"]);
    assert_eq!(v["directives"][0]["name"], "syntax");
    assert_eq!(insts[2]["start_line"], 4);
    assert_eq!(insts[2]["end_line"], 5);
    assert_eq!(insts[2]["flags"][0]["name"], "mount");
    assert_eq!(insts[2]["flags"][0]["value"], "type=cache,target=/c");
    assert_eq!(insts[3]["heredocs"][0]["name"], "EOF");
    assert_eq!(insts[3]["heredocs"][0]["content"], "hello\n");
    assert_eq!(
        (insts[3]["start_line"].clone(), insts[3]["end_line"].clone()),
        (json!(6), json!(8))
    );
    assert_eq!(insts[4]["args"], json!(["sh"]));
    assert_eq!(insts[4]["json"], true);
}

#[test]
fn dump_ast_reads_file_flag_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("build.Dockerfile");
    std::fs::write(&f, "from scratch\nenv A=1\n").unwrap();
    let out = berth(
        &[
            "build",
            "--dump-ast",
            "-f",
            f.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["instructions"][1]["name"], "env");

    let out = berth(
        &["build", "--dump-ast", "-f", "-"],
        Some("FROM a\nUSER x\n"),
    );
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["instructions"][1]["command"]["user"], "x");
}

#[test]
fn parse_errors_and_unpullable_bases_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM a\nRUN x\nFOOBAR y\n").unwrap();
    let out = berth(&["build", "--dump-ast", dir.path().to_str().unwrap()], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3, column 1: unknown instruction: FOOBAR"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // a base that is neither in the store nor pullable (a closed loopback port, never
    // the internet): the build fails and names the image
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM 127.0.0.1:9/nothing:1\nRUN x\n",
    )
    .unwrap();
    let out = berth(
        &[
            "--root",
            root.path().to_str().unwrap(),
            "--state",
            root.path().join("state").to_str().unwrap(),
            "build",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success(), "a build must not pretend to succeed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:9/nothing:1"), "{err}");

    let out = berth(&["build", "--dump-ast", "/nonexistent-context-dir"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-context-dir/Dockerfile"));
}

/// The image config fields that metadata-only instructions set, computed from our
/// parse with the scope rules; compared with what buildah writes.
fn our_config(src: &str, build_args: &BTreeMap<String, String>) -> Result<Value> {
    let df = berth_build::parse(src)?;
    let (meta_insts, all) = stages(&df)?;
    let lexer = Lexer::new(df.escape);
    let meta = MetaArgs::new(&meta_insts, build_args, &[], &lexer)?;
    let stage = target_stage(&all, None)?;
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let mut scope = StageScope::new(
        &meta,
        build_args,
        vec![("PATH".into(), path.into())],
        df.escape,
    );
    let mut labels = BTreeMap::new();
    let mut ports = BTreeMap::new();
    let mut volumes = BTreeMap::new();
    let (mut user, mut workdir, mut stop) = (Value::Null, Value::Null, Value::Null);
    let (mut cmd, mut entrypoint) = (Value::Null, Value::Null);
    let shell_form = |c: &CmdLine| match c {
        CmdLine::Exec(v) => json!(v),
        CmdLine::Shell(s) => json!(["/bin/sh", "-c", s]),
    };
    for inst in stage.body {
        let line = inst.start_line;
        match &inst.command {
            Command::Label(kvs) => {
                for (k, v) in scope.expand_pairs(kvs, line)? {
                    labels.insert(k, v);
                }
            }
            Command::User(u) => user = json!(scope.expand(u, line)?),
            Command::Workdir(w) => {
                let w = scope.expand(w, line)?;
                let base = workdir.as_str().unwrap_or("/").to_string();
                workdir = json!(if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", base.trim_end_matches('/'))
                });
            }
            Command::Stopsignal(s) => stop = json!(scope.expand(s, line)?),
            Command::Expose(ps) => {
                for p in ps {
                    for w in scope.expand_words(p, line)? {
                        let key = if w.contains('/') {
                            w
                        } else {
                            format!("{w}/tcp")
                        };
                        ports.insert(key, json!({}));
                    }
                }
            }
            Command::Volume(vs) => {
                for v in vs {
                    for w in scope.expand_words(v, line)? {
                        volumes.insert(w, json!({}));
                    }
                }
            }
            Command::Cmd(c) => cmd = shell_form(c),
            Command::Entrypoint(c) => entrypoint = shell_form(c),
            _ => {}
        }
        scope.apply(inst)?;
    }
    let env: Vec<String> = scope
        .env()
        .iter()
        .fold(Vec::<(String, String)>::new(), |mut acc, (k, v)| {
            match acc.iter_mut().find(|(ak, _)| ak == k) {
                Some(slot) => slot.1 = v.clone(),
                None => acc.push((k.clone(), v.clone())),
            }
            acc
        })
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    Ok(json!({
        "Env": env, "Labels": labels, "User": user, "WorkingDir": workdir,
        "StopSignal": stop, "ExposedPorts": ports, "Volumes": volumes,
        "Cmd": cmd, "Entrypoint": entrypoint,
    }))
}

/// What buildah made of the same Dockerfile (a `FROM scratch` build with metadata
/// instructions only runs no container). buildah 1.28 (imagebuilder) lacks the
/// `${V%p}`/`${V#p}`/`${V/p/r}` forms, so the cases avoid them (unit tests cover them);
/// it also expands with `\` whatever the `escape` directive says, so backtick cases
/// are left to the unit tests too.
fn buildah_config(root: &Path, src: &str, build_args: &BTreeMap<String, String>) -> Result<Value> {
    let buildah = require_cmd("buildah");
    let ctx = tempfile::tempdir()?;
    std::fs::write(ctx.path().join("Dockerfile"), src)?;
    let tag = unique_id("oracle");
    let storage = [
        "--root".to_string(),
        root.join("root").display().to_string(),
        "--runroot".to_string(),
        root.join("run").display().to_string(),
        "--storage-driver".to_string(),
        "vfs".to_string(),
    ];
    let mut build = Proc::new(&buildah);
    build
        .args(&storage)
        .args(["build", "--layers=false", "-q", "-t", &tag]);
    for (k, v) in build_args {
        build.arg("--build-arg").arg(format!("{k}={v}"));
    }
    let out = build.arg(ctx.path()).output()?;
    anyhow::ensure!(
        out.status.success(),
        "buildah build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Proc::new(&buildah)
        .args(&storage)
        .args(["inspect", "--type", "image", &tag])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "buildah inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).context("buildah inspect json")?;
    let c = &v["OCIv1"]["config"];
    let mut labels = c["Labels"].as_object().cloned().unwrap_or_default();
    labels.remove("io.buildah.version");
    let or_null = |x: &Value| {
        if x.as_str() == Some("") {
            Value::Null
        } else {
            x.clone()
        }
    };
    Ok(json!({
        "Env": c["Env"], "Labels": labels, "User": or_null(&c["User"]),
        "WorkingDir": or_null(&c["WorkingDir"]), "StopSignal": or_null(&c["StopSignal"]),
        "ExposedPorts": c["ExposedPorts"].as_object().cloned().unwrap_or_default(),
        "Volumes": c["Volumes"].as_object().cloned().unwrap_or_default(),
        "Cmd": c["Cmd"], "Entrypoint": c["Entrypoint"],
    }))
}

#[test]
fn buildah_oracle_agrees_on_metadata_instructions() {
    require_cmd("buildah");
    let root = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "ARG V=1.0\nFROM scratch\nARG V\nENV A=1 B=\"2 3\" C='$A' D=$A E=\"${A}x\" F=\\$A G=a\\ b\nENV legacy value with  spaces\nLABEL \"com.x\"=\"y z\" v=$V\nWORKDIR /w/$A\nWORKDIR rel\nUSER ${B:-nobody}\nEXPOSE 80/tcp ${A}0 53/udp\nSTOPSIGNAL SIGINT\nCMD [\"a\", \"b\"]\nENTRYPOINT echo hi\nVOLUME /data $A\n",
            &[],
        ),
        (
            "ARG V=1.0\nFROM scratch\nARG V\nARG W=${V}-w\nENV X=$W Y=${UNSET:-dflt} Z=${V:+set}\nLABEL a=$V b=\"${W}\" c=${V:-x}${W:+y}\n",
            &[("V", "2.5")],
        ),
        (
            "FROM scratch\nENV A=1\nENV A=2 B=$A\nARG C=3\nENV D=${C}\nLABEL l1=\"$A\" l2='$A' \\\n  l3=$B\n# comment in between\nCMD [\"x\"] trailing\nVOLUME [\"/v1\", \"/v2\"]\nUSER 1000:1000\n",
            &[],
        ),
        (
            "FROM scratch\nARG X\nENV Y=${X:-none}\nSTOPSIGNAL $X\n",
            &[("X", "SIGQUIT")],
        ),
        (
            "FROM scratch\nENV a b c\nENV e=\"\" f='' g\\=h=i\nLABEL k=\"v with \\\"quotes\\\"\"\nCMD echo \"$HOME\"\nEXPOSE 8080 9000/tcp\n",
            &[],
        ),
    ];
    for (src, args) in cases {
        let args: BTreeMap<String, String> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ours = our_config(src, &args).unwrap_or_else(|e| panic!("{src}: {e:#}"));
        let theirs =
            buildah_config(root.path(), src, &args).unwrap_or_else(|e| panic!("{src}: {e:#}"));
        assert_eq!(ours, theirs, "dockerfile:\n{src}");
    }
}
