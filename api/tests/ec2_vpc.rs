//! EC2 VPCs and subnets (issue 13 item 2) mapped onto Kumo's model: a VPC is
//! a project's address space, a subnet a Kumo network with its own VLAN, the
//! default network the default VPC's subnet. Every refusal changes nothing;
//! launches into a subnet read back the same in EC2 and the native view; delete
//! order follows AWS; another project sees and touches none of it. On SQLite
//! and (when configured) PostgreSQL.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::{Method, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use serde_json::{json, Value};

use crate::ec2::{all, first, items, Ec2};

const NO_VPC: &str = "vpc-0123456789abcdef0";
const NO_SUBNET: &str = "subnet-0123456789abcdef0";

/// The VPC ids, subnet ids and native networks of the project now.
async fn inventory(c: &Cloud, t: &str, ec2: &Ec2<'_>) -> (Vec<String>, Vec<String>, Value) {
    let vpcs = all(&ec2.ok(&[("Action", "DescribeVpcs")]).await, "vpcId");
    let subnets = all(&ec2.ok(&[("Action", "DescribeSubnets")]).await, "subnetId");
    let (_, nets) = c.get("/v1/networks", t).await;
    (vpcs, subnets, nets["items"].clone())
}

async fn call(ec2: &Ec2<'_>, p: &[(&'static str, String)]) -> (StatusCode, String) {
    let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ec2.call(&p).await
}

fn net_of(subnet: &str) -> String {
    format!("net-{}", subnet.trim_start_matches("subnet-"))
}

