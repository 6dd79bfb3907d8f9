//! Starting and stopping the servers under test, each pinned to its core, and seeding
//! QuckChat through its REST API (users, sessions, conversations), cached across runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::procfs;

/// What the servers and the generator share: who exists, with which token, in which
/// conversation. Written by `seed`, read by the Node and bare baselines too.
#[derive(Serialize, Deserialize, Clone)]
pub struct Fixture {
    pub users: Vec<FUser>,
    pub conversations: Vec<FConv>,
    /// Users `0..2*pairs` are in pairs: conversation `k` is users `2k` and `2k+1`.
    pub pairs: usize,
    /// Groups after the pairs: (size, conversation index, first user index).
    pub groups: Vec<FGroup>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct FUser {
    pub id: String,
    pub sid: String,
    pub username: String,
    pub token: String,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct FConv {
    pub id: String,
    pub members: Vec<String>,
    pub member_idx: Vec<u32>,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
pub struct FGroup {
    pub size: usize,
    pub conv: usize,
    pub first_user: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Quck,
    Node,
    Bare,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Quck => "quckchat",
            Kind::Node => "node",
            Kind::Bare => "bare",
        }
    }
}

/// Which store a server runs on.
#[derive(Debug, Clone)]
pub enum StoreSel {
    /// QuckChat on a fresh copy of the seeded SQLite file.
    Sqlite,
    /// QuckChat on a fresh copy (CREATE DATABASE … TEMPLATE) of the seeded PostgreSQL database.
    Postgres,
    /// The baseline's in-memory maps.
    Memory,
    /// The Node baseline on PostgreSQL through `pg`.
    NodePg,
}

pub struct Paths {
    pub quckchat: PathBuf,
    pub bare: PathBuf,
    pub node_dir: PathBuf,
    pub cache: PathBuf,
    pub logs: PathBuf,
    pub pg_admin: String,
    pub pg_seed_db: String,
    /// `taskset -c <cpu>` for servers; `None`: not pinned.
    pub server_cpu: Option<String>,
}

pub struct Server {
    pub kind: Kind,
    pub store: StoreSel,
    pub pid: u32,
    pub addr: SocketAddr,
    child: Child,
    tmp: Option<PathBuf>,
    drop_db: Option<String>,
    pg_admin: String,
}

pub fn quck_env(cmd: &mut Command) {
    cmd.env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("JWT_SECRET", "bench")
        .env("JWT_EXPIRES_IN", "3650d")
        .env("JWT_REFRESH_EXPIRES_IN", "3650d")
        .env("RUST_LOG", "warn")
        .env("RATE_LIMIT_MESSAGES_PER_SEC", "1000000")
        .env("RATE_LIMIT_MESSAGE_BURST", "1000000")
        .env("RATE_LIMIT_EVENTS_PER_SEC", "1000000")
        .env("RATE_LIMIT_TYPING_PER_SEC", "1000000")
        .env("RATE_LIMIT_USER_MESSAGES_PER_SEC", "1000000")
        .env("RATE_LIMIT_USER_EVENTS_PER_SEC", "1000000")
        .env("RATE_LIMIT_USER_TYPING_PER_SEC", "1000000")
        .env("MAX_SOCKETS_PER_USER", "100000")
        // Thousands of users register and log in from 127.0.0.1.
        .env("AUTH_RATE_PER_MIN", "0")
        .env("AUTH_USER_RATE_PER_MIN", "0")
        .env_remove("REDIS_URL")
        .env_remove("PUSH_WEBHOOK_URL");
}

fn pinned(paths: &Paths, program: &Path) -> Command {
    match &paths.server_cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(program);
            c
        }
        None => Command::new(program),
    }
}

