//! Security groups, Elastic IPs, VPCs and subnets map onto Kumo's networks,
//! which this branch does not have yet: they answer `UnsupportedOperation`
//! (never an empty success that a script would take for the truth).

use super::super::errors::{Ec2Error, Ec2Result};

/// The answer of every networking action until Kumo's networks are merged.
pub fn unsupported(action: &str) -> Ec2Result<String> {
    Err(Ec2Error::unsupported(format!(
        "{action} is not supported by this Kumo controller yet: security groups, addresses, VPCs and subnets \
         arrive with Kumo's networks"
    )))
}
