//! Kumo storage: the controller's image store, each host's image cache and the
//! instance disks built on it.
//!
//! This crate knows nothing of HTTP routing, databases or libvirt; the agent
//! hands it a way to fetch bytes, the controller hands it a stream to store.

pub mod image_cache;
pub mod image_inspect;
pub mod image_store;
pub mod instance_disk;
pub mod qemu_img;
pub mod volume_backend;

pub use image_cache::{ByteStream, FetchError, ImageCache, ImageCacheError, ImageFetcher};
pub use image_inspect::{inspect, InspectError, Inspection};
pub use image_store::{FsImageStore, ImageStoreError, Staged, StoredFile};
pub use instance_disk::{BackingImage, DiskError, InstanceDisks, QemuImgDisks};
pub use volume_backend::{FileVolumeBackend, VolumeBackend, VolumeError, VolumeSource};
