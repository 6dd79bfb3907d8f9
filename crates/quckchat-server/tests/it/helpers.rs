//! Starting the real server for a test, and the small steps every test repeats:
//! registering users, calling the REST API, opening `/chat` sockets, sending messages,
//! and proving that a socket received nothing (a barrier message).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quckchat_server::Server;
use quckchat_server::config::{Config, Rule};
use quckchat_server::push::PushPolicy;
use quckchat_server::state::AppState;
use quckchat_sio_client::{Client, ConnectOptions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long any single wait in a test may take.
pub const T: Duration = Duration::from_secs(5);

/// What one stored message may take when many are queued behind each other, on the
/// slowest store CI runs (SecantusDB, a Python MongoDB stand-in: ~30 ms per append alone,
/// several times that beside three other tests). Alone it is a few milliseconds.
pub const PER_QUEUED_MESSAGE: Duration = Duration::from_millis(400);

/// The budget of the last of `queued` operations that run one after another: `T` plus
/// `PER_QUEUED_MESSAGE` for each. Still finite, so a hang fails the test.
pub fn burst_budget(queued: usize) -> Duration {
    T + PER_QUEUED_MESSAGE * u32::try_from(queued).unwrap_or(u32::MAX)
}

/// The JWT secret every test server signs with (tests forge tokens with it).
pub const JWT_SECRET: &str = "quckchat-integration-tests-secret";

/// The password of every test user.
pub const PASSWORD: &str = "correct horse battery";

/// A scratch directory under cargo's per-target temporary directory, removed on drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// A fresh, empty directory.
    pub fn new() -> Self {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("quckchat-server-it")
            .join(uuid::Uuid::now_v7().to_string());
        std::fs::create_dir_all(&path).expect("create the test directory");
        Self { path }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running server.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The server's services (the store, metrics).
    pub state: AppState,
    /// The data directory (database and all); kept for restarts.
    pub dir: TestDir,
    http: reqwest::Client,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
}

/// The store of a test server in `dir`: a fresh SQLite file; or, when
/// `QUCKCHAT_TEST_DATABASE` names a PostgreSQL or MongoDB server, a fresh schema or
/// database there, named after `dir` (so a restart on the same `dir` finds its data).
pub fn test_database_url(dir: &Path) -> String {
    let name: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().chars().filter(|c| c.is_ascii_alphanumeric()).take(40).collect())
        .unwrap_or_default();
    let name = format!("qct_{}", name.to_ascii_lowercase());
    match std::env::var("QUCKCHAT_TEST_DATABASE") {
        Ok(base) if base.starts_with("postgres") => {
            format!("{base}{}schema={name}", if base.contains('?') { '&' } else { '?' })
        }
        Ok(base) if base.starts_with("mongodb://") => {
            let (address, query) = base.split_once('?').unwrap_or((base.as_str(), ""));
            let host = address.trim_start_matches("mongodb://").split('/').next().unwrap_or("");
            format!("mongodb://{host}/{name}{}{query}", if query.is_empty() { "" } else { "?" })
        }
        _ => format!("sqlite://{}/q.db", dir.display()),
    }
}

/// The configuration of a test server in `dir`: loopback, any port, a fresh store.
pub fn test_config(dir: &Path) -> Config {
    Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        database_url: test_database_url(dir),
        data_dir: dir.to_path_buf(),
        jwt_secret: Some(JWT_SECRET.into()),
        shutdown_grace: Duration::from_secs(5),
        // Tests register and log in many users from 127.0.0.1; the throttle has its own tests.
        auth_rate_per_address: Rule { per_minute: 0, burst: 0 },
        auth_rate_per_username: Rule { per_minute: 0, burst: 0 },
        ..Config::default()
    }
}

/// A push policy that retries fast.
pub fn test_push_policy() -> PushPolicy {
    PushPolicy {
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        max_attempts: 10,
        lease: Duration::from_secs(5),
        request_timeout: Duration::from_secs(2),
        batch: 32,
    }
}

/// Rate limits high enough that a test sending many events is never refused for speed.
pub fn relaxed(config: &mut Config) {
    config.message_rate_per_sec = 10_000;
    config.message_burst = 10_000;
    config.typing_rate_per_sec = 10_000;
    config.event_rate_per_sec = 10_000;
    config.user_message_rate_per_sec = 10_000;
    config.user_typing_rate_per_sec = 10_000;
    config.user_event_rate_per_sec = 10_000;
}

/// A server with the default configuration (default rate limits included).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose configuration `configure` adjusts.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_in(TestDir::new(), configure).await
}

