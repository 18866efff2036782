//! Starts the real `kbeast-query` binary on a free port over a temp directory
//! and talks to it over HTTP.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kbeast_client::{ApiKeyEntry, Client, DocumentInput, IngestRequest, ReadyResponse};
use reqwest::StatusCode;

pub const BIN: &str = env!("CARGO_BIN_EXE_kbeast-query");

pub struct Server {
    child: Option<Child>,
    pub root: tempfile::TempDir,
    pub port: u16,
    pub args: Vec<String>,
    pub base_url: String,
}

impl Server {
    /// Starts a server with default flags plus `extra`, and waits until ready.
    pub async fn start(extra: &[&str]) -> Server {
        let root = tempfile::tempdir().unwrap();
        let args = extra.iter().map(|s| s.to_string()).collect();
        Self::start_in(root, args).await
    }

    pub async fn start_in(root: tempfile::TempDir, args: Vec<String>) -> Server {
        let port = free_port();
        let mut server = Server {
            child: None,
            root,
            port,
            args,
            base_url: format!("http://127.0.0.1:{port}"),
        };
        server.spawn();
        server.wait_ready().await;
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
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
            .arg(self.data_dir())
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
        let content = std::fs::read_to_string(self.data_dir().join("api-keys.yaml")).unwrap();
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
