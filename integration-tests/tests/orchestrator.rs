//! `berth serve` + `berth apply`: Deployments reconciled into real containers on one
//! node, with the CLI a kubectl user knows. Each test has its own roots holding busybox
//! from berth_image::fixtures and checks that nothing is left behind.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_image::{Store, fixtures};
use integration_tests::{LeakCheck, Serve, TestRoots, require_root};
use nix::sys::signal::Signal::{self, SIGKILL, SIGTERM};
use serde_json::Value;

struct Cluster {
    roots: TestRoots,
    serve: Option<Serve>,
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
        self.serve = Some(self.roots.serve("0.3").unwrap());
    }

    fn kill_serve(&mut self, signal: Signal) {
        if let Some(serve) = self.serve.take() {
            serve.stop(signal);
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
        self.kill_serve(SIGTERM);
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
    c.kill_serve(SIGKILL);
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
    c.kill_serve(SIGTERM);
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
---
apiVersion: v1
kind: Service
metadata: {name: site-np}
spec:
  type: NodePort
  selector: {app: site}
  ports:
    - {name: fixed, port: 80, targetPort: http, nodePort: NODEPORT}
    - {name: allocated, port: 81, targetPort: http}
"#;

/// A NodePort (30000-32767) no socket of this host holds, different per test process.
fn free_node_port() -> u16 {
    let start = 30000 + (std::process::id() % 2000) as u16;
    (start..=32767)
        .chain(30000..start)
        .find(|&p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok())
        .expect("a free port in 30000-32767")
}

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
    let np = free_node_port();
    let web = WEB.replace("NODEPORT", &np.to_string());
    c.apply(&web.replace("VERSION", "v1"));
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
    // columns: NAME TYPE CLUSTER-IP PORT(S) AGE
    let row = |name: &str| -> Vec<String> {
        let line = table.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.into_iter()
            .flat_map(|l| l.split_whitespace().take(4).map(str::to_string))
            .collect()
    };
    assert_eq!(row("site"), ["site", "ClusterIP", &ip, "80/TCP"], "{table}");
    // the port without a nodePort got one of the range, shown as kubectl shows it
    let np_svc: Value =
        serde_json::from_str(&c.ok(&["get", "svc", "site-np", "-o", "json"])).unwrap();
    let auto = np_svc["spec"]["ports"][1]["nodePort"].as_u64().unwrap_or(0) as u16;
    assert!(
        (30000..=32767).contains(&auto) && auto != np,
        "allocated NodePort: {np_svc}"
    );
    let described = norm(&c.ok(&["describe", "svc", "site-np"]));
    assert!(
        described.contains(&format!("NodePort: fixed {np}/TCP"))
            && described.contains(&format!("NodePort: allocated {auto}/TCP")),
        "{described}"
    );
    // a nodePort another Service holds (written or allocated) is refused, as kube does
    for (taken, holder) in [(np, "site-np"), (auto, "site-np")] {
        let f = c.roots.path().join("dup.yaml");
        std::fs::write(
            &f,
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: dup-np}}\nspec:\n  \
                 type: NodePort\n  selector: {{app: site}}\n  \
                 ports: [{{port: 80, targetPort: http, nodePort: {taken}}}]\n---\n\
                 apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: after-dup}}\n"
            ),
        )
        .unwrap();
        let (code, _, err) = c.berth(&["apply", "-f", f.to_str().unwrap()]);
        assert_ne!(code, 0, "{err}");
        assert!(
            err.contains(&format!(
                "service default/dup-np: spec.ports[0].nodePort: {taken}: provided port is \
                 already allocated (by service default/{holder})"
            )),
            "{err}"
        );
        let (_, _, err) = c.berth(&["get", "svc", "dup-np"]);
        assert!(
            err.contains("not found"),
            "nothing of dup-np applied: {err}"
        );
        // as kubectl, the other objects of the input still apply
        c.ok(&["get", "configmap", "after-dup"]);
    }
    let np_ports = format!("80:{np}/TCP,81:{auto}/TCP");
    let np_row = row("site-np");
    assert_eq!(np_row.get(1), Some(&"NodePort".to_string()), "{table}");
    assert_eq!(np_row.get(3), Some(&np_ports), "{table}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&ip, 80).as_deref() != Some("v1") {
        assert!(Instant::now() < deadline, "service never answered v1");
        std::thread::sleep(Duration::from_millis(100));
    }
    // the NodePorts answer on the host's loopback address too
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in [np, auto] {
        while http_get("127.0.0.1", port).as_deref() != Some("v1") {
            assert!(
                Instant::now() < deadline,
                "NodePort 127.0.0.1:{port} never answered v1"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let before: Vec<String> = c.pods().into_iter().map(|p| p.0).collect();
    c.apply(&web.replace("VERSION", "v2"));
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
    // serve removes the rules on its next pass: wait for it (bounded), then stop it
    wait_until("the Service's rules to go", 30, || {
        let nft = Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        let nft = String::from_utf8_lossy(&nft.stdout);
        !nft.contains(&ip)
            && !nft.contains(&format!("dport {np} "))
            && !nft.contains(&format!("dport {auto} "))
    });
    c.kill_serve(SIGTERM);
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

const JOB: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: store}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: count}
spec:
  completions: 4
  parallelism: 2
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: work
          image: busybox:latest
          imagePullPolicy: Never
          command: [sh, -c, 'echo "$HOSTNAME" >> /data/runs; sleep 1; echo finished']
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, persistentVolumeClaim: {claimName: store}}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: fails}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
        - {name: bad, image: busybox:latest, imagePullPolicy: Never, command: [sh, -c, 'exit 3']}
