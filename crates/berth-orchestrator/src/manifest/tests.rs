use super::*;

const HELLO: &str = include_str!("../../../../examples/hello-web/deploy.yaml");

#[test]
fn the_example_parses_without_warnings() {
    let p = parse("deploy.yaml", HELLO).unwrap();
    assert_eq!(p.objects.len(), 2);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let Body::Deployment(d) = &p.objects[0].body else {
        panic!("first object is {}", p.objects[0].kind())
    };
    assert_eq!(d.replicas, Some(3));
    assert_eq!(p.objects[0].namespace(), "default");
    let limits = &d.template.spec.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits;
    assert_eq!(
        Quantity::parse(&limits["memory"].as_text())
            .unwrap()
            .value(),
        32 << 20
    );
    assert_eq!(
        Quantity::parse(&limits["cpu"].as_text()).unwrap().milli(),
        100
    );
    assert_eq!(p.objects[1].kind(), "Service");
}

#[test]
fn unknown_fields_are_warnings_with_paths() {
    let text = r#"
apiVersion: v1
kind: Pod
metadata:
  name: p
  uid: 123
spec:
  nodeSelector: {disk: ssd}
  containers:
    - name: c
      image: busybox
      lifecycle: {preStop: {exec: {command: [sh]}}}
status: {phase: Running}
"#;
    let p = parse("pod.yaml", text).unwrap();
    let paths: Vec<_> = p.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["spec.containers[0].lifecycle", "spec.nodeSelector"]);
    let msg = p.warnings[0].to_string();
    assert!(
        msg.contains("pod.yaml: document 1 (Pod p)") && msg.contains("not supported"),
        "{msg}"
    );
}

#[test]
fn missing_image_names_the_full_path() {
    let text = HELLO.replace("image: hello-web:latest", "imagePullPolicy2: x");
    let e = parse("deploy.yaml", &text).unwrap_err().to_string();
    assert!(
        e.contains("spec.template.spec.containers[0].image: required field missing"),
        "{e}"
    );
    assert!(
        e.contains("deploy.yaml: document 1 (Deployment hello-web)"),
        "{e}"
    );
}

#[test]
fn wrong_types_name_the_path() {
    let text = HELLO.replace("replicas: 3", "replicas: three");
    let e = parse("d.yaml", &text).unwrap_err().to_string();
    assert!(e.contains("spec.replicas"), "{e}");
}

#[test]
fn selector_must_match_template() {
    let text = HELLO.replacen("app: hello-web\n  template", "app: other\n  template", 1);
    let e = parse("d.yaml", &text).unwrap_err().to_string();
    assert!(
        e.contains("spec.template.metadata.labels: `selector` does not match"),
        "{e}"
    );
}

#[test]
fn kinds_and_versions_are_checked() {
    let e = parse("x", "apiVersion: v1\nkind: CronTab\nmetadata: {name: a}\n").unwrap_err();
    assert!(
        e.to_string().contains("\"CronTab\" is not supported"),
        "{e}"
    );
    let e = parse(
        "x",
        "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: a}\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("use \"apps/v1\""), "{e}");
    let e = parse("x", "- a\n- b\n").unwrap_err();
    assert!(e.to_string().contains("mapping"), "{e}");
}

#[test]
fn secrets_configmaps_json_and_lists() {
    let text = r#"{"apiVersion":"v1","kind":"List","items":[
      {"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"pw":"aHVudGVyMg=="},"stringData":{"user":"bob"}},
      {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"web"},"data":{"k":"v"}}]}"#;
    let p = parse("-", text).unwrap();
    let Body::Secret { data, kind } = &p.objects[0].body else {
        panic!()
    };
    assert_eq!(
        (
            data["pw"].as_slice(),
            data["user"].as_slice(),
            kind.as_str()
        ),
        (&b"hunter2"[..], &b"bob"[..], "Opaque")
    );
    assert_eq!(p.objects[1].namespace(), "web");
    let e = parse(
        "-",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"pw":"***"}}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("data.pw: not valid base64"), "{e}");
}

#[test]
fn several_problems_are_all_reported() {
    let text = r#"
apiVersion: v1
kind: Service
metadata: {name: Web_1}
spec:
  type: LoadBalancer
  ports: [{port: 0}, {port: 80, nodePort: 30080}]
"#;
    let e = parse("s.yaml", text).unwrap_err().to_string();
    for want in [
        "metadata.name",
        "spec.type: \"LoadBalancer\" is not one of ClusterIP, NodePort",
        "spec.ports[0].port: 0 must be between 1 and 65535",
        "spec.ports[1].name: required when a Service has several ports",
        "spec.ports[1].nodePort: only allowed for type NodePort",
    ] {
        assert!(e.contains(want), "missing {want:?} in {e}");
    }
}

#[test]
fn pod_rules() {
    let text = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  template:
    spec:
      containers:
        - name: c
          image: busybox
          volumeMounts: [{name: data, mountPath: rel}]
          readinessProbe: {exec: {command: [ls]}, tcpSocket: {port: http}}
          resources: {requests: {cpu: 2}, limits: {cpu: 500m, memory: lots}}
"#;
    let e = parse("j.yaml", text).unwrap_err().to_string();
    for want in [
        "spec.template.spec.restartPolicy: \"Always\" is not supported for a Job",
        "volumeMounts[0].name: volume \"data\" not found",
        "volumeMounts[0].mountPath: must be an absolute path",
        "readinessProbe: must specify exactly one of exec, httpGet, tcpSocket",
        "readinessProbe.tcpSocket.port: no container port named \"http\"",
        "resources.limits.memory: invalid quantity \"lots\"",
        "resources.requests.cpu: must be less than or equal to cpu limit of 500m",
    ] {
        assert!(e.contains(want), "missing {want:?} in {e}");
    }
}

#[test]
fn hpa_v2() {
    let text = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 5
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior: {scaleDown: {stabilizationWindowSeconds: 30}}
"#;
    let p = parse("h.yaml", text).unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let e = parse("h.yaml", &text.replace("maxReplicas: 5", "maxReplicas: 1")).unwrap_err();
    assert!(
        e.to_string()
            .contains("spec.maxReplicas: 1 must be at least minReplicas (2)"),
        "{e}"
    );
}

#[test]
fn empty_documents_are_skipped() {
    let p = parse("x", "---\n# nothing\n---\n").unwrap();
    assert!(p.objects.is_empty());
}

#[test]
fn the_kube_examples_parse_without_warnings() {
    for (name, text, kinds) in [
        (
            "job-with-claim.yaml",
            include_str!("../../../../examples/kube/job-with-claim.yaml"),
            &["PersistentVolumeClaim", "Job"][..],
        ),
        (
            "autoscale.yaml",
            include_str!("../../../../examples/kube/autoscale.yaml"),
            &[
                "PersistentVolumeClaim",
                "Deployment",
                "HorizontalPodAutoscaler",
            ][..],
        ),
    ] {
        let p = parse(name, text).unwrap();
        assert!(p.warnings.is_empty(), "{name}: {:?}", p.warnings);
        let got: Vec<&str> = p.objects.iter().map(|o| o.kind()).collect();
        assert_eq!(got, kinds, "{name}");
    }
}
