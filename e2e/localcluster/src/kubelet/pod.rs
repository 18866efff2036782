//! One pod's lifecycle: sandbox (network namespace), volumes, init containers in order,
//! then the containers with probes and restarts, and the graceful stop on deletion.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::launch::{self, LaunchSpec};
use super::probe::{self, Probe};
use super::volumes::{self, Layout, VolumeDirs};
use super::{AbortOnDrop, KubeletInner, ObjectSource, env};
use crate::controllers::timestamp;

/// What the manager asks of a pod worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Run,
    /// Stop all containers: SIGTERM, SIGKILL after the grace period.
    Stop(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: String,
        finished_at: String,
        container_id: String,
        message: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct ContainerRuntime {
    pub name: String,
    pub image: String,
    pub state: ContainerState,
    pub last_state: Option<ContainerState>,
    pub restart_count: u32,
    pub ready: bool,
    pub started: bool,
    /// Created at least once (the pod is no longer Pending).
    pub ever_started: bool,
    pub container_id: Option<String>,
}

impl ContainerRuntime {
    fn new(container: &Value, reason: &str) -> Self {
        ContainerRuntime {
            name: container["name"].as_str().unwrap_or("").to_string(),
            image: container["image"].as_str().unwrap_or("").to_string(),
            state: ContainerState::Waiting {
                reason: reason.to_string(),
                message: None,
            },
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            ever_started: false,
            container_id: None,
        }
    }
}

/// A pod's runtime state, turned into `status` by [`super::status::compose`].
#[derive(Debug, Clone)]
pub struct PodRuntime {
    pub ip: Option<Ipv4Addr>,
    pub start_time: String,
    pub sandbox_ready: bool,
    pub initialized: bool,
    pub init_containers: Vec<ContainerRuntime>,
    pub containers: Vec<ContainerRuntime>,
    /// Succeeded or Failed once every container is done for good.
    pub terminal_phase: Option<&'static str>,
    /// Processes stopped and sandbox removed.
    pub finished: bool,
}

impl PodRuntime {
    pub fn new(pod: &Value, now: &str) -> Self {
        let list = |key: &str, reason: &str| -> Vec<ContainerRuntime> {
            pod["spec"][key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| ContainerRuntime::new(c, reason))
                .collect()
        };
        let init_containers = list("initContainers", "PodInitializing");
        let initialized = init_containers.is_empty();
        PodRuntime {
            ip: None,
            start_time: now.to_string(),
            sandbox_ready: false,
            initialized,
            init_containers,
            containers: list("containers", "ContainerCreating"),
            terminal_phase: None,
            finished: false,
        }
    }

    /// A pod that runs no process but reports every container running and ready at `ip`
    /// (a hollow node's pod, as kubemark's; see `NodeAgentOptions::hollow_pod_ip`).
    pub fn hollow(pod: &Value, now: &str, ip: Ipv4Addr) -> Self {
        let mut runtime = PodRuntime::new(pod, now);
        runtime.ip = Some(ip);
        runtime.sandbox_ready = true;
        runtime.initialized = true;
        for container in &mut runtime.init_containers {
            container.state = ContainerState::Terminated {
                exit_code: 0,
                reason: "Completed".to_string(),
                started_at: now.to_string(),
                finished_at: now.to_string(),
                container_id: String::new(),
                message: None,
            };
            container.ever_started = true;
        }
        for container in &mut runtime.containers {
            container.state = ContainerState::Running {
                started_at: now.to_string(),
            };
            container.ready = true;
            container.started = true;
            container.ever_started = true;
        }
        runtime
    }
}

pub struct PodCtx {
    pub objects: Arc<dyn ObjectSource>,
    pub kubelet: Arc<KubeletInner>,
    pub layout: Layout,
    pub pod: Value,
    pub runtime: Arc<Mutex<PodRuntime>>,
    pub ip: Ipv4Addr,
    pub host_ip: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    App,
}

impl PodCtx {
    fn update(&self, f: impl FnOnce(&mut PodRuntime)) {
        f(&mut self.runtime.lock().unwrap_or_else(|e| e.into_inner()));
        self.kubelet.notify.notify_one();
    }
    fn update_container(&self, kind: Kind, index: usize, f: impl FnOnce(&mut ContainerRuntime)) {
        self.update(|rt| {
            let list = match kind {
                Kind::Init => &mut rt.init_containers,
                Kind::App => &mut rt.containers,
            };
            if let Some(c) = list.get_mut(index) {
                f(c);
            }
        });
    }
    fn name(&self) -> &str {
        self.pod["metadata"]["name"].as_str().unwrap_or("")
    }
    fn namespace(&self) -> &str {
        self.pod["metadata"]["namespace"].as_str().unwrap_or("")
    }
    fn uid(&self) -> &str {
        self.pod["metadata"]["uid"].as_str().unwrap_or("")
    }
    fn grace(&self) -> Duration {
        Duration::from_secs(
            self.pod["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        )
    }
}

/// Resolves when a stop is requested, with its grace period.
async fn stopped(control: &mut watch::Receiver<Control>) -> Duration {
    loop {
        if let Control::Stop(grace) = &*control.borrow_and_update() {
            return *grace;
        }
        if control.changed().await.is_err() {
            return Duration::ZERO;
        }
    }
}

fn stop_requested(control: &watch::Receiver<Control>) -> bool {
    matches!(*control.borrow(), Control::Stop(_))
}

/// Waits `delay`; false if a stop came first.
async fn wait_or_stop(delay: Duration, control: &mut watch::Receiver<Control>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => !stop_requested(control),
        _ = stopped(control) => false,
    }
}

fn now() -> String {
    timestamp(jiff::Timestamp::now())
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

pub async fn run_pod(ctx: Arc<PodCtx>, mut control: watch::Receiver<Control>) {
    let inner = ctx.kubelet.clone();
    let ip = ctx.ip;
    let bridge_sandbox = {
        let inner = inner.clone();
        tokio::task::spawn_blocking(move || {
            let sandbox = inner.bridge.create_sandbox(ip)?;
            // Registered here, not after the await: an aborted task must not leak it.
            if inner.register_sandbox(&sandbox) {
                Ok(sandbox)
            } else {
                Err(super::network::NetworkError::ShuttingDown)
            }
        })
        .await
    };
    let sandbox = match bridge_sandbox {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::error!(pod = ctx.name(), "creating the pod sandbox: {e}");
            ctx.update(|rt| {
                for c in &mut rt.containers {
                    c.state = ContainerState::Waiting {
                        reason: "ContainerCreating".into(),
                        message: Some(format!("CreatePodSandboxError: {e}")),
                    };
                }
            });
            stopped(&mut control).await;
            inner.bridge.release(ip);
            ctx.update(|rt| rt.finished = true);
            return;
        }
        Err(_) => return,
    };
    ctx.update(|rt| {
        rt.ip = Some(ip);
        rt.sandbox_ready = true;
    });
    let outcome = run_in_sandbox(&ctx, &sandbox, &mut control).await;
    // Teardown: processes are gone; remove the namespace and the pod's own volumes.
    inner
        .sandboxes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&sandbox.netns);
    let _ = tokio::task::spawn_blocking(move || sandbox.delete()).await;
    let _ = std::fs::remove_dir_all(ctx.layout.pod_dir.join("volumes"));
    inner.bridge.release(ip);
    ctx.update(|rt| {
        rt.sandbox_ready = false;
        if rt.terminal_phase.is_none() {
            rt.terminal_phase = outcome;
        }
        rt.finished = true;
    });
}

/// Runs the pod until its containers are done for good or a stop; returns the terminal
/// phase the containers' exit codes give.
async fn run_in_sandbox(
    ctx: &Arc<PodCtx>,
    sandbox: &super::network::Sandbox,
    control: &mut watch::Receiver<Control>,
) -> Option<&'static str> {
    let volume_dirs = loop {
        let result = volumes::materialise(
            ctx.objects.as_ref(),
            &ctx.pod,
            &ctx.layout,
            &ctx.ip.to_string(),
            &ctx.host_ip,
        );
        match result {
            Ok(dirs) => break dirs,
            Err(message) => {
                ctx.update(|rt| {
                    for c in rt
                        .containers
                        .iter_mut()
                        .chain(rt.init_containers.iter_mut())
                    {
                        c.state = ContainerState::Waiting {
                            reason: "ContainerCreating".into(),
                            message: Some(format!("MountVolume.SetUp failed: {message}")),
                        };
                    }
                });
                if !wait_or_stop(Duration::from_secs(1), control).await {
                    return None;
                }
            }
        }
    };
    let _refresher = {
        let ctx = ctx.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(ctx.kubelet.options.volume_sync).await;
                volumes::refresh(
                    ctx.objects.as_ref(),
                    &ctx.pod,
                    &ctx.layout,
                    &ctx.ip.to_string(),
                    &ctx.host_ip,
                );
            }
        }))
    };
    let volume_dirs = Arc::new(volume_dirs);
    let logs = ctx.layout.pod_dir.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    let policy = ctx.pod["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_string();
    // Init containers, one after the other, each to success.
    let inits: Vec<Value> = ctx.pod["spec"]["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, c) in inits.iter().enumerate() {
        let init_policy = if policy == "Never" {
            "Never"
        } else {
            "OnFailure"
        };
        let code = run_container(
            ctx.clone(),
            sandbox.clone(),
            volume_dirs.clone(),
            Kind::Init,
            i,
            c.clone(),
            init_policy.to_string(),
            control.clone(),
        )
        .await;
        if stop_requested(control) {
            return None;
        }
        if code != Some(0) {
            return Some("Failed");
        }
    }
    ctx.update(|rt| rt.initialized = true);
    let containers: Vec<Value> = ctx.pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let tasks: Vec<_> = containers
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(run_container(
                ctx.clone(),
                sandbox.clone(),
                volume_dirs.clone(),
                Kind::App,
                i,
                c,
                policy.clone(),
                control.clone(),
            ))
        })
        .collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.ok().flatten());
    }
    if codes.iter().all(|c| *c == Some(0)) {
        Some("Succeeded")
    } else {
        Some("Failed")
    }
}

