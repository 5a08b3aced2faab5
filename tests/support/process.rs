//! The controller binary as a child process, for tests that kill it (`kill
//! -9`) or run several replicas: its JSON log lines are collected so a test
//! can wait for one.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A running controller process.
pub struct Controller {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    /// Set when the reader thread saw the end of stderr.
    drained: Arc<AtomicBool>,
}

impl Controller {
    /// Starts the binary against the cluster of `kubeconfig`, listeners off
    /// unless `args` turn them on, debug JSON logs, `POD_NAME`/`POD_NAMESPACE`
    /// set for leader election.
    pub fn spawn(kubeconfig: &Path, name: &str, namespace: &str, args: &[String]) -> Controller {
        Controller::spawn_with_env(kubeconfig, name, namespace, args, &[])
    }

    /// [`Controller::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        kubeconfig: &Path,
        name: &str,
        namespace: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Controller {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stageset-controller"))
            .args([
                "--log-format=json",
                "--log-level=debug",
                "--allow-loopback-artifacts",
                "--metrics-bind-address=0",
                "--health-probe-bind-address=0",
                "--gate-bind-address=",
                "--enable-webhook=false",
            ])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", namespace)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the controller binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = lines.clone();
        let drained = Arc::new(AtomicBool::new(false));
        let eof = drained.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or(json!({"raw": line}));
                sink.lock().unwrap().push(value);
            }
            eof.store(true, Ordering::SeqCst);
        });
        Controller {
            name: name.to_string(),
            child,
            lines,
            drained,
        }
    }

    /// Every line logged so far.
    pub fn logs(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line with this message, if logged yet.
    pub fn find(&self, msg: &str) -> Option<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l["msg"] == msg)
            .cloned()
    }

    /// Waits (up to `within`) for a line with this message; also a line the
    /// process logged as it exited. Panics when it exited without one.
    pub async fn wait_line(&mut self, msg: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.find(msg) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait()
                && self.drained.load(Ordering::SeqCst)
                && self.find(msg).is_none()
            {
                panic!("{} exited ({status}): {:#?}", self.name, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged {msg:?}: {:#?}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits (up to `within`) for the process to exit; returns
    /// its exit status. The graceful path: the controller stops and flushes.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        self.sigterm();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?} of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    }

    /// `kill -9`: no shutdown, no lease release, requests in flight cut.
    pub fn kill(mut self) {
        self.kill_in_place();
    }

    /// [`Controller::kill`], keeping the handle (and its log lines).
    pub fn kill_in_place(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .try_wait()
            .expect("the child process can be polled")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
