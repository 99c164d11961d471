//! A real SMTP server for tests: `aiosmtpd` (from PyPI, in the venv the test script makes
//! under `target/`) running `smtp_sink.py` on a free port of 127.0.0.1. Every message it
//! accepts is kept as JSON (envelope, headers, decoded text and HTML parts) for the test to
//! read. A test can kill it (the gateway's mail then waits) and start it again on the same
//! port.
//!
//! The Python comes from `SMTP_SINK_PYTHON`, else `target/venv/bin/python` of this workspace.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, scratch_dir, wait_until, START_TIMEOUT};

/// One e-mail the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub subject: String,
    pub message_id: String,
    pub reply_to: String,
    pub headers: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
}

pub struct SmtpServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn python() -> String {
    std::env::var("SMTP_SINK_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/venv/bin/python").to_owned()
    })
}

impl SmtpServer {
    pub fn start() -> SmtpServer {
        let mut s = SmtpServer {
            port: free_port(),
            dir: scratch_dir("smtp"),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/smtp_sink.py");
        let child = Command::new(python())
            .arg(script)
            .arg(self.port.to_string())
            .arg(self.dir.join("mail"))
            .stdout(Stdio::null())
            // What Python says if it cannot start reaches the test's output.
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the SMTP sink with {} ({e}); run scripts/test, which installs aiosmtpd into target/venv, or set SMTP_SINK_PYTHON",
                    python()
                )
            });
        self.child = Some(child);
        let port = self.port;
        // Python and aiosmtpd's imports are slow on a cold cache, more so beside a busy build.
        wait_until(
            &format!("the SMTP sink on {port}"),
            START_TIMEOUT * 3,
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }

    /// `smtp://127.0.0.1:PORT?tls=none`, for `GATEWAY_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, keeping what it received.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("mail")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).expect("the sink writes JSON");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            out.push(Received {
                mail_from: s("mail_from"),
                rcpt_tos: v["rcpt_tos"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                subject: s("subject"),
                message_id: s("message_id"),
                reply_to: s("reply_to"),
                headers: v["headers"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|h| {
                                (
                                    h[0].as_str().unwrap_or_default().to_owned(),
                                    h[1].as_str().unwrap_or_default().to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                text: v["text"].as_str().map(str::to_owned),
                html: v["html"].as_str().map(str::to_owned),
            });
        }
        out
    }

    /// Waits until `pred` holds on what was received (polling, with a deadline; async, so
    /// that a gateway on the test's own runtime keeps running).
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; received: {got:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
