//! Every metric the chart's alerts and dashboard use is exported by the binaries, and every
//! alert links to a runbook section that exists.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kbeast_install_tests::{chart_dir, documents, helm_template, repo_root};
use kbeast_operator::metrics::Metrics;

/// Metrics that come from elsewhere: kubelet volume statistics.
const EXTERNAL_PREFIXES: [&str; 1] = ["kubelet_volume_stats_"];

/// The PromQL expressions of the rendered alerts and of the dashboard.
fn expressions() -> Vec<String> {
    let rendered = helm_template(&[
        "--set",
        "metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true",
    ])
    .expect("renders");
    let mut exprs = Vec::new();
    for document in documents(&rendered) {
        if document["kind"] != "PrometheusRule" {
            continue;
        }
        for group in document["spec"]["groups"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            for rule in group["rules"].as_sequence().into_iter().flatten() {
                exprs.push(rule["expr"].as_str().expect("expr").to_string());
            }
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("files/dashboards/kbeast.json"))
            .expect("dashboard"),
    )
    .expect("dashboard is JSON");
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 20, "found {} expressions", exprs.len());
    exprs
}

/// Metric names in PromQL: identifiers of our prefixes, without histogram suffixes.
fn referenced_metrics(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut word = String::new();
        for c in expr.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                word.push(c);
                continue;
            }
            if ["kb_", "kbeast_", "process_", "kubelet_"]
                .iter()
                .any(|p| word.starts_with(p))
            {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| word.strip_suffix(suffix))
                    .unwrap_or(&word);
                names.insert(base.to_string());
            }
            word.clear();
        }
    }
    names
}

struct QueryServer(Child);

impl Drop for QueryServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query_binary() -> PathBuf {
    kbeast_testkit::workspace_binary("kbeast-query")
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/1.1 200").then_some(response)
}

/// Metric families the real query server exports at start.
fn query_server_metrics() -> BTreeSet<String> {
    let data = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("address")
        .port();
    let _server = QueryServer(
        Command::new(query_binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kbeast-query starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        if let Some(text) = http_get(port, "/metrics") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "kbeast-query did not serve /metrics"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_metric_in_alerts_and_dashboard_is_exported() {
    let referenced = referenced_metrics(&expressions());
    let mut exported: BTreeSet<String> = Metrics::new().names().into_iter().collect();
    exported.extend(query_server_metrics());
    let missing: Vec<_> = referenced
        .iter()
        .filter(|name| !EXTERNAL_PREFIXES.iter().any(|p| name.starts_with(p)))
        .filter(|name| !exported.contains(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "not exported by any binary: {missing:?}\nexported: {exported:?}"
    );
    assert!(
        referenced.iter().any(|n| n.starts_with("kb_")),
        "query metrics are referenced"
    );
    assert!(
        referenced.iter().any(|n| n.starts_with("kbeast_")),
        "operator metrics are referenced"
    );
}

#[test]
fn every_alert_links_to_an_existing_runbook_section() {
    let runbooks = std::fs::read_to_string(repo_root().join("docs/runbooks.md")).expect("runbooks");
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(|title| title.trim().to_lowercase().replace(' ', "-"))
        .collect();
    let rendered =
        helm_template(&["--set", "metrics.prometheusRule.enabled=true"]).expect("renders");
    let mut alerts = 0;
    for document in documents(&rendered)
        .into_iter()
        .filter(|d| d["kind"] == "PrometheusRule")
    {
        for group in document["spec"]["groups"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            for rule in group["rules"].as_sequence().into_iter().flatten() {
                let url = rule["annotations"]["runbook_url"]
                    .as_str()
                    .expect("runbook_url");
                let anchor = url.rsplit_once('#').map(|(_, a)| a).expect("an anchor");
                assert!(
                    anchors.contains(anchor),
                    "{url}: no section in docs/runbooks.md"
                );
                alerts += 1;
            }
        }
    }
    assert!(alerts >= 12, "{alerts} alerts");
}