/// Stops a container's process: SIGTERM to its process group, SIGKILL after `grace`.
async fn terminate(child: &mut tokio::process::Child, pid: u32, grace: Duration) -> i32 {
    launch::signal_group(pid, libc::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        _ => None,
    };
    // Whatever the main process left behind in its group goes too.
    launch::signal_group(pid, libc::SIGKILL);
    match status {
        Some(s) => exit_code(s),
        None => child.wait().await.map(exit_code).unwrap_or(137),
    }
}

/// Runs one container with restarts per `policy`; returns its last exit code (None if it
/// never ran) once it is done for good or the pod stops.
#[allow(clippy::too_many_arguments)]
async fn run_container(
    ctx: Arc<PodCtx>,
    sandbox: super::network::Sandbox,
    volume_dirs: Arc<VolumeDirs>,
    kind: Kind,
    index: usize,
    container: Value,
    policy: String,
    mut control: watch::Receiver<Control>,
) -> Option<i32> {
    let name = container["name"].as_str().unwrap_or("").to_string();
    let log = ctx.layout.pod_dir.join("logs").join(format!("{name}.log"));
    let options = &ctx.kubelet.options;
    let mut restarts: u32 = 0;
    let mut last_exit: Option<i32> = None;
    let waiting = |reason: &str, message: String| ContainerState::Waiting {
        reason: reason.into(),
        message: Some(message),
    };
    loop {
        if stop_requested(&control)
            || ctx
                .kubelet
                .shutting_down
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return last_exit;
        }
        let prepared = (|| {
            let env = env::container_env(
                ctx.objects.as_ref(),
                &ctx.pod,
                &container,
                &ctx.ip.to_string(),
                &ctx.host_ip,
            )
            .map_err(|m| ("CreateContainerConfigError", m))?;
            let command = env::expand_all(&container["command"], &env);
            let (program, mut args) = super::resolve_program(
                &options.images,
                container["image"].as_str().unwrap_or(""),
                command.as_deref(),
                &env,
            )
            .map_err(|m| ("ErrImageNeverPull", m))?;
            args.extend(env::expand_all(&container["args"], &env).unwrap_or_default());
            let mounts = volumes::container_mounts(&container, &volume_dirs)
                .map_err(|m| ("CreateContainerConfigError", m))?;
            Ok::<_, (&str, String)>(LaunchSpec {
                program,
                args,
                env,
                working_dir: container["workingDir"].as_str().map(String::from),
                netns: Some(sandbox.netns_path()),
                mounts,
                hostname: ctx.name().to_string(),
                log: Some(log.clone()),
            })
        })();
        let spec = match prepared {
            Ok(spec) => spec,
            Err((reason, message)) => {
                ctx.update_container(kind, index, |c| c.state = waiting(reason, message));
                if !wait_or_stop(Duration::from_secs(1), &mut control).await {
                    return last_exit;
                }
                continue;
            }
        };
        let started_at = now();
        let container_id = format!("localcluster://{}-{name}-{restarts}", ctx.uid());
        let (code, reason, message) = match launch::spawn(&spec) {
            Err(e) => {
                let message = format!("starting {}: {e}", spec.program.display());
                tracing::warn!(pod = ctx.name(), container = %name, "{message}");
                (128, "StartError".to_string(), Some(message))
            }
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                ctx.kubelet.register_process(pid);
                let has_startup = kind == Kind::App && container["startupProbe"].is_object();
                let has_readiness = kind == Kind::App && container["readinessProbe"].is_object();
                ctx.update_container(kind, index, |c| {
                    c.state = ContainerState::Running {
                        started_at: started_at.clone(),
                    };
                    c.ever_started = true;
                    c.started = !has_startup;
                    c.ready = kind == Kind::App && !has_startup && !has_readiness;
                    c.container_id = Some(container_id.clone());
                });
                let probes = async {
                    if kind == Kind::App {
                        probe_loop(&ctx, index, &container, &spec).await
                    } else {
                        std::future::pending().await
                    }
                };
                let result = tokio::select! {
                    status = child.wait() => {
                        launch::signal_group(pid, libc::SIGKILL);
                        status.map(exit_code).unwrap_or(128)
                    }
                    message = probes => {
                        tracing::info!(pod = ctx.name(), container = %name, "{message}, will be restarted");
                        terminate(&mut child, pid, ctx.grace()).await
                    }
                    grace = stopped(&mut control) => terminate(&mut child, pid, grace).await,
                };
                ctx.kubelet
                    .process_groups
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&pid);
                let reason = if result == 0 { "Completed" } else { "Error" };
                (result, reason.to_string(), None)
            }
        };
        last_exit = Some(code);
        let terminated = ContainerState::Terminated {
            exit_code: code,
            reason,
            started_at,
            finished_at: now(),
            container_id,
            message,
        };
        let restart = !stop_requested(&control)
            && match policy.as_str() {
                "Never" => false,
                "OnFailure" => code != 0,
                _ => true,
            };
        if !restart {
            ctx.update_container(kind, index, |c| {
                c.state = terminated;
                c.ready = false;
                c.started = false;
            });
            return last_exit;
        }
        // The kubelet restarts at once the first time, then backs off 10 s, 20 s, ... 5 min.
        let delay = if restarts == 0 {
            Duration::ZERO
        } else {
            options
                .backoff_base
                .saturating_mul(2u32.saturating_pow(restarts - 1))
                .min(options.backoff_max)
        };
        let message = format!(
            "back-off {}s restarting failed container={name} pod={}_{}({})",
            delay.as_secs(),
            ctx.name(),
            ctx.namespace(),
            ctx.uid()
        );
        ctx.update_container(kind, index, |c| {
            c.last_state = Some(terminated.clone());
            c.state = if delay.is_zero() {
                terminated
            } else {
                waiting("CrashLoopBackOff", message)
            };
            c.ready = false;
            c.started = false;
        });
        if !wait_or_stop(delay, &mut control).await {
            return last_exit;
        }
        restarts += 1;
        ctx.update_container(kind, index, |c| c.restart_count = restarts);
    }
}

