//! Scratch database files under cargo's per-target temporary directory.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// A fresh, not yet existing database path, unique to this call.
pub fn db_path() -> PathBuf {
    run_dir().join(format!("{}.db", uuid::Uuid::now_v7()))
}

/// The `sqlite://` URL of a fresh database file.
pub fn db_url() -> String {
    format!("sqlite://{}", db_path().display())
}

/// This run's directory. Directories of runs that ended a while ago are removed on the
/// way, so scratch files do not pile up (a run still going has a recent one).
fn run_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("quckchat-store-sqlite");
        if let Ok(entries) = std::fs::read_dir(&root) {
            let stale = SystemTime::now() - Duration::from_secs(3600);
            for entry in entries.flatten() {
                let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < stale);
                if old {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = root.join(format!("run-{}-{}", std::process::id(), uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    })
}
