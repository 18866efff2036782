//! Server-side defaults of the built-in kinds kbeast uses (the values the real API server
//! fills in, as seen in the golden recordings).

use serde_json::{Map, Value, json};

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.entry(key.to_string()).or_insert(value);
}

fn object_at<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    value.get_mut(key).and_then(Value::as_object_mut)
}

/// The Go zero value of a built-in kind as JSON: fields that exist before anything is set,
/// so a create does not count them as added (matters for managedFields).
pub fn zero_object(kind: &str, custom: bool) -> Value {
    if custom {
        return json!({});
    }
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => {
            json!({"metadata": {}, "spec": {"template": {"metadata": {}, "spec": {"containers": null}}, "strategy": {}}, "status": {}})
        }
        "Pod" => json!({"metadata": {}, "spec": {"containers": null}, "status": {}}),
        "HorizontalPodAutoscaler" => json!({"metadata": {}, "spec": {"scaleTargetRef": {}},
            "status": {"desiredReplicas": 0, "currentMetrics": null}}),
        "PodDisruptionBudget" => json!({"metadata": {}, "spec": {},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}}),
        "NetworkPolicy" => json!({"metadata": {}, "spec": {"podSelector": {}}}),
        "CustomResourceDefinition" => {
            json!({"metadata": {}, "spec": {"names": {}}, "status": {"acceptedNames": {}}})
        }
        _ => json!({"metadata": {}, "spec": {}, "status": {}}),
    }
}

/// Defaults set by the registry strategy after field ownership is computed (not owned by anyone).
pub fn apply_strategy(kind: &str, object: &mut Value) {
    if kind == "Namespace" {
        namespace(object);
    }
    if kind == "CustomResourceDefinition" {
        let stored: Vec<Value> = object["spec"]["versions"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["storage"] == Value::Bool(true))
                    .map(|v| v["name"].clone())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(obj) = object.as_object_mut() {
            set_default(
                obj,
                "status",
                json!({"conditions": null, "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": stored}),
            );
        }
    }
}