/// Runs the startup, readiness and liveness probes of a running container; returns (with
/// the kubelet's message) when the container must be restarted.
async fn probe_loop(ctx: &PodCtx, index: usize, container: &Value, spec: &LaunchSpec) -> String {
    let start = Instant::now();
    let startup = Probe::from_spec(&container["startupProbe"]);
    let readiness = Probe::from_spec(&container["readinessProbe"]);
    let liveness = Probe::from_spec(&container["livenessProbe"]);
    let since_start = |d: Duration| d.saturating_sub(start.elapsed());
    if let Some(p) = startup {
        tokio::time::sleep(since_start(p.initial_delay)).await;
        let mut failures = 0;
        loop {
            match probe::run_once(&p, container, ctx.ip, spec).await {
                Ok(()) => break,
                Err(message) => {
                    failures += 1;
                    if failures >= p.failure_threshold {
                        return format!("Startup probe failed: {message}");
                    }
                }
            }
            tokio::time::sleep(p.period).await;
        }
        ctx.update_container(Kind::App, index, |c| {
            c.started = true;
            c.ready = readiness.is_none();
        });
    }
    let readiness_loop = async {
        let Some(p) = readiness else {
            return std::future::pending::<()>().await;
        };
        tokio::time::sleep(since_start(p.initial_delay)).await;
        let (mut successes, mut failures) = (0, 0);
        loop {
            match probe::run_once(&p, container, ctx.ip, spec).await {
                Ok(()) => {
                    successes += 1;
                    failures = 0;
                    if successes >= p.success_threshold {
                        ctx.update_container(Kind::App, index, |c| c.ready = true);
                    }
                }
                Err(_) => {
                    failures += 1;
                    successes = 0;
                    if failures >= p.failure_threshold {
                        ctx.update_container(Kind::App, index, |c| c.ready = false);
                    }
                }
            }
            tokio::time::sleep(p.period).await;
        }
    };
    let liveness_loop = async {
        let Some(p) = liveness else {
            return std::future::pending::<String>().await;
        };
        tokio::time::sleep(since_start(p.initial_delay)).await;
        let mut failures = 0;
        loop {
            match probe::run_once(&p, container, ctx.ip, spec).await {
                Ok(()) => failures = 0,
                Err(message) => {
                    failures += 1;
                    if failures >= p.failure_threshold {
                        return format!("Liveness probe failed: {message}");
                    }
                }
            }
            tokio::time::sleep(p.period).await;
        }
    };
    tokio::select! {
        _ = readiness_loop => unreachable!("the readiness loop never ends"),
        message = liveness_loop => message,
    }
}