---
apiVersion: batch/v1
kind: Job
metadata: {name: retries}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: OnFailure
      containers:
        - {name: bad, image: busybox:latest, imagePullPolicy: Never, command: [sh, -c, 'exit 4']}
"#;

fn json_of(c: &Cluster, args: &[&str]) -> Value {
    serde_json::from_str(&c.ok(args)).unwrap()
}

fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn jobs_complete_or_fail_and_claims_keep_data_until_deleted() {
    let mut c = Cluster::new();
    let leaks = LeakCheck::new(&[c.roots.path().display().to_string()]);
    c.start_serve();
    let out = c.apply(JOB);
    assert!(out.contains("job.batch/count created"), "{out}");
    assert!(out.contains("persistentvolumeclaim/store created"), "{out}");
    let pvc = c.ok(&["get", "pvc"]);
    let mut max_active = 0;
    wait_until("the job to complete", 60, || {
        let j = json_of(&c, &["get", "job", "count", "-o", "json"]);
        max_active = max_active.max(j["status"]["active"].as_i64().unwrap_or(0));
        j["status"]["succeeded"] == 4
    });
    assert!(
        max_active <= 2,
        "parallelism 2 exceeded: {max_active} active"
    );
    let pvc = if pvc.contains("Bound") {
        pvc
    } else {
        c.ok(&["get", "pvc"])
    };
    assert!(pvc.starts_with("NAME"), "{pvc}");
    let line = pvc
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(line[..2], ["store", "Bound"], "{pvc}");
    assert!(
        line[2].starts_with("pvc-") && line[3] == "1Gi" && line[4] == "RWO",
        "{pvc}"
    );
    let jobs = c.ok(&["get", "jobs"]);
    assert!(jobs.starts_with("NAME"), "{jobs}");
    let count = jobs
        .lines()
        .find(|l| l.starts_with("count "))
        .unwrap_or_default();
    let cols: Vec<&str> = count.split_whitespace().collect();
    assert_eq!(cols[1..3], ["Complete", "4/4"], "{jobs}");
    // every pod of the job wrote into the one claim; they show as Completed
    let pods = c.ok(&["get", "pods", "-l", "job-name=count"]);
    assert_eq!(pods.matches("Completed").count(), 4, "{pods}");
    let status = json_of(&c, &["get", "pvc", "store", "-o", "json"]);
    let dir = std::path::PathBuf::from(status["status"]["path"].as_str().unwrap());
    let runs = std::fs::read_to_string(dir.join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 4, "{runs}");
    // logs of a finished pod through its name
    let first = pods
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(c.ok(&["logs", first]).trim(), "finished");

    // the failing job: backoffLimit 1 means two failed pods, then Failed
    wait_until("the failing job to fail", 60, || {
        c.ok(&["get", "jobs"])
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["fails", "Failed", "0/1"])
    });
    let j = json_of(&c, &["get", "job", "fails", "-o", "json"]);
    assert_eq!(j["status"]["failed"], 2, "{j}");
    assert_eq!(
        j["status"]["conditions"][0]["reason"],
        "BackoffLimitExceeded"
    );
    let pods = c.ok(&["get", "pods", "-l", "job-name=fails"]);
    assert_eq!(pods.matches(" Error ").count(), 2, "{pods}");
    // OnFailure restarts the container in place; each restart counts against the limit
    wait_until("the retrying job to fail", 60, || {
        json_of(&c, &["get", "job", "retries", "-o", "json"])["status"]["conditions"][0]["type"]
            == "Failed"
    });
    let (_, pods, err) = c.berth(&["get", "pods", "-l", "job-name=retries"]);
    assert!(
        pods.is_empty() && err.contains("No resources found"),
        "the failed job's running pod is deleted: {pods}{err}"
    );
    let described = c.ok(&["describe", "job", "fails"]);
    assert!(described.contains("BackoffLimitExceeded"), "{described}");

    // a new pod sees the claim's data (it outlives pods); deleting the claim removes it
    c.ok(&["delete", "job", "count", "fails", "retries"]);
    wait_until("job pods to go", 30, || c.pods().is_empty());
    c.apply(
        &JOB.split("---")
            .take(2)
            .collect::<Vec<_>>()
            .join("---")
            .replace("completions: 4", "completions: 1")
            .replace(
                "echo \"$HOSTNAME\" >> /data/runs; sleep 1; echo finished",
                "wc -l < /data/runs",
            ),
    );
    wait_until("the second job", 30, || {
        json_of(&c, &["get", "job", "count", "-o", "json"])["status"]["succeeded"] == 1
    });
    let pod = c.pods()[0].0.clone();
    assert_eq!(
        c.ok(&["logs", &pod]).trim(),
        "4",
        "data survived pod replacement"
    );
    c.ok(&["delete", "job", "count"]);
    c.ok(&["delete", "pvc", "store"]);
    wait_until("the claim's directory to go", 30, || !dir.exists());
    wait_until("everything to go", 30, || {
        c.pods().is_empty() && c.containers().is_empty()
    });
    c.kill_serve(SIGTERM);
    leaks.assert_clean();
}

