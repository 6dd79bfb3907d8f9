//! The web client at `/app`: four static files compiled into the binary, so the server
//! stays one file and the browser loads nothing from elsewhere.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/style.css");
const SOCKET_IO: &str = include_str!("../../web/socket.io.min.js");

fn file(content_type: &'static str, body: &'static str) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `/app` → `/app/`, so relative URLs in the page resolve under it.
pub async fn redirect() -> Redirect {
    Redirect::permanent("/app/")
}

/// `/app/`
pub async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// `/app/app.js`
pub async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

/// `/app/style.css`
pub async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

/// `/app/socket.io.min.js`: npm's socket.io-client, served from our own origin.
pub async fn socket_io() -> Response {
    file("text/javascript; charset=utf-8", SOCKET_IO)
}
