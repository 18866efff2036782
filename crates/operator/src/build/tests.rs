//! The rules every built child must follow, across the sample matrix.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kbeast_api::labels::{CONFIG_HASH_ANNOTATION, PROJECT_LABEL};
use kube::Resource;

use super::*;
use crate::facts::test_support::sample;
use crate::facts::{common_labels, selector_labels};

const SAMPLES: [&str; 3] = ["minimal.yaml", "autoscaled.yaml", "object-store.yaml"];

fn build(file: &str) -> (KnowledgeProject, DesiredChildren) {
    let project = sample(file);
    let children = desired_children(
        &project,
        &OperatorSettings::default(),
        &ObservedFacts {
            secrets_hash: "s1".to_string(),
        },
    );
    (project, children)
}

fn assert_child_metadata(project: &KnowledgeProject, meta: &ObjectMeta, what: &str) {
    let owner = &meta.owner_references.as_ref().expect("owner references")[0];
    assert_eq!(
        Some(owner.uid.as_str()),
        project.meta().uid.as_deref(),
        "{what}"
    );
    assert_eq!(owner.controller, Some(true), "{what}: controller reference");
    assert_eq!(owner.kind, "KnowledgeProject", "{what}");
    let labels = meta.labels.as_ref().expect("labels");
    for (key, value) in common_labels(project) {
        assert_eq!(labels.get(&key), Some(&value), "{what}: label {key}");
    }
    assert!(
        meta.annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(kbeast_api::labels::DESIRED_HASH_ANNOTATION)),
        "{what}: desired-hash annotation"
    );
}

#[test]
fn every_child_is_owned_and_labelled() {
    for file in SAMPLES {
        let (project, c) = build(file);
        assert_child_metadata(&project, &c.service_account.metadata, "ServiceAccount");
        assert_child_metadata(&project, &c.network_policy.metadata, "NetworkPolicy");
        assert_child_metadata(&project, &c.config_map.metadata, "ConfigMap");
        assert_child_metadata(&project, &c.service.metadata, "Service");
        assert_child_metadata(&project, &c.deployment.metadata, "Deployment");
        assert_child_metadata(&project, &c.pdb.metadata, "PodDisruptionBudget");
        if let Some(pvc) = &c.pvc {
            assert_child_metadata(&project, &pvc.metadata, "PersistentVolumeClaim");
        }
        if let Some(hpa) = &c.hpa {
            assert_child_metadata(&project, &hpa.metadata, "HorizontalPodAutoscaler");
        }
    }
}

#[test]
fn the_pdb_never_blocks_a_drain() {
    for file in SAMPLES {
        let (project, c) = build(file);
        let spec = c.pdb.spec.expect("PDB spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)), "{file}");
        assert_eq!(
            spec.min_available, None,
            "{file}: minAvailable could block a drain"
        );
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow"),
            "{file}"
        );
        assert_eq!(
            spec.selector.and_then(|s| s.match_labels),
            Some(selector_labels(&project))
        );
    }
}

#[test]
fn replicas_belong_to_the_hpa_when_autoscaling() {
    for (file, expected_replicas, expected_hpa) in [
        ("minimal.yaml", Some(1), None),
        ("autoscaled.yaml", None, Some((2, 6, 70))),
        ("object-store.yaml", Some(3), None),
    ] {
        let (_, c) = build(file);
        let deployment = c.deployment.spec.expect("Deployment spec");
        assert_eq!(deployment.replicas, expected_replicas, "{file}");
        let hpa = c.hpa.map(|h| {
            let spec = h.spec.expect("HPA spec");
            assert_eq!(spec.scale_target_ref.kind, "Deployment");
            assert_eq!(spec.scale_target_ref.name, "support");
            let metric = &spec.metrics.expect("metrics")[0];
            let cpu = metric.resource.as_ref().expect("resource metric");
            assert_eq!(cpu.name, "cpu");
            (
                spec.min_replicas.unwrap_or(0),
                spec.max_replicas,
                cpu.target.average_utilization.unwrap_or(0),
            )
        });
        assert_eq!(hpa, expected_hpa, "{file}");
    }
}

