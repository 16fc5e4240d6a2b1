//! `X-Request-Id`: the client's value when it sent a sane one, otherwise a new one; echoed on
//! every response and available to error bodies and event metadata through a task-local.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id, inside a request.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `future` (e.g. in a spawned task) with `id` as the current request id.
pub async fn within<F: std::future::Future>(id: Option<String>, future: F) -> F::Output {
    match id {
        Some(id) => REQUEST_ID.scope(id, future).await,
        None => future.await,
    }
}

fn acceptable(value: &str) -> bool {
    (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic())
}

pub async fn middleware(request: Request, next: Next) -> Response {
    let id =
        request.headers().get(HEADER).and_then(|v| v.to_str().ok()).filter(|v| acceptable(v)).map_or_else(
            || format!("req_{}", ulid::Ulid::new().to_string().to_ascii_lowercase()),
            str::to_owned,
        );
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
