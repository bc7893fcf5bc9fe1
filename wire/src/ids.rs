//! Newtype ids. Every id carries a resource prefix (`i-`, `ami-`, ...) and 17
//! lowercase hex digits, the shape EC2 clients expect, so one id serves the
//! native API, the EC2 API and the CLI.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The number of hex digits after an id's prefix.
pub const ID_HEX_LEN: usize = 17;

/// An id string that is not of the expected `prefix-hex` shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {kind} id (expected {prefix}-followed by {ID_HEX_LEN} hex digits)")]
pub struct InvalidId {
    /// What kind of id was expected, e.g. "instance".
    pub kind: &'static str,
    /// The expected prefix, e.g. "i".
    pub prefix: &'static str,
    /// The rejected input (truncated to keep error messages short).
    pub value: String,
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new random id.
            pub fn generate() -> Self {
                let mut rng = rand::thread_rng();
                let digits: String = (0..ID_HEX_LEN)
                    .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
                    .collect();
                Self(format!("{}-{}", $prefix, digits))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                let valid = s
                    .strip_prefix(concat!($prefix, "-"))
                    .is_some_and(|hex| {
                        hex.len() == ID_HEX_LEN
                            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    });
                if valid {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(InvalidId { kind: $kind, prefix: $prefix, value: s.chars().take(64).collect() })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "-[0-9a-f]{17}$")))
                    .description(Some(concat!("A ", $kind, " id.")))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

define_id!(/// A tenant: the unit of isolation and billing.
    ProjectId, "prj", "project");
define_id!(/// A user account inside a project.
    UserId, "usr", "user");
define_id!(/// A virtual machine.
    InstanceId, "i", "instance");
define_id!(/// A bootable image (disk image or kernel+initrd pair).
    ImageId, "ami", "image");
define_id!(/// An instance size.
    FlavorId, "flv", "flavor");
define_id!(/// An SSH key pair.
    KeyPairId, "key", "key pair");
define_id!(/// A compute host running the agent.
    HostId, "host", "host");
define_id!(/// A block volume.
    VolumeId, "vol", "volume");
define_id!(/// A point-in-time copy of a volume or of an instance's root disk.
    SnapshotId, "snap", "snapshot");
define_id!(/// A project's private network (EC2 shows it as the subnet `subnet-…` with the same digits).
    NetworkId, "net", "network");
define_id!(/// A project's address space (EC2's VPC): its networks are its subnets.
    VpcId, "vpc", "VPC");
define_id!(/// An instance's attachment to a network: MAC address and fixed IP (EC2's network interface).
    PortId, "eni", "port");
define_id!(/// A set of firewall rules (inbound and outbound) applied to ports.
    SecurityGroupId, "sg", "security group");
define_id!(/// One rule of a security group.
    SecurityGroupRuleId, "sgr", "security group rule");
define_id!(/// A public address from the floating pool, mapped 1:1 to a port's fixed IP.
    FloatingIpId, "eipalloc", "floating IP");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = InstanceId::generate();
        assert_eq!(id.as_str().len(), 2 + ID_HEX_LEN);
        assert_eq!(id.as_str().parse::<InstanceId>(), Ok(id));
    }

    #[test]
    fn wrong_prefix_length_or_case_is_rejected() {
        for bad in ["ami-0123456789abcdef0", "i-0123", "i-0123456789ABCDEF0", "i-0123456789abcdef0x", "", "i-"] {
            assert!(bad.parse::<InstanceId>().is_err(), "{bad} was accepted");
        }
        let err = "nope".parse::<ImageId>().unwrap_err();
        assert_eq!(err.to_string(), "'nope' is not a valid image id (expected ami-followed by 17 hex digits)");
    }

    #[test]
    fn serde_round_trip_and_rejects_bad_ids() {
        let id = HostId::generate();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<HostId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<HostId>("\"host-zz\"").is_err());
    }
}