#[tokio::test]
async fn vpcs_and_subnets_are_made_used_and_deleted_in_aws_order_and_refusals_change_nothing() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let image = c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let ec2 = Ec2::new(&c, &t).await;

        // The default VPC and its default subnet exist before any launch; the
        // native view names the same VPC.
        let b = ec2.ok(&[("Action", "DescribeVpcs")]).await;
        assert_eq!(all(&b, "isDefault"), ["true"], "{b}");
        let default_vpc = first(&b, "vpcId").unwrap();
        let b = ec2.ok(&[("Action", "DescribeSubnets")]).await;
        assert_eq!(all(&b, "vpcId"), std::slice::from_ref(&default_vpc), "{b}");
        assert_eq!(all(&b, "defaultForAz"), ["true"], "{b}");
        let default_subnet = first(&b, "subnetId").unwrap();
        let (_, net) = c.get(&format!("/v1/networks/{}", net_of(&default_subnet)), &t).await;
        assert_eq!(net["vpc_id"], json!(default_vpc), "{net}");
        assert_eq!(net["default"], json!(true), "{net}");
        let before = inventory(&c, &t, &ec2).await;

        // Bad VPCs: the wrong size, host bits, a reserved range, not a CIDR, DryRun.
        for bad in ["10.0.0.0/8", "10.0.0.0/15", "10.0.0.0/29", "10.1.0.5/16", "127.0.0.0/16", "169.254.0.0/16"] {
            ec2.err(&[("Action", "CreateVpc"), ("CidrBlock", bad)], StatusCode::BAD_REQUEST, "InvalidVpc.Range").await;
        }
        ec2.err(&[("Action", "CreateVpc"), ("CidrBlock", "ten/16")], StatusCode::BAD_REQUEST, "InvalidParameterValue")
            .await;
        ec2.err(&[("Action", "CreateVpc")], StatusCode::BAD_REQUEST, "MissingParameter").await;
        ec2.err(
            &[("Action", "CreateVpc"), ("CidrBlock", "10.50.0.0/16"), ("DryRun", "true")],
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperation",
        )
        .await;
        assert_eq!(inventory(&c, &t, &ec2).await, before, "refused CreateVpc calls changed something");

        // A VPC with a Name tag.
        let b = ec2
            .ok(&[
                ("Action", "CreateVpc"),
                ("CidrBlock", "10.50.0.0/16"),
                ("TagSpecification.1.ResourceType", "vpc"),
                ("TagSpecification.1.Tag.1.Key", "Name"),
                ("TagSpecification.1.Tag.1.Value", "app"),
            ])
            .await;
        let vpc = first(&b, "vpcId").unwrap();
        assert!(vpc.starts_with("vpc-") && vpc != default_vpc, "{b}");
        assert_eq!(
            (first(&b, "state").as_deref(), first(&b, "isDefault").as_deref()),
            (Some("available"), Some("false"))
        );
        assert_eq!(first(&b, "cidrBlock").as_deref(), Some("10.50.0.0/16"), "{b}");
        assert_eq!(first(&b, "value").as_deref(), Some("app"), "{b}");
        for (name, value) in [("tag:Name", "app"), ("is-default", "false"), ("cidr-block", "10.50.0.0/16")] {
            let b = ec2.ok(&[("Action", "DescribeVpcs"), ("Filter.1.Name", name), ("Filter.1.Value.1", value)]).await;
            assert_eq!(all(&b, "vpcId"), std::slice::from_ref(&vpc), "{name}: {b}");
        }
        let b =
            ec2.ok(&[("Action", "DescribeVpcs"), ("Filter.1.Name", "is-default"), ("Filter.1.Value.1", "true")]).await;
        assert_eq!(all(&b, "vpcId"), std::slice::from_ref(&default_vpc), "{b}");
        let with_vpc = inventory(&c, &t, &ec2).await;

        // Bad subnets: unknown VPC, outside the VPC, the wrong size, host bits,
        // the default VPC (full), DryRun.
        let subnet = |vpc: &str, cidr: &str| {
            [("Action", "CreateSubnet"), ("VpcId", vpc), ("CidrBlock", cidr)].map(|(k, v)| (k, v.to_owned()))
        };
        let refusals = [
            (subnet(NO_VPC, "10.50.1.0/24"), "InvalidVpcID.NotFound"),
            (subnet("vpc-nonsense", "10.50.1.0/24"), "InvalidVpcID.NotFound"),
            (subnet(&vpc, "10.51.0.0/24"), "InvalidSubnet.Range"),
            (subnet(&vpc, "10.50.0.0/15"), "InvalidSubnet.Range"),
            (subnet(&vpc, "10.50.0.0/29"), "InvalidSubnet.Range"),
            (subnet(&vpc, "10.50.1.9/24"), "InvalidSubnet.Range"),
            (subnet(&default_vpc, "10.50.1.0/24"), "InvalidSubnet.Range"),
        ];
        for (p, code) in refusals {
            let (s, b) = call(&ec2, &p).await;
            assert_eq!((s, all(&b, "Code")), (StatusCode::BAD_REQUEST, vec![code.to_owned()]), "{p:?}: {b}");
        }
        ec2.err(
            &[("Action", "CreateSubnet"), ("VpcId", &vpc), ("CidrBlock", "10.50.1.0/24"), ("DryRun", "true")],
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperation",
        )
        .await;
        assert_eq!(inventory(&c, &t, &ec2).await, with_vpc, "refused CreateSubnet calls changed something");

        // Two subnets, each a network with its own VLAN; an overlapping third is refused.
        let b = ec2.ok(&[("Action", "CreateSubnet"), ("VpcId", &vpc), ("CidrBlock", "10.50.1.0/24")]).await;
        let s1 = first(&b, "subnetId").unwrap();
        assert_eq!(first(&b, "vpcId").as_deref(), Some(vpc.as_str()), "{b}");
        assert_eq!(first(&b, "availableIpAddressCount").as_deref(), Some("253"), "{b}");
        let b = ec2
            .ok(&[
                ("Action", "CreateSubnet"),
                ("VpcId", &vpc),
                ("CidrBlock", "10.50.2.0/24"),
                ("TagSpecification.1.ResourceType", "subnet"),
                ("TagSpecification.1.Tag.1.Key", "tier"),
                ("TagSpecification.1.Tag.1.Value", "db"),
            ])
            .await;
        let s2 = first(&b, "subnetId").unwrap();
        let with_subnets = inventory(&c, &t, &ec2).await;
        for cidr in ["10.50.1.128/25", "10.50.0.0/16", "10.50.2.0/23"] {
            let (s, b) = call(&ec2, &subnet(&vpc, cidr)).await;
            assert_eq!(
                (s, all(&b, "Code")),
                (StatusCode::BAD_REQUEST, vec!["InvalidSubnet.Conflict".to_owned()]),
                "{b}"
            );
        }
        assert_eq!(inventory(&c, &t, &ec2).await, with_subnets);
        let (_, n1) = c.get(&format!("/v1/networks/{}", net_of(&s1)), &t).await;
        let (_, n2) = c.get(&format!("/v1/networks/{}", net_of(&s2)), &t).await;
        assert_eq!((n1["vpc_id"].as_str(), n2["vpc_id"].as_str()), (Some(vpc.as_str()), Some(vpc.as_str())));
        assert_eq!((n1["cidr"].as_str(), n2["cidr"].as_str()), (Some("10.50.1.0/24"), Some("10.50.2.0/24")));
        assert_ne!(n1["vlan_id"], n2["vlan_id"], "each subnet has its own VLAN");
        assert_eq!(with_subnets.2.as_array().unwrap().len(), before.2.as_array().unwrap().len() + 2);
        let b = ec2.ok(&[("Action", "DescribeSubnets"), ("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)]).await;
        let mut got = all(&b, "subnetId");
        got.sort();
        let mut want = vec![s1.clone(), s2.clone()];
        want.sort();
        assert_eq!(got, want, "{b}");
        for (name, value) in [("tag:tier", "db"), ("cidr-block", "10.50.2.0/24"), ("default-for-az", "false")] {
            let b = ec2
                .ok(&[
                    ("Action", "DescribeSubnets"),
                    ("Filter.1.Name", "vpc-id"),
                    ("Filter.1.Value.1", &vpc),
                    ("Filter.2.Name", name),
                    ("Filter.2.Value.1", value),
                ])
                .await;
            let expected = if name == "default-for-az" { 2 } else { 1 };
            assert_eq!(all(&b, "subnetId").len(), expected, "{name}: {b}");
        }
        let zone =
            first(&ec2.ok(&[("Action", "DescribeSubnets"), ("SubnetId.1", &s1)]).await, "availabilityZone").unwrap();
        let b = ec2
            .ok(&[("Action", "DescribeSubnets"), ("Filter.1.Name", "availability-zone"), ("Filter.1.Value.1", &zone)])
            .await;
        assert!(all(&b, "subnetId").contains(&s1), "{b}");

        // A group in the VPC; launch into the first subnet with it.
        ec2.err(
            &[("Action", "CreateSecurityGroup"), ("GroupName", "x"), ("GroupDescription", "x"), ("VpcId", NO_VPC)],
            StatusCode::BAD_REQUEST,
            "InvalidVpcID.NotFound",
        )
        .await;
        let b = ec2
            .ok(&[
                ("Action", "CreateSecurityGroup"),
                ("GroupName", "app"),
                ("GroupDescription", "app"),
                ("VpcId", &vpc),
            ])
            .await;
        let sg = first(&b, "groupId").unwrap();
        let b = ec2.ok(&[("Action", "DescribeSecurityGroups"), ("GroupId.1", &sg)]).await;
        assert_eq!(all(&b, "vpcId"), std::slice::from_ref(&vpc), "{b}");
        let b = ec2
            .ok(&[
                ("Action", "DescribeSecurityGroups"),
                ("Filter.1.Name", "vpc-id"),
                ("Filter.1.Value.1", &default_vpc),
                ("Filter.2.Name", "group-name"),
                ("Filter.2.Value.1", "app"),
            ])
            .await;
        assert!(all(&b, "groupId").is_empty(), "a group of another VPC: {b}");
        let out = ec2
            .ok(&[
                ("Action", "RunInstances"),
                ("ImageId", &image),
                ("InstanceType", "mini"),
                ("MinCount", "1"),
                ("MaxCount", "1"),
                ("SubnetId", &s1),
                ("SecurityGroupId.1", &sg),
            ])
            .await;
        let inst = first(&out, "instanceId").unwrap();
        let b = ec2.ok(&[("Action", "DescribeInstances"), ("InstanceId.1", &inst)]).await;
        let i = &items(&items(&b, "reservationSet")[0], "instancesSet")[0];
        let (_, native) = c.get(&format!("/v1/instances/{inst}"), &t).await;
        let addr = &native["addresses"][0];
        assert_eq!(addr["network_id"].as_str(), Some(net_of(&s1).as_str()), "{native}");
        assert_eq!(addr["ip"].as_str(), Some("10.50.1.2"), "{native}");
        assert_eq!(first(i, "subnetId").as_deref(), Some(s1.as_str()), "{i}");
        assert_eq!(first(i, "vpcId").as_deref(), Some(vpc.as_str()), "{i}");
        assert_eq!(first(i, "privateIpAddress").as_deref(), Some("10.50.1.2"), "{i}");
        for (name, value) in [("vpc-id", vpc.as_str()), ("subnet-id", s1.as_str())] {
            let b =
                ec2.ok(&[("Action", "DescribeInstances"), ("Filter.1.Name", name), ("Filter.1.Value.1", value)]).await;
            assert_eq!(all(&b, "instanceId"), std::slice::from_ref(&inst), "{name}: {b}");
        }
        let b = ec2
            .ok(&[("Action", "DescribeNetworkInterfaces"), ("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &vpc)])
            .await;
        let enis = items(&b, "networkInterfaceSet");
        assert_eq!(enis.len(), 1, "{b}");
        assert_eq!(first(&enis[0], "subnetId").as_deref(), Some(s1.as_str()), "{b}");
        assert_eq!(first(&enis[0], "privateIpAddress").as_deref(), Some("10.50.1.2"), "{b}");
        let b = ec2.ok(&[("Action", "DescribeSubnets"), ("SubnetId.1", &s1)]).await;
        assert_eq!(first(&b, "availableIpAddressCount").as_deref(), Some("252"), "{b}");

        // Another project sees and touches none of it.
        let t2 = c.tenant("rival").await;
        let other = Ec2::new(&c, &t2).await;
        let b = other.ok(&[("Action", "DescribeVpcs")]).await;
        assert!(!b.contains(&vpc), "{b}");
        let b = other.ok(&[("Action", "DescribeSubnets")]).await;
        assert!(!b.contains(&s1) && !b.contains(&s2), "{b}");
        other
            .err(&[("Action", "DescribeVpcs"), ("VpcId.1", &vpc)], StatusCode::BAD_REQUEST, "InvalidVpcID.NotFound")
            .await;
        other.err(&[("Action", "DeleteVpc"), ("VpcId", &vpc)], StatusCode::BAD_REQUEST, "InvalidVpcID.NotFound").await;
        other
            .err(&[("Action", "DeleteSubnet"), ("SubnetId", &s2)], StatusCode::BAD_REQUEST, "InvalidSubnetID.NotFound")
            .await;
        other
            .err(
                &[("Action", "CreateSubnet"), ("VpcId", &vpc), ("CidrBlock", "10.50.9.0/24")],
                StatusCode::BAD_REQUEST,
                "InvalidVpcID.NotFound",
            )
            .await;
        other
            .err(
                &[
                    ("Action", "RunInstances"),
                    ("ImageId", &image),
                    ("InstanceType", "mini"),
                    ("MinCount", "1"),
                    ("MaxCount", "1"),
                    ("SubnetId", &s1),
                ],
                StatusCode::BAD_REQUEST,
                "InvalidSubnetID.NotFound",
            )
            .await;
        other
            .err(
                &[("Action", "CreateTags"), ("ResourceId.1", &vpc), ("Tag.1.Key", "k"), ("Tag.1.Value", "v")],
                StatusCode::BAD_REQUEST,
                "InvalidVpcID.NotFound",
            )
            .await;

        // Delete order: the VPC waits for its subnets, a subnet for its instances.
        let with_instance = inventory(&c, &t, &ec2).await;
        ec2.err(&[("Action", "DeleteVpc"), ("VpcId", &vpc)], StatusCode::BAD_REQUEST, "DependencyViolation").await;
        ec2.err(
            &[("Action", "DeleteVpc"), ("VpcId", &vpc), ("DryRun", "true")],
            StatusCode::BAD_REQUEST,
            "DependencyViolation",
        )
        .await;
        ec2.err(&[("Action", "DeleteSubnet"), ("SubnetId", &s1)], StatusCode::BAD_REQUEST, "DependencyViolation").await;
        ec2.err(
            &[("Action", "DeleteSubnet"), ("SubnetId", NO_SUBNET)],
            StatusCode::BAD_REQUEST,
            "InvalidSubnetID.NotFound",
        )
        .await;
        ec2.err(&[("Action", "DeleteVpc"), ("VpcId", NO_VPC)], StatusCode::BAD_REQUEST, "InvalidVpcID.NotFound").await;
        ec2.err(
            &[("Action", "DeleteSubnet"), ("SubnetId", &s2), ("DryRun", "true")],
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperation",
        )
        .await;
        assert_eq!(inventory(&c, &t, &ec2).await, with_instance, "refused deletes changed something");
        ec2.ok(&[
            ("Action", "CreateTags"),
            ("ResourceId.1", &s2),
            ("ResourceId.2", &vpc),
            ("Tag.1.Key", "k"),
            ("Tag.1.Value", "v"),
        ])
        .await;
        ec2.ok(&[("Action", "DeleteSubnet"), ("SubnetId", &s2)]).await;
        ec2.err(&[("Action", "DeleteSubnet"), ("SubnetId", &s2)], StatusCode::BAD_REQUEST, "InvalidSubnetID.NotFound")
            .await;
        let (s, _) = c.get(&format!("/v1/networks/{}", net_of(&s2)), &t).await;
        assert_eq!(s, StatusCode::NOT_FOUND);

        // Once the instance is gone its subnet goes, then (after its group) the VPC.
        ec2.ok(&[("Action", "TerminateInstances"), ("InstanceId.1", &inst)]).await;
        for _ in 0..5 {
            agent.converge(&c).await;
        }
        c.wait_state(&t, &inst, "deleted").await;
        ec2.ok(&[("Action", "DeleteSubnet"), ("SubnetId", &s1)]).await;
        ec2.err(&[("Action", "DeleteVpc"), ("VpcId", &vpc)], StatusCode::BAD_REQUEST, "DependencyViolation").await;
        ec2.ok(&[("Action", "DeleteSecurityGroup"), ("GroupId", &sg)]).await;
        ec2.err(
            &[("Action", "DeleteVpc"), ("VpcId", &vpc), ("DryRun", "true")],
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperation",
        )
        .await;
        ec2.ok(&[("Action", "DeleteVpc"), ("VpcId", &vpc)]).await;
        ec2.err(&[("Action", "DeleteVpc"), ("VpcId", &vpc)], StatusCode::BAD_REQUEST, "InvalidVpcID.NotFound").await;
        assert_eq!(inventory(&c, &t, &ec2).await, before, "everything made is gone");
        let b = ec2.ok(&[("Action", "DescribeTags")]).await;
        assert!(!b.contains(&vpc) && !b.contains(&s2), "tags of deleted resources: {b}");
    }
}

#[tokio::test]
async fn native_networks_are_their_own_vpcs_and_the_vpcs_quota_is_enforced() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let ec2 = Ec2::new(&c, &t).await;

        // A network made by the native API shows as a VPC of its own with its
        // digits, not the default one; deleting it removes that VPC too.
        let (s, net) = c.post("/v1/networks", &t, json!({"name": "back", "cidr": "10.20.0.0/24"})).await;
        assert_eq!(s, StatusCode::CREATED, "{net}");
        let hex = net["id"].as_str().unwrap().trim_start_matches("net-").to_owned();
        assert_eq!(net["vpc_id"], json!(format!("vpc-{hex}")), "{net}");
        let b = ec2.ok(&[("Action", "DescribeVpcs"), ("VpcId.1", &format!("vpc-{hex}"))]).await;
        assert_eq!(items(&b, "vpcSet").len(), 1, "{b}");
        assert_eq!(
            (first(&b, "cidrBlock"), first(&b, "isDefault")),
            (Some("10.20.0.0/24".into()), Some("false".into()))
        );
        ec2.err(
            &[("Action", "CreateSubnet"), ("VpcId", &format!("vpc-{hex}")), ("CidrBlock", "10.20.0.0/25")],
            StatusCode::BAD_REQUEST,
            "InvalidSubnet.Conflict",
        )
        .await;
        ec2.err(
            &[("Action", "DeleteVpc"), ("VpcId", &format!("vpc-{hex}"))],
            StatusCode::BAD_REQUEST,
            "DependencyViolation",
        )
        .await;
        let (s, _) = c.delete(&format!("/v1/networks/{}", net["id"].as_str().unwrap()), &t).await;
        assert_eq!(s, StatusCode::OK);
        ec2.err(
            &[("Action", "DescribeVpcs"), ("VpcId.1", &format!("vpc-{hex}"))],
            StatusCode::BAD_REQUEST,
            "InvalidVpcID.NotFound",
        )
        .await;

        // The vpcs quota counts CreateVpc's VPCs only.
        let (s, b) = c.call(Method::PUT, "/v1/projects/acme/quotas", Some(&c.admin), Some(json!({"vpcs": 1}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let vpcs_before = all(&ec2.ok(&[("Action", "DescribeVpcs")]).await, "vpcId");
        let b = ec2.ok(&[("Action", "CreateVpc"), ("CidrBlock", "10.60.0.0/16")]).await;
        let vpc = first(&b, "vpcId").unwrap();
        let b = ec2
            .err(&[("Action", "CreateVpc"), ("CidrBlock", "10.61.0.0/16")], StatusCode::BAD_REQUEST, "VpcLimitExceeded")
            .await;
        assert!(b.contains("vpcs"), "{b}");
        assert_eq!(all(&ec2.ok(&[("Action", "DescribeVpcs")]).await, "vpcId").len(), vpcs_before.len() + 1);
        let (_, q) = c.get("/v1/quotas", &t).await;
        let used = q["quotas"].as_array().unwrap().iter().find(|q| q["resource"] == "vpcs").unwrap().clone();
        assert_eq!((used["limit"].as_i64(), used["in_use"].as_u64()), (Some(1), Some(1)), "{q}");

        // Subnets are networks: the networks quota bounds them (SubnetLimitExceeded).
        let (s, b) =
            c.call(Method::PUT, "/v1/projects/acme/quotas", Some(&c.admin), Some(json!({"networks": 1}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        ec2.ok(&[("Action", "DescribeSubnets")]).await; // the default network is made, and counts
        ec2.err(
            &[("Action", "CreateSubnet"), ("VpcId", &vpc), ("CidrBlock", "10.60.1.0/24")],
            StatusCode::BAD_REQUEST,
            "SubnetLimitExceeded",
        )
        .await;
        ec2.ok(&[("Action", "DeleteVpc"), ("VpcId", &vpc)]).await;
    }
}

/// An install made before migration 0023: its tenant networks become VPCs of
/// their own with the ids EC2 showed before (`vpc-X`, `subnet-X` for `net-X`),
/// the default network the default VPC's subnet, external networks none.
#[tokio::test]
async fn existing_networks_migrate_to_their_own_vpcs_with_the_ids_ec2_showed() {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let url = common::fresh_db_url(backend, dir.path()).await;
        // The schema before 0023, with a project's networks in it.
        let old = tempfile::tempdir().unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if name.as_str() < "0023" {
                std::fs::copy(e.path(), old.path().join(&name)).unwrap();
            }
        }
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&mut conn).await.unwrap();
        let (a, b, x) = ("0000000000000000a", "0000000000000000b", "0000000000000000c");
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ('prj-00000000000000001', 'old', 0)")
            .execute(&mut conn)
            .await
            .unwrap();
        for (hex, name, cidr, vlan, external, default) in [
            (a, "default", "10.0.100.0/24", 100, 0, 1),
            (b, "back", "10.20.0.0/24", 101, 0, 0),
            (x, "public", "203.0.113.0/29", 102, 1, 0),
        ] {
            let gateway = cidr.replace(".0/", ".1/");
            sqlx::query(
                "INSERT INTO networks (id, project_id, name, cidr, gateway, vlan_id, external, is_default, created_by, \
                 created_at) VALUES ($1, 'prj-00000000000000001', $2, $3, $4, $5, $6, $7, 'admin', 0)",
            )
            .bind(format!("net-{hex}"))
            .bind(name)
            .bind(cidr)
            .bind(gateway.split('/').next().unwrap().to_owned())
            .bind(vlan as i64)
            .bind(external as i64)
            .bind(default as i64)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        conn.close().await.unwrap();

        // The controller applies 0023 on start.
        let c = common::cloud_on(dir, url.clone(), |_| {}).await;
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let rows = sqlx::query("SELECT id, vpc_id FROM networks ORDER BY vlan_id").fetch_all(&mut conn).await.unwrap();
        let got: Vec<(String, Option<String>)> =
            rows.iter().map(|r| (r.try_get("id").unwrap(), r.try_get("vpc_id").unwrap())).collect();
        assert_eq!(
            got,
            [
                (format!("net-{a}"), Some(format!("vpc-{a}"))),
                (format!("net-{b}"), Some(format!("vpc-{b}"))),
                (format!("net-{x}"), None)
            ]
        );
        let (s, body) = c
            .post("/v1/users", &c.admin, json!({"name": "old-user", "password": "password-123", "project": "old"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        let t = c.login("old-user", "password-123").await;
        let ec2 = Ec2::new(&c, &t).await;
        let b1 =
            ec2.ok(&[("Action", "DescribeVpcs"), ("Filter.1.Name", "is-default"), ("Filter.1.Value.1", "true")]).await;
        assert_eq!(all(&b1, "vpcId"), [format!("vpc-{a}")], "{b1}");
        let subnets = ec2.ok(&[("Action", "DescribeSubnets")]).await;
        let mut ids = all(&subnets, "subnetId");
        ids.sort();
        assert_eq!(ids, [format!("subnet-{a}"), format!("subnet-{b}")], "{subnets}");
        let vpcs = all(&ec2.ok(&[("Action", "DescribeVpcs")]).await, "vpcId");
        assert_eq!(vpcs.len(), 2, "no second default VPC: {vpcs:?}");
        let (_, net) = c.get(&format!("/v1/networks/net-{b}"), &t).await;
        assert_eq!(net["vpc_id"], json!(format!("vpc-{b}")), "{net}");
        // Deleting a migrated network takes its VPC with it.
        let (s, _) = c.delete(&format!("/v1/networks/net-{b}"), &t).await;
        assert_eq!(s, StatusCode::OK);
        ec2.err(
            &[("Action", "DescribeVpcs"), ("VpcId.1", &format!("vpc-{b}"))],
            StatusCode::BAD_REQUEST,
            "InvalidVpcID.NotFound",
        )
        .await;
    }
}
