//! Rebuilds the crate when a migration is added or removed: `sqlx::migrate!` embeds the
//! files it finds at compile time, but on stable Rust cargo only learns about the files
//! that existed then, so a new migration alone would not trigger a rebuild.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
