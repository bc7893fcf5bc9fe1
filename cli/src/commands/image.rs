//! `kumo image ...`, including streamed uploads.

use std::fs;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use kumo_wire::api::{
    CreateImage, Image, ImageFileRole, ImageKind, Listing, UploadImageQuery, Visibility, MAX_NAME_LEN,
};

use crate::args::{ImageCommand, RegisterImageArgs, UploadImageArgs};
use crate::client::Reply;
use crate::commands::{all_query, fetch_all, Ctx};
use crate::error::Error;
use crate::render;

/// Runs one `kumo image` subcommand.
pub async fn dispatch(ctx: &Ctx, command: ImageCommand) -> Result<(), Error> {
    match command {
        ImageCommand::List { all } => {
            let listing: Listing<Image> = fetch_all(&ctx.client()?, &["v1", "images"], &all_query(all)).await?;
            ctx.show_listing(&listing, "No images.", render::images)
        }
        ImageCommand::Show { image } => {
            let reply: Reply<Image> = ctx.client()?.get(&["v1", "images", &image], &()).await?;
            ctx.show(&reply, render::image)
        }
        ImageCommand::Register(args) => register(ctx, args).await,
        ImageCommand::Upload(args) => upload(ctx, args).await,
        ImageCommand::Delete { image } => {
            ctx.client()?.delete_no_content(&["v1", "images", &image]).await?;
            ctx.done(&format!("Deleted image {image}."))
        }
    }
}

/// The kind of image and its files, in upload order, from the arguments.
fn plan(args: &RegisterImageArgs) -> Result<(ImageKind, Vec<(ImageFileRole, PathBuf)>), Error> {
    let (kind, files) = match (&args.disk, &args.kernel, &args.initrd) {
        (Some(disk), None, None) => (ImageKind::Disk, vec![(ImageFileRole::Disk, disk.clone())]),
        (None, Some(kernel), Some(initrd)) => {
            (ImageKind::Kernel, vec![(ImageFileRole::Kernel, kernel.clone()), (ImageFileRole::Initrd, initrd.clone())])
        }
        _ => return Err(Error::Invalid("give either --disk FILE --format F, or --kernel FILE --initrd FILE".into())),
    };
    debug_assert_eq!(files.iter().map(|(role, _)| *role).collect::<Vec<_>>(), kind.required_files());
    Ok((kind, files))
}

/// Checks that `path` is a non-empty regular file we can open.
fn check_file(path: &Path) -> Result<u64, Error> {
    let read_err = |source| Error::Read { path: path.to_owned(), source };
    let meta = fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!("{} is not a regular file", path.display())));
    }
    if meta.len() == 0 {
        return Err(Error::Invalid(format!("{} is empty", path.display())));
    }
    fs::File::open(path).map_err(read_err)?;
    Ok(meta.len())
}

/// `POST /v1/images`, then one streamed `PUT .../files/{role}` per file.
async fn register(ctx: &Ctx, args: RegisterImageArgs) -> Result<(), Error> {
    if args.name.is_empty() || args.name.len() > MAX_NAME_LEN {
        return Err(Error::Invalid(format!("the image name must be 1-{MAX_NAME_LEN} characters")));
    }
    let (kind, files) = plan(&args)?;
    for (_, path) in &files {
        check_file(path)?;
    }
    let client = ctx.client()?;
    let request = CreateImage {
        name: args.name,
        kind,
        disk_format: args.format,
        visibility: args.public.then_some(Visibility::Public),
    };
    let mut reply: Reply<Image> = client.post(&["v1", "images"], &request).await?;
    let id = reply.value.id.clone();
    for (role, path) in files {
        let bar = upload_bar(role, &path);
        let uploaded =
            client.put_file(&["v1", "images", id.as_str(), "files", role.as_str()], &path, bar.clone()).await;
        bar.finish_and_clear();
        reply =
            uploaded.map_err(|e| Error::Upload { role: role.as_str(), image: id.to_string(), source: Box::new(e) })?;
    }
    ctx.show(&reply, render::image)
}

/// `POST /v1/images/upload`: the file streamed in one request; the
/// controller registers the image only once it has inspected the whole file.
async fn upload(ctx: &Ctx, args: UploadImageArgs) -> Result<(), Error> {
    if args.name.is_empty() || args.name.len() > 128 {
        return Err(Error::Invalid("the image name must be 1-128 characters".into()));
    }
    check_file(&args.file)?;
    let client = ctx.client()?;
    let query = UploadImageQuery {
        name: args.name,
        disk_format: args.format,
        visibility: args.public.then_some(Visibility::Public),
    };
    let bar = upload_bar(ImageFileRole::Disk, &args.file);
    let uploaded = client.post_file(&["v1", "images", "upload"], &query, &args.file, bar.clone()).await;
    bar.finish_and_clear();
    let reply: Reply<Image> = uploaded?;
    ctx.show(&reply, render::image)
}

fn upload_bar(role: ImageFileRole, path: &Path) -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    bar.set_message(format!("{} {file}", role.as_str()));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(disk: Option<&str>, kernel: Option<&str>, initrd: Option<&str>) -> RegisterImageArgs {
        RegisterImageArgs {
            name: "img".into(),
            kernel: kernel.map(PathBuf::from),
            initrd: initrd.map(PathBuf::from),
            disk: disk.map(PathBuf::from),
            format: None,
            public: false,
        }
    }

    #[test]
    fn kernel_images_upload_kernel_then_initrd() {
        let (kind, files) = plan(&args(None, Some("k"), Some("i"))).expect("plan");
        assert_eq!(kind, ImageKind::Kernel);
        assert_eq!(
            files,
            vec![(ImageFileRole::Kernel, PathBuf::from("k")), (ImageFileRole::Initrd, PathBuf::from("i"))]
        );
        assert!(plan(&args(Some("d"), Some("k"), Some("i"))).is_err());
    }

    #[test]
    fn files_must_exist_and_not_be_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        fs::write(&empty, "").expect("write");
        assert!(check_file(&empty).is_err());
        assert!(check_file(dir.path()).is_err());
        assert!(check_file(&dir.path().join("missing")).is_err());
        let full = dir.path().join("disk.raw");
        fs::write(&full, [0u8; 10]).expect("write");
        assert_eq!(check_file(&full).expect("ok"), 10);
    }
}
