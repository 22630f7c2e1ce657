//! Finding a PostgreSQL server to work against when the user gave none: for the test harness and
//! `pcsync demo`. In order: `DATABASE_URL`; a server answering on 127.0.0.1:5432; a throwaway
//! cluster started from local PostgreSQL binaries in a temporary directory, which stops and is
//! deleted when this process exits (even if it is killed: the cluster watches a pipe from us).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Url;

pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, thiserror::Error)]
pub enum PgServerError {
    #[error(
        "no PostgreSQL server found: DATABASE_URL is not set, nothing answers on 127.0.0.1:5432, and no initdb/pg_ctl was found on PATH or under /usr/lib/postgresql/*/bin. Install PostgreSQL (e.g. `apt-get install postgresql`) or set DATABASE_URL=postgres://user@host:port/postgres"
    )]
    NotFound,
    #[error("DATABASE_URL is not a PostgreSQL URL (expected postgres://user@host:port/database)")]
    BadUrl,
    #[error("starting a throwaway PostgreSQL cluster failed: {0}")]
    Cluster(String),
}

/// A server we may create and drop databases on.
pub struct PgServer {
    admin_url: Url,
    /// Keeps a throwaway cluster alive for as long as this value lives.
    cluster: Option<TempCluster>,
}

impl PgServer {
    /// Finds or starts a server (blocking; call it once per process).
    pub fn find_or_start() -> Result<PgServer, PgServerError> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.trim().is_empty() {
                let admin_url = Url::parse(&url).map_err(|_| PgServerError::BadUrl)?;
                if !matches!(admin_url.scheme(), "postgres" | "postgresql") {
                    return Err(PgServerError::BadUrl);
                }
                return Ok(PgServer {
                    admin_url,
                    cluster: None,
                });
            }
        }
        let default: SocketAddr = ([127, 0, 0, 1], 5432).into();
        if TcpStream::connect_timeout(&default, Duration::from_secs(2)).is_ok() {
            return Ok(PgServer {
                admin_url: Url::parse(DEFAULT_SERVER_URL).map_err(|_| PgServerError::BadUrl)?,
                cluster: None,
            });
        }
        let bin = find_pg_bin().ok_or(PgServerError::NotFound)?;
        let cluster = TempCluster::start(&bin).map_err(PgServerError::Cluster)?;
        let admin_url = Url::parse(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            cluster.port
        ))
        .map_err(|_| PgServerError::BadUrl)?;
        Ok(PgServer {
            admin_url,
            cluster: Some(cluster),
        })
    }

    /// The URL of the server's maintenance database (for CREATE/DROP DATABASE).
    pub fn admin_url(&self) -> String {
        self.admin_url.to_string()
    }

    /// The URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{name}"));
        url.to_string()
    }

    /// True when this is a cluster we started ourselves.
    pub fn is_throwaway(&self) -> bool {
        self.cluster.is_some()
    }
}

fn find_pg_bin() -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Some(dir);
            }
        }
    }
    // Debian keeps the server binaries off PATH; take the newest version.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL cluster in a temporary directory, owned by this process.
struct TempCluster {
    port: u16,
    child: Child,
    /// Closing this pipe (on drop, or when this process dies) stops the cluster.
    stdin: Option<ChildStdin>,
}

impl TempCluster {
    fn start(bin: &Path) -> Result<TempCluster, String> {
        let dir = std::env::temp_dir().join(format!(
            "pcsync-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // PostgreSQL refuses to run as root: run it as the `postgres` user then.
        let as_user: Vec<String> = if running_as_root() {
            let status = Command::new("chown")
                .args(["postgres:", &dir.to_string_lossy()])
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err("running as root and cannot hand the directory to user postgres (does it exist?)".into());
            }
            vec![
                "runuser".into(),
                "-u".into(),
                "postgres".into(),
                "--".into(),
            ]
        } else {
            Vec::new()
        };
        let data = dir.join("data");
        let initdb = bin.join("initdb");
        let mut cmd = command(&as_user, &initdb);
        let out = cmd
            .args(["-D", &data.to_string_lossy()])
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .map_err(|e| format!("running {}: {e}", initdb.display()))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("finding a free port: {e}"))?;
        // The shell starts the server, then waits for our pipe to close; then it stops the
        // server (fast shutdown) and removes the directory.
        let script = r#"
"$1/postgres" -D "$2/data" -p "$3" -k "$2" -c listen_addresses=127.0.0.1 -c fsync=off \
    -c synchronous_commit=off -c full_page_writes=off >"$2/log" 2>&1 &
pg=$!
read -r _ignored
kill -INT "$pg" 2>/dev/null
wait "$pg"
rm -rf "$2"
"#;
        let mut sh = command(&as_user, Path::new("sh"));
        let mut child = sh
            .args(["-c", script, "sh"])
            .arg(bin)
            .arg(&dir)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;
        let stdin = child.stdin.take();
        let cluster = TempCluster { port, child, stdin };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(cluster);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        Err(format!(
            "the server did not accept connections within 30 s: {}",
            log.trim()
        ))
    }
}

fn command(prefix: &[String], program: &Path) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        let _ = self.child.wait();
    }
}
