//! The page (`/`, which also admits a browser with the token) and its embedded files.

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{AppState, PathOf, QueryOf};
use crate::assets;
use crate::error::DashboardError;

/// The query of `/`.
#[derive(Debug, Deserialize)]
pub struct IndexQuery {
    token: Option<String>,
}

/// `GET /`: with `?token=`, opens a session and redirects to `/`; with a session, the page;
/// otherwise a page saying how to get in, with 401.
pub async fn index(
    axum::extract::State(state): axum::extract::State<AppState>,
    QueryOf(query): QueryOf<IndexQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(token) = query.token {
        return match state.auth.login(&token) {
            Ok(cookie) => ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response(),
            Err(error) => refused(&error),
        };
    }
    match state.auth.session(&headers) {
        Ok(csrf) => Html(assets::index(&csrf.text())).into_response(),
        Err(error) => refused(&error),
    }
}

fn refused(error: &DashboardError) -> Response {
    (error.status(), Html(assets::refused(&error.to_string()))).into_response()
}

/// `GET /assets/{file}`: the page's script, style sheet and icon.
pub async fn asset(PathOf(file): PathOf<String>) -> Response {
    match assets::file(&file) {
        Some((content_type, body)) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => (StatusCode::NOT_FOUND, DashboardError::NotFound).into_response(),
    }
}
