//! The CLI's one error type and the single line it is shown as.

use std::io;
use std::path::PathBuf;

use kumo_wire::ErrorBody;

/// Everything a `kumo` command can fail with. The message of each variant is
/// what the user reads after `error: `; sources are appended by [`error_line`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No token, or the saved one has expired.
    #[error("not logged in (run kumo login)")]
    NotLoggedIn,

    /// Neither `--endpoint`, `KUMO_ENDPOINT` nor the config file names a controller.
    #[error("no endpoint configured (pass --endpoint URL or set KUMO_ENDPOINT)")]
    NoEndpoint,

    /// The endpoint is not an http(s) URL.
    #[error("invalid endpoint '{0}' (expected a URL such as https://kumo.example:8443)")]
    BadEndpoint(String),

    /// The controller refused the request with its `{code, message}` body.
    #[error("{} ({})", .body.message, .body.code)]
    Api {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The controller's error body.
        body: ErrorBody,
    },

    /// The controller (or something in front of it) answered with an error
    /// status and a body that is not Kumo's error shape.
    #[error("{url} answered {status}{}", fmt_snippet(.snippet))]
    UnexpectedStatus {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The start of the body, on one line.
        snippet: String,
    },

    /// The controller's certificate is not signed by a CA the CLI trusts
    /// (or not for the endpoint's name).
    #[error(
        "the controller at {url} presented a certificate the CLI does not trust (give the cloud's CA with \
         --ca-cert FILE or KUMO_CA_CERT; kumo login saves it)"
    )]
    UntrustedCertificate {
        /// The request URL.
        url: String,
        /// What rustls said.
        #[source]
        source: reqwest::Error,
    },

    /// The request could not be sent or its answer not read.
    #[error("request to {url} failed")]
    Transport {
        /// The request URL.
        url: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },

    /// A success answer that does not have the expected shape.
    #[error("unexpected answer from {url}")]
    Decode {
        /// The request URL.
        url: String,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },

    /// The config file is not valid TOML or has unknown keys.
    #[error("invalid config file {}: {message}", .path.display())]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// The parser's message (without the multi-line excerpt).
        message: String,
    },

    /// A local file could not be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// A local file could not be written.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// An argument failed a check made before calling the controller.
    #[error("{0}")]
    Invalid(String),

    /// A password could not be read from the terminal or standard input.
    #[error("cannot read the password (use --password-stdin or KUMO_PASSWORD when there is no terminal)")]
    Password(#[source] io::Error),

    /// `kumo admin audit` found differences (exit code 1, like diff).
    #[error("the audit found {0} difference(s)")]
    AuditDifferences(usize),

    /// An instance that `--wait` was waiting for went to `error`.
    #[error("instance {name} ({id}) went to error: {reason}")]
    InstanceFailed {
        /// Instance id.
        id: String,
        /// Instance name.
        name: String,
        /// Its `state_reason`.
        reason: String,
    },

    /// Uploading one file of a newly registered image failed.
    #[error("uploading the {role} of image {image} failed (the image stays queued; delete it with `kumo image delete {image}`)")]
    Upload {
        /// Which file.
        role: &'static str,
        /// The image id.
        image: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// A volume or snapshot that `--wait` was waiting for went to `error`.
    #[error("{what} went to error: {reason}")]
    Failed {
        /// The resource, e.g. `volume data (vol-...)`.
        what: String,
        /// Its `state_reason`.
        reason: String,
    },

    /// `--wait` gave up.
    #[error("timed out after {secs}s waiting for {what}")]
    WaitTimeout {
        /// The `--timeout` value.
        secs: u64,
        /// Which instances were still short of their target, and their states.
        what: String,
    },

    /// Writing to standard output failed (for example a closed pipe).
    #[error("cannot write to standard output")]
    Stdout(#[source] io::Error),
}

impl Error {
    /// Whether this is a write to a closed pipe (`kumo ... | head`), which is
    /// not worth reporting.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The HTTP status if the controller answered with an error.
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        match self {
            Self::Api { status, .. } | Self::UnexpectedStatus { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn fmt_snippet(snippet: &str) -> String {
    if snippet.is_empty() {
        String::new()
    } else {
        format!(": {snippet}")
    }
}

/// The one line printed on standard error for `err`: `error: ` followed by
/// the error and each of its sources, joined by `: `, with any line breaks
/// inside a message folded into spaces.
pub fn error_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::from("error: ");
    let mut current = Some(err);
    let mut first = true;
    while let Some(e) = current {
        let text = e.to_string();
        // reqwest repeats the innermost cause in some messages; skip exact repeats.
        if !first && line.ends_with(text.as_str()) {
            current = e.source();
            continue;
        }
        if !first {
            line.push_str(": ");
        }
        line.push_str(&text);
        first = false;
        current = e.source();
    }
    one_line(&line)
}

/// Whether `err` or one of its causes says `needle`.
pub(crate) fn chain_contains(err: &(dyn std::error::Error + 'static), needle: &str) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.to_string().contains(needle) {
            return true;
        }
        current = e.source();
    }
    false
}

/// Folds runs of whitespace that contain line breaks into one space.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c == '\n' || c == '\r' {
            pending_space = true;
            continue;
        }
        if pending_space {
            while out.ends_with(' ') {
                out.pop();
            }
            out.push(' ');
            pending_space = false;
            if c == ' ' || c == '\t' {
                pending_space = true;
                continue;
            }
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str, message: &str) -> Error {
        Error::Api {
            status: reqwest::StatusCode::from_u16(status).expect("valid status"),
            body: ErrorBody { code: code.into(), message: message.into() },
        }
    }

    #[test]
    fn api_error_is_message_then_code() {
        let err = api(404, "not_found", "instance i-0123456789abcdef0 not found");
        assert_eq!(error_line(&err), "error: instance i-0123456789abcdef0 not found (not_found)");
    }

    #[test]
    fn not_logged_in() {
        assert_eq!(error_line(&Error::NotLoggedIn), "error: not logged in (run kumo login)");
    }

    #[test]
    fn sources_are_joined_with_colons() {
        let err = Error::Read {
            path: "/tmp/x".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "No such file or directory (os error 2)"),
        };
        assert_eq!(error_line(&err), "error: cannot read /tmp/x: No such file or directory (os error 2)");
    }

    #[test]
    fn multi_line_messages_become_one_line() {
        let err = Error::Invalid("first line\n  second line\r\nthird".into());
        assert_eq!(error_line(&err), "error: first line second line third");
    }

    #[test]
    fn unexpected_status_shows_a_snippet() {
        let err = Error::UnexpectedStatus {
            url: "http://h/v1/flavors".into(),
            status: reqwest::StatusCode::BAD_GATEWAY,
            snippet: "<html>bad gateway</html>".into(),
        };
        assert_eq!(error_line(&err), "error: http://h/v1/flavors answered 502 Bad Gateway: <html>bad gateway</html>");
    }

    #[test]
    fn broken_pipe_is_recognised() {
        assert!(Error::Stdout(io::Error::from(io::ErrorKind::BrokenPipe)).is_broken_pipe());
        assert!(!Error::NotLoggedIn.is_broken_pipe());
    }
}
