//! The REST API (CONTRACT §2) under `/api/v1`, operations routes, and the OpenAPI
//! document. Handlers are thin: extract, call one service method, map the result.

mod app;
mod auth;
mod calls;
mod conversations;
pub mod error;
mod extract;
#[cfg(test)]
pub(crate) use extract::client_address as client_address_for_tests;
mod messages;
mod ops;
mod users;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;
use error::ApiError;

/// The OpenAPI document of the REST API.
#[derive(OpenApi)]
#[openapi(
    info(title = "QuckChat", description = "REST API of QuckChat. Real-time events are on Socket.IO namespaces /chat and /webrtc (see CONTRACT.md §3)."),
    paths(
        auth::register, auth::login, auth::refresh, auth::logout,
        users::me, users::update_me, users::search, users::get,
        conversations::create, conversations::list, conversations::get, conversations::update,
        conversations::add_members, conversations::remove_member,
        messages::history, messages::edit, messages::delete,
        calls::get, calls::history, calls::ice_servers,
        ops::health, ops::metrics,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// All HTTP routes (the Socket.IO layer is added by the caller).
pub fn router(state: AppState, max_body: usize) -> Router {
    let api = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/users/me", get(users::me).put(users::update_me))
        .route("/users/search", get(users::search))
        .route("/users/{id}", get(users::get))
        .route("/conversations", post(conversations::create).get(conversations::list))
        .route("/conversations/{id}", get(conversations::get).put(conversations::update))
        .route("/conversations/{id}/members", post(conversations::add_members))
        .route("/conversations/{id}/members/{user_id}", axum::routing::delete(conversations::remove_member))
        .route("/messages/conversation/{id}", get(messages::history))
        .route("/messages/{id}", put(messages::edit).delete(messages::delete))
        .route("/calls/history/{id}", get(calls::history))
        .route("/calls/{id}", get(calls::get))
        .route("/ice-servers", get(calls::ice_servers))
        .route("/health", get(ops::health));

    Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(ops::metrics))
        .route("/app", get(app::redirect))
        .route("/app/", get(app::index))
        .route("/app/app.js", get(app::script))
        .route("/app/style.css", get(app::style))
        .route("/app/socket.io.min.js", get(app::socket_io))
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", ApiDoc::openapi()))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    state.metrics.http(method.as_str(), response.status().as_u16());
    response
}