#[test]
fn query_pods_are_locked_down() {
    for file in SAMPLES {
        let (_, c) = build(file);
        let deployment = c.deployment.spec.expect("spec");
        let strategy = deployment
            .strategy
            .and_then(|s| s.rolling_update)
            .expect("rolling update");
        assert_eq!(
            strategy.max_unavailable,
            Some(IntOrString::Int(0)),
            "{file}: old pods serve until new ones are Ready"
        );
        let template = deployment.template;
        assert!(
            template
                .metadata
                .and_then(|m| m.annotations)
                .is_some_and(|a| a.contains_key(CONFIG_HASH_ANNOTATION)),
            "{file}: config hash on the template"
        );
        let pod = template.spec.expect("pod spec");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let pod_security = pod.security_context.expect("pod security context");
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.map(|s| s.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let container = &pod.containers[0];
        let security = container
            .security_context
            .clone()
            .expect("container security context");
        assert_eq!(security.read_only_root_filesystem, Some(true), "{file}");
        assert_eq!(security.allow_privilege_escalation, Some(false), "{file}");
        assert_eq!(
            security.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
        assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
        assert!(
            container
                .resources
                .as_ref()
                .is_some_and(|r| r.requests.is_some())
        );
        assert_eq!(
            c.service_account.automount_service_account_token,
            Some(false)
        );
    }
}

#[test]
fn a_read_write_once_volume_keeps_pods_on_one_node() {
    let (_, c) = build("minimal.yaml");
    let pod = c
        .deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    let terms = pod
        .affinity
        .and_then(|a| a.pod_affinity)
        .and_then(|p| p.required_during_scheduling_ignored_during_execution)
        .expect("required pod affinity");
    assert_eq!(terms[0].topology_key, "kubernetes.io/hostname");
    assert!(pod.topology_spread_constraints.is_none());
    assert!(c.pvc.is_some());

    let (_, c) = build("autoscaled.yaml");
    let pod = c
        .deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    assert!(pod.affinity.is_none(), "ReadWriteMany pods move freely");
    assert_eq!(pod.topology_spread_constraints.map(|t| t.len()), Some(2));
}

#[test]
fn the_network_policy_admits_only_allowed_peers() {
    let (_, c) = build("autoscaled.yaml");
    let spec = c.network_policy.spec.expect("spec");
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    let from = spec.ingress.expect("ingress")[0]
        .from
        .clone()
        .expect("peers");
    assert_eq!(
        from[0].pod_selector,
        Some(Default::default()),
        "the project's own namespace"
    );
    let namespaces = from[1]
        .namespace_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref())
        .and_then(|e| e[0].values.clone());
    assert_eq!(
        namespaces,
        Some(vec!["frontend".to_string(), "kbeast-system".to_string()])
    );
    let egress = spec.egress.expect("egress");
    assert_eq!(
        egress.len(),
        1,
        "DNS only for the hash embedder on a volume"
    );

    let (_, c) = build("object-store.yaml");
    let egress = c
        .network_policy
        .spec
        .and_then(|s| s.egress)
        .expect("egress");
    let ports: Vec<_> = egress
        .iter()
        .flat_map(|rule| rule.ports.iter().flatten())
        .filter_map(|p| p.port.clone())
        .collect();
    assert_eq!(
        ports,
        vec![
            IntOrString::Int(53),
            IntOrString::Int(53),
            IntOrString::Int(8080),
            IntOrString::Int(9000)
        ],
        "DNS, the embedder and the object store"
    );
}

#[test]
fn rotating_a_secret_rolls_the_pods() {
    let project = sample("minimal.yaml");
    let template_hash = |secrets_hash: &str| {
        let config_map = desired_config_map(&project);
        desired_deployment(
            &project,
            &OperatorSettings::default(),
            &config_map,
            &ObservedFacts {
                secrets_hash: secrets_hash.to_string(),
            },
        )
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
    };
    assert_ne!(template_hash("keys-v1"), template_hash("keys-v2"));
    assert_eq!(
        template_hash("keys-v1"),
        template_hash("keys-v1"),
        "deterministic"
    );
}

#[test]
fn generated_keys_are_distinct_and_scoped() {
    let project = sample("minimal.yaml");
    let keys = ApiKeySet::generate();
    assert_ne!(keys.read, keys.write);
    assert_ne!(keys.write, keys.admin);
    assert!(keys.read.len() > 40, "256 bits of randomness");
    let secret = desired_api_keys_secret(&project, &keys);
    let data = secret.data.expect("data");
    let file: serde_json::Value =
        serde_json::from_slice(&data["api-keys.json"].0).expect("keys file is JSON");
    let scopes: Vec<_> = file
        .as_array()
        .expect("a list")
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap_or("").to_string(),
                k["scopes"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(
        scopes,
        vec![("read".into(), 1), ("write".into(), 2), ("admin".into(), 3)]
    );
    assert_eq!(data["read-key"].0, keys.read.as_bytes());
    assert_eq!(
        secret
            .metadata
            .labels
            .and_then(|l| l.get(PROJECT_LABEL).cloned()),
        Some("docs".into())
    );
}

#[test]
fn empty_dirs_have_size_limits_and_the_default_limit_holds_them() {
    let mut project = sample("minimal.yaml");
    project.spec.storage.volume = None;
    project.spec.storage.ephemeral = Some(kbeast_api::EphemeralStorage {
        size_limit: Some("2Gi".to_string()),
    });
    let children = desired_children(
        &project,
        &OperatorSettings::default(),
        &ObservedFacts {
            secrets_hash: "s1".to_string(),
        },
    );
    let pod = children
        .deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod");
    let limit_of = |name: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.empty_dir.as_ref())
            .and_then(|e| e.size_limit.clone())
            .map(|q| q.0)
    };
    assert_eq!(limit_of("data").as_deref(), Some("2Gi"));
    assert_eq!(limit_of("tmp").as_deref(), Some("256Mi"));
    let limits = pod.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .expect("limits");
    let mib = 1024 * 1024u64;
    assert_eq!(
        limits["ephemeral-storage"].0,
        (2048 * mib + 256 * mib + 512 * mib).to_string(),
        "both emptyDirs, plus logs and the writable layer"
    );

    project.spec.storage.ephemeral = Some(kbeast_api::EphemeralStorage::default());
    let problems = crate::validate::spec_problems(&project);
    assert!(problems.is_empty(), "the default 1Gi is valid");
    project.spec.storage.ephemeral = Some(kbeast_api::EphemeralStorage {
        size_limit: Some("lots".to_string()),
    });
    let problems = crate::validate::spec_problems(&project);
    assert_eq!(
        problems
            .iter()
            .map(|p| p.field.as_str())
            .collect::<Vec<_>>(),
        ["spec.storage.ephemeral.sizeLimit"]
    );
}
