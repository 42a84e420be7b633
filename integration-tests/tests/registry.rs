//! End-to-end tests of the registry fixture and of berth's registry client against
//! Debian's docker-registry on loopback.

use std::process::Command;

use anyhow::{Result, bail};
use integration_tests::registry::{Auth, Registry};

/// `curl` a URL; returns (status, body).
fn curl(args: &[&str]) -> Result<(u16, String)> {
    integration_tests::require_cmd("curl");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse()?, body.to_owned()))
}

#[test]
fn fixture_anonymous_registry_answers() -> Result<()> {
    let reg = Registry::start(Auth::None)?;
    let (status, body) = curl(&[&format!("{}/v2/", reg.url())])?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = curl(&[&format!("{}/v2/x/tags/list", reg.url())])?;
    assert_eq!(status, 404);
    Ok(())
}

#[test]
fn fixture_basic_auth_checks_credentials() -> Result<()> {
    let reg = Registry::start(Auth::basic("alice", "s3cret"))?;
    let url = format!("{}/v2/", reg.url());
    assert_eq!(curl(&[&url])?.0, 401);
    assert_eq!(curl(&["-u", "alice:wrong", &url])?.0, 401);
    assert_eq!(curl(&["-u", "alice:s3cret", &url])?.0, 200);
    Ok(())
}

#[test]
fn fixture_bearer_tokens_are_accepted() -> Result<()> {
    let reg = Registry::start(Auth::bearer("bob", "pw"))?;
    let url = format!("{}/v2/", reg.url());
    let (status, _) = curl(&["-D", "-", &url])?;
    assert_eq!(status, 401);
    // a token for two scopes in one request, then an upload with it
    let token = reg
        .token(&["repository:a/b:pull,push", "repository:c:pull"])?
        .expect("bearer fixture gives tokens");
    let bearer = format!("Authorization: Bearer {token}");
    let (status, body) = curl(&["-H", &bearer, &url])?;
    assert_eq!(status, 200, "{body}\n{}", reg.log());
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        &format!("{}/v2/a/b/blobs/uploads/", reg.url()),
    ])?;
    assert_eq!(status, 202, "{body}\n{}", reg.log());
    // the token does not grant push on c
    let (status, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &bearer,
        &format!("{}/v2/c/blobs/uploads/", reg.url()),
    ])?;
    assert_eq!(status, 401);
    let reqs = reg.token_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].scopes,
        ["repository:a/b:pull,push", "repository:c:pull"]
    );
    Ok(())
}
