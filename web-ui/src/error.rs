//! How a page fails: back to the login form, or an error page with the API's message.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::client::ApiFailure;
use crate::render;
use crate::session::{set_cookie, SESSION_COOKIE};

/// Why a panel request did not produce its page.
#[derive(Debug, thiserror::Error)]
pub enum PanelError {
    /// No session cookie.
    #[error("please log in")]
    LoggedOut,
    /// The session's token expired (by its own claim or the API said 401).
    #[error("your session expired; please log in again")]
    Expired,
    /// The form's CSRF token was missing or wrong; nothing was done.
    #[error("this form was not sent by a page of this panel (missing or wrong CSRF token); nothing was done")]
    Csrf,
    /// The body was not a form.
    #[error("bad form: {0}")]
    BadForm(String),
    /// No such panel page.
    #[error("no such page")]
    NotFound,
    /// The API refused or failed.
    #[error("{}", .0.message)]
    Api(ApiFailure),
    /// A bug or an unexpected answer.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ApiFailure> for PanelError {
    fn from(f: ApiFailure) -> Self {
        if f.status == StatusCode::UNAUTHORIZED {
            Self::Expired
        } else {
            Self::Api(f)
        }
    }
}

impl PanelError {
    /// The message in the request's locale (the API's own messages stay as the API sent them).
    pub fn localized(&self) -> String {
        use crate::i18n::t;
        match self {
            Self::LoggedOut => t("msg_logged_out"),
            Self::Expired => t("msg_expired"),
            Self::Csrf => t("msg_csrf"),
            Self::BadForm(d) => t("msg_bad_form").replace("{detail}", d),
            Self::NotFound => t("msg_not_found"),
            Self::Api(f) => f.message.clone(),
            Self::Internal(d) => t("msg_internal").replace("{detail}", d),
        }
    }
}

impl IntoResponse for PanelError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::LoggedOut => return Redirect::to("/ui/login").into_response(),
            Self::Expired => {
                let clear = set_cookie(SESSION_COOKIE, "", 0, false);
                return ([(header::SET_COOKIE, clear)], Redirect::to("/ui/login?expired=1")).into_response();
            }
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::BadForm(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Api(f) => f.status,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "panel page failed");
        }
        let ctx = serde_json::json!({
            "status": status.as_u16(),
            "title": crate::i18n::lookup(&format!("http_{}", status.as_u16()))
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_owned()),
            "message": self.localized(),
        });
        (status, render::page_html("error.html", &ctx)).into_response()
    }
}
