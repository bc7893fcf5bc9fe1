-- EC2's MetadataOptions of each instance (ModifyInstanceMetadataOptions,
-- RunInstances' MetadataOptions.*, the native API's `metadata_options`), as
-- the JSON of kumo_wire::network::MetadataOptions. NULL: EC2's defaults.
-- Keep in step with the other backend's 0020_metadata_options.sql.
ALTER TABLE instances ADD COLUMN metadata_options TEXT;

-- ModifyAddressAttribute's reverse-DNS (PTR) name of an Elastic IP, stored and
-- shown (Kumo serves no reverse zone). No foreign key: ReleaseAddress deletes
-- the row, and floating-IP ids are never reused, so a row outliving its
-- address (released through the native API) is never shown.
CREATE TABLE ec2_address_ptr (
    allocation_id TEXT PRIMARY KEY,
    ptr_record    TEXT NOT NULL
);
