//! A real Prometheus (Debian's `prometheus`) for tests: scrapes one target
//! every second and answers instant queries. Absent binary: the caller
//! skips (or fails, with STAGESET_REQUIRE_TOOLS=1).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Prometheus {
    child: std::process::Child,
    /// `http://ip:port`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the `prometheus` binary is on PATH; without it, panics under
/// STAGESET_REQUIRE_TOOLS=1 and otherwise prints why the caller skips.
pub fn available(who: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("prometheus").is_file()));
    if !found {
        if std::env::var("STAGESET_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("STAGESET_REQUIRE_TOOLS=1, but prometheus is not installed");
        }
        let _ = writeln!(
            std::io::stderr(),
            "{who}: skipped: prometheus is not installed"
        );
    }
    found
}

impl Prometheus {
    /// Starts Prometheus listening on `listen` (a free port) and scraping
    /// `target` (`/metrics`) every second as job `job`.
    pub fn start(listen: IpAddr, target: SocketAddr, job: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n- job_name: {job}\n  static_configs:\n  - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind((listen, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}:{port}"))
            .arg("--log.level=error")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            url: format!("http://{listen}:{port}"),
            _dir: dir,
        }
    }

    /// An instant query over loopback (no outbound guard: this is the test
    /// talking to its own Prometheus). Err: the transport failed.
    pub async fn query(&self, promql: &str) -> Result<Value, String> {
        let q: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/query?query={q}", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        resp.json::<Value>().await.map_err(|e| e.to_string())
    }

    /// Waits (up to 90 s) until `promql` returns at least one sample.
    pub async fn wait_for_data(&self, promql: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(v) = self.query(promql).await
                && v["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never answered {promql} with data"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
