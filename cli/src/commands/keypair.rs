//! `kumo keypair ...`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use kumo_wire::api::{CreateKeyPair, CreatedKeyPair, KeyPair, Listing};

use crate::args::KeyPairCommand;
use crate::client::Reply;
use crate::commands::{fetch_all, Ctx};
use crate::error::Error;
use crate::output;
use crate::render;

/// Longest public key file we send (an RSA-16384 key line is about 2.8 KiB).
const MAX_PUBLIC_KEY_BYTES: u64 = 16 * 1024;

/// Runs one `kumo keypair` subcommand.
pub async fn dispatch(ctx: &Ctx, command: KeyPairCommand) -> Result<(), Error> {
    match command {
        KeyPairCommand::Import { name, public_key_file } => {
            let public_key = read_public_key(&public_key_file)?;
            let request = CreateKeyPair { name, public_key: Some(public_key) };
            let reply: Reply<CreatedKeyPair> = ctx.client()?.post(&["v1", "keypairs"], &request).await?;
            ctx.show(&reply, render::created_key_pair)
        }
        KeyPairCommand::Create { name, private_key_file } => create(ctx, name, private_key_file.as_deref()).await,
        KeyPairCommand::List => {
            let listing: Listing<KeyPair> = fetch_all(&ctx.client()?, &["v1", "keypairs"], &[]).await?;
            ctx.show_listing(&listing, "No key pairs.", render::key_pairs)
        }
        KeyPairCommand::Delete { name } => {
            ctx.client()?.delete_no_content(&["v1", "keypairs", &name]).await?;
            ctx.done(&format!("Deleted key pair {name}."))
        }
    }
}

/// Has the controller generate a pair; the private key goes to a new 0600
/// file, or to standard output with everything else on standard error.
async fn create(ctx: &Ctx, name: String, private_key_file: Option<&Path>) -> Result<(), Error> {
    if let Some(path) = private_key_file {
        check_new_file(path)?;
    }
    let request = CreateKeyPair { name, public_key: None };
    let reply: Reply<CreatedKeyPair> = ctx.client()?.post(&["v1", "keypairs"], &request).await?;
    let created = &reply.value;
    let Some(private_key) = created.private_key.as_deref() else {
        return Err(Error::Invalid(format!(
            "the controller sent no private key for key pair {}",
            created.key_pair.name
        )));
    };
    let Some(path) = private_key_file else {
        if ctx.json() {
            return output::print_json(&reply.raw);
        }
        output::note(&render::created_key_pair(created));
        output::note("The private key follows. Save it now: Kumo does not keep it and shows it only once.");
        return output::print(private_key);
    };
    if let Err(source) = write_private_key(path, private_key) {
        // The key exists only in this answer: do not lose it.
        output::print(private_key)?;
        return Err(Error::Invalid(format!(
            "cannot write {}: {source}; the private key was printed above instead (it is shown only once)",
            path.display()
        )));
    }
    if ctx.json() {
        // The key is in the file; do not also print it.
        return output::print_json_value(&CreatedKeyPair { key_pair: created.key_pair.clone(), private_key: None });
    }
    output::print(&format!(
        "{}\nPrivate key written to {} (mode 0600).",
        render::created_key_pair(created),
        path.display()
    ))
}

/// Refuses a path that exists (even as a dangling link) or whose folder does not.
fn check_new_file(path: &Path) -> Result<(), Error> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(Error::Invalid(format!("{} already exists; refusing to overwrite it", path.display())));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::Invalid(format!("folder {} does not exist", parent.display())));
    }
    Ok(())
}

/// Creates `path` (never replacing a file) with mode 0600 and writes the key.
fn write_private_key(path: &Path, key: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(key.as_bytes())?;
    if !key.ends_with('\n') {
        file.write_all(b"\n")?;
    }
    file.sync_all()
}

/// Reads an OpenSSH public key line from `path`.
fn read_public_key(path: &Path) -> Result<String, Error> {
    let read_err = |source| Error::Read { path: path.to_owned(), source };
    let meta = fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!("{} is not a regular file", path.display())));
    }
    if meta.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(Error::Invalid(format!(
            "{} is too large to be a public key ({} bytes)",
            path.display(),
            meta.len()
        )));
    }
    let text = fs::read_to_string(path).map_err(read_err)?;
    let key = text.trim();
    if key.is_empty() {
        return Err(Error::Invalid(format!("{} is empty", path.display())));
    }
    if key.contains("PRIVATE KEY") {
        return Err(Error::Invalid(format!("{} holds a private key; give the public key (.pub) file", path.display())));
    }
    if key.lines().count() > 1 {
        return Err(Error::Invalid(format!(
            "{} has more than one line; give a single OpenSSH public key",
            path.display()
        )));
    }
    Ok(key.to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn private_key_file_is_new_and_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id_kumo");
        check_new_file(&path).expect("free");
        write_private_key(&path, "KEY").expect("write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "KEY\n");
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        assert!(check_new_file(&path).is_err());
        assert!(write_private_key(&path, "OTHER").is_err());
        assert!(check_new_file(&dir.path().join("no/such/folder/key")).is_err());
    }

    #[test]
    fn public_keys_are_single_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.pub");
        fs::write(&path, "ssh-ed25519 AAAAC3Nza me@host\n").expect("write");
        assert_eq!(read_public_key(&path).expect("ok"), "ssh-ed25519 AAAAC3Nza me@host");
        fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n").expect("write");
        assert!(read_public_key(&path).is_err());
        fs::write(&path, "\n").expect("write");
        assert!(read_public_key(&path).is_err());
    }
}
