//! Container probes: httpGet (from the host to the pod IP, like the kubelet), tcpSocket and
//! exec (inside the pod's namespaces), with Kubernetes' defaults and thresholds.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::launch::{self, LaunchSpec};

/// A probe's settings with Kubernetes' defaults.
#[derive(Debug, Clone)]
pub struct Probe {
    pub spec: Value,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Probe {
    pub fn from_spec(spec: &Value) -> Option<Probe> {
        if !spec.is_object() {
            return None;
        }
        let secs = |k: &str, d: u64| Duration::from_secs(spec[k].as_u64().unwrap_or(d));
        let count = |k: &str, d: u32| spec[k].as_u64().map(|v| v.max(1) as u32).unwrap_or(d);
        Some(Probe {
            spec: spec.clone(),
            initial_delay: secs("initialDelaySeconds", 0),
            period: secs("periodSeconds", 10).max(Duration::from_secs(1)),
            timeout: secs("timeoutSeconds", 1).max(Duration::from_secs(1)),
            success_threshold: count("successThreshold", 1),
            failure_threshold: count("failureThreshold", 3),
        })
    }
}

/// Resolves a probe port (a number or a named container port).
fn port(port: &Value, container: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().map(|p| p as u16),
        Value::String(s) => match s.parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => container["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == s.as_str())
                .and_then(|p| p["containerPort"].as_u64())
                .map(|p| p as u16),
        },
        _ => None,
    }
}

async fn http_get(addr: SocketAddr, host: &str, path: &str, headers: &Value) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for h in headers.as_array().into_iter().flatten() {
        request.push_str(&format!(
            "{}: {}\r\n",
            h["name"].as_str().unwrap_or(""),
            h["value"].as_str().unwrap_or("")
        ));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response: {:?}", line.lines().next()))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Runs one probe attempt: `Ok` on success, the failure message otherwise.
pub async fn run_once(
    probe: &Probe,
    container: &Value,
    pod_ip: Ipv4Addr,
    exec_base: &LaunchSpec,
) -> Result<(), String> {
    let spec = &probe.spec;
    let attempt = async {
        if spec["httpGet"].is_object() {
            let h = &spec["httpGet"];
            if h["scheme"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
            {
                return Err("HTTPS probes are not supported by the local pod runner".to_string());
            }
            let p = port(&h["port"], container).ok_or("probe port not found")?;
            let host: Ipv4Addr = h["host"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(pod_ip);
            let path = h["path"].as_str().unwrap_or("/");
            let path = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("/{path}")
            };
            http_get(
                SocketAddr::from((host, p)),
                &format!("{host}:{p}"),
                &path,
                &h["httpHeaders"],
            )
            .await
        } else if spec["tcpSocket"].is_object() {
            let p = port(&spec["tcpSocket"]["port"], container).ok_or("probe port not found")?;
            tokio::net::TcpStream::connect(SocketAddr::from((pod_ip, p)))
                .await
                .map(|_| ())
                .map_err(|e| format!("dial tcp {pod_ip}:{p}: {e}"))
        } else if let Some(command) = spec["exec"]["command"].as_array() {
            let mut words = command.iter().filter_map(Value::as_str).map(String::from);
            let program = words.next().ok_or("exec probe without a command")?;
            let mut launch = exec_base.clone();
            launch.program = super::resolve_in_path(&program, &launch.env)
                .ok_or_else(|| format!("exec: {program:?}: executable file not found in $PATH"))?;
            launch.args = words.collect();
            launch.log = None;
            let mut child = launch::spawn(&launch).map_err(|e| e.to_string())?;
            let status = child.wait().await.map_err(|e| e.to_string())?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("command exited with {status}"))
            }
        } else {
            Err(
                "probe has no handler (grpc probes are not supported by the local pod runner)"
                    .to_string(),
            )
        }
    };
    match tokio::time::timeout(probe.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {:?}", probe.timeout)),
    }
}
