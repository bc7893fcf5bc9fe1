-- VPCs (issue 13): a project's address space; its networks are its subnets.
-- Keep in step with ../sqlite/0023_vpcs.sql; released migrations are never edited.

CREATE TABLE vpcs (
    -- 'vpc-' and 17 hex digits; a network's own VPC has the network's digits.
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    cidr        TEXT NOT NULL,
    -- 1: the default VPC, whose one subnet is the project's default network.
    is_default  BIGINT NOT NULL DEFAULT 0,
    -- 1: made with one network (by the native API, the default network or this
    -- migration) and deleted with it; 0: made by EC2's CreateVpc.
    implicit    BIGINT NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX vpcs_project ON vpcs(project_id);
CREATE UNIQUE INDEX vpcs_one_default ON vpcs(project_id) WHERE is_default = 1;

-- The VPC a network is a subnet of; NULL for external networks.
ALTER TABLE networks ADD COLUMN vpc_id TEXT REFERENCES vpcs(id);
CREATE INDEX networks_vpc ON networks(vpc_id);

-- Existing tenant networks become their own VPCs with their ids' digits, so
-- the ids EC2 showed (vpc-X, subnet-X for net-X) stay.
INSERT INTO vpcs (id, project_id, cidr, is_default, implicit, created_by, created_at)
    SELECT 'vpc-' || substr(id, 5), project_id, cidr, is_default, 1, created_by, created_at
    FROM networks WHERE external = 0;
UPDATE networks SET vpc_id = 'vpc-' || substr(id, 5) WHERE external = 0;

-- The VPC an EC2 CreateSecurityGroup named (Kumo's groups are the project's;
-- EC2 shows this one, or the default VPC when none was named). No foreign
-- keys: a group deleted through the native API leaves a row nobody reads.
CREATE TABLE ec2_security_group_vpcs (
    group_id   TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    vpc_id     TEXT NOT NULL
);
CREATE INDEX ec2_security_group_vpcs_vpc ON ec2_security_group_vpcs(vpc_id);
