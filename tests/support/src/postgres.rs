//! Real PostgreSQL servers for tests: `initdb` into a temporary directory, `postgres` on a
//! free port of 127.0.0.1 (and a Unix socket in that directory), killed when dropped. A test
//! can kill one (SIGKILL) and start it again on the same port with the same data.
//!
//! The binaries come from `PG_BIN_DIR` (the test script sets it), else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package), else `PATH`. PostgreSQL
//! refuses to run as root: under root the server runs as the `postgres` user the package
//! creates. A PostgreSQL the machine may already run (say on 5432) is never used.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, scratch_dir, wait_until};

fn bin_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("PG_BIN_DIR") {
        return Some(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn bin(name: &str) -> PathBuf {
    bin_dir().map_or_else(|| PathBuf::from(name), |d| d.join(name))
}

/// The uid and gid to run PostgreSQL as: the `postgres` user when we are root.
fn run_as() -> Option<(u32, u32)> {
    let euid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&euid.stdout).trim() != "0" {
        return None;
    }
    let line = std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.starts_with("postgres:"))?
        .to_owned();
    let mut f = line.split(':').skip(2);
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    Some((uid, gid))
}

/// One PostgreSQL server.
pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    user: Option<(u32, u32)>,
}

impl PgServer {
    /// A fresh cluster, started.
    pub fn start() -> PgServer {
        let dir = scratch_dir("pg");
        let user = run_as();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the data dir");
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C.UTF-8"])
            .stdin(Stdio::null());
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); install Debian's postgresql package",
                bin("initdb").display()
            )
        });
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = PgServer {
            port: free_port(),
            dir,
            child: None,
            user,
        };
        pg.launch();
        pg
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(bin("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            // A test database: durability against a machine crash is not what is tested
            // (a killed server keeps what it wrote in the OS's cache).
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(cmd.spawn().expect("postgres starts"));
        let port = self.port;
        wait_until(
            "postgres to accept connections",
            Duration::from_secs(30),
            || {
                Command::new(bin("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            },
        );
    }

    /// `postgres://…` for the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL of the postmaster; its backends exit with it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Backends notice the postmaster is gone and exit; wait for the port to free up.
        let port = self.port;
        wait_until("postgres to stop", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        });
        let _ = std::fs::remove_file(self.dir.join("data").join("postmaster.pid"));
    }

    /// Starts the server again, on the same port, with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
