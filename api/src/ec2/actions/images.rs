//! DescribeImages, CreateImage (an instance snapshot, which becomes an image),
//! DeregisterImage.

use kumo_wire::api::{Image, ImageState, Visibility};
use kumo_wire::storage::CreateSnapshot;
use kumo_wire::ImageId;

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::xml::{time, Xml};
use super::instances::find_instance;
use super::{account_id, dry_run, paginate, tags, Ctx};
use crate::error::ApiError;

fn ec2_state(image: &Image) -> &'static str {
    match image.state {
        ImageState::Queued => "pending",
        ImageState::Active => "available",
    }
}

/// Parses an image id: `InvalidAMIID.Malformed` when it has the wrong shape.
pub fn parse_image_id(raw: &str) -> Ec2Result<ImageId> {
    raw.parse().map_err(|_| Ec2Error::malformed("InvalidAMIID.Malformed", "image", raw))
}

/// `DescribeImages`: the project's images and public ones; `Owner.N` may be
/// `self`, an account id (or a Kumo project id), or `amazon`/`aws-marketplace` (nothing).
pub async fn describe_images(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let ids = ctx.params.list("ImageId");
    let owners = ctx.params.list("Owner");
    let filters = ctx.params.filters()?;
    let all = ctx.state.db.list_images(&ctx.caller.project_id, false).await?;
    for raw in &ids {
        let id = parse_image_id(raw)?;
        if !all.iter().any(|i| i.id == id) {
            return Err(Ec2Error::not_found("InvalidAMIID.NotFound", "image", raw));
        }
    }
    let tags = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let none = Vec::new();
    let me = ctx.caller.project_id.to_string();
    let rows: Vec<Image> = all
        .into_iter()
        .filter(|i| ids.is_empty() || ids.iter().any(|r| r == i.id.as_str()))
        .filter(|i| {
            owners.is_empty()
                || owners.iter().any(|o| {
                    let owner = i.owner_project_id.as_str();
                    o == owner || *o == account_id(&i.owner_project_id) || (o == "self" && owner == me)
                })
        })
        .filter(|i| {
            let t = tags.get(i.id.as_str()).unwrap_or(&none);
            let public = i.visibility == Visibility::Public;
            filters.iter().all(|f| match tags::tag_filter(f, t) {
                Some(m) => m,
                None => match f.name.as_str() {
                    "image-id" => f.matches(i.id.as_str()),
                    "name" | "manifest-location" => f.matches(&i.name),
                    "state" => f.matches(ec2_state(i)),
                    "is-public" => f.matches(if public { "true" } else { "false" }),
                    "owner-id" => f.matches(&account_id(&i.owner_project_id)),
                    "architecture" => f.matches("x86_64"),
                    "image-type" => f.matches("machine"),
                    "root-device-type" => f.matches("ebs"),
                    "virtualization-type" => f.matches("hvm"),
                    "hypervisor" => f.matches("kvm"),
                    _ => false,
                },
            })
        })
        .collect();
    dry_run(ctx)?;
    let (page, next) = paginate(ctx, rows, (6, 1000))?;
    x.set("imagesSet", page, |x, i| {
        x.leaf("imageId", &i.id)
            .leaf("imageLocation", format!("{}/{}", account_id(&i.owner_project_id), i.name))
            .leaf("imageState", ec2_state(&i))
            .leaf("imageOwnerId", account_id(&i.owner_project_id))
            .leaf("creationDate", time(i.created_at))
            .leaf("isPublic", i.visibility == Visibility::Public)
            .leaf("architecture", "x86_64")
            .leaf("imageType", "machine")
            .leaf("name", &i.name)
            .leaf("description", format!("Kumo {} image", i.kind.as_str()))
            .leaf("rootDeviceType", "ebs")
            .leaf("rootDeviceName", "/dev/vda")
            .set("blockDeviceMapping", Vec::<u8>::new(), |_, _| {})
            .leaf("virtualizationType", "hvm")
            .tags(tags.get(i.id.as_str()).unwrap_or(&none))
            .leaf("hypervisor", "kvm")
            .leaf("platformDetails", "Linux/UNIX")
            .leaf("usageOperation", "RunInstances");
    });
    x.opt("nextToken", next);
    Ok(())
}

/// `CreateImage`: snapshots the instance's root disk (live when it runs; the
/// guest is not rebooted, whatever `NoReboot` says) into a new private image
/// named `Name`.
pub async fn create_image(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let inst = find_instance(ctx, ctx.params.required("InstanceId")?).await?;
    let name = ctx.params.required("Name")?;
    crate::names::validate_name("image", name).map_err(Ec2Error::from)?;
    let tags = ctx.params.tag_specifications("image")?;
    tags::validate(&tags)?;
    dry_run(ctx)?;
    let req = CreateSnapshot { name: name.to_owned(), volume: None, instance: Some(inst.id.to_string()) };
    let snap = crate::snapshots::create(ctx.state, &ctx.caller, req).await.map_err(|e| match e {
        // The image takes the snapshot's name: either name taken is the image's.
        e @ ApiError::Duplicate { .. } => Ec2Error::client("InvalidAMIName.Duplicate", e.to_string()),
        ApiError::Conflict(m) => Ec2Error::client("IncorrectInstanceState", m),
        other => other.into(),
    })?;
    let image =
        snap.image_id.ok_or_else(|| ApiError::Internal(format!("instance snapshot {} has no image", snap.id)))?;
    tags::tag_new(ctx, image.as_str(), &tags).await?;
    x.leaf("imageId", image);
    Ok(())
}

/// `DeregisterImage`: deletes one of the project's own images; one that
/// instances use is deregistered now and deleted with its last instance.
pub async fn deregister_image(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let raw = ctx.params.required("ImageId")?;
    let id = parse_image_id(raw)?;
    let image = ctx
        .state
        .db
        .find_image(&ctx.caller.project_id, id.as_str())
        .await?
        .filter(|i| i.id == id && i.owner_project_id == ctx.caller.project_id)
        .ok_or_else(|| Ec2Error::not_found("InvalidAMIID.NotFound", "image", raw))?;
    dry_run(ctx)?;
    if !ctx.state.db.delete_image_unless_used(&image.id).await? {
        // As on AWS: the image is gone for new launches and listings, the
        // instances keep running; its files go with the last of them.
        ctx.state.db.deregister_image(&image.id).await?;
        tags::forget(&ctx.state.db, &ctx.caller.project_id, image.id.as_str()).await?;
        x.leaf("return", true);
        return Ok(());
    }
    ctx.state.images.delete_image(&image.id).await.map_err(ApiError::from)?;
    crate::snapshots::image_deleted(ctx.state, &image.id).await?;
    tags::forget(&ctx.state.db, &ctx.caller.project_id, image.id.as_str()).await?;
    x.leaf("return", true);
    Ok(())
}
