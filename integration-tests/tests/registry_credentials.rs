//! Credentials through the CLI against docker-registry with basic auth: `berth login`
//! into `~/.docker/config.json` (read by skopeo too, and the reverse), and credential
//! helpers (`credsStore` for login/pull/logout, `credHelpers` per registry).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use berth_image::{Store, fixtures};
use integration_tests::registry::{Auth, Registry};
use integration_tests::{TestRoots, bin_path, require_cmd};

const USER: &str = "dora";
const PASS: &str = "explorer-7";

/// A home directory, its own PATH entry for helpers, and berth roots.
struct Env {
    roots: TestRoots,
    home: PathBuf,
    bin: PathBuf,
}

impl Env {
    fn new() -> Env {
        let roots = TestRoots::new().unwrap();
        let home = roots.path().join("home");
        let bin = roots.path().join("bin");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&bin).unwrap();
        Env { roots, home, bin }
    }

    fn env(&self, cmd: &mut Command) {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env_remove("DOCKER_CONFIG")
            .env("HOME", &self.home)
            .env("PATH", path)
            // skopeo looks here before ~/.docker/config.json: keep it empty
            .env("XDG_RUNTIME_DIR", self.roots.path().join("xdg"))
            .env("REGISTRY_AUTH_FILE", self.home.join("none.json"));
    }

    fn berth(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut cmd = self.roots.berth();
        self.env(&mut cmd);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write as _;
            let mut input = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn berth_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.berth(args, stdin);
        assert!(ok, "berth {args:?}:\n{out}\n{err}");
        out
    }

    fn config(&self) -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(self.home.join(".docker/config.json")).unwrap())
            .unwrap()
    }

    /// A `docker-credential-berthtest` keeping secrets as files in `dir`, logging its
    /// actions to `dir/calls`.
    fn install_helper(&self) -> PathBuf {
        require_cmd("jq");
        let dir = self.roots.path().join("helper");
        fs::create_dir_all(&dir).unwrap();
        let script = format!(
            r#"#!/bin/sh
d={dir}
echo "$1" >> "$d/calls"
key() {{ echo "$1" | tr '/:' '__'; }}
case "$1" in
  store) cat > "$d/in.json"; cp "$d/in.json" "$d/$(key "$(jq -r .ServerURL "$d/in.json")")" ;;
  get) read -r s; f="$d/$(key "$s")"
       if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) read -r s; f="$d/$(key "$s")"; [ -f "$f" ] || exit 1; rm -f "$f" ;;
  *) exit 2 ;;
esac
"#,
            dir = dir.display()
        );
        let path = self.bin.join("docker-credential-berthtest");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }
}

/// A basic-auth registry holding the busybox fixture at `repo:1`.
fn registry_with_image(repo: &str) -> (Registry, String) {
    let reg = Registry::start(Auth::basic(USER, PASS)).unwrap();
    let src = tempfile::tempdir().unwrap();
    let store = Store::open(&src.path().join("images")).unwrap();
    let name = format!("{}/{repo}:1", reg.addr());
    fixtures::busybox_image(&store, &name).unwrap();
    let mut config = berth_registry::ClientConfig {
        docker_config: Some("".into()),
        ..Default::default()
    };
    config.credentials.insert(
        reg.addr().to_owned(),
        berth_registry::Credentials::new(USER, PASS),
    );
    let client = berth_registry::Client::new(config).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(client.push(
            &store,
            &name,
            &berth_registry::ImageRef::parse(&name).unwrap(),
            &Default::default(),
            berth_registry::progress::discard(),
        ))
        .unwrap();
    (reg, name)
}

