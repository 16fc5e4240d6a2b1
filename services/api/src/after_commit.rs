//! A write whose command committed, and whose answer then failed (reading the change back, the
//! database out of reach), answers that the change is saved: a 503 that says so, with the
//! failure's headers, rather than a 500 or a "retry" that would make the change a second time.
//! `idempotency` records that answer like any other.

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pwnbook_commands::CommitProof;

use crate::envelope::keep_headers;
use crate::error::{ApiError, OutcomeUnknown};

const SAVED_NOT_SHOWN: &str = "the change is saved but could not be read back; read it again shortly";

pub async fn answer(mut request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    // The one `authenticate` made for a key taken from memory, or one of its own: the command
    // service sets it when a command run with the request's caller commits.
    let committed = match request.extensions().get::<CommitProof>() {
        Some(proof) => proof.clone(),
        None => {
            let proof = CommitProof::default();
            request.extensions_mut().insert(proof.clone());
            proof
        }
    };
    let response = next.run(request).await;
    let unknown = response.status() == StatusCode::INTERNAL_SERVER_ERROR
        || response.extensions().get::<OutcomeUnknown>().is_some();
    if !unknown || !committed.is_set() {
        return response;
    }
    let mut saved = ApiError::Unavailable(SAVED_NOT_SHOWN.to_owned()).into_response();
    keep_headers(&mut saved, response.headers());
    saved
}