fn namespace(object: &mut Value) {
    if let Some(obj) = object.as_object_mut() {
        set_default(obj, "spec", json!({}));
        set_default(obj, "status", json!({}));
    }
    if let Some(spec) = object_at(object, "spec") {
        set_default(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = object_at(object, "status") {
        set_default(status, "phase", json!("Active"));
    }
}

/// Go encodes unset `metav1.Time` fields of conditions as `null`.
fn condition_times(object: &mut Value, fields: &[&str]) {
    for c in object
        .get_mut("status")
        .and_then(|s| s.get_mut("conditions"))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(c) = c.as_object_mut() {
            for f in fields {
                set_default(c, f, Value::Null);
            }
        }
    }
}

pub fn apply(kind: &str, object: &mut Value) {
    match kind {
        "Deployment" => condition_times(object, &["lastUpdateTime", "lastTransitionTime"]),
        "ReplicaSet" | "PodDisruptionBudget" => condition_times(object, &["lastTransitionTime"]),
        "Pod" => condition_times(object, &["lastProbeTime", "lastTransitionTime"]),
        _ => {}
    }
    match kind {
        "CustomResourceDefinition" => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "conversion", json!({"strategy": "None"}));
            }
        }
        "Namespace" => {
            let name = object["metadata"]["name"].clone();
            if let Some(meta) = object_at(object, "metadata") {
                let labels = meta.entry("labels").or_insert(json!({}));
                labels["kubernetes.io/metadata.name"] = name;
            }
        }
        "Deployment" => {
            if let Some(obj) = object.as_object_mut() {
                set_default(obj, "status", json!({}));
            }
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "strategy", json!({}));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                if let Some(strategy) = spec.get_mut("strategy").and_then(Value::as_object_mut) {
                    set_default(strategy, "type", json!("RollingUpdate"));
                    if strategy["type"] == "RollingUpdate" {
                        let ru = strategy.entry("rollingUpdate").or_insert(json!({}));
                        if let Some(ru) = ru.as_object_mut() {
                            set_default(ru, "maxUnavailable", json!("25%"));
                            set_default(ru, "maxSurge", json!("25%"));
                        }
                    }
                }
                if let Some(template) = spec.get_mut("template") {
                    pod_template(template);
                }
            }
        }
        "ReplicaSet" => {
            if let Some(obj) = object.as_object_mut() {
                set_default(obj, "status", json!({"replicas": 0}));
            }
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "replicas", json!(1));
                if let Some(template) = spec.get_mut("template") {
                    pod_template(template);
                }
            }
        }
        "Job" => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "parallelism", json!(1));
                set_default(spec, "completions", json!(1));
                set_default(spec, "backoffLimit", json!(6));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
                if let Some(template) = spec.get_mut("template") {
                    pod_template(template);
                }
            }
        }
        "Pod" => {
            if let Some(spec) = object.get_mut("spec") {
                pod_spec(spec);
                // SetDefaults_Pod (not PodSpec): templates do not get it.
                if let Some(spec) = spec.as_object_mut() {
                    set_default(spec, "enableServiceLinks", json!(true));
                }
            }
        }
        "Service" => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                        set_default(port, "protocol", json!("TCP"));
                        if let Some(p) = port.get("port").cloned() {
                            set_default(port, "targetPort", p);
                        }
                    }
                }
            }
            if let Some(obj) = object.as_object_mut() {
                set_default(obj, "status", json!({"loadBalancer": {}}));
            }
        }
        "NetworkPolicy" => {
            if let Some(spec) = object_at(object, "spec") {
                if !spec.contains_key("policyTypes") {
                    let mut types = vec![json!("Ingress")];
                    if spec.contains_key("egress") {
                        types.push(json!("Egress"));
                    }
                    spec.insert("policyTypes".into(), Value::Array(types));
                }
                for direction in ["ingress", "egress"] {
                    for rule in spec
                        .get_mut(direction)
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        for port in rule
                            .get_mut("ports")
                            .and_then(Value::as_array_mut)
                            .into_iter()
                            .flatten()
                        {
                            if let Some(port) = port.as_object_mut() {
                                set_default(port, "protocol", json!("TCP"));
                            }
                        }
                    }
                }
            }
        }
        "HorizontalPodAutoscaler" => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "minReplicas", json!(1));
                set_default(
                    spec,
                    "metrics",
                    json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                );
                if let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) {
                    let up = behavior.entry("scaleUp").or_insert(json!({}));
                    if let Some(up) = up.as_object_mut() {
                        set_default(up, "stabilizationWindowSeconds", json!(0));
                        set_default(up, "selectPolicy", json!("Max"));
                        set_default(
                            up,
                            "policies",
                            json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]),
                        );
                    }
                    let down = behavior.entry("scaleDown").or_insert(json!({}));
                    if let Some(down) = down.as_object_mut() {
                        set_default(down, "stabilizationWindowSeconds", json!(300));
                        set_default(down, "selectPolicy", json!("Max"));
                        set_default(
                            down,
                            "policies",
                            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
                        );
                    }
                }
            }
            if let Some(obj) = object.as_object_mut() {
                set_default(
                    obj,
                    "status",
                    json!({"desiredReplicas": 0, "currentMetrics": null}),
                );
            }
        }
        "PodDisruptionBudget" => {
            if let Some(obj) = object.as_object_mut() {
                set_default(
                    obj,
                    "status",
                    json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}),
                );
            }
        }
        "Lease" => {
            if let Some(obj) = object.as_object_mut() {
                set_default(obj, "spec", json!({}));
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(spec) = object_at(object, "spec") {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(obj) = object.as_object_mut() {
                set_default(obj, "status", json!({"phase": "Pending"}));
            }
        }
        "Secret" => {
            if let Some(obj) = object.as_object_mut() {
                set_default(obj, "type", json!("Opaque"));
                // stringData is write-only: it is folded into data (base64), as on conversion.
                if let Some(Value::Object(strings)) = obj.remove("stringData") {
                    use base64::Engine;
                    let data = obj.entry("data").or_insert(json!({}));
                    for (k, v) in strings {
                        let text = v.as_str().unwrap_or("").to_string();
                        data[k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                    }
                }
            }
        }
        _ => {}
    }
}

fn pod_template(template: &mut Value) {
    if let Some(spec) = template.get_mut("spec") {
        pod_spec(spec);
    }
}

fn pod_spec(spec: &mut Value) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            set_default(c, "resources", json!({}));
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            let latest = c.get("image").and_then(Value::as_str).is_some_and(|i| {
                i.ends_with(":latest") || !i.rsplit('/').next().unwrap_or("").contains(':')
            });
            set_default(
                c,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            for port in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(port) = port.as_object_mut() {
                    set_default(port, "protocol", json!("TCP"));
                }
            }
        }
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
}

