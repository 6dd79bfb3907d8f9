//! `quckchat-loadgen`: QuckChat's load generator and bench runner (issue 5, `bench/run`).
//!
//! ```text
//! quckchat-loadgen suite --root REPO [--smoke] [--only B1,B3] [--servers quckchat,node,bare]
//!                        [--server-cpu 0] [--cache-key KEY] [--pg-admin URL] [--out DIR] [--bin-dir DIR]
//! ```
//!
//! Seeds QuckChat through REST once (users, sessions, conversations; the SQLite file and a
//! PostgreSQL template database are cached under `bench/.cache/`), then runs B1–B7 against
//! QuckChat, the Node socket.io baseline and bare socketioxide, each server started fresh
//! per scenario and pinned with `taskset`, and writes `bench/results/latest.{json,md}`.
//! Everything runs on one thread (a current-thread runtime); run it pinned to the other
//! core (`taskset -c 1`).

mod conn;
mod ctx;
mod hist;
mod procfs;
mod scenarios;
mod servers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use serde_json::{Value, json};

use scenarios::{Bench, Outcome, Params};
use servers::{Fixture, Kind, Paths, Server, StoreSel};

struct Args {
    root: PathBuf,
    smoke: bool,
    only: Option<Vec<String>>,
    servers: Vec<Kind>,
    server_cpu: Option<String>,
    cache_key: String,
    pg_admin: String,
    out: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    match it.next().as_deref() {
        Some("suite") => {}
        _ => return Err("usage: quckchat-loadgen suite --root REPO [--smoke] [--only B1,B3] [--servers quckchat,node,bare] [--server-cpu 0] [--cache-key KEY] [--pg-admin URL] [--out DIR] [--bin-dir DIR]".into()),
    }
    let mut a = Args {
        root: PathBuf::from("."),
        smoke: false,
        only: None,
        servers: vec![Kind::Quck, Kind::Node, Kind::Bare],
        server_cpu: None,
        cache_key: "default".into(),
        pg_admin: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        out: None,
        bin_dir: None,
    };
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--root" => a.root = PathBuf::from(val()?),
            "--smoke" => a.smoke = true,
            "--only" => a.only = Some(val()?.split(',').map(|s| s.trim().to_uppercase()).collect()),
            "--servers" => {
                a.servers = val()?
                    .split(',')
                    .map(|s| match s.trim() {
                        "quckchat" => Ok(Kind::Quck),
                        "node" => Ok(Kind::Node),
                        "bare" => Ok(Kind::Bare),
                        other => Err(format!("unknown server {other}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--server-cpu" => a.server_cpu = Some(val()?),
            "--cache-key" => a.cache_key = val()?,
            "--pg-admin" => a.pg_admin = val()?,
            "--out" => a.out = Some(PathBuf::from(val()?)),
            "--bin-dir" => a.bin_dir = Some(PathBuf::from(val()?)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let code = local.block_on(&rt, async move {
        match suite(args).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench failed: {e}");
                1
            }
        }
    });
    std::process::exit(code);
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cmd_out(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    json!({
        "nproc": cmd_out("nproc", &["--all"]),
        "cpu": cpu,
        "memory": cmd_out("free", &["-h"]),
        "kernel": cmd_out("uname", &["-r"]),
        "open_files_limit": rl.rlim_cur,
        "node": cmd_out("node", &["--version"]),
        "rustc": cmd_out("rustc", &["--version"]),
    })
}

/// Seeds (or reuses) the SQLite fixture; returns its path.
async fn ensure_sqlite_seed(paths: &Paths, p: &Params) -> Result<PathBuf, String> {
    let fixture = paths.cache.join("fixture.json");
    if fixture.exists() && paths.cache.join("seed.db").exists() {
        log(format!("reusing the seeded SQLite database and tokens in {}", paths.cache.display()));
        return Ok(fixture);
    }
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(paths.cache.join(format!("seed.db{ext}")));
    }
    log("seeding QuckChat on SQLite through REST (once; cached for later runs)");
    let mut cmd = tokio::process::Command::new(&paths.quckchat);
    servers::quck_env(&mut cmd);
    cmd.env("DATABASE_URL", format!("sqlite://{}/seed.db", paths.cache.display()));
    let fx = seed_with(cmd, p.pairs, &p.groups, "bench_u").await?;
    write_json(&fixture, &fx)?;
    Ok(fixture)
}

/// Seeds (or reuses) the PostgreSQL template database; returns the fixture path.
async fn ensure_pg_seed(paths: &Paths, p: &Params) -> Result<PathBuf, String> {
    let fixture = paths.cache.join("fixture-pg.json");
    let exists =
        servers::psql(&paths.pg_admin, &format!("SELECT 1 FROM pg_database WHERE datname = '{}'", paths.pg_seed_db))
            .await?
            == "1";
    if exists && fixture.exists() {
        log(format!("reusing the seeded PostgreSQL database {}", paths.pg_seed_db));
        return Ok(fixture);
    }
    log("seeding QuckChat on PostgreSQL through REST (once; kept as a template database)");
    servers::psql(&paths.pg_admin, &format!("DROP DATABASE IF EXISTS {}", paths.pg_seed_db)).await?;
    servers::psql(&paths.pg_admin, &format!("CREATE DATABASE {}", paths.pg_seed_db)).await?;
    let mut cmd = tokio::process::Command::new(&paths.quckchat);
    servers::quck_env(&mut cmd);
    cmd.env("DATABASE_URL", format!("{}?schema=bench", servers::db_url(&paths.pg_admin, &paths.pg_seed_db)));
    let fx = seed_with(cmd, p.b4_users / 2, &[], "bench_p").await?;
    write_json(&fixture, &fx)?;
    Ok(fixture)
}

async fn seed_with(
    mut cmd: tokio::process::Command,
    pairs: usize,
    groups: &[usize],
    prefix: &str,
) -> Result<Fixture, String> {
    use tokio::io::AsyncBufReadExt;
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("starting the seeding server: {e}"))?;
    let pid = child.id().unwrap_or(0);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut base = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(i) = line.find("listening on ") {
            base = Some(line[i + "listening on ".len()..].trim().to_string());
            break;
        }
    }
    let base = base.ok_or("the seeding server did not start")?;
    let fx = servers::seed(&base, prefix, pairs, groups, 8).await;
    // SAFETY: kill(2) on our own child; SIGTERM lets SQLite checkpoint its WAL.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait()).await;
    fx
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<(), String> {
    std::fs::write(path, serde_json::to_vec_pretty(v).map_err(|e| e.to_string())?)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn load_fixture(path: &Path) -> Result<Rc<Fixture>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map(Rc::new).map_err(|e| format!("{}: {e}", path.display()))
}

type Results = BTreeMap<String, Vec<(String, Outcome)>>;

async fn suite(a: Args) -> Result<(), String> {
    let started = Instant::now();
    let load_before = load_avg();
    let p = if a.smoke { Params::smoke() } else { Params::full() };
    let mode = if a.smoke { "smoke" } else { "full" };
    let out = a.out.clone().unwrap_or_else(|| a.root.join("bench/results"));
    let cache = a.root.join("bench/.cache").join(format!("{mode}-{}", a.cache_key));
    let logs = out.join("logs");
    std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let key: String =
        a.cache_key.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect::<String>().to_lowercase();
    let bin_dir = a.bin_dir.clone().unwrap_or_else(|| a.root.join("target/release"));
    let paths = Paths {
        quckchat: bin_dir.join("quckchat"),
        bare: bin_dir.join("quckchat-bench-bare"),
        node_dir: a.root.join("bench/baseline-node"),
        cache: cache.clone(),
        logs,
        pg_admin: a.pg_admin.clone(),
        pg_seed_db: format!("qcbench_seed_{mode}_{key}"),
        server_cpu: a.server_cpu.clone(),
    };
    let want = |b: &str| a.only.as_ref().is_none_or(|o| o.iter().any(|x| x == b));
    let has = |k: Kind| a.servers.contains(&k);

    let seed_t = Instant::now();
    let fixture_path = ensure_sqlite_seed(&paths, &p).await?;
    let pg_ok = servers::psql(&paths.pg_admin, "SELECT 1").await.is_ok();
    let pg_fixture_path =
        if (want("B4") || want("B4B")) && pg_ok { Some(ensure_pg_seed(&paths, &p).await?) } else { None };
    let seed_secs = seed_t.elapsed().as_secs_f64();
    let fx = load_fixture(&fixture_path)?;
    let mut results: Results = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    if !pg_ok {
        notes.push("PostgreSQL unreachable: the PostgreSQL rows of B4 were skipped".into());
    }
    let mut timings = BTreeMap::new();

    let socket_servers: Vec<Kind> = [Kind::Quck, Kind::Node, Kind::Bare].into_iter().filter(|k| has(*k)).collect();

    // B1 + B2
    if want("B1") || want("B2") {
        let t = Instant::now();
        for &k in &socket_servers {
            let store = if k == Kind::Quck { StoreSel::Sqlite } else { StoreSel::Memory };
            log(format!("B1/B2 on {}", k.name()));
            let s = Server::start(&paths, k, store, &fixture_path, "b1").await?;
            let bench = Bench::new(fx.clone(), p.clone());
            let (b1, b2) = bench.b1_b2(&s).await;
            s.stop().await;
            results.entry("B1".into()).or_default().push((k.name().into(), b1));
            results.entry("B2".into()).or_default().push((k.name().into(), b2));
        }
        timings.insert("B1+B2", t.elapsed().as_secs_f64());
    }
    for (b, servers_for) in [
        ("B3", socket_servers.clone()),
        ("B5", socket_servers.clone()),
        ("B6", socket_servers.iter().copied().filter(|k| *k != Kind::Bare).collect()),
        ("B7", socket_servers.clone()),
    ] {
        if !want(b) {
            continue;
        }
        let t = Instant::now();
        for &k in &servers_for {
            let store = if k == Kind::Quck { StoreSel::Sqlite } else { StoreSel::Memory };
            log(format!("{b} on {}", k.name()));
            let s = Server::start(&paths, k, store, &fixture_path, &b.to_lowercase()).await?;
            let bench = Bench::new(fx.clone(), p.clone());
            let o = match b {
                "B3" => bench.b3(&s).await,
                "B5" => bench.b5(&s).await,
                "B6" => bench.b6(&s).await,
                _ => bench.b7(&s).await,
            };
            s.stop().await;
            results.entry(b.into()).or_default().push((k.name().into(), o));
        }
        timings.insert(b, t.elapsed().as_secs_f64());
    }
    for (name, key) in [("B4", "B4"), ("B4b", "B4B")] {
        if !want(key) {
            continue;
        }
        let t = Instant::now();
        let mut runs: Vec<(Kind, StoreSel, &Path, &str)> = Vec::new();
        if has(Kind::Quck) {
            runs.push((Kind::Quck, StoreSel::Sqlite, &fixture_path, "quckchat (SQLite)"));
        }
        if let Some(pgf) = &pg_fixture_path {
            if has(Kind::Quck) {
                runs.push((Kind::Quck, StoreSel::Postgres, pgf.as_path(), "quckchat (PostgreSQL)"));
            }
            if has(Kind::Node) {
                runs.push((Kind::Node, StoreSel::NodePg, &fixture_path, "node (PostgreSQL)"));
            }
        }
        for (k, store, fpath, label) in runs {
            log(format!("{name} on {label}"));
            let s = Server::start(&paths, k, store.clone(), &fixture_path, &name.to_lowercase()).await?;
            let f = load_fixture(fpath)?;
            let bench = Bench::new(f, p.clone());
            let db_cpu: fn() -> f64 = if matches!(store, StoreSel::Sqlite) { || 0.0 } else { postgres_cpu };
            let o = if name == "B4" { bench.b4(&s, db_cpu).await } else { bench.b4b(&s, db_cpu).await };
            s.stop().await;
            results.entry(name.into()).or_default().push((label.into(), o));
        }
        timings.insert(name, t.elapsed().as_secs_f64());
    }

    let total = started.elapsed().as_secs_f64();
    let load_after = load_avg();
    let report = json!({
        "mode": mode,
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "seconds_total": total,
        "seconds_seeding": seed_secs,
        "seconds_per_scenario": timings,
        "server_cpu": a.server_cpu,
        "params": p,
        "notes": notes,
        "results": results_json(&results),
    });
    write_json(&out.join("latest.json"), &report)?;
    let md = markdown(&report, &results);
    std::fs::write(out.join("latest.md"), &md).map_err(|e| e.to_string())?;
    println!("{md}");
    log(format!("done in {total:.0}s; wrote {}/latest.{{md,json}}", out.display()));
    let problems = harness_problems(&results);
    if !problems.is_empty() {
        return Err(format!("the harness did not work end to end:\n  {}", problems.join("\n  ")));
    }
    Ok(())
}

/// What says the harness itself is broken (not slow): failed connects, or a scenario in
/// which nothing was delivered. No timing is judged.
fn harness_problems(results: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let must_move = ["stored messages/s", "deliveries/s", "relays delivered/s", "messages acked", "joined connects/s"];
    for (b, cols) in results {
        for (s, o) in cols {
            for (k, v) in &o.metrics {
                if k.contains("connect failures") && *v > 0.0 {
                    out.push(format!("{b} {s}: {k} = {v}"));
                }
                if must_move.contains(&k.as_str()) && *v <= 0.0 {
                    out.push(format!("{b} {s}: {k} = 0"));
                }
                if k.ends_with("p50 ms") && *v <= 0.0 {
                    out.push(format!("{b} {s}: nothing delivered ({k} = 0)"));
                }
            }
            for n in &o.notes {
                if n.contains("connects failed") {
                    out.push(format!("{b} {s}: {n}"));
                }
            }
        }
    }
    out
}

fn results_json(results: &Results) -> Value {
    let mut all = serde_json::Map::new();
    for (b, cols) in results {
        let mut per = serde_json::Map::new();
        for (s, o) in cols {
            let metrics: serde_json::Map<String, Value> =
                o.metrics.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            per.insert(s.clone(), json!({"metrics": metrics, "notes": o.notes, "detail": o.detail}));
        }
        all.insert(b.clone(), Value::Object(per));
    }
    Value::Object(all)
}

/// CPU seconds of every `postgres` process (the database's share of B4 on PostgreSQL).
fn postgres_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0.0 };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .filter_map(procfs::cpu_secs)
        .sum()
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const TITLES: &[(&str, &str)] = &[
    ("B1", "B1 idle memory (authenticated /chat sockets, each in one 1:1 conversation)"),
    ("B2", "B2 connect storm and reconnect avalanche"),
    ("B3", "B3 fan-out (rooms of 10 / 100 / 1000; fixed rate, ramp, unpaced burst)"),
    ("B4", "B4 persisted chat (users in 1:1 conversations, closed-loop senders)"),
    ("B4b", "B4b persisted chat, open loop (every B4 user sends; fixed offered rate, 10,000 msgs/s in a full run)"),
    ("B5", "B5 latency at a fixed moderate load (1:1 conversations, typing + message)"),
    ("B6", "B6 call signaling (/webrtc: initiate, answer, offer/answer, ICE both ways)"),
    (
        "B7",
        "B7 slow consumers (5% of a 100-member room stop reading during a 15 s stream of 200 messages/s, 4 KB each)",
    ),
];

fn markdown(report: &Value, results: &Results) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "# Bench results ({} mode)\n\nMachine: {} × {}, kernel {}, open files {}; {}. Load average before: {}, after: {}. Total {:.0} s (seeding {:.0} s).\n\nServers pinned to CPU {}; the generator to the other. Ratios are QuckChat ÷ Node (and bare ÷ Node): for memory, CPU, latency and loss lower is better, for rates higher is better.\n",
        report["mode"].as_str().unwrap_or(""),
        report["machine"]["nproc"].as_str().unwrap_or(""),
        report["machine"]["cpu"].as_str().unwrap_or(""),
        report["machine"]["kernel"].as_str().unwrap_or(""),
        report["machine"]["open_files_limit"],
        report["machine"]["node"].as_str().unwrap_or(""),
        report["load_average_before"].as_str().unwrap_or(""),
        report["load_average_after"].as_str().unwrap_or(""),
        report["seconds_total"].as_f64().unwrap_or(0.0),
        report["seconds_seeding"].as_f64().unwrap_or(0.0),
        report["server_cpu"].as_str().unwrap_or("(not pinned)"),
    ));
    if let Some(notes) = report["notes"].as_array() {
        for n in notes {
            md.push_str(&format!("\n- {}", n.as_str().unwrap_or("")));
        }
        md.push('\n');
    }
    for (b, title) in TITLES {
        let Some(cols) = results.get(*b) else { continue };
        md.push_str(&format!("\n## {title}\n\n"));
        let node_col = cols.iter().position(|(s, _)| s.starts_with("node"));
        let mut header = String::from("| metric |");
        let mut sep = String::from("|---|");
        for (s, _) in cols {
            header.push_str(&format!(" {s} |"));
            sep.push_str("---:|");
        }
        let ratio_cols: Vec<usize> = (0..cols.len()).filter(|&i| Some(i) != node_col && node_col.is_some()).collect();
        for &i in &ratio_cols {
            header.push_str(&format!(" {} ÷ {} |", cols[i].0, node_col.map(|n| cols[n].0.as_str()).unwrap_or("node")));
            sep.push_str("---:|");
        }
        md.push_str(&header);
        md.push('\n');
        md.push_str(&sep);
        md.push('\n');
        let mut names: Vec<&str> = Vec::new();
        for (_, o) in cols {
            for (k, _) in &o.metrics {
                if !names.contains(&k.as_str()) {
                    names.push(k);
                }
            }
        }
        let get = |o: &Outcome, k: &str| o.metrics.iter().find(|(n, _)| n == k).map(|x| x.1);
        for k in names {
            let mut row = format!("| {k} |");
            for (_, o) in cols {
                row.push_str(&format!(" {} |", get(o, k).map(fmt).unwrap_or_else(|| "—".into())));
            }
            for &i in &ratio_cols {
                let r = match (get(&cols[i].1, k), node_col.and_then(|n| get(&cols[n].1, k))) {
                    (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
                    _ => "—".into(),
                };
                row.push_str(&format!(" {r} |"));
            }
            md.push_str(&row);
            md.push('\n');
        }
        for (s, o) in cols {
            for n in &o.notes {
                md.push_str(&format!("\n- {s}: {n}"));
            }
        }
        md.push('\n');
    }
    md
}