fn skopeo_inspect(env: &Env, name: &str) -> (bool, String) {
    let mut cmd = Command::new(require_cmd("skopeo"));
    env.env(&mut cmd);
    let out = cmd
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn login_writes_home_docker_config_that_skopeo_reads_and_the_reverse() {
    let _ = bin_path("berth");
    let (reg, name) = registry_with_image("creds/home");
    let env = Env::new();
    let (ok, _, err) = env.berth(&["pull", &name], None);
    assert!(!ok && err.contains("berth login"), "{err}");
    let out = env.berth_ok(
        &["login", "-u", USER, "--password-stdin", reg.addr()],
        Some(&format!("{PASS}\n")),
    );
    assert!(out.contains("Login succeeded"), "{out}");
    let cfg_path = env.home.join(".docker/config.json");
    assert_eq!(
        fs::metadata(&cfg_path).unwrap().permissions().mode() & 0o777,
        0o600,
        "the config holds a secret"
    );
    let auth = env.config()["auths"][reg.addr()]["auth"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!auth.is_empty());
    env.berth_ok(&["pull", "-q", &name], None);
    // skopeo finds the same credentials in ~/.docker/config.json
    let (ok, err) = skopeo_inspect(&env, &name);
    assert!(ok, "skopeo could not use berth's login: {err}");

    let out = env.berth_ok(&["logout", reg.addr()], None);
    assert!(out.contains("Removed"), "{out}");
    assert!(env.config()["auths"][reg.addr()].is_null());
    let (ok, _) = skopeo_inspect(&env, &name);
    assert!(!ok, "skopeo still authenticated after berth logout");

    // the reverse: skopeo login into ~/.docker/config.json, berth pulls with it
    let mut cmd = Command::new(require_cmd("skopeo"));
    env.env(&mut cmd);
    let out = cmd
        .args([
            "login",
            "--tls-verify=false",
            "--authfile",
            cfg_path.to_str().unwrap(),
            "-u",
            USER,
            "-p",
            PASS,
            reg.addr(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = Env {
        roots: TestRoots::new().unwrap(),
        home: env.home.clone(),
        bin: env.bin.clone(),
    };
    fresh.berth_ok(&["pull", "-q", &name], None);
}

#[test]
fn creds_store_helper_is_used_for_login_pull_and_logout() {
    let _ = bin_path("berth");
    let (reg, name) = registry_with_image("creds/store");
    let env = Env::new();
    let helper = env.install_helper();
    fs::create_dir_all(env.home.join(".docker")).unwrap();
    fs::write(
        env.home.join(".docker/config.json"),
        r#"{"credsStore":"berthtest"}"#,
    )
    .unwrap();
    env.berth_ok(
        &["login", "-u", USER, "--password-stdin", reg.addr()],
        Some(PASS),
    );
    // the secret went to the helper, not into the file
    let cfg = fs::read_to_string(env.home.join(".docker/config.json")).unwrap();
    assert!(!cfg.contains(PASS), "{cfg}");
    let stored: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(helper.join("in.json")).unwrap()).unwrap();
    assert_eq!(stored["Username"], USER);
    assert_eq!(stored["Secret"], PASS);
    env.berth_ok(&["pull", "-q", &name], None);
    let calls = fs::read_to_string(helper.join("calls")).unwrap();
    assert!(calls.contains("store") && calls.contains("get"), "{calls}");
    let out = env.berth_ok(&["logout", reg.addr()], None);
    assert!(out.contains("Removed"), "{out}");
    assert!(
        fs::read_to_string(helper.join("calls"))
            .unwrap()
            .contains("erase")
    );
    let other = Env {
        roots: TestRoots::new().unwrap(),
        home: env.home.clone(),
        bin: env.bin.clone(),
    };
    let (ok, _, err) = other.berth(&["pull", &name], None);
    assert!(
        !ok && err.contains("unauthorized"),
        "pull after logout: {err}"
    );
}

#[test]
fn cred_helpers_entry_names_the_helper_per_registry() {
    let _ = bin_path("berth");
    let (reg, name) = registry_with_image("creds/helpers");
    let env = Env::new();
    let helper = env.install_helper();
    // the helper already knows the registry (as `docker login` through it would leave it)
    let key = reg.addr().replace([':', '/'], "_");
    fs::write(
        helper.join(&key),
        format!(
            r#"{{"ServerURL":"{}","Username":"{USER}","Secret":"{PASS}"}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    fs::create_dir_all(env.home.join(".docker")).unwrap();
    fs::write(
        env.home.join(".docker/config.json"),
        format!(
            r#"{{"credHelpers":{{"{}":"berthtest","other.example":"missing"}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let out = env.berth_ok(&["pull", &name], None);
    assert!(out.contains("Pulled"), "{out}");
    let calls = fs::read_to_string(helper.join("calls")).unwrap();
    assert!(calls.contains("get"), "{calls}");
}