/// A server on an existing data directory (a restart).
pub async fn spawn_in(dir: TestDir, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(dir.path());
    configure(&mut config);
    let server = Server::build_with(config, test_push_policy()).await.expect("build the server");
    let addr = server.local_addr();
    let state = server.state().clone();
    let (shutdown, stop) = oneshot::channel::<()>();
    // Only an explicit `stop()` shuts the server down; dropping the `TestApp` (say, by
    // destructuring it away) leaves it running until the test's runtime ends.
    let server = tokio::spawn(server.run_until_stopped(async move {
        if stop.await.is_err() {
            std::future::pending::<()>().await;
        }
    }));
    TestApp { base_url: format!("http://{addr}"), addr, state, dir, http: reqwest::Client::new(), shutdown, server }
}

/// A registered user.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// The user's id.
    pub id: String,
    /// The login name.
    pub username: String,
    /// The access token (without `Bearer `).
    pub token: String,
    /// The refresh token.
    pub refresh: String,
}

impl TestApp {
    /// Shuts the server down gracefully, waits for it to stop, and gives back its data
    /// directory for a restart.
    pub async fn stop(self) -> TestDir {
        let TestApp { dir, shutdown, server, state, .. } = self;
        let _ = shutdown.send(());
        let result = tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("the server stops within 20 s")
            .expect("the server task did not panic");
        result.expect("the server stopped without error");
        drop(state);
        dir
    }

    /// Calls `/api/v1{path}`; answers the status and the JSON body (`Null` when empty).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}/api/v1{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the HTTP request is answered");
        let status = response.status();
        let text = response.text().await.expect("the HTTP body is read");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("body of {status} is not JSON ({e}): {text}"))
        };
        (status, body)
    }

    /// `GET /api/v1{path}`.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.api(Method::GET, path, Some(token), None).await
    }

    /// `POST /api/v1{path}`.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.api(Method::POST, path, Some(token), Some(body)).await
    }

    /// `PUT /api/v1{path}`.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.api(Method::PUT, path, Some(token), Some(body)).await
    }

    /// `DELETE /api/v1{path}`.
    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.api(Method::DELETE, path, Some(token), None).await
    }

    /// `GET {path}` outside `/api/v1`, as text.
    pub async fn get_raw(&self, path: &str) -> (StatusCode, String) {
        let response = self.http.get(format!("{}{path}", self.base_url)).send().await.expect("answered");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    /// Registers `username` (201 expected).
    pub async fn register(&self, username: &str) -> TestUser {
        let (status, body) = self
            .api(
                Method::POST,
                "/auth/register",
                None,
                Some(
                    json!({ "username": username, "password": PASSWORD, "displayName": format!("{username} display") }),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {username}: {body}");
        user_from(&body)
    }

    /// Logs `user` in again: a second session.
    pub async fn login(&self, user: &TestUser) -> TestUser {
        let (status, body) = self
            .api(Method::POST, "/auth/login", None, Some(json!({ "username": user.username, "password": PASSWORD })))
            .await;
        assert_eq!(status, StatusCode::OK, "login {}: {body}", user.username);
        user_from(&body)
    }

    /// Options for a `/chat` socket with no credentials.
    pub fn chat_options(&self) -> ConnectOptions {
        ConnectOptions::new(self.base_url.clone(), "/chat").timeout(T)
    }

    /// A `/chat` socket of `user`, authenticated with `auth: {token: "Bearer …"}`.
    pub async fn chat(&self, user: &TestUser) -> Client {
        let options = self.chat_options().auth(json!({ "token": format!("Bearer {}", user.token) }));
        Client::connect(options).await.unwrap_or_else(|e| panic!("{} connects to /chat: {e}", user.username))
    }

    /// Creates (or finds) the single conversation of `a` with `b`; its id.
    pub async fn single(&self, a: &TestUser, b: &TestUser) -> String {
        let (status, body) =
            self.post("/conversations", &a.token, json!({ "type": "single", "participants": [b.id] })).await;
        assert!(status == StatusCode::CREATED || status == StatusCode::OK, "create single: {status} {body}");
        str_of(&body["id"])
    }

    /// Creates a group with `admin` and `members`; its id.
    pub async fn group(&self, admin: &TestUser, members: &[&TestUser]) -> String {
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        let (status, body) = self
            .post("/conversations", &admin.token, json!({ "type": "group", "participants": ids, "name": "the group" }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "create group: {body}");
        str_of(&body["id"])
    }

    /// A page of history: `query` is e.g. `afterSeq=0&limit=200`.
    pub async fn history(&self, user: &TestUser, conversation: &str, query: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/messages/conversation/{conversation}?{query}"), &user.token).await;
        assert_eq!(status, StatusCode::OK, "history: {body}");
        body["data"].as_array().expect("data is an array").clone()
    }

    /// One message as stored, read through the history of `user`.
    pub async fn message(&self, user: &TestUser, conversation: &str, id: &str) -> Value {
        self.history(user, conversation, "afterSeq=0&limit=200")
            .await
            .into_iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("message {id} is in the history"))
    }

    /// The number of connected `/chat` sockets this server counts (its metrics gauge).
    /// The gauge moves after presence has counted the socket and told co-members, so once
    /// it shows a socket, that socket's `user:online` (if any) is already on its way.
    pub fn chat_sockets(&self) -> i64 {
        gauge(&self.state.metrics.render(), "quckchat_sockets_connected", "namespace=\"/chat\"")
    }

    /// Waits until the server counts `n` connected `/chat` sockets.
    pub async fn wait_chat_sockets(&self, n: i64) {
        eventually(&format!("{n} counted /chat sockets"), || async { self.chat_sockets() == n }).await;
    }
}

/// Reads one sample of a metric from the Prometheus text.
pub fn gauge(text: &str, name: &str, label: &str) -> i64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
        .next()
        .unwrap_or(0)
}

fn user_from(body: &Value) -> TestUser {
    TestUser {
        id: str_of(&body["user"]["id"]),
        username: str_of(&body["user"]["username"]),
        token: str_of(&body["accessToken"]),
        refresh: str_of(&body["refreshToken"]),
    }
}

/// A JSON string, or a panic naming what it was instead.
pub fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}")).to_string()
}

