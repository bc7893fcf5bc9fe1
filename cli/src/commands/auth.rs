//! `kumo login` and `kumo logout`, and reading passwords.

use std::io::BufRead;

use kumo_wire::api::{TokenRequest, TokenResponse};

use crate::args::{LoginArgs, PasswordArgs};
use crate::client::{Client, Reply};
use crate::commands::Ctx;
use crate::config::{self, Config};
use crate::error::Error;

/// `POST /v1/auth/tokens`, then saves endpoint, token, expiry, user name and
/// the CA file in use (`--ca-cert`, or the one saved before).
pub async fn login(ctx: &Ctx, args: LoginArgs) -> Result<(), Error> {
    let saved = Config::load(&ctx.config_path)?;
    let endpoint = config::endpoint(&saved, ctx.endpoint.as_deref())?;
    if args.username.is_empty() {
        return Err(Error::Invalid("the user name is empty".into()));
    }
    let password = read_password(&args.password, &format!("Password for {}: ", args.username))?;
    // Saved absolute, so later commands find it from any directory.
    let ca_cert = config::ca_cert(&saved, ctx.ca_cert.as_deref()).map(|p| std::path::absolute(&p).unwrap_or(p));
    let client = Client::new(&endpoint, None, ca_cert.as_deref())?;
    let request = TokenRequest { username: args.username.clone(), password };
    let reply: Reply<TokenResponse> = client.post(&["v1", "auth", "tokens"], &request).await?;
    let token = &reply.value;
    let config = Config {
        endpoint: Some(endpoint),
        token: Some(token.token.clone()),
        expires_at: Some(token.expires_at),
        username: Some(args.username.clone()),
        ca_cert,
    };
    config.save(&ctx.config_path)?;
    ctx.show(&reply, |t| {
        format!(
            "Logged in as {} (project {}, role {}); token valid until {}",
            args.username,
            t.project_id,
            t.role.as_str(),
            t.expires_at
        )
    })
}

/// Removes the saved token (the endpoint and user name stay).
pub fn logout(ctx: &Ctx) -> Result<(), Error> {
    let mut config = Config::load(&ctx.config_path)?;
    if config.token.is_none() {
        return ctx.done("Not logged in.");
    }
    config.forget_token();
    config.save(&ctx.config_path)?;
    ctx.done("Logged out.")
}

/// The password from `--password`, `--password-stdin`, `KUMO_PASSWORD`, or
/// else a prompt on the terminal, in that order.
pub fn read_password(args: &PasswordArgs, prompt: &str) -> Result<String, Error> {
    if let Some(password) = &args.password {
        return non_empty(password.clone());
    }
    if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(Error::Password)?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        return non_empty(password.to_owned());
    }
    if let Some(password) = std::env::var("KUMO_PASSWORD").ok().filter(|p| !p.is_empty()) {
        return Ok(password);
    }
    non_empty(rpassword::prompt_password(prompt).map_err(Error::Password)?)
}

fn non_empty(password: String) -> Result<String, Error> {
    if password.is_empty() {
        Err(Error::Invalid("the password is empty".into()))
    } else {
        Ok(password)
    }
}