/// Admission on create (ServiceAccount admission, priority, default tolerations, QoS class),
/// applied once when a Pod is created.
pub fn admit_new(kind: &str, object: &mut Value) {
    if kind == "Service" {
        allocate_cluster_ip(object);
        return;
    }
    if kind == "Job" && object["spec"]["manualSelector"] != Value::Bool(true) {
        // The Job strategy generates the selector and pod labels from the uid.
        let labels = crate::controllers::job::job_labels(object);
        object["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": labels["batch.kubernetes.io/controller-uid"]}});
        for (k, v) in labels {
            object["spec"]["template"]["metadata"]["labels"][k] = v;
        }
        return;
    }
    if kind != "Pod" {
        return;
    }
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    set_default(spec, "priority", json!(0));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let tolerations = spec.entry("tolerations").or_insert(json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            if !list.iter().any(|t| t["key"] == key) {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    let automount = spec.get("automountServiceAccountToken") != Some(&Value::Bool(false));
    let has_token_volume = spec
        .get("volumes")
        .and_then(Value::as_array)
        .is_some_and(|v| {
            v.iter().any(|v| {
                v["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kube-api-access-"))
            })
        });
    if automount && !has_token_volume {
        let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
        let volume_name = format!("kube-api-access-{suffix}");
        let volume = json!({"name": volume_name, "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ], "defaultMode": 420}});
        if let Some(volumes) = spec.entry("volumes").or_insert(json!([])).as_array_mut() {
            volumes.insert(0, volume);
        }
        for c in spec
            .get_mut("containers")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let mount = json!({"name": volume_name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"});
            if let Some(mounts) = c
                .as_object_mut()
                .map(|c| c.entry("volumeMounts").or_insert(json!([])))
                .and_then(Value::as_array_mut)
            {
                mounts.push(mount);
            }
        }
    }
    let qos = qos_class(spec.get("containers"));
    if let Some(obj) = object.as_object_mut() {
        let status = obj.entry("status").or_insert(json!({}));
        if let Some(status) = status.as_object_mut() {
            set_default(status, "phase", json!("Pending"));
            status.insert("qosClass".into(), json!(qos));
        }
    }
}

/// BestEffort without requests/limits, Guaranteed when every container's limits equal its
/// requests for cpu and memory, Burstable otherwise.
fn qos_class(containers: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = containers
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let any = containers.iter().any(|c| {
        c["resources"]["requests"]
            .as_object()
            .is_some_and(|r| !r.is_empty())
            || c["resources"]["limits"]
                .as_object()
                .is_some_and(|l| !l.is_empty())
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = &c["resources"]["limits"][*r];
            !limit.is_null()
                && (c["resources"]["requests"][*r].is_null()
                    || &c["resources"]["requests"][*r] == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// ClusterIP services get an address from 10.96.0.0/16 (10.96.0.1 is `kubernetes`).
fn allocate_cluster_ip(object: &mut Value) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(10);
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let external = spec.get("type").and_then(Value::as_str) == Some("ExternalName");
    if headless {
        spec.insert("clusterIPs".into(), json!(["None"]));
    }
    if headless
        || external
        || spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .is_some_and(|ip| !ip.is_empty())
    {
        return;
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let ip = format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff);
    spec.insert("clusterIP".into(), json!(ip));
    spec.insert("clusterIPs".into(), json!([ip]));
}