/// Waits (bounded by [`T`]) until `check` holds. Only for states that no event announces
/// (a metrics gauge, a row the push worker updates after the webhook answered); anything
/// a socket can see is awaited as an event instead.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + T;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tick.tick().await;
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// Emits `event` with an ack and returns the ack (a panic if none came within [`T`]).
pub async fn emit(client: &Client, event: &str, payload: Value) -> Value {
    client.emit_with_ack(event, payload.clone(), T).await.unwrap_or_else(|e| panic!("ack of {event} {payload}: {e}"))
}

/// Asserts a successful ack and returns it.
pub fn ok(ack: Value) -> Value {
    assert_eq!(ack["success"], json!(true), "expected a successful ack, got {ack}");
    ack
}

/// Asserts a refused ack `{success:false, error:{code, message}}` and returns the code.
pub fn refused(ack: &Value) -> String {
    assert_eq!(ack["success"], json!(false), "expected a refused ack, got {ack}");
    assert!(ack["error"]["message"].is_string(), "a refused ack has error.message: {ack}");
    str_of(&ack["error"]["code"])
}

/// Sends a text message and returns it as acked.
pub async fn send(client: &Client, conversation: &str, content: &str) -> Value {
    let ack = emit(client, "message:send", json!({ "conversationId": conversation, "content": content })).await;
    ok(ack)["message"].clone()
}

/// Waits for `message:new` of the message `id`.
pub async fn expect_message(client: &mut Client, id: &Value) -> Value {
    client.expect_where("message:new", T, |m| m["id"] == *id).await.unwrap_or_else(|e| panic!("message:new {id}: {e}"))
}

/// Asserts that the next event `client` gets (buffered or live) is `message:new` of `id`:
/// nothing reached it before that message.
pub async fn assert_next_is_message(client: &mut Client, id: &Value) {
    let (name, payload) = client.next_event(T).await.expect("an event arrives");
    assert!(
        name == "message:new" && payload["id"] == *id,
        "expected nothing before the barrier message {id}, got `{name}` {payload}"
    );
}

/// Proves `observer` got nothing so far: `sender` sends a barrier message in
/// `conversation`, and the observer's first event must be that message.
pub async fn assert_quiet(observer: &mut Client, sender: &Client, conversation: &str) {
    let barrier = send(sender, conversation, "barrier").await;
    assert_next_is_message(observer, &barrier["id"]).await;
}

/// Like [`assert_quiet`], with the observer sending the barrier itself (it gets its own
/// messages too).
pub async fn assert_quiet_self(observer: &mut Client, conversation: &str) {
    let barrier = send(observer, conversation, "barrier").await;
    assert_next_is_message(observer, &barrier["id"]).await;
}

/// Alice and Bob share a single conversation; Mallory is a stranger. All three have a
/// `/chat` socket, presence has settled, and every socket's event queue is empty.
pub struct Trio {
    pub app: TestApp,
    pub alice: TestUser,
    pub bob: TestUser,
    pub mallory: TestUser,
    pub conv: String,
    pub a: Client,
    pub b: Client,
    pub m: Client,
}

/// Builds a [`Trio`] on `app`.
pub async fn trio(app: TestApp) -> Trio {
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mallory = app.register("mallory").await;
    let conv = app.single(&alice, &bob).await;
    let mut b = app.chat(&bob).await;
    app.wait_chat_sockets(1).await;
    let a = app.chat(&alice).await;
    app.wait_chat_sockets(2).await;
    let online = b.expect("user:online", T).await.expect("bob is told alice is online");
    assert_eq!(online["userId"], json!(alice.id));
    let m = app.chat(&mallory).await;
    app.wait_chat_sockets(3).await;
    Trio { app, alice, bob, mallory, conv, a, b, m }
}
