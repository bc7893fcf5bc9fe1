//! Resource names: Kumo's hostname-like names (instances, volumes, networks,
//! ...) and AWS's looser key pair and security group names. One module, so
//! every resource kind checks names the same way without importing another
//! kind's handlers.

use kumo_wire::api::MAX_NAME_LEN;

use crate::error::ApiError;

/// Checks a resource name: 1-63 of `a-z 0-9 -`, starting with a letter, not ending with `-`.
pub fn validate_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "{kind} name '{}' is invalid: use 1-{MAX_NAME_LEN} lowercase letters, digits and '-', \
             starting with a letter and not ending with '-'",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// The longest key pair or security group name, as on AWS.
pub const MAX_AWS_NAME_LEN: usize = 255;

/// Characters a security group name may hold besides ASCII letters and digits (AWS's set).
const GROUP_NAME_EXTRA: &str = " ._-:/()#,@[]+=&;{}!$*";

/// Checks a key pair name as AWS does: 1-255 printable ASCII characters
/// (mixed case, digits first, `MyKey_2024`, UUIDs).
pub fn validate_key_pair_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_AWS_NAME_LEN
        && name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && name.trim() == name;
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "key pair name '{}' is invalid: use 1-{MAX_AWS_NAME_LEN} printable ASCII characters, \
             without spaces at either end",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// Checks a security group name as AWS does: 1-255 of ASCII letters, digits,
/// spaces and `._-:/()#,@[]+=&;{}!$*`, not starting with `sg-` (ids do).
pub fn validate_group_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_AWS_NAME_LEN
        && !name.starts_with("sg-")
        && name.trim() == name
        && name.chars().all(|c| c.is_ascii_alphanumeric() || GROUP_NAME_EXTRA.contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "security group name '{}' is invalid: use 1-{MAX_AWS_NAME_LEN} of ASCII letters, digits, spaces and \
             {}, not starting with 'sg-'",
            name.chars().take(80).collect::<String>(),
            GROUP_NAME_EXTRA.trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_hostname_rules() {
        for good in ["web", "web-1", "a", &"a".repeat(63)] {
            assert!(validate_name("instance", good).is_ok(), "{good}");
        }
        for bad in ["", "Web", "1web", "web-", "web_1", "wéb", &"a".repeat(64)] {
            assert!(validate_name("instance", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_pair_and_group_names_follow_aws() {
        let long = "k".repeat(255);
        for good in ["MyKey_2024", "2024-key", "0b7e5c2a-7f0e-4c55-9f0e-2d3c4b5a6978", "my key", long.as_str()] {
            assert!(validate_key_pair_name(good).is_ok(), "{good}");
        }
        for bad in ["", " lead", "trail ", "tab\tkey", "ключ", &"k".repeat(256)] {
            assert!(validate_key_pair_name(bad).is_err(), "{bad}");
        }
        for good in ["Web Servers", "1st._-:/()#,@[]+=&;{}!$*", "MyGroup", long.as_str()] {
            assert!(validate_group_name(good).is_ok(), "{good}");
        }
        for bad in ["", "sg-123", "no%percent", "no\"quote", "naïve", " lead", &"g".repeat(256)] {
            assert!(validate_group_name(bad).is_err(), "{bad}");
        }
    }
}
