//! argon2id password hashing on a small pool of its own threads, bounded in memory and in
//! queue length.
//!
//! Why not `spawn_blocking`: each argon2id computation (default parameters) needs 19 MiB.
//! On tokio's blocking pool (up to 512 threads) a login storm ran hundreds of them at
//! once, and glibc kept the freed blocks in per-thread arenas: 288 logins took RSS from
//! 15 MB to 4.8 GB and it never came back. Here a fixed set of worker threads (one per
//! core by default) each own one block of argon2 memory, allocated once and reused for
//! every computation, so hashing memory is `workers × 19 MiB`, whatever the load. Jobs
//! wait in a short bounded queue; when it is full the caller is told at once
//! ([`AuthError::Busy`], HTTP 503 with `Retry-After`) instead of queueing without bound.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use tokio::sync::oneshot;

use super::AuthError;

/// The shortest and longest accepted passwords, in characters.
const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=128;

/// A hash of a password nobody has, verified when the username is unknown so that a
/// failed login takes the same time either way.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Kq8GwFz1e8c8FM2mFe3MJTeQ5B1cJd8wAK7MZcAfGk";

/// The most memory a stored hash may ask for (KiB): ours use 19 MiB; anything far above
/// is not a hash this server wrote, and is refused rather than allocated.
const MAX_M_COST_KIB: u32 = 256 * 1024;

/// Checks the password rules.
pub fn check_rules(password: &str) -> Result<(), AuthError> {
    if !PASSWORD_CHARS.contains(&password.chars().count()) {
        return Err(AuthError::InvalidInput(format!(
            "password must be {} to {} characters",
            PASSWORD_CHARS.start(),
            PASSWORD_CHARS.end()
        )));
    }
    Ok(())
}

/// What one worker is asked to do.
enum Job {
    Hash { password: String, reply: oneshot::Sender<Result<String, AuthError>> },
    Verify { password: String, hash: Option<String>, reply: oneshot::Sender<Result<bool, AuthError>> },
}

/// The hashing pool: a handle to its bounded queue. Cloning shares the pool; the workers
/// stop when the last handle is dropped.
#[derive(Clone)]
pub struct PasswordHasher {
    queue: SyncSender<Job>,
}

impl PasswordHasher {
    /// Starts `workers` hashing threads (at least one) behind a queue of `queue` jobs.
    pub fn start(workers: usize, queue: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || worker(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self { queue: tx }
    }

    /// Hashes a password with argon2id (default parameters).
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        answer.await.map_err(|_| AuthError::Internal("hashing thread stopped".into()))?
    }

    /// Checks a password against a stored hash; with no hash, spends the time of a check
    /// and answers `false`.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, AuthError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify { password, hash, reply })?;
        answer.await.map_err(|_| AuthError::Internal("hashing thread stopped".into()))?
    }

    fn submit(&self, job: Job) -> Result<(), AuthError> {
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => AuthError::Busy,
            TrySendError::Disconnected(_) => AuthError::Internal("no hashing thread is running".into()),
        })
    }
}

/// One hashing thread: takes jobs until every handle is gone, with one argon2 memory block
/// it reuses.
fn worker(rx: &Mutex<Receiver<Job>>) {
    let mut memory = vec![Block::default(); Params::default().block_count()];
    loop {
        // The lock is held only while waiting for the next job, never while hashing.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        match job {
            Job::Hash { password, reply } => {
                let _ = reply.send(hash_with(&mut memory, password.as_bytes()));
            }
            Job::Verify { password, hash, reply } => {
                let stored = hash.as_deref().unwrap_or(DUMMY_HASH);
                let ok = verify_with(&mut memory, password.as_bytes(), stored);
                let _ = reply.send(ok.map(|ok| ok && hash.is_some()));
            }
        }
    }
}

fn hash_with(memory: &mut Vec<Block>, password: &[u8]) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Internal(format!("salt: {e}")))?;
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(|e| AuthError::Internal(format!("salt: {e}")))?;
    fit(memory, params.block_count());
    argon
        .hash_password_into_with_memory(password, salt_raw, &mut out, &mut memory[..])
        .map_err(|e| AuthError::Internal(format!("hashing failed: {e}")))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(|e| AuthError::Internal(format!("hash parameters: {e}")))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| AuthError::Internal(format!("hash output: {e}")))?),
    };
    Ok(phc.to_string())
}

fn verify_with(memory: &mut Vec<Block>, password: &[u8], stored: &str) -> Result<bool, AuthError> {
    let unreadable = |e: &dyn std::fmt::Display| AuthError::Internal(format!("stored hash unreadable: {e}"));
    let parsed = PasswordHash::new(stored).map_err(|e| unreadable(&e))?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| unreadable(&e))?;
    let version = parsed.version.map(Version::try_from).transpose().map_err(|e| unreadable(&e))?.unwrap_or_default();
    let mut params = Params::try_from(&parsed).map_err(|e| unreadable(&e))?;
    if params.m_cost() > MAX_M_COST_KIB {
        return Err(unreadable(&format!("m={} KiB is more than this server ever uses", params.m_cost())));
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(unreadable(&"no salt or no hash"));
    };
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(|e| unreadable(&e))?;
    // The output length comes from the stored hash, as argon2's own verifier does.
    params = Params::new(params.m_cost(), params.t_cost(), params.p_cost(), Some(expected.len()))
        .map_err(|e| unreadable(&e))?;
    fit(memory, params.block_count());
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt_raw, out, &mut memory[..])
        .map_err(|e| AuthError::Internal(format!("verifying failed: {e}")))?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(out).is_ok_and(|o| o == expected))
}

/// Grows the worker's block (never shrinks it) when a stored hash needs more.
fn fit(memory: &mut Vec<Block>, blocks: usize) {
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let pool = PasswordHasher::start(2, 4);
        let h = pool.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(pool.verify("correct horse".into(), Some(h.clone())).await.unwrap());
        assert!(!pool.verify("wrong horse!".into(), Some(h)).await.unwrap());
        assert!(!pool.verify("anything at all".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn verifies_hashes_made_by_the_argon2_crate() {
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = Argon2::default().hash_password(b"correct horse", &salt).unwrap().to_string();
        let pool = PasswordHasher::start(1, 1);
        assert!(pool.verify("correct horse".into(), Some(theirs.clone())).await.unwrap());
        assert!(!pool.verify("correct horsf".into(), Some(theirs)).await.unwrap());
        // And ours verify with the crate's own verifier.
        use argon2::password_hash::PasswordVerifier as _;
        let ours = pool.hash("battery staple".into()).await.unwrap();
        assert!(Argon2::default().verify_password(b"battery staple", &PasswordHash::new(&ours).unwrap()).is_ok());
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let pool = PasswordHasher::start(1, 1);
        let jobs: Vec<_> = (0..16).map(|_| pool.verify("x".repeat(10), None)).collect();
        let results = futures_util::future::join_all(jobs).await;
        let busy = results.iter().filter(|r| matches!(r, Err(AuthError::Busy))).count();
        assert!(busy >= 1, "16 jobs on one worker with a queue of one: some must be refused");
        assert!(results.iter().all(|r| matches!(r, Ok(false) | Err(AuthError::Busy))));
    }

    #[test]
    fn rules() {
        assert!(check_rules("short").is_err());
        assert!(check_rules("long enough").is_ok());
    }
}
