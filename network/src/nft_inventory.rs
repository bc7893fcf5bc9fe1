//! What Kumo's nftables tables hold, for audits: the tables of one name in
//! every family and their chains, read with `nft -j`. Read-only.

use std::collections::BTreeMap;

use tokio::process::Command;

/// Errors while listing nftables.
#[derive(Debug, thiserror::Error)]
pub enum NftListError {
    /// `nft` could not be run.
    #[error("cannot run nft")]
    Spawn(#[source] std::io::Error),
    /// `nft` refused.
    #[error("nft {what} failed: {message}")]
    Failed {
        /// What was listed.
        what: &'static str,
        /// nft's complaint.
        message: String,
    },
    /// `nft -j` printed something that is not its JSON.
    #[error("nft {0} printed unreadable JSON")]
    Json(&'static str, #[source] serde_json::Error),
}

/// One table: its family, and its chains (sorted).
pub type NftTableChains = ((String, String), Vec<String>);

/// The tables named `table` (in every family) and their chains, sorted by family.
pub async fn list_tables(table: &str) -> Result<Vec<NftTableChains>, NftListError> {
    let mut found: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for item in nft_json("list tables", &["-j", "list", "tables"]).await? {
        if let Some(t) = item.get("table") {
            let (Some(family), Some(name)) = (t["family"].as_str(), t["name"].as_str()) else { continue };
            if name == table {
                found.entry((family.to_owned(), name.to_owned())).or_default();
            }
        }
    }
    for item in nft_json("list chains", &["-j", "list", "chains"]).await? {
        if let Some(c) = item.get("chain") {
            let (Some(family), Some(name), Some(chain)) =
                (c["family"].as_str(), c["table"].as_str(), c["name"].as_str())
            else {
                continue;
            };
            if let Some(chains) = found.get_mut(&(family.to_owned(), name.to_owned())) {
                chains.push(chain.to_owned());
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|(k, mut chains)| {
            chains.sort();
            (k, chains)
        })
        .collect())
}

async fn nft_json(what: &'static str, args: &[&str]) -> Result<Vec<serde_json::Value>, NftListError> {
    let out = Command::new("nft").args(args).output().await.map_err(NftListError::Spawn)?;
    if !out.status.success() {
        return Err(NftListError::Failed { what, message: String::from_utf8_lossy(&out.stderr).trim().to_owned() });
    }
    parse(what, &out.stdout)
}

fn parse(what: &'static str, stdout: &[u8]) -> Result<Vec<serde_json::Value>, NftListError> {
    let doc: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| NftListError::Json(what, e))?;
    Ok(doc["nftables"].as_array().cloned().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nft_json_items() {
        let out = br#"{"nftables": [{"metainfo": {"json_schema_version": 1}},
            {"chain": {"family": "inet", "table": "kumo", "name": "in_eni_0123456789abcdef0", "handle": 3}}]}"#;
        let items = parse("list chains", out).expect("json");
        assert_eq!(items.len(), 2);
        assert_eq!(items[1]["chain"]["name"], "in_eni_0123456789abcdef0");
        assert!(parse("list chains", b"not json").is_err());
    }
}