const TWO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: duo
  annotations: {kubernetes.io/change-cause: "CAUSE"}
spec:
  replicas: 2
  selector: {matchLabels: {app: duo}}
  template:
    metadata: {labels: {app: duo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: busybox:latest
          imagePullPolicy: Never
          command: [sh, -c, 'trap "exit 0" TERM; echo main VERSION; while true; do sleep 1; done']
          env: [{name: GREETING, value: hi-VERSION}]
        - name: side
          image: busybox:latest
          imagePullPolicy: Never
          command: [sh, -c, 'trap "exit 0" TERM; echo side says VERSION; while true; do sleep 1; done']
"#;

/// Text with every run of white space made one space (column widths vary).
fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn wait_logs(c: &Cluster, pod: &str, container: &str, want: &str) {
    wait_until(
        &format!("{want:?} in the logs of {pod}/{container}"),
        20,
        || {
            let (code, out, err) = c.berth(&["logs", pod, "-c", container]);
            assert_eq!(
                code,
                0,
                "logs {pod} -c {container}: {err}\n{}",
                c.ok(&["ps", "-a"])
            );
            out.contains(want)
        },
    );
}

#[test]
fn rollout_history_undo_describe_logs_exec_and_top_work_like_kubectl() {
    let mut c = Cluster::new();
    let leaks = LeakCheck::new(&[c.roots.path().display().to_string()]);
    c.start_serve();
    c.apply(&TWO.replace("VERSION", "v1").replace("CAUSE", "first"));
    let out = c.ok(&["rollout", "status", "deployment/duo", "--timeout", "60"]);
    assert!(
        out.ends_with("deployment \"duo\" successfully rolled out\n"),
        "{out}"
    );
    c.wait_pods("2 ready pods", all_ready(2));
    c.apply(&TWO.replace("VERSION", "v2").replace("CAUSE", "second"));
    let out = c.ok(&["rollout", "status", "deployment/duo", "--timeout", "60"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let history = c.ok(&["rollout", "history", "deployment/duo"]);
    let rows: Vec<Vec<&str>> = history
        .lines()
        .skip(2)
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows, [vec!["1", "first"], vec!["2", "second"]], "{history}");
    c.wait_pods("2 ready v2 pods", all_ready(2));
    let pods = c.pods();
    let pod = &pods[0].0;
    wait_logs(&c, pod, "side", "side says v2");
    wait_logs(&c, pod, "main", "main v2");
    // exec into either container of a pod
    assert_eq!(
        c.ok(&[
            "exec",
            pod,
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo $GREETING"
        ])
        .trim(),
        "hi-v2"
    );
    assert_eq!(
        c.ok(&["exec", pod, "-c", "side", "--", "hostname"]).trim(),
        *pod
    );
    let (code, _, err) = c.berth(&["exec", pod, "-c", "nope", "--", "true"]);
    assert_ne!(code, 0);
    assert!(err.contains("container nope is not valid for pod"), "{err}");
    // describe: kubectl's sections, the containers' states, the events
    let d = norm(&c.ok(&["describe", "pod", pod]));
    for want in [
        "Name:",
        "Status: Running",
        "Controlled By:",
        "Containers:",
        "main:",
        "side:",
        "Restart Count: 0",
        "Conditions:",
        "Events:",
        "Normal Started",
        "kubelet Started container side",
    ] {
        assert!(d.contains(want), "{want:?} missing from describe pod:\n{d}");
    }
    let d = norm(&c.ok(&["describe", "deployment", "duo"]));
    for want in [
        "Replicas: 2 desired | 2 updated | 2 total | 2 available | 0 unavailable",
        "StrategyType: RollingUpdate",
        "NewReplicaSet:",
        "ScalingReplicaSet",
        "Scaled down replica set duo-",
    ] {
        assert!(
            d.contains(want),
            "{want:?} missing from describe deployment:\n{d}"
        );
    }
    // top pods: one row per pod from the cgroups
    let top = c.ok(&["top", "pods"]);
    assert!(top.starts_with("NAME"), "{top}");
    assert_eq!(top.lines().count(), 3, "{top}");
    assert!(
        top.lines().skip(1).all(|l| l
            .split_whitespace()
            .nth(1)
            .is_some_and(|v| v.ends_with('m'))),
        "{top}"
    );

    // undo: back to the first template, which becomes revision 3
    let out = c.ok(&["rollout", "undo", "deployment/duo"]);
    assert!(out.contains("deployment.apps/duo rolled back"), "{out}");
    // kill -9 the controller in the middle of that rollout: it converges after a restart
    std::thread::sleep(Duration::from_millis(400));
    c.kill_serve(SIGKILL);
    c.start_serve();
    c.ok(&["rollout", "status", "deployment/duo", "--timeout", "60"]);
    let history = c.ok(&["rollout", "history", "deployment/duo"]);
    let revs: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revs, ["2", "3"], "{history}");
    c.wait_pods("2 ready v1 pods", |p| {
        all_ready(2)(p) && !p.iter().any(|x| pods.iter().any(|y| y.0 == x.0))
    });
    let pod = c.pods()[0].0.clone();
    wait_logs(&c, &pod, "main", "main v1");
    wait_until("2 pods of 2 containers, nothing duplicated", 30, || {
        c.containers().len() == 4
    });
    let (code, _, err) = c.berth(&["rollout", "undo", "deployment/duo", "--to-revision", "9"]);
    assert_ne!(code, 0);
    assert!(err.contains("unable to find specified revision 9"), "{err}");

    c.ok(&["delete", "deployment", "duo"]);
    wait_until("everything to go", 30, || {
        c.pods().is_empty() && c.containers().is_empty()
    });
    c.kill_serve(SIGTERM);
    leaks.assert_clean();
}

const LOADED: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: switch}
spec: {resources: {requests: {storage: 1Mi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: burn}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: cpu
          image: busybox:latest
          imagePullPolicy: Never
          # busy while /load/on exists, idle otherwise
          command: [sh, -c, 'trap "exit 0" TERM; while true; do while [ -f /load/on ]; do :; done; sleep 0.5; done']
          resources: {requests: {cpu: 50m}, limits: {cpu: 200m}}
          volumeMounts: [{name: switch, mountPath: /load}]
      volumes: [{name: switch, persistentVolumeClaim: {claimName: switch}}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: burn}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burn}
  minReplicas: 1
  maxReplicas: 3
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 3}
"#;

#[test]
fn hpa_scales_up_under_cpu_load_and_back_down_when_it_stops() {
    let mut c = Cluster::new();
    let leaks = LeakCheck::new(&[c.roots.path().display().to_string()]);
    c.start_serve();
    let out = c.apply(LOADED);
    assert!(
        out.contains("horizontalpodautoscaler.autoscaling/burn created"),
        "{out}"
    );
    c.wait_pods("1 ready pod", all_ready(1));
    let hpa = |c: &Cluster| json_of(c, &["get", "hpa", "burn", "-o", "json"]);
    // idle: it stays at one replica once it has measured
    wait_until("a first measurement", 20, || {
        hpa(&c)["status"]["currentCPUUtilizationPercentage"].is_i64()
    });
    assert_eq!(hpa(&c)["status"]["desiredReplicas"], 1, "{}", hpa(&c));
    let dir = std::path::PathBuf::from(
        json_of(&c, &["get", "pvc", "switch", "-o", "json"])["status"]["path"]
            .as_str()
            .unwrap(),
    );
    std::fs::write(dir.join("on"), "").unwrap();
    wait_until("scale up to 3", 60, || {
        hpa(&c)["status"]["desiredReplicas"] == 3
    });
    c.wait_pods("3 ready pods", all_ready(3));
    let table = c.ok(&["get", "hpa"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[0], "burn", "{table}");
    assert_eq!(row[1], "Deployment/burn", "{table}");
    assert!(
        row[3].ends_with("/50%") && row[3] != "<unknown>/50%",
        "{table}"
    );
    assert_eq!(row[4..7], ["1", "3", "3"], "{table}");
    let top = c.ok(&["top", "pods"]);
    let busiest = top
        .lines()
        .skip(1)
        .filter_map(|l| {
            l.split_whitespace()
                .nth(1)?
                .trim_end_matches('m')
                .parse::<u64>()
                .ok()
        })
        .max();
    assert!(
        busiest.is_some_and(|m| m >= 50),
        "a loaded pod uses CPU: {top}"
    );
    // load off: back to minReplicas after the 3 s window
    std::fs::remove_file(dir.join("on")).unwrap();
    wait_until("scale down to 1", 60, || {
        hpa(&c)["status"]["desiredReplicas"] == 1
    });
    c.wait_pods("1 pod", |p| p.len() == 1);
    let d = c.ok(&["describe", "hpa", "burn"]);
    assert!(
        d.contains(
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{d}"
    );
    assert!(
        d.contains(
            "New size: 1; reason: cpu resource utilization (percentage of request) below target"
        ),
        "{d}"
    );
    c.ok(&[
        "delete",
        "-f",
        c.roots.path().join("m.yaml").to_str().unwrap(),
    ]);
    wait_until("everything to go", 30, || {
        c.pods().is_empty() && c.containers().is_empty() && !dir.exists()
    });
    c.kill_serve(SIGTERM);
    leaks.assert_clean();
}

const CRASHY: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: crashy}
spec:
  containers:
    - {name: boom, image: busybox:latest, imagePullPolicy: Never, command: [sh, -c, 'echo boom; exit 1']}
---
apiVersion: v1
kind: Pod
metadata: {name: slowstart}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: busybox:latest
      imagePullPolicy: Never
      command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 1; done']
      # never starts: killed after 2 failures, and never ready meanwhile
      startupProbe: {exec: {command: [test, -f, /never]}, periodSeconds: 1, failureThreshold: 2}
      readinessProbe: {exec: {command: ["true"]}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: unclaimed}
spec:
  containers:
    - name: app
      image: busybox:latest
      imagePullPolicy: Never
      command: [sleep, '1000']
      volumeMounts: [{name: d, mountPath: /d}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: missing}}]
