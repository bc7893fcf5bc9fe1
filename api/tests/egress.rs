//! Issue 13: egress security-group rules through the native API, the EC2 API
//! and the agent's sync, and migration 0024's default egress rule for groups
//! made before it. On SQLite and (when configured) PostgreSQL.

#![allow(clippy::unwrap_used)]

use crate::common;
use crate::ec2::{all, Ec2};

use axum::http::{Method, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use kumo_wire::network::Protocol;
use serde_json::{json, Value};

/// Expects `status` and a message containing `needle`.
fn refused(got: (StatusCode, Value), status: StatusCode, needle: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let msg = got.1["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "expected '{needle}' in '{msg}'");
}

async fn shown(c: &Cloud, t: &str, group: &str) -> Value {
    let (s, g) = c.get(&format!("/v1/security-groups/{group}"), t).await;
    assert_eq!(s, StatusCode::OK, "{g}");
    g
}

/// A group's rules of one direction as (protocol, ports, cidr, group name).
fn rules_of(g: &Value, direction: &str) -> Vec<(String, Value, Value, Value)> {
    g["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["direction"] == direction)
        .map(|r| {
            (
                r["protocol"].as_str().unwrap().to_owned(),
                r["ports"].clone(),
                r["cidr"].clone(),
                r["source_group"].clone(),
            )
        })
        .collect()
}

fn allow_all() -> (String, Value, Value, Value) {
    ("any".into(), Value::Null, json!("0.0.0.0/0"), Value::Null)
}

#[tokio::test]
async fn native_egress_rules_default_duplicates_errors_and_quotas() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let other = c.tenant("umbrella").await;
        let (s, web) = c.post("/v1/security-groups", &t, json!({"name": "web"})).await;
        assert_eq!(s, StatusCode::CREATED, "{web}");
        // AWS's default egress rule, as a real rule with an id derived from the group's.
        assert_eq!(rules_of(&web, "egress"), [allow_all()], "{web}");
        assert!(rules_of(&web, "ingress").is_empty(), "{web}");
        let hex = web["id"].as_str().unwrap().trim_start_matches("sg-").to_owned();
        let default_rule = format!("sgr-{hex}");
        assert_eq!(web["rules"][0]["id"], default_rule.as_str());
        c.post("/v1/security-groups", &t, json!({"name": "db"})).await;
        c.post("/v1/security-groups", &other, json!({"name": "theirs"})).await;

        let https = json!({"direction": "egress", "protocol": "tcp", "ports": {"first": 443, "last": 443},
                           "cidr": "192.0.2.0/24"});
        let (s, g) = c.post("/v1/security-groups/web/rules", &t, https.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        let (s, g) = c
            .post(
                "/v1/security-groups/web/rules",
                &t,
                json!({"direction": "egress", "protocol": "tcp", "ports": {"first": 5432, "last": 5432},
                       "destination_group": "db"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        // The same rule inbound is another rule (old clients send no direction: inbound).
        let (s, g) = c
            .post(
                "/v1/security-groups/web/rules",
                &t,
                json!({"protocol": "tcp", "ports": {"first": 443, "last": 443}, "cidr": "192.0.2.0/24"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        let port = |p: u16| json!({"first": p, "last": p});
        assert_eq!(
            rules_of(&g, "egress"),
            [
                allow_all(),
                ("tcp".into(), port(443), json!("192.0.2.0/24"), Value::Null),
                ("tcp".into(), port(5432), Value::Null, json!("db")),
            ],
            "{g}"
        );
        assert_eq!(rules_of(&g, "ingress"), [("tcp".into(), port(443), json!("192.0.2.0/24"), Value::Null)]);

        // Bad input: refused, nothing changed.
        let bad = [
            (https.clone(), StatusCode::CONFLICT, "already has this egress rule"),
            (json!({"direction": "egress", "protocol": "tcp"}), StatusCode::UNPROCESSABLE_ENTITY, "destination group"),
            (
                json!({"direction": "out", "protocol": "tcp", "cidr": "0.0.0.0/0"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "direction",
            ),
            (
                json!({"direction": "egress", "protocol": "icmp", "ports": {"first": 1, "last": 2}, "cidr": "0.0.0.0/0"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "no ports",
            ),
            (
                json!({"direction": "egress", "protocol": "tcp", "cidr": "10.0.0.1/8"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "host bits",
            ),
            (
                json!({"direction": "egress", "protocol": "tcp", "destination_group": "theirs"}),
                StatusCode::NOT_FOUND,
                "theirs",
            ),
        ];
        for (body, status, needle) in bad {
            refused(c.post("/v1/security-groups/web/rules", &t, body).await, status, needle);
        }
        assert_eq!(shown(&c, &t, "web").await["rules"], g["rules"], "{backend}: nothing changed");
        // Another project can neither add nor remove web's egress rules.
        refused(
            c.post("/v1/security-groups/web/rules", &other, https.clone()).await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        let web_id = web["id"].as_str().unwrap();
        refused(
            c.delete(&format!("/v1/security-groups/{web_id}/rules/{default_rule}"), &other).await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        assert_eq!(shown(&c, &t, "web").await["rules"], g["rules"], "{backend}: nothing changed");
        // A group named as an egress destination stays until that rule goes.
        refused(c.delete("/v1/security-groups/db", &t).await, StatusCode::CONFLICT, "source of rules in web");

        // The default egress rule is removable like any other, and can come back.
        let (s, after) = c.delete(&format!("/v1/security-groups/web/rules/{default_rule}"), &t).await;
        assert_eq!(s, StatusCode::OK, "{after}");
        assert!(!rules_of(&after, "egress").contains(&allow_all()), "{after}");
        let (s, after) = c
            .post(
                "/v1/security-groups/web/rules",
                &t,
                json!({"direction": "egress", "protocol": "any", "cidr": "0.0.0.0/0"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{after}");
        assert_eq!(rules_of(&after, "egress").len(), 3);

        // The rules-per-group quota counts both directions.
        let n = after["rules"].as_array().unwrap().len();
        assert_eq!(n, 4);
        let limits = json!({ "rules_per_group": n });
        let (s, b) = c.call(Method::PUT, "/v1/projects/acme/quotas", Some(&c.admin), Some(limits)).await;
        assert!(s.is_success(), "{b}");
        for body in [
            json!({"direction": "egress", "protocol": "udp", "cidr": "0.0.0.0/0"}),
            json!({"direction": "ingress", "protocol": "udp", "cidr": "0.0.0.0/0"}),
        ] {
            let (s, b) = c.post("/v1/security-groups/web/rules", &t, body).await;
            assert_eq!((s, b["code"].as_str()), (StatusCode::FORBIDDEN, Some("quota_exceeded")), "{b}");
        }
        assert_eq!(shown(&c, &t, "web").await["rules"].as_array().unwrap().len(), n);
    }
}

/// An egress rule as the agent gets it: (protocol, ports, destination).
type Egress = (Protocol, Option<(u16, u16)>, String);

#[tokio::test]
async fn the_agent_gets_each_ports_egress_rules_resolved() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        for name in ["web", "db"] {
            c.post("/v1/security-groups", &t, json!({"name": name})).await;
        }
        let mut ids = Vec::new();
        for (name, group) in [("front", "web"), ("back", "db")] {
            let body = json!({"name": name, "flavor": "mini", "security_groups": [group]});
            let (s, b) = c.post("/v1/instances", &t, body).await;
            assert_eq!(s, StatusCode::ACCEPTED, "{b}");
            let id = b["instances"][0]["id"].as_str().unwrap().to_owned();
            c.wait_state(&t, &id, "building").await;
            ids.push(id);
        }
        let (s, g) = c
            .post(
                "/v1/security-groups/web/rules",
                &t,
                json!({"direction": "egress", "protocol": "tcp", "ports": {"first": 5432, "last": 5432},
                       "destination_group": "db"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        let egress_of = |d: &kumo_wire::agent::SyncResponse, id: &str| -> (Option<Vec<Egress>>, String) {
            let i = d.instances.iter().find(|i| i.id.as_str() == id).unwrap();
            let p = &i.ports[0];
            let rules = p.egress.as_ref().map(|rules| {
                let mut v: Vec<Egress> = rules
                    .iter()
                    .map(|r| (r.protocol, r.ports.map(|p| (p.first, p.last)), r.destination.to_string()))
                    .collect();
                v.sort_by_key(|r| r.2.clone());
                v
            });
            (rules, p.ip.to_string())
        };
        let d = agent.sync(&c, vec![]).await;
        let (front, _) = egress_of(&d, &ids[0]);
        let (back, back_ip) = egress_of(&d, &ids[1]);
        let mut want = vec![
            (Protocol::Any, None, "0.0.0.0/0".to_owned()),
            (Protocol::Tcp, Some((5432, 5432)), format!("{back_ip}/32")),
        ];
        want.sort_by_key(|r| r.2.clone());
        assert_eq!(front, Some(want), "{backend}: the default rule and the destination group's member");
        assert_eq!(back, Some(vec![(Protocol::Any, None, "0.0.0.0/0".to_owned())]));

        // Without the default rule front may reach back's 5432 only.
        let default_rule = g["rules"].as_array().unwrap().iter().find(|r| r["cidr"] == "0.0.0.0/0").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (s, b) = c.delete(&format!("/v1/security-groups/web/rules/{default_rule}"), &t).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let d1 = agent.sync(&c, vec![]).await;
        assert_ne!(d1.revision, d.revision);
        assert_eq!(egress_of(&d1, &ids[0]).0, Some(vec![(Protocol::Tcp, Some((5432, 5432)), format!("{back_ip}/32"))]));
        assert_eq!(egress_of(&d1, &ids[1]).0, back, "back's group did not change");
    }
}

#[tokio::test]
async fn ec2_authorize_and_revoke_egress_with_aws_errors() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let other = c.tenant("umbrella").await;
        let ec2 = Ec2::new(&c, &t).await;
        let theirs = Ec2::new(&c, &other).await;
        let create =
            |name: &'static str| [("Action", "CreateSecurityGroup"), ("GroupName", name), ("GroupDescription", "d")];
        let sg = all(&ec2.ok(&create("web")).await, "groupId").remove(0);
        let db = all(&ec2.ok(&create("db")).await, "groupId").remove(0);
        let their_sg = all(&theirs.ok(&create("theirs")).await, "groupId").remove(0);
        let describe = |b: &str| (all(b, "ipPermissions").concat(), all(b, "ipPermissionsEgress").concat());
        let b = ec2.ok(&[("Action", "DescribeSecurityGroups"), ("GroupId.1", &sg)]).await;
        let (ingress, egress) = describe(&b);
        assert_eq!(ingress, "", "{b}");
        assert_eq!(
            egress,
            "<item><ipProtocol>-1</ipProtocol><groups></groups><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item>\
             </ipRanges><ipv6Ranges></ipv6Ranges><prefixListIds></prefixListIds></item>",
            "{b}"
        );

        let allow = [
            ("Action", "AuthorizeSecurityGroupEgress"),
            ("GroupId", sg.as_str()),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "8080"),
            ("IpPermissions.1.ToPort", "8080"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "10.9.0.0/16"),
            ("IpPermissions.1.Groups.1.GroupId", db.as_str()),
        ];
        // DryRun: 412 when it would succeed, and nothing is added.
        ec2.err(&[&allow[..], &[("DryRun", "true")]].concat(), StatusCode::PRECONDITION_FAILED, "DryRunOperation")
            .await;
        let rules = |b: String| all(&b, "securityGroupRuleId").len();
        let count = || async {
            rules(
                ec2.ok(&[
                    ("Action", "DescribeSecurityGroupRules"),
                    ("Filter.1.Name", "group-id"),
                    ("Filter.1.Value.1", &sg),
                ])
                .await,
            )
        };
        assert_eq!(count().await, 1);
        ec2.ok(&allow).await;
        let b = ec2
            .ok(&[("Action", "DescribeSecurityGroupRules"), ("Filter.1.Name", "group-id"), ("Filter.1.Value.1", &sg)])
            .await;
        assert_eq!(all(&b, "isEgress"), ["true", "true", "true"], "{b}");
        assert_eq!(all(&b, "cidrIpv4"), ["0.0.0.0/0", "10.9.0.0/16"], "{b}");
        assert_eq!(all(&b, "fromPort"), ["-1", "8080", "8080"], "{b}");
        let b = ec2.ok(&[("Action", "DescribeSecurityGroups"), ("GroupId.1", &sg)]).await;
        let (ingress, egress) = describe(&b);
        assert_eq!(ingress, "", "{b}");
        assert!(
            egress.contains(
                "<fromPort>8080</fromPort><toPort>8080</toPort><groups></groups><ipRanges><item><cidrIp>10.9.0.0/16"
            ),
            "{b}"
        );
        assert!(egress.contains(&format!("<groupId>{db}</groupId>")), "{b}");
        // The native API shows them as egress rules.
        let native = shown(&c, &t, &sg).await;
        assert_eq!(rules_of(&native, "egress").len(), 3, "{native}");

        // Errors change nothing: a duplicate (also under DryRun), a rule not
        // there (beside one that is), another project's group or destination.
        ec2.err(&allow, StatusCode::BAD_REQUEST, "InvalidPermission.Duplicate").await;
        ec2.err(&[&allow[..], &[("DryRun", "true")]].concat(), StatusCode::BAD_REQUEST, "InvalidPermission.Duplicate")
            .await;
        let revoke_both = [
            ("Action", "RevokeSecurityGroupEgress"),
            ("GroupId", sg.as_str()),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "8080"),
            ("IpPermissions.1.ToPort", "8080"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "10.9.0.0/16"),
            ("IpPermissions.2.IpProtocol", "udp"),
            ("IpPermissions.2.FromPort", "53"),
            ("IpPermissions.2.ToPort", "53"),
            ("IpPermissions.2.IpRanges.1.CidrIp", "10.9.0.0/16"),
        ];
        ec2.err(&revoke_both, StatusCode::BAD_REQUEST, "InvalidPermission.NotFound").await;
        // The egress rule is not an ingress rule.
        let revoke_in: Vec<(&str, &str)> = revoke_both[..6]
            .iter()
            .map(|&(k, v)| if k == "Action" { (k, "RevokeSecurityGroupIngress") } else { (k, v) })
            .collect();
        ec2.err(&revoke_in, StatusCode::BAD_REQUEST, "InvalidPermission.NotFound").await;
        theirs.err(&allow, StatusCode::BAD_REQUEST, "InvalidGroup.NotFound").await;
        let to_theirs = [
            ("Action", "AuthorizeSecurityGroupEgress"),
            ("GroupId", sg.as_str()),
            ("IpPermissions.1.IpProtocol", "-1"),
            ("IpPermissions.1.Groups.1.GroupId", their_sg.as_str()),
        ];
        ec2.err(&to_theirs, StatusCode::BAD_REQUEST, "InvalidGroup.NotFound").await;
        let missing = [("Action", "AuthorizeSecurityGroupEgress"), ("GroupId", sg.as_str())];
        ec2.err(&missing, StatusCode::BAD_REQUEST, "MissingParameter").await;
        // IPv6: no group holds such a rule, so revoking AWS's default `::/0`
        // egress rule (as Terraform does) finds nothing, and adding one is
        // refused clearly; a malformed IPv6 CIDR is named.
        let v6 = |action: &'static str, cidr: &'static str| {
            [
                ("Action", action),
                ("GroupId", sg.as_str()),
                ("IpPermissions.1.IpProtocol", "-1"),
                ("IpPermissions.1.FromPort", "0"),
                ("IpPermissions.1.ToPort", "0"),
                ("IpPermissions.1.Ipv6Ranges.1.CidrIpv6", cidr),
            ]
        };
        let b = ec2
            .err(&v6("RevokeSecurityGroupEgress", "::/0"), StatusCode::BAD_REQUEST, "InvalidPermission.NotFound")
            .await;
        assert!(b.contains("::/0"), "{b}");
        let b = ec2
            .err(&v6("AuthorizeSecurityGroupEgress", "::/0"), StatusCode::BAD_REQUEST, "InvalidParameterValue")
            .await;
        assert!(b.contains("IPv4 only"), "{b}");
        ec2.err(&v6("RevokeSecurityGroupEgress", "::zz/0"), StatusCode::BAD_REQUEST, "InvalidParameterValue").await;
        assert_eq!(count().await, 3, "{backend}: nothing changed");
        assert_eq!(shown(&c, &t, &sg).await["rules"], native["rules"]);

        // Filters on either direction's permissions.
        let filtered = |name: &'static str, value: &'static str| {
            let ec2 = &ec2;
            async move {
                all(
                    &ec2.ok(&[
                        ("Action", "DescribeSecurityGroups"),
                        ("Filter.1.Name", name),
                        ("Filter.1.Value.1", value),
                    ])
                    .await,
                    "groupName",
                )
            }
        };
        assert_eq!(filtered("egress.ip-permission.cidr", "10.9.0.0/16").await, ["web"]);
        assert_eq!(filtered("egress.ip-permission.to-port", "8080").await, ["web"]);
        assert!(filtered("ip-permission.cidr", "10.9.0.0/16").await.is_empty());
        assert_eq!(filtered("egress.ip-permission.protocol", "-1").await, ["db", "default", "web"]);

        // Revoking AWS's default egress rule (and only it).
        let revoke_default = [
            ("Action", "RevokeSecurityGroupEgress"),
            ("GroupId", sg.as_str()),
            ("IpPermissions.1.IpProtocol", "-1"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
        ];
        ec2.err(
            &[&revoke_default[..], &[("DryRun", "true")]].concat(),
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperation",
        )
        .await;
        assert_eq!(count().await, 3);
        ec2.ok(&revoke_default).await;
        ec2.err(&revoke_default, StatusCode::BAD_REQUEST, "InvalidPermission.NotFound").await;
        let b = ec2.ok(&[("Action", "DescribeSecurityGroups"), ("GroupId.1", &sg)]).await;
        assert!(!describe(&b).1.contains("0.0.0.0/0"), "{b}");
        assert_eq!(filtered("egress.ip-permission.protocol", "-1").await, ["db", "default"]);
        assert_eq!(count().await, 2);
    }
}

/// Migration 0024 on a database with groups made before it: each gets AWS's
/// default egress rule (id `sgr-` + the group's hex digits), its rules stay
/// inbound.
#[tokio::test]
async fn migration_0024_gives_existing_groups_the_default_egress_rule() {
    use sqlx::Row;
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let db_url = common::fresh_db_url(backend, dir.path()).await;
        let old = dir.path().join("migrations-before-0024");
        std::fs::create_dir(&old).unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < "0024" {
                std::fs::copy(&path, old.join(&name)).unwrap();
            }
        }
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db_url).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&pool).await.unwrap();
        let project = kumo_wire::ProjectId::generate();
        let group = kumo_wire::SecurityGroupId::generate();
        let rule = kumo_wire::SecurityGroupRuleId::generate();
        for (sql, binds) in [
            ("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, 1)", vec![project.as_str(), "old"]),
            (
                "INSERT INTO security_groups (id, project_id, name, description, is_default, created_by, created_at) \
                 VALUES ($1, $2, 'web', '', 0, 'test', 5)",
                vec![group.as_str(), project.as_str()],
            ),
            (
                "INSERT INTO security_group_rules (id, group_id, protocol, port_first, port_last, cidr, created_at) \
                 VALUES ($1, $2, 'tcp', 22, 22, '0.0.0.0/0', 6)",
                vec![rule.as_str(), group.as_str()],
            ),
        ] {
            let mut q = sqlx::query(sql);
            for b in binds {
                q = q.bind(b);
            }
            q.execute(&pool).await.unwrap();
        }
        pool.close().await;

        let c = common::cloud_on(dir, db_url, |_| {}).await;
        let rows = sqlx::query(
            "SELECT id, direction, protocol, cidr FROM security_group_rules WHERE group_id = $1 ORDER BY direction",
        )
        .bind(group.as_str())
        .fetch_all(c.controller.state.db.pool())
        .await
        .unwrap();
        let got: Vec<(String, String, String, String)> =
            rows.iter().map(|r| (r.get("id"), r.get("direction"), r.get("protocol"), r.get("cidr"))).collect();
        let hex = group.as_str().trim_start_matches("sg-");
        assert_eq!(
            got,
            [
                (format!("sgr-{hex}"), "egress".into(), "any".into(), "0.0.0.0/0".into()),
                (rule.to_string(), "ingress".into(), "tcp".into(), "0.0.0.0/0".into()),
            ],
            "{backend}"
        );
    }
}
