//! `berth serve` + `berth apply`: Deployments reconciled into real containers on one
//! node, with the CLI a kubectl user knows. Each test has its own roots holding busybox
//! from berth_image::fixtures and checks that nothing is left behind.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_image::{Store, fixtures};
use integration_tests::{LeakCheck, TestRoots, require_root};
use serde_json::Value;

struct Cluster {
    roots: TestRoots,
    serve: Option<Child>,
}

impl Cluster {
    fn new() -> Cluster {
        require_root();
        let roots = TestRoots::new().unwrap();
        let store = Store::open(&roots.root().join("images")).unwrap();
        fixtures::busybox_image(&store, "busybox:latest").unwrap();
        Cluster { roots, serve: None }
    }

    fn start_serve(&mut self) {
        let child = self
            .roots
            .berth()
            .args(["serve", "--interval", "0.3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.serve = Some(child);
        // apply refuses until serve holds its lock
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.roots.state().join("serve.lock").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    fn kill_serve(&mut self, signal: &str) {
        if let Some(mut c) = self.serve.take() {
            Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status()
                .unwrap();
            c.wait().unwrap();
        }
    }

    fn berth(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.roots.berth().args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.berth(args);
        assert_eq!(code, 0, "berth {args:?} failed: {out}{err}");
        out
    }

    fn apply(&self, yaml: &str) -> String {
        let f = self.roots.path().join("m.yaml");
        std::fs::write(&f, yaml).unwrap();
        self.ok(&["apply", "-f", f.to_str().unwrap()])
    }

    /// (name, phase, ready) of every pod.
    fn pods(&self) -> Vec<(String, String, bool)> {
        let v: Value = serde_json::from_str(&self.ok(&["get", "pods", "-o", "json"])).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["status"]["phase"].as_str().unwrap().to_string(),
                    p["status"]["ready"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    fn containers(&self) -> Vec<String> {
        self.ok(&["ps", "-aq", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Polls (bounded) until `cond` holds for the pods.
    fn wait_pods(
        &self,
        what: &str,
        cond: impl Fn(&[(String, String, bool)]) -> bool,
    ) -> Vec<(String, String, bool)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pods = self.pods();
            if cond(&pods) {
                return pods;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; pods: {pods:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_serve("-TERM");
        // never leave containers behind, even when an assertion failed
        for id in self.containers() {
            let _ = self.berth(&["rm", "-f", &id]);
        }
    }
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: main
          image: busybox:latest
          imagePullPolicy: Never
          command: [sh, -c, 'trap "exit 0" TERM; echo "VERSION $GREETING $SECRET"; while true; do sleep 1; done']
          env:
            - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
            - {name: SECRET, valueFrom: {secretKeyRef: {name: creds, key: pw}}}
          resources: {limits: {memory: 64Mi}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {pw: hunter2}
"#;

fn all_ready(n: usize) -> impl Fn(&[(String, String, bool)]) -> bool {
    move |p| {
        p.len() == n
            && p.iter()
                .all(|(_, phase, ready)| phase == "Running" && *ready)
    }
}

#[test]
fn deployment_scales_heals_rolls_out_survives_serve_kill_and_deletes_cleanly() {
    let mut c = Cluster::new();
    let mut leaks = LeakCheck::new(&[c.roots.path().display().to_string()]);
    c.start_serve();
    let out = c.apply(&DEPLOYMENT.replace("VERSION", "v1"));
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(
        out.contains("configmap/cfg created") && out.contains("secret/creds created"),
        "{out}"
    );
    c.wait_pods("2 ready pods", all_ready(2));
    let ids = c.containers();
    assert_eq!(ids.len(), 2, "one container per pod: {ids:?}");
    for id in &ids {
        leaks.add_marker(id.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = c.ok(&["logs", id]);
            if logs.contains("v1 hello hunter2") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ConfigMap/Secret env not in logs: {logs:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let inspect: Value = serde_json::from_str(&c.ok(&["inspect", id])).unwrap();
        assert_eq!(
            inspect[0]["HostConfig"]["Memory"],
            64 << 20,
            "memory limit from resources.limits"
        );
    }
    let table = c.ok(&["get", "deployments"]);
    assert!(
        table.starts_with("NAME") && table.contains("web    2/2"),
        "{table}"
    );

    // scale up, then kill a container: it is replaced
    assert!(
        c.ok(&["scale", "deployment/web", "--replicas", "3"])
            .contains("scaled")
    );
    c.wait_pods("3 ready pods", all_ready(3));
    let victim = c.containers()[0].clone();
    c.ok(&["rm", "-f", &victim]);
    // pod status lags a pass behind: wait for a replacement container to exist
    c.wait_pods("the killed container replaced", |p| {
        let ids = c.containers();
        all_ready(3)(p) && ids.len() == 3 && !ids.contains(&victim)
    });
    assert_eq!(c.containers().len(), 3);

    // rolling update: every pod replaced by one of the new template
    let before: Vec<String> = c.pods().into_iter().map(|p| p.0).collect();
    let out = c.apply(
        &DEPLOYMENT
            .replace("VERSION", "v2")
            .replace("replicas: 2", "replicas: 3"),
    );
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("configmap/cfg unchanged"), "{out}");
    let after = c.wait_pods("rollout to the new template", |p| {
        all_ready(3)(p) && p.iter().all(|(n, _, _)| !before.contains(n))
    });
    let rs = c.ok(&["get", "rs"]);
    assert_eq!(rs.lines().count(), 3, "old and new ReplicaSet kept: {rs}");
    for id in c.containers() {
        leaks.add_marker(id.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.ok(&["logs", &id]).contains("v2 hello") {
            assert!(
                Instant::now() < deadline,
                "new template not running in {id}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // kill -9 the controller and start it again: it adopts, duplicates nothing
    c.kill_serve("-KILL");
    c.start_serve();
    std::thread::sleep(Duration::from_secs(2));
    let pods: Vec<String> = c.pods().into_iter().map(|p| p.0).collect();
    let names: Vec<String> = after.iter().map(|p| p.0.clone()).collect();
    assert_eq!(pods, names, "pods changed after serve restarted");
    assert_eq!(
        c.containers().len(),
        3,
        "containers duplicated after serve restarted"
    );

    // delete: every container goes, nothing is left
    let out = c.ok(&[
        "delete",
        "-f",
        c.roots.path().join("m.yaml").to_str().unwrap(),
    ]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(c.containers().is_empty() && c.pods().is_empty()) {
        assert!(
            Instant::now() < deadline,
            "delete left {:?}",
            c.containers()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.kill_serve("-TERM");
    leaks.assert_clean();
}

#[test]
fn apply_without_serve_says_how_to_start_it_and_stores_nothing() {
    let c = Cluster::new();
    let f = c.roots.path().join("m.yaml");
    std::fs::write(&f, DEPLOYMENT).unwrap();
    let (code, _, err) = c.berth(&["apply", "-f", f.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("berth serve is not running") && err.contains("berth serve &"),
        "{err}"
    );
    let (_, _, err) = c.berth(&["get", "deployments"]);
    assert!(err.contains("No resources found"), "{err}");
}

#[test]
fn invalid_manifests_name_the_field_and_unsupported_fields_warn() {
    let mut c = Cluster::new();
    c.start_serve();
    let f = c.roots.path().join("bad.yaml");
    std::fs::write(
        &f,
        DEPLOYMENT.replace("image: busybox:latest", "imagex: busybox:latest"),
    )
    .unwrap();
    let (code, _, err) = c.berth(&["apply", "-f", f.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("spec.template.spec.containers[0].image: required field missing"),
        "{err}"
    );
    let (_, _, err) = c.berth(&["get", "deployments"]);
    assert!(
        err.contains("No resources found"),
        "nothing stored from a bad file: {err}"
    );
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\nimmutible: true\n",
    )
    .unwrap();
    let (code, out, err) = c.berth(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configmap/c created"), "{out}");
    assert!(
        err.contains("(ConfigMap c): field immutible is not supported by berth and is ignored"),
        "{err}"
    );
    let (code, _, err) = c.berth(&["get", "gadgets"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("doesn't have a resource type \"gadgets\""),
        "{err}"
    );
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: site}
spec:
  replicas: 2
  selector: {matchLabels: {app: site}}
  template:
    metadata: {labels: {app: site}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: httpd
          image: busybox:latest
          imagePullPolicy: Never
          command: [sh, -c, 'mkdir -p /www && echo VERSION > /www/index.html && exec httpd -f -p 8080 -h /www']
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: site}
spec:
  selector: {app: site}
  ports: [{port: 80, targetPort: http}]
"#;

/// One bounded HTTP GET; the body, or None on any failure.
fn http_get(ip: &str, port: u16) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.starts_with("HTTP/1.").then(|| {
        out.rsplit("\r\n\r\n")
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    })
}

#[test]
fn service_answers_throughout_a_rolling_update_and_goes_away() {
    let mut c = Cluster::new();
    let leaks = LeakCheck::new(&[c.roots.path().display().to_string()]);
    c.start_serve();
    c.apply(&WEB.replace("VERSION", "v1"));
    c.wait_pods("2 ready web pods", all_ready(2));
    let svc: Value = serde_json::from_str(&c.ok(&["get", "svc", "site", "-o", "json"])).unwrap();
    let ip = svc["status"]["clusterIP"]
        .as_str()
        .unwrap_or_else(|| panic!("no clusterIP in {svc}"))
        .to_string();
    assert!(
        ip.starts_with("198.1"),
        "virtual IP from the benchmark range: {ip}"
    );
    let table = c.ok(&["get", "services"]);
    assert!(
        table.contains(&format!("site   ClusterIP   {ip}   80/TCP")),
        "{table}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&ip, 80).as_deref() != Some("v1") {
        assert!(Instant::now() < deadline, "service never answered v1");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before: Vec<String> = c.pods().into_iter().map(|p| p.0).collect();
    c.apply(&WEB.replace("VERSION", "v2"));
    let (mut answered, mut failed) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match http_get(&ip, 80) {
            Some(body) if body == "v1" || body == "v2" => answered += 1,
            other => failed.push(other),
        }
        let pods = c.pods();
        if all_ready(2)(&pods) && pods.iter().all(|p| !before.contains(&p.0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {pods:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollout: {failed:?}",
        failed.len(),
        answered + failed.len()
    );
    assert!(
        answered > 5,
        "too few requests during the rollout: {answered}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&ip, 80).as_deref() != Some("v2") {
        assert!(Instant::now() < deadline, "service never answered v2");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.ok(&[
        "delete",
        "-f",
        c.roots.path().join("m.yaml").to_str().unwrap(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(c.containers().is_empty() && c.pods().is_empty()) {
        assert!(
            Instant::now() < deadline,
            "delete left {:?}",
            c.containers()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    c.kill_serve("-TERM");
    // the Service's rules (their table carries the root's path) are gone
    let ruleset = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let ruleset = String::from_utf8_lossy(&ruleset.stdout);
    assert!(
        !ruleset.contains(&ip),
        "rules for {ip} left behind:\n{ruleset}"
    );
    leaks.assert_clean();
}
