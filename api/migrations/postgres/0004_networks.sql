-- Tenant networks, ports, security groups and floating IPs (PostgreSQL).
-- Keep in step with ../sqlite/0004_networks.sql; released migrations are never edited.
-- Addresses are stored as text (dotted quad, CIDR notation); the controller parses them.

-- Whether the instance also gets a NoCloud config drive.
ALTER TABLE instances ADD COLUMN config_drive BIGINT NOT NULL DEFAULT 0;

CREATE TABLE networks (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    cidr        TEXT NOT NULL,
    gateway     TEXT NOT NULL,
    -- A JSON list of dotted quads.
    dns_servers TEXT NOT NULL DEFAULT '[]',
    -- The 802.1Q tag: one network per tag across the whole cloud.
    vlan_id     BIGINT NOT NULL UNIQUE,
    -- 1: the public network whose addresses are the floating-IP pool.
    external    BIGINT NOT NULL DEFAULT 0,
    -- 1: the project's default network, made on the first launch that names none.
    is_default  BIGINT NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE UNIQUE INDEX networks_one_default ON networks(project_id) WHERE is_default = 1;

CREATE TABLE ports (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects(id),
    instance_id  TEXT NOT NULL REFERENCES instances(id),
    network_id   TEXT NOT NULL REFERENCES networks(id),
    -- The NIC's place in the guest (0 = eth0).
    device_index BIGINT NOT NULL,
    mac          TEXT NOT NULL UNIQUE,
    ip           TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    -- IPAM's guarantee: no address is handed out twice on one network.
    UNIQUE (network_id, ip),
    UNIQUE (instance_id, device_index)
);
CREATE INDEX ports_project ON ports(project_id);

CREATE TABLE security_groups (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    is_default  BIGINT NOT NULL DEFAULT 0,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE UNIQUE INDEX security_groups_one_default ON security_groups(project_id) WHERE is_default = 1;

CREATE TABLE security_group_rules (
    id              TEXT PRIMARY KEY,
    group_id        TEXT NOT NULL REFERENCES security_groups(id),
    -- tcp, udp, icmp or any.
    protocol        TEXT NOT NULL,
    -- Both NULL: every port (always for icmp and any).
    port_first      BIGINT,
    port_last       BIGINT,
    -- Exactly one of cidr and source_group_id is set.
    cidr            TEXT,
    source_group_id TEXT REFERENCES security_groups(id),
    created_at      BIGINT NOT NULL,
    CHECK ((cidr IS NULL) <> (source_group_id IS NULL))
);
CREATE INDEX security_group_rules_group ON security_group_rules(group_id);
CREATE INDEX security_group_rules_source ON security_group_rules(source_group_id);

CREATE TABLE port_security_groups (
    port_id  TEXT NOT NULL REFERENCES ports(id),
    group_id TEXT NOT NULL REFERENCES security_groups(id),
    PRIMARY KEY (port_id, group_id)
);
CREATE INDEX port_security_groups_group ON port_security_groups(group_id);

CREATE TABLE floating_ips (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    network_id  TEXT NOT NULL REFERENCES networks(id),
    address     TEXT NOT NULL UNIQUE,
    -- The port it maps to; NULL while not associated.
    port_id     TEXT REFERENCES ports(id),
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX floating_ips_project ON floating_ips(project_id);
CREATE UNIQUE INDEX floating_ips_port ON floating_ips(port_id) WHERE port_id IS NOT NULL;