"#;

#[test]
fn crash_loops_back_off_and_startup_probes_gate_and_restart() {
    let mut c = Cluster::new();
    let leaks = LeakCheck::new(&[c.roots.path().display().to_string()]);
    c.start_serve();
    c.apply(CRASHY);
    let row = |c: &Cluster, name: &str| -> Vec<String> {
        c.ok(&["get", "pods"])
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    wait_until("crashy in CrashLoopBackOff with restarts", 30, || {
        let r = row(&c, "crashy");
        r.len() >= 4 && r[2] == "CrashLoopBackOff" && r[3].parse::<i64>().unwrap_or(0) >= 2
    });
    wait_until("a BackOff event", 30, || {
        let d = norm(&c.ok(&["describe", "pod", "crashy"]));
        d.contains("Warning BackOff")
            && d.contains("Back-off restarting failed container boom in pod crashy")
    });
    // a pod whose claim does not exist waits, saying why
    wait_until("unclaimed to say why it waits", 30, || {
        row(&c, "unclaimed").get(2).map(String::as_str) == Some("Pending")
            && c.ok(&["describe", "pod", "unclaimed"])
                .contains("persistentvolumeclaim \"missing\" not found")
    });
    // the startup probe fails twice: the container is killed and restarted, and the
    // readiness probe (which would pass) never made it ready
    wait_until("slowstart restarted by its startup probe", 30, || {
        let r = row(&c, "slowstart");
        r.len() >= 4 && r[3].parse::<i64>().unwrap_or(0) >= 1
    });
    let r = row(&c, "slowstart");
    assert_eq!(
        r[1], "0/1",
        "never ready while the startup probe fails: {r:?}"
    );
    let d = norm(&c.ok(&["describe", "pod", "slowstart"]));
    assert!(
        d.contains("Container app failed startup probe, will be restarted"),
        "{d}"
    );
    assert!(
        d.contains("Warning Unhealthy") && d.contains("Startup probe failed"),
        "{d}"
    );
    assert!(!d.contains("Readiness probe failed"), "{d}");
    c.ok(&["delete", "pod", "crashy", "slowstart", "unclaimed"]);
    wait_until("everything to go", 30, || {
        c.pods().is_empty() && c.containers().is_empty()
    });
    c.kill_serve(SIGTERM);
    leaks.assert_clean();
}

const SHARED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: pair}
spec:
  replicas: 1
  selector: {matchLabels: {app: pair}}
  template:
    metadata: {labels: {app: pair}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: busybox:latest
          imagePullPolicy: Never
          command: [sh, -c, 'mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www']
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
        - name: side
          image: busybox:latest
          imagePullPolicy: Never
          command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 1; done']
---
apiVersion: v1
kind: Service
metadata: {name: pair}
spec:
  selector: {app: pair}
  ports: [{port: 80, targetPort: http}]
"#;

#[test]
fn pod_containers_share_localhost_and_find_services_by_name() {
    let mut c = Cluster::new();
    let leaks = LeakCheck::new(&[c.roots.path().display().to_string()]);
    c.start_serve();
    c.apply(SHARED);
    c.wait_pods("the pod ready", all_ready(1));
    let pod = c.pods()[0].0.clone();
    let exec = |container: &str, cmd: &str| -> String {
        c.ok(&["exec", &pod, "-c", container, "--", "sh", "-c", cmd])
            .trim()
            .to_string()
    };
    // one network namespace: the sidecar reaches the web container on localhost,
    // and both see the same eth0, whose address is the pod's IP
    assert_eq!(
        exec("side", "wget -qO- http://127.0.0.1:8080/"),
        "hello-from-web"
    );
    let mac = "cat /sys/class/net/eth0/address";
    assert_eq!(exec("side", mac), exec("web", mac));
    let wide = c.ok(&["get", "pods", "-o", "wide"]);
    let ip = wide
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    let addr = exec("side", "ip -4 -o addr show eth0");
    assert!(
        addr.contains(&format!("inet {ip}/")),
        "pod IP {ip} vs {addr}"
    );
    // Service names: the short name through the search domains, and the longer forms
    let svc = json_of(&c, &["get", "svc", "pair", "-o", "json"]);
    let vip = svc["status"]["clusterIP"].as_str().unwrap().to_string();
    let resolv = exec("side", "cat /etc/resolv.conf");
    assert!(
        resolv.contains("nameserver 127.0.0.11") && resolv.contains("default.svc.cluster.local"),
        "{resolv}"
    );
    for name in ["pair", "pair.default", "pair.default.svc.cluster.local"] {
        let looked = exec("side", &format!("nslookup {name} 2>&1 || true"));
        assert!(
            looked.contains(&vip),
            "{name} should resolve to {vip}: {looked}"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let body = exec("side", &format!("wget -qO- http://{name}/ 2>&1 || true"));
            if body.starts_with("hello-from-web") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "http://{name}/ never answered: {body}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    c.ok(&[
        "delete",
        "-f",
        c.roots.path().join("m.yaml").to_str().unwrap(),
    ]);
    // the Service's rules go with it (their table's comment names the root)
    let root = c.roots.root().display().to_string();
    wait_until("everything to go", 30, || {
        let nft = Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        c.pods().is_empty()
            && c.containers().is_empty()
            && !String::from_utf8_lossy(&nft.stdout).contains(&root)
    });
    c.kill_serve(SIGTERM);
    leaks.assert_clean();
}
