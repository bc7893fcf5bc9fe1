//! The AWS SDK for Rust (`aws-sdk-ec2`, a dev-dependency of this crate only) as a
//! second, independent EC2 client: the lifecycle a program written against the SDK
//! runs, against a real controller, agent, libvirtd and TCG guest. Only the endpoint
//! changes: static credentials (the stack's EC2 access key), the stack's region.

use std::time::Duration;

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{DomainType, Filter, IpPermission, IpRange, ResourceType, Tag, TagSpecification};
use aws_sdk_ec2::Client;
use kumo_tests::{enabled, Options, Stack};

const PUBLIC_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl sdk@kumo";
const WAIT: Duration = Duration::from_secs(600);

/// The SDK's configuration for a stack: only the endpoint, static credentials
/// and the region differ from a program talking to AWS. Also used by the
/// scenario engine and the crash tests.
pub(crate) fn config(endpoint: &str, id: &str, secret: &str) -> aws_sdk_ec2::config::Builder {
    // smithy's hyper client over rustls/ring: the SDK's own default HTTPS client
    // would build aws-lc (see tests/Cargo.toml).
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("kumo-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(id, secret, None, None, "kumo-e2e"))
        .http_client(http)
}

/// A client with the SDK's default retries.
pub(crate) fn client(endpoint: &str, id: &str, secret: &str) -> Client {
    Client::from_conf(config(endpoint, id, secret).build())
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

#[test]
fn the_aws_sdk_for_rust_drives_kumo() {
    if !enabled() {
        return;
    }
    let mut s = Stack::start(Options::default()).unwrap();
    s.register_tiny_image().unwrap();
    s.kumo_ok(&["network", "create", "public", "--cidr", "203.0.113.0/28", "--external"]).unwrap();
    let key = s.kumo_json(&["access-key", "create"]).unwrap();
    let (id, secret) = (key["access_key_id"].as_str().unwrap(), key["secret_access_key"].as_str().unwrap());
    let ec2 = client(&format!("{}/", s.endpoint), id, secret);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(lifecycle(&ec2));
    // Whatever happened, the stack removes the guests it knows of.
    let all = s.kumo_json(&["instance", "list", "--all"]).unwrap();
    for inst in all["items"].as_array().unwrap() {
        s.track(inst["id"].as_str().unwrap());
    }
    result.unwrap();
}

async fn lifecycle(ec2: &Client) -> anyhow::Result<()> {
    let image = ec2.describe_images().filters(filter("name", "tiny")).send().await?;
    let image_id = image.images()[0].image_id().unwrap().to_owned();
    let zone = ec2.describe_availability_zones().send().await?.availability_zones()[0].zone_name().unwrap().to_owned();

    // Key pair import and a group with an SSH rule.
    let kp = ec2.import_key_pair().key_name("sdk_key").public_key_material(Blob::new(PUBLIC_KEY)).send().await?;
    assert!(kp.key_fingerprint().unwrap().starts_with("SHA256:"), "{kp:?}");
    let sg = ec2.create_security_group().group_name("sdk-web").description("web").send().await?;
    let sg = sg.group_id().unwrap().to_owned();
    let ssh = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build();
    ec2.authorize_security_group_ingress().group_id(&sg).ip_permissions(ssh.clone()).send().await?;
    let groups = ec2.describe_security_groups().group_ids(&sg).send().await?;
    let perms = groups.security_groups()[0].ip_permissions();
    assert_eq!(
        perms.iter().map(|p| (p.ip_protocol(), p.from_port(), p.to_port())).collect::<Vec<_>>(),
        [(Some("tcp"), Some(22), Some(22))]
    );

    // RunInstances, the SDK's instance_running waiter, the read-back.
    let run = ec2
        .run_instances()
        .image_id(&image_id)
        .instance_type("mini".into())
        .min_count(1)
        .max_count(1)
        .key_name("sdk_key")
        .security_group_ids(&sg)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Name").value("sdk").build())
                .build(),
        )
        .send()
        .await?;
    let iid = run.instances()[0].instance_id().unwrap().to_owned();
    ec2.wait_until_instance_running().instance_ids(&iid).wait(WAIT).await?;
    let described = ec2.describe_instances().instance_ids(&iid).send().await?;
    let inst = &described.reservations()[0].instances()[0];
    let private_ip = inst.private_ip_address().expect("a private IP").to_owned();
    assert!(private_ip.parse::<std::net::Ipv4Addr>().is_ok(), "{private_ip}");
    assert_eq!(inst.security_groups().iter().map(|g| g.group_id().unwrap()).collect::<Vec<_>>(), [sg.as_str()]);
    let subnet = inst.subnet_id().expect("a subnet").to_owned();
    assert!(subnet.starts_with("subnet-"), "{subnet}");
    assert_eq!(inst.key_name(), Some("sdk_key"));
    assert_eq!(inst.placement().and_then(|p| p.availability_zone()), Some(zone.as_str()));
    let nic = &inst.network_interfaces()[0];
    assert_eq!((nic.private_ip_address(), nic.subnet_id()), (Some(private_ip.as_str()), Some(subnet.as_str())));
    let subnets = ec2.describe_subnets().subnet_ids(&subnet).send().await?;
    assert_eq!(subnets.subnets()[0].vpc_id(), inst.vpc_id());

    // A volume attached as /dev/sdf: the SDK's volume waiters, the name kept.
    let vol = ec2.create_volume().availability_zone(&zone).size(1).send().await?;
    let vol = vol.volume_id().unwrap().to_owned();
    ec2.wait_until_volume_available().volume_ids(&vol).wait(WAIT).await?;
    let att = ec2.attach_volume().volume_id(&vol).instance_id(&iid).device("/dev/sdf").send().await?;
    assert_eq!(att.device(), Some("/dev/sdf"));
    ec2.wait_until_volume_in_use().volume_ids(&vol).wait(WAIT).await?;
    let mut attached = None;
    for _ in 0..120 {
        let vols = ec2.describe_volumes().volume_ids(&vol).send().await?;
        let a = vols.volumes()[0].attachments()[0].clone();
        if a.state().map(|s| s.as_str()) == Some("attached") {
            attached = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let attached = attached.expect("the attachment reaches attached");
    assert_eq!((attached.device(), attached.instance_id()), (Some("/dev/sdf"), Some(iid.as_str())));
    let described = ec2.describe_instances().instance_ids(&iid).send().await?;
    let mappings = described.reservations()[0].instances()[0].block_device_mappings();
    assert_eq!(
        mappings.iter().map(|m| (m.device_name(), m.ebs().and_then(|e| e.volume_id()))).collect::<Vec<_>>(),
        [(Some("/dev/sdf"), Some(vol.as_str()))]
    );

    // An Elastic IP on the instance: PublicIpAddress in DescribeInstances.
    let alloc = ec2.allocate_address().domain(DomainType::Vpc).send().await?;
    let (alloc_id, public_ip) = (alloc.allocation_id().unwrap().to_owned(), alloc.public_ip().unwrap().to_owned());
    let assoc = ec2.associate_address().allocation_id(&alloc_id).instance_id(&iid).send().await?;
    let assoc = assoc.association_id().unwrap().to_owned();
    let described = ec2.describe_instances().instance_ids(&iid).send().await?;
    assert_eq!(described.reservations()[0].instances()[0].public_ip_address(), Some(public_ip.as_str()));
    let by_ip = ec2.describe_addresses().filters(filter("instance-id", &iid)).send().await?;
    assert_eq!(by_ip.addresses()[0].private_ip_address(), Some(private_ip.as_str()));

    // Teardown, in the order a program must: address, volume, instance, group, key.
    ec2.disassociate_address().association_id(&assoc).send().await?;
    ec2.release_address().allocation_id(&alloc_id).send().await?;
    ec2.detach_volume().volume_id(&vol).send().await?;
    ec2.wait_until_volume_available().volume_ids(&vol).wait(WAIT).await?;
    ec2.delete_volume().volume_id(&vol).send().await?;
    ec2.wait_until_volume_deleted().volume_ids(&vol).wait(WAIT).await?;
    ec2.terminate_instances().instance_ids(&iid).send().await?;
    ec2.wait_until_instance_terminated().instance_ids(&iid).wait(WAIT).await?;
    ec2.revoke_security_group_ingress().group_id(&sg).ip_permissions(ssh).send().await?;
    let mut deleted = false;
    for _ in 0..60 {
        match ec2.delete_security_group().group_id(&sg).send().await {
            Ok(_) => {
                deleted = true;
                break;
            }
            Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("DependencyViolation") => {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert!(deleted, "the group is deleted once its instance is gone");
    ec2.delete_key_pair().key_name("sdk_key").send().await?;

    // Nothing left behind.
    let live = ec2
        .describe_instances()
        .filters(Filter::builder().name("instance-state-name").values("pending").values("running").build())
        .send()
        .await?;
    assert!(live.reservations().is_empty(), "{live:?}");
    assert!(ec2.describe_volumes().send().await?.volumes().is_empty());
    assert!(ec2.describe_addresses().send().await?.addresses().is_empty());
    assert!(ec2.describe_key_pairs().send().await?.key_pairs().is_empty());
    let groups = ec2.describe_security_groups().send().await?;
    assert_eq!(
        groups.security_groups().iter().filter_map(|g| g.group_name()).filter(|n| *n != "default").count(),
        0,
        "{groups:?}"
    );
    Ok(())
}
