//! `kubectl port-forward` for tests: a loopback listener whose connections are proxied to a
//! pod IP, or for a Service to one of its Endpoints' ready addresses (round-robin).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::api::{Shared, State};
use crate::error::Error;

/// What to forward to: `pod/<name>` or `svc/<name>` (`service/`, `services/` too).
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub kind: TargetKind,
    pub name: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Pod,
    Service,
}

impl Target {
    pub fn parse(namespace: &str, target: &str, port: u16) -> Result<Target, Error> {
        let fail = |message: &str| Error::PortForward {
            target: target.to_string(),
            message: message.to_string(),
        };
        let (kind, name) = target
            .split_once('/')
            .ok_or_else(|| fail("expected pod/<name> or svc/<name>"))?;
        let kind = match kind {
            "pod" | "pods" | "po" => TargetKind::Pod,
            "svc" | "service" | "services" => TargetKind::Service,
            _ => return Err(fail("expected pod/<name> or svc/<name>")),
        };
        Ok(Target {
            namespace: namespace.to_string(),
            kind,
            name: name.to_string(),
            port,
        })
    }

    fn describe(&self) -> String {
        let kind = match self.kind {
            TargetKind::Pod => "pod",
            TargetKind::Service => "svc",
        };
        format!("{}/{kind}/{}:{}", self.namespace, self.name, self.port)
    }
}

fn get<'a>(state: &'a State, plural: &str, ns: &str, name: &str) -> Option<&'a Value> {
    let rt = state.registry.find("", "v1", plural)?;
    state.store.get(&rt.key(), ns, name)
}

/// The address a new connection goes to now.
pub fn resolve(state: &State, target: &Target, turn: usize) -> Result<SocketAddr, String> {
    let ns = &target.namespace;
    match target.kind {
        TargetKind::Pod => {
            let pod = get(state, "pods", ns, &target.name)
                .ok_or_else(|| format!("pods \"{}\" not found", target.name))?;
            let ip: Ipv4Addr = pod["status"]["podIP"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or("the pod has no IP yet")?;
            Ok(SocketAddr::from((ip, target.port)))
        }
        TargetKind::Service => {
            let svc = get(state, "services", ns, &target.name)
                .ok_or_else(|| format!("services \"{}\" not found", target.name))?;
            let port = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["port"].as_u64() == Some(u64::from(target.port)))
                .ok_or_else(|| format!("service has no port {}", target.port))?;
            let endpoints =
                get(state, "endpoints", ns, &target.name).ok_or("the service has no endpoints")?;
            let mut candidates = Vec::new();
            for subset in endpoints["subsets"].as_array().into_iter().flatten() {
                let ep_port = subset["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| {
                        p["name"] == port["name"]
                            || subset["ports"].as_array().map(Vec::len) == Some(1)
                    })
                    .and_then(|p| p["port"].as_u64());
                let Some(ep_port) = ep_port else { continue };
                for a in subset["addresses"].as_array().into_iter().flatten() {
                    if let Some(ip) = a["ip"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) {
                        candidates.push(SocketAddr::from((ip, ep_port as u16)));
                    }
                }
            }
            if candidates.is_empty() {
                return Err("the service has no ready endpoints".into());
            }
            Ok(candidates[turn % candidates.len()])
        }
    }
}

/// Listens on `bind` and proxies each connection; runs until aborted.
pub async fn listen(
    shared: Weak<Shared>,
    target: Target,
    bind: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let turn = AtomicUsize::new(0);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let destination = {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let state = shared.lock();
                resolve(&state, &target, turn.fetch_add(1, Ordering::Relaxed))
            };
            let description = target.describe();
            tokio::spawn(async move {
                let destination = match destination {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!("port-forward {description}: {e}");
                        return;
                    }
                };
                match tokio::net::TcpStream::connect(destination).await {
                    Ok(mut outbound) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(e) => tracing::warn!("port-forward {description} to {destination}: {e}"),
                }
            });
        }
    });
    Ok((addr, task))
}

/// A `--forward NS/KIND/NAME:PORT=LOCALPORT` flag of the binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    pub namespace: String,
    /// `svc/<name>` or `pod/<name>`.
    pub target: String,
    pub port: u16,
    pub local_port: u16,
}

impl std::str::FromStr for ForwardSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = || format!("--forward {spec:?}: expected NS/KIND/NAME:PORT=LOCALPORT");
        let (remote, local) = spec.split_once('=').ok_or_else(bad)?;
        let (path, port) = remote.rsplit_once(':').ok_or_else(bad)?;
        let (namespace, target) = path.split_once('/').ok_or_else(bad)?;
        Ok(ForwardSpec {
            namespace: namespace.to_string(),
            target: target.to_string(),
            port: port.parse().map_err(|_| bad())?,
            local_port: local.parse().map_err(|_| bad())?,
        })
    }
}
