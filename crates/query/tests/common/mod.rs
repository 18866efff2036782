//! Starts the real `kbeast-query` binary on a free port over a temp directory
//! and talks to it over HTTP.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kbeast_client::{ApiKeyEntry, Client, DocumentInput, IngestRequest, ReadyResponse};
use reqwest::StatusCode;

pub const BIN: &str = env!("CARGO_BIN_EXE_kbeast-query");

/// Where a test server keeps its table.
#[derive(Clone)]
pub enum Backend {
    /// `<temp dir>/data`
    Local,
    /// A bucket of a moto S3 server started for the test.
    S3(Arc<Moto>),
}

impl Backend {
    /// An S3 backend on a fresh moto server, or None (after a loud message)
    /// when moto is not installed and this is not CI.
    pub fn s3() -> Option<Backend> {
        Moto::start().map(|moto| Backend::S3(Arc::new(moto)))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::S3(_) => "s3",
        }
    }
}

/// A moto S3 server on a free port (pinned by scripts/install-test-tools.sh).
pub struct Moto {
    child: Child,
    pub endpoint: String,
    _log_dir: tempfile::TempDir,
}

pub const S3_BUCKET: &str = "kbeast-test";

impl Moto {
    pub fn start() -> Option<Moto> {
        let path = tool_path("moto_server");
        if !path.exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{} is missing in CI: scripts/install-test-tools.sh installs it",
                path.display()
            );
            eprintln!(
                "\n!!!!!!!! SKIPPING an S3 test: {} is missing; run scripts/install-test-tools.sh !!!!!!!!\n",
                path.display()
            );
            return None;
        }
        let port = free_port();
        let log_dir = tempfile::tempdir().unwrap();
        let log = File::create(log_dir.path().join("moto.log")).unwrap();
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Moto {
            child,
            endpoint,
            _log_dir: log_dir,
        };
        // Wait until it answers, then create the bucket (moto checks no signatures).
        let deadline = Instant::now() + Duration::from_secs(60);
        assert!(
            create_bucket_when_up(&moto.endpoint, S3_BUCKET, deadline),
            "moto did not come up at {}",
            moto.endpoint
        );
        Some(moto)
    }

    /// The flags that point `kbeast-query` at this server.
    pub fn flags(&self) -> Vec<String> {
        [
            "--s3-endpoint",
            &self.endpoint,
            "--s3-region",
            "us-east-1",
            "--s3-access-key-id",
            "testing",
            "--s3-secret-access-key",
            "testing",
            "--s3-allow-http",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PUTs `/{bucket}` until the server answers 200, or `deadline` passes.
/// Plain std TCP: it runs inside the tests' runtime, where blocking reqwest cannot.
fn create_bucket_when_up(endpoint: &str, bucket: &str, deadline: Instant) -> bool {
    use std::io::{Read, Write};
    let address = endpoint.trim_start_matches("http://").to_string();
    while Instant::now() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            let request = format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut response = String::new();
                let _ = stream.read_to_string(&mut response);
                if response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200") {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn tool_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("KBEAST_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/kbeast/tools")
        });
    dir.join("bin").join(name)
}

pub struct Server {
    child: Option<Child>,
    pub root: tempfile::TempDir,
    pub port: u16,
    pub args: Vec<String>,
    pub base_url: String,
    pub backend: Backend,
    /// `--data`: a directory or `s3://bucket/prefix`.
    pub data: String,
}

impl Server {
    /// Starts a server with default flags plus `extra`, and waits until ready.
    pub async fn start(extra: &[&str]) -> Server {
        Self::start_on(Backend::Local, extra).await
    }

    /// Starts a server storing its table on `backend`.
    pub async fn start_on(backend: Backend, extra: &[&str]) -> Server {
        let root = tempfile::tempdir().unwrap();
        let args = extra.iter().map(|s| s.to_string()).collect();
        Self::start_with(backend, root, None, args).await
    }

