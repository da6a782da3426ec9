//! The admin listener: an axum router on a loopback socket.
//!
//! | Route | Auth | Answer |
//! |---|---|---|
//! | `POST /api/graphql` | `Authorization: Bearer <token>` | GraphQL JSON; 401 with a JSON error without a valid token |
//! | `GET /metrics` | none (loopback only) | Prometheus text format 0.0.4 |
//! | `GET /health` | none | 200 `ok`, or 503 `stopping` once shutdown began |
//!
//! [`serve`] writes the bound address to `<data_dir>/admin.addr` (so `tern ctl` finds a node
//! whose admin port was 0) and removes it again when it stops.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use async_graphql_axum::GraphQLResponse;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use super::schema::{self, AdminSchema};
use crate::node::Node;

/// Name of the file in the data directory that holds the admin listener's bound address.
pub const ADDR_FILE: &str = "admin.addr";

/// The content type of `/metrics` (Prometheus text exposition format 0.0.4).
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Room in a GraphQL request body for everything but a `sendStanza` argument (the largest
/// input, itself at most `limits.max_stanza_size`, and twice that once escaped in JSON).
const BODY_OVERHEAD_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct AppState {
    node: Arc<Node>,
    schema: AdminSchema,
}

/// Serves the admin API on `listener` (a loopback socket the caller bound) until
/// `node.shutdown` turns `true`, then finishes the requests in flight and returns.
///
/// Before accepting, records the bound address in `node.admin_address` and in
/// `<data_dir>/admin.addr`; the file is removed on return. Fails if the address cannot be read
/// or the file cannot be written, or if serving fails.
pub async fn serve(node: Arc<Node>, listener: TcpListener) -> io::Result<()> {
    let address = listener.local_addr()?;
    let data_dir = node.data_dir();
    write_addr_file(&data_dir, address)?;
    if node.admin_address.set(address).is_err() {
        tracing::debug!("admin address was already recorded");
    }
    tracing::info!(%address, "admin API listening");
    let mut shutdown = node.shutdown.subscribe();
    let result = axum::serve(listener, router(node))
        .with_graceful_shutdown(async move {
            // An error means the node (the sender) is gone: stop too.
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    remove_addr_file(&data_dir, address);
    tracing::info!(%address, "admin API stopped");
    result
}

/// The admin API's routes.
fn router(node: Arc<Node>) -> Router {
    let max_body = node
        .config
        .limits
        .max_stanza_size
        .saturating_mul(2)
        .saturating_add(BODY_OVERHEAD_BYTES);
    let state = AppState {
        schema: schema::build(node.clone()),
        node,
    };
    Router::new()
        .route(
            "/api/graphql",
            post(graphql).layer(middleware::from_fn_with_state(state.clone(), require_token)),
        )
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Lets the request through only with `Authorization: Bearer <the admin token>`.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if is_authorized(request.headers(), &state.node.admin_token) {
        return next.run(request).await;
    }
    let mut response = json_error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token: send the header `Authorization: Bearer <token>`",
        "UNAUTHORIZED",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Whether the headers carry the bearer token `expected`.
fn is_authorized(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && !expected.is_empty()
        && constant_time_eq(token.trim().as_bytes(), expected.as_bytes())
}

/// Compares without stopping at the first difference, so the time taken does not tell how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /api/graphql`: a JSON GraphQL request (`query`, `variables`, `operationName`).
async fn graphql(State(state): State<AppState>, body: Bytes) -> Response {
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a JSON GraphQL request: {e}"),
                "BAD_REQUEST",
            );
        }
    };
    GraphQLResponse::from(state.schema.execute(request).await).into_response()
}

/// `GET /metrics`: the Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = state.node.metrics.render();
    if let Some(mesh) = state.node.mesh.get() {
        text.push_str(&crate::metrics::render_links(&mesh.status()));
    }
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

/// `GET /health`: `ok` while the node runs.
async fn health(State(state): State<AppState>) -> Response {
    if state.node.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

/// A GraphQL-shaped error body (`{"errors":[{"message":..,"extensions":{"code":..}}]}`).
fn json_error(status: StatusCode, message: &str, code: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    (status, axum::Json(body)).into_response()
}

/// Writes `address` to `<data_dir>/admin.addr`, replacing the file in one step.
fn write_addr_file(data_dir: &Path, address: SocketAddr) -> io::Result<()> {
    fs::create_dir_all(data_dir)?;
    let path = data_dir.join(ADDR_FILE);
    let partial = data_dir.join(format!("{ADDR_FILE}.partial"));
    fs::write(&partial, format!("{address}\n"))?;
    fs::rename(&partial, &path)
}

/// Removes `<data_dir>/admin.addr` if it still names `address` (a newer node may own it).
fn remove_addr_file(data_dir: &Path, address: SocketAddr) {
    let path = data_dir.join(ADDR_FILE);
    let ours = fs::read_to_string(&path)
        .is_ok_and(|text| text.trim().parse::<SocketAddr>().ok() == Some(address));
    if ours && let Err(e) = fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the admin address file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::tests::TempDir;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn accepts_only_the_bearer_token() {
        let token = "0123456789abcdef-token";
        assert!(is_authorized(
            &headers("Bearer 0123456789abcdef-token"),
            token
        ));
        assert!(is_authorized(
            &headers("bearer 0123456789abcdef-token"),
            token
        ));
        assert!(!is_authorized(
            &headers("Bearer 0123456789abcdef-tokeN"),
            token
        ));
        assert!(!is_authorized(&headers("Bearer 0123456789abcdef"), token));
        assert!(!is_authorized(
            &headers("Basic 0123456789abcdef-token"),
            token
        ));
        assert!(!is_authorized(&headers("0123456789abcdef-token"), token));
        assert!(!is_authorized(&HeaderMap::new(), token));
        assert!(!is_authorized(&headers("Bearer "), ""));
    }

    #[test]
    fn addr_file_is_written_and_removed_only_when_ours() {
        let dir = TempDir::new("addr-file");
        let ours: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let theirs: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        write_addr_file(dir.path(), ours).unwrap();
        let path = dir.path().join(ADDR_FILE);
        assert_eq!(fs::read_to_string(&path).unwrap(), "127.0.0.1:4000\n");
        remove_addr_file(dir.path(), theirs);
        assert!(path.exists());
        remove_addr_file(dir.path(), ours);
        assert!(!path.exists());
    }
}