pub async fn psql(admin: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-w", "-q", "-t", "-A", "-d", admin, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("psql: {e}"))?;
    if !out.status.success() {
        return Err(format!("psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The URL of a database next to the admin one (same server, other name).
pub fn db_url(admin: &str, db: &str) -> String {
    match admin.rfind('/') {
        Some(i) => format!("{}/{db}", &admin[..i]),
        None => admin.to_string(),
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Server {
    /// Starts a server and waits for its `listening on http://…` line.
    pub async fn start(
        paths: &Paths,
        kind: Kind,
        store: StoreSel,
        fixture: &Path,
        label: &str,
    ) -> Result<Server, String> {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = paths.logs.join(format!("{label}-{}.log", kind.name()));
        let log = std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut tmp = None;
        let mut drop_db = None;
        let mut cmd = match kind {
            Kind::Quck => {
                let mut cmd = pinned(paths, &paths.quckchat);
                quck_env(&mut cmd);
                match store {
                    StoreSel::Postgres => {
                        let db = format!("qcbench_run_{}_{n}", std::process::id());
                        psql(&paths.pg_admin, &format!("DROP DATABASE IF EXISTS {db}")).await?;
                        psql(&paths.pg_admin, &format!("CREATE DATABASE {db} TEMPLATE {}", paths.pg_seed_db)).await?;
                        cmd.env("DATABASE_URL", format!("{}?schema=bench", db_url(&paths.pg_admin, &db)));
                        drop_db = Some(db);
                    }
                    _ => {
                        let dir = std::env::temp_dir().join(format!("qcbench-{}-{n}", std::process::id()));
                        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                        for ext in ["", "-wal", "-shm"] {
                            let from = paths.cache.join(format!("seed.db{ext}"));
                            if from.exists() {
                                std::fs::copy(&from, dir.join(format!("q.db{ext}"))).map_err(|e| e.to_string())?;
                            }
                        }
                        cmd.env("DATABASE_URL", format!("sqlite://{}/q.db", dir.display()));
                        tmp = Some(dir);
                    }
                }
                cmd
            }
            Kind::Node => {
                let mut cmd = pinned(paths, Path::new("node"));
                cmd.arg("--expose-gc").arg("server.js").current_dir(&paths.node_dir);
                cmd.env("HOST", "127.0.0.1").env("PORT", "0").env("JWT_SECRET", "bench").env("FIXTURE", fixture);
                match store {
                    StoreSel::NodePg => {
                        cmd.env("STORE", "pg")
                            .env("PG_URL", &paths.pg_admin)
                            .env("PG_SCHEMA", format!("qcbench_node_{}", std::process::id()));
                    }
                    _ => {
                        cmd.env("STORE", "memory");
                    }
                }
                cmd
            }
            Kind::Bare => {
                let mut cmd = pinned(paths, &paths.bare);
                cmd.env("HOST", "127.0.0.1").env("PORT", "0").env("JWT_SECRET", "bench").env("FIXTURE", fixture);
                cmd
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log)).kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("starting {}: {e}", kind.name()))?;
        let pid = child.id().ok_or("no pid")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(i) = line.find("listening on http://") {
                    return Some(line[i + "listening on http://".len()..].trim().to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| format!("{} did not start; see {}", kind.name(), log_path.display()))?;
        // Keep draining stdout so the server never blocks on it.
        tokio::task::spawn_local(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr: SocketAddr = line.parse().map_err(|e| format!("address `{line}`: {e}"))?;
        Ok(Server { kind, store, pid, addr, child, tmp, drop_db, pg_admin: paths.pg_admin.clone() })
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn cpu(&self) -> f64 {
        procfs::cpu_secs(self.pid).unwrap_or(0.0)
    }

    pub fn rss(&self) -> (u64, u64) {
        procfs::rss_kib(self.pid).unwrap_or((0, 0))
    }

    /// Waits until the server has used under 3% of a core for 400 ms, at most `max`.
    pub async fn quiet(&self, max: Duration) {
        let start = Instant::now();
        let mut last = self.cpu();
        while start.elapsed() < max {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let now = self.cpu();
            if now - last < 0.012 {
                return;
            }
            last = now;
        }
    }

    /// Asks the Node baseline to collect garbage (a no-op for the others).
    pub async fn gc(&self) {
        if self.kind == Kind::Node {
            let _ = reqwest::get(format!("{}/gc", self.base())).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        if let Some(dir) = self.tmp.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(db) = self.drop_db.take() {
            let _ = psql(&self.pg_admin, &format!("DROP DATABASE IF EXISTS {db}")).await;
        }
        if self.kind == Kind::Node && matches!(self.store, StoreSel::NodePg) {
            let _ = psql(&self.pg_admin, &format!("DROP SCHEMA IF EXISTS qcbench_node_{} CASCADE", std::process::id()))
                .await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------------------

fn sid_of(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sid")?.as_str().map(str::to_owned)
}

/// Registers `pairs*2 + sum(groups)` users through REST and creates their conversations.
pub async fn seed(
    base: &str,
    prefix: &str,
    pairs: usize,
    groups: &[usize],
    concurrency: usize,
) -> Result<Fixture, String> {
    let http = reqwest::Client::new();
    let total = pairs * 2 + groups.iter().sum::<usize>();
    let started = Instant::now();
    let results: Vec<Result<(usize, FUser), String>> = futures_util::stream::iter(0..total)
        .map(|i| {
            let http = http.clone();
            let username = format!("{prefix}{i}");
            async move {
                let resp = http
                    .post(format!("{base}/api/v1/auth/register"))
                    .json(&json!({ "username": username, "password": "bench-password-1" }))
                    .send()
                    .await
                    .map_err(|e| format!("register: {e}"))?;
                let status = resp.status();
                let body: Value = resp.json().await.map_err(|e| format!("register body: {e}"))?;
                if !status.is_success() {
                    return Err(format!("register {username}: {status} {body}"));
                }
                let token = body["accessToken"].as_str().ok_or("no accessToken")?.to_string();
                let id = body["user"]["id"].as_str().ok_or("no user id")?.to_string();
                let sid = sid_of(&token).ok_or("no sid in token")?;
                Ok((i, FUser { id, sid, username, token }))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut users: Vec<Option<FUser>> = vec![None; total];
    for r in results {
        let (i, u) = r?;
        users[i] = Some(u);
    }
    let users: Vec<FUser> = users.into_iter().map(|u| u.expect("every user registered")).collect();
    eprintln!("[seed] {total} users registered in {:.1}s", started.elapsed().as_secs_f64());

    // Conversations: pairs, then groups.
    let mut specs: Vec<(u32, Vec<u32>, &'static str)> =
        (0..pairs).map(|k| ((2 * k) as u32, vec![(2 * k + 1) as u32], "single")).collect();
    let mut first = pairs * 2;
    let mut fgroups = Vec::new();
    for &size in groups {
        let members: Vec<u32> = (first + 1..first + size).map(|u| u as u32).collect();
        fgroups.push(FGroup { size, conv: specs.len(), first_user: first });
        specs.push((first as u32, members, "group"));
        first += size;
    }
    let users_ref = &users;
    let results: Vec<Result<(usize, FConv), String>> = futures_util::stream::iter(specs.into_iter().enumerate())
        .map(|(ci, (creator, others, kind))| {
            let http = http.clone();
            async move {
                let mut body = json!({
                    "type": kind,
                    "participants": others.iter().map(|&o| users_ref[o as usize].id.clone()).collect::<Vec<_>>(),
                });
                if kind == "group" {
                    body["name"] = json!(format!("bench group {ci}"));
                }
                let resp = http
                    .post(format!("{base}/api/v1/conversations"))
                    .bearer_auth(&users_ref[creator as usize].token)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("conversation: {e}"))?;
                let status = resp.status();
                let v: Value = resp.json().await.map_err(|e| format!("conversation body: {e}"))?;
                if !status.is_success() {
                    return Err(format!("conversation: {status} {v}"));
                }
                let id = v["id"].as_str().ok_or("no conversation id")?.to_string();
                let mut member_idx = vec![creator];
                member_idx.extend(others);
                let members = member_idx.iter().map(|&m| users_ref[m as usize].id.clone()).collect();
                Ok((ci, FConv { id, members, member_idx }))
            }
        })
        .buffer_unordered(concurrency * 2)
        .collect()
        .await;
    let mut convs: Vec<Option<FConv>> = vec![None; results.len()];
    for r in results {
        let (i, c) = r?;
        convs[i] = Some(c);
    }
    let conversations = convs.into_iter().map(|c| c.expect("every conversation created")).collect();
    eprintln!("[seed] conversations created; {:.1}s in all", started.elapsed().as_secs_f64());
    Ok(Fixture { users, conversations, pairs, groups: fgroups })
}