    pub async fn start_in(root: tempfile::TempDir, args: Vec<String>) -> Server {
        Self::start_with(Backend::Local, root, None, args).await
    }

    /// `data`: the `--data` value; None for the backend's default (a
    /// directory in `root`, or a bucket prefix unique to `root`).
    pub async fn start_with(
        backend: Backend,
        root: tempfile::TempDir,
        data: Option<String>,
        mut args: Vec<String>,
    ) -> Server {
        let data = data.unwrap_or_else(|| match &backend {
            Backend::Local => root.path().join("data").to_string_lossy().into_owned(),
            Backend::S3(_) => {
                let prefix = root.path().file_name().unwrap().to_string_lossy();
                format!("s3://{S3_BUCKET}/{prefix}")
            }
        });
        if let Backend::S3(moto) = &backend {
            args.extend(moto.flags());
            // No local directory holds a generated keys file on object storage.
            if !args.iter().any(|a| a == "--api-keys") {
                let keys = root.path().join("api-keys.yaml");
                if !keys.exists() {
                    write_keys(
                        &keys,
                        "- id: admin\n  secret: s3-admin-secret-0000000000\n  scopes: [admin]\n",
                    );
                }
                args.push("--api-keys".into());
                args.push(keys.to_string_lossy().into_owned());
            }
        }
        let port = free_port();
        let mut server = Server {
            child: None,
            root,
            port,
            args,
            base_url: format!("http://127.0.0.1:{port}"),
            backend,
            data,
        };
        server.spawn();
        server.wait_ready().await;
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        assert!(
            matches!(self.backend, Backend::Local),
            "data_dir() of a server on S3"
        );
        PathBuf::from(&self.data)
    }

    /// Where the admin key lives: generated in the data directory, or
    /// written by the harness for object storage.
    pub fn keys_path(&self) -> PathBuf {
        match self.backend {
            Backend::Local => PathBuf::from(&self.data).join("api-keys.yaml"),
            Backend::S3(_) => self.root.path().join("api-keys.yaml"),
        }
    }

    /// Process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Peak resident memory of the server process so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--data")
            .arg(&self.data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning kbeast-query");
        self.child = Some(child);
    }

    /// Polls `/readyz` until 200; panics with the server log if the process
    /// exits or 60 s pass.
    pub async fn wait_ready(&mut self) {
        let client = Client::new(&self.base_url, None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("server exited with {status} before ready:\n{}", self.log());
            }
            if let Ok((StatusCode::OK, _)) = client.ready().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in time:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn ready(&self) -> (StatusCode, ReadyResponse) {
        Client::new(&self.base_url, None)
            .unwrap()
            .ready()
            .await
            .unwrap()
    }

    /// The generated admin key from `<data>/api-keys.yaml`.
    pub fn admin_key(&self) -> String {
        let content = std::fs::read_to_string(self.keys_path()).unwrap();
        let keys: Vec<ApiKeyEntry> = serde_yaml::from_str(&content).unwrap();
        keys[0].secret.clone()
    }

    pub fn admin(&self) -> Client {
        self.client(Some(self.admin_key()))
    }

    pub fn client(&self, key: Option<String>) -> Client {
        Client::new(&self.base_url, key).unwrap()
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most 30 s) for the exit status.
    #[allow(unsafe_code)] // kill(2) has no safe wrapper in std.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not exit after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again on the same data directory and port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn doc(id: &str, text: &str) -> DocumentInput {
    DocumentInput {
        id: Some(id.to_string()),
        text: text.to_string(),
        ..DocumentInput::default()
    }
}

pub fn ingest_request(docs: Vec<DocumentInput>) -> IngestRequest {
    IngestRequest { documents: docs }
}

pub fn write_keys(path: &Path, yaml: &str) {
    // Write then rename, as a config-map update would, so the server never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Runs `kbeast-query` with `args` to completion.
pub fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}
