"""Terraform's AWS provider, replayed call by call with boto3 against a running Kumo.

The provider cannot be installed on the test machines, so this script makes the
EC2 (and STS) calls the provider's source code makes for this configuration, in
its order, with its parameters, its waiters' pending/target states, and reads
back every field its Read functions store in the state:

    resource "aws_key_pair" "deployer"      { key_name = "tf-deployer"; public_key = "ssh-ed25519 ..."; tags = {Name = "tf-deployer"} }
    resource "aws_security_group" "web"     { name = "tf-web"; description = "Managed by Terraform"
                                              ingress { from_port = 22, to_port = 22, protocol = "tcp", cidr_blocks = ["0.0.0.0/0"] }
                                              egress  { from_port = 0,  to_port = 0,  protocol = "-1",  cidr_blocks = ["0.0.0.0/0"] }
                                              tags = {Name = "tf-web"} }
    resource "aws_instance" "web"           { ami = <tiny>; instance_type = "mini"; key_name = aws_key_pair.deployer.key_name
                                              vpc_security_group_ids = [aws_security_group.web.id]; user_data = "#!/bin/sh\n..."
                                              metadata_options { http_tokens = "required", instance_metadata_tags = "enabled" }
                                              tags = {Name = "tf-web", env = "replay"} }
    resource "aws_ebs_volume" "data"        { availability_zone = aws_instance.web.availability_zone; size = 1; tags = {Name = "tf-data"} }
    resource "aws_volume_attachment" "data" { device_name = "/dev/sdf"; volume_id = aws_ebs_volume.data.id; instance_id = aws_instance.web.id }
    resource "aws_eip" "web"                { domain = "vpc"; instance = aws_instance.web.id; tags = {Name = "tf-eip"} }

then `terraform apply`, a `terraform plan` after it (refresh: every Read again; the
plan must show no change), and `terraform destroy`, leaving nothing behind.

Source read: github.com/hashicorp/terraform-provider-aws, internal/service/ec2/ (each
file at the commit the search index holds; all AWS SDK for Go v2 code, provider v6.x):
  ec2_instance.go         05bc9541efe73ea58b95ad961676ed4aba3fb03f  resourceInstanceCreate/Read(Flatten)/Update/Delete,
                                                                    buildInstanceOpts, readSecurityGroups, readBlockDevices,
                                                                    readInstanceShutdownBehavior, flattenInstanceLaunchTemplate,
                                                                    terminateInstance
  ec2_key_pair.go         05bc9541efe73ea58b95ad961676ed4aba3fb03f  resourceKeyPairCreate/Read/Delete
  vpc_security_group.go   01606926a0c0ab9174aec440f976a48b0baee722  resourceSecurityGroupCreate/Read/Update/Delete,
                                                                    updateSecurityGroupRules, expandIPPerms
  ebs_volume.go           0073593e7d6993ba482409f4dc35438daaa79bb3  resourceEBSVolumeCreate/Read/Delete
  ebs_volume_attachment.go 0620f2a6a126dfcbc4aecbc9a117b0fbea1656ff resourceVolumeAttachmentCreate/Read/Delete,
                                                                    findVolumeAttachment, waitVolumeAttachment*
  ec2_eip.go              01606926a0c0ab9174aec440f976a48b0baee722  resourceEIPCreate/Read/Delete, associateEIP, disassociateEIP
  wait.go / find.go / vpc_network_interface.go (deleteLingeringENIs): the waiters' states
  (waitInstanceCreated: pending -> running; waitInstanceDeleted: pending, running,
  shutting-down, stopping, stopped -> terminated; waitVolumeCreated: creating -> available;
  waitVolumeDeleted: deleting -> gone; waitSecurityGroupCreated: until found) and finders
  (findInstanceByID treats "terminated" as not found; findEBSVolumeByID treats "deleted" so).
Provider configuration (internal/conns/config.go via aws-sdk-go-base) asks STS
GetCallerIdentity for the account id before any resource call.

Timing: the waiters keep the provider's semantics (a state outside pending and target
fails at once; "not found" is retried, or is the target for deletes) with shorter
delays than the provider's Delay 10 s / MinTimeout 3 s, so the test runs faster.

Egress: aws_security_group revokes EC2's default allow-all egress rules and authorizes
the configured ones (RevokeSecurityGroupEgress / AuthorizeSecurityGroupEgress). Until
Kumo serves those actions, those steps print SKIPPED (only when the answer is
InvalidAction) and the read-back accepts Kumo's always-open egress rule.

Environment: KUMO_EC2_ENDPOINT, KUMO_EC2_REGION, KUMO_EC2_KEY_ID, KUMO_EC2_SECRET.
"""

import base64
import os
import sys
import time
import unittest
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KUMO_EC2_ENDPOINT"]
REGION = os.environ.get("KUMO_EC2_REGION", "kumo-1")
KEY, SECRET = os.environ["KUMO_EC2_KEY_ID"], os.environ["KUMO_EC2_SECRET"]
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl tf@kumo"
USER_DATA = "#!/bin/sh\necho hello from terraform\n"
SKIPPED = []


def client(service):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name=REGION, aws_access_key_id=KEY,
                        aws_secret_access_key=SECRET, config=Config(retries={"max_attempts": 2, "mode": "standard"}))


EC2 = client("ec2")
CALLS = []


def call(where, action, **params):
    """One provider call: logged with the provider function that makes it."""
    CALLS.append((where, action))
    print(f"  {where}: {action} {sorted(params)}", flush=True)
    method = "".join("_" + c.lower() if c.isupper() else c for c in action).lstrip("_")
    return getattr(EC2, method)(**params)


def code(e):
    return e.response["Error"]["Code"]


def egress_step(where, action, **params):
    """A step that needs Kumo's egress actions: SKIPPED only while they are InvalidAction."""
    try:
        return call(where, action, **params)
    except ClientError as e:
        if code(e) == "InvalidAction":
            print(f"  SKIPPED {action} ({where}): Kumo answers InvalidAction (egress rules not served yet)", flush=True)
            SKIPPED.append(action)
            return None
        raise


def wait_for_state(what, refresh, pending, target, timeout=600, delay=1.0, not_found_checks=20):
    """retry.StateChangeConf.WaitForStateContext: refresh() -> (obj, state) or (None, "")
    when not found. A state in neither list fails; an empty target means "until not found"."""
    deadline = time.time() + timeout
    misses = 0
    while True:
        obj, state = refresh()
        if obj is None:
            if not target:
                return None
            misses += 1
            if misses > not_found_checks:
                raise AssertionError(f"{what}: not found {misses} times while waiting for {target}")
        elif state in target:
            return obj
        elif state not in pending:
            raise AssertionError(f"{what}: unexpected state '{state}', wanted target {target} (pending {pending})")
        if time.time() > deadline:
            raise AssertionError(f"{what}: timeout waiting for {target}, last state '{state}'")
        time.sleep(delay)


# ---- finders (find.go) ----

def find_instance_by_id(where, iid, terminated_is_not_found=True):
    try:
        out = call(where, "DescribeInstances", InstanceIds=[iid])
    except ClientError as e:
        if code(e) == "InvalidInstanceID.NotFound":
            return None
        raise
    found = [i for r in out["Reservations"] for i in r["Instances"]]
    if len(found) != 1 or found[0]["InstanceId"] != iid:
        return None
    if terminated_is_not_found and found[0]["State"]["Name"] == "terminated":
        return None
    return found[0]


def find_security_group_by_id(where, sg):
    try:
        out = call(where, "DescribeSecurityGroups", GroupIds=[sg])
    except ClientError as e:
        if code(e) == "InvalidGroup.NotFound":
            return None
        raise
    (g,) = out["SecurityGroups"]
    return g


def find_ebs_volume_by_id(where, vol):
    try:
        out = call(where, "DescribeVolumes", VolumeIds=[vol])
    except ClientError as e:
        if code(e) == "InvalidVolume.NotFound":
            return None
        raise
    vols = out["Volumes"]
    if len(vols) != 1 or vols[0]["State"] == "deleted":
        return None
    return vols[0]


def find_volume_attachment(where, vol, iid, device):
    """ebs_volume_attachment.go findVolumeAttachment."""
    try:
        out = call(where, "DescribeVolumes", VolumeIds=[vol], Filters=[
            {"Name": "attachment.device", "Values": [device]},
            {"Name": "attachment.instance-id", "Values": [iid]}])
    except ClientError as e:
        if code(e) == "InvalidVolume.NotFound":
            return None
        raise
    if len(out["Volumes"]) != 1:
        return None
    v = out["Volumes"][0]
    if v["State"] in ("available", "deleted") or v["VolumeId"] != vol:
        return None
    for a in v.get("Attachments", []):
        if a["State"] != "detached" and a.get("Device") == device and a.get("InstanceId") == iid:
            return a
    return None


def find_eip_by_allocation_id(where, alloc):
    try:
        out = call(where, "DescribeAddresses", AllocationIds=[alloc])
    except ClientError as e:
        if code(e) == "InvalidAllocationID.NotFound":
            return None
        raise
    return out["Addresses"][0] if len(out["Addresses"]) == 1 else None


# ---- resources ----

class KeyPair:
    """ec2_key_pair.go"""

    def create(self):
        out = call("resourceKeyPairCreate", "ImportKeyPair", KeyName="tf-deployer",
                   PublicKeyMaterial=PUBLIC_KEY.encode(),
                   TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": "Name", "Value": "tf-deployer"}]}])
        self.id = out["KeyName"]
        return self.read()

    def read(self):
        (kp,) = call("resourceKeyPairRead (findKeyPairByName)", "DescribeKeyPairs", KeyNames=[self.id])["KeyPairs"]
        return {"fingerprint": kp["KeyFingerprint"], "key_name": kp["KeyName"], "key_pair_id": kp["KeyPairId"],
                "key_type": kp["KeyType"], "tags": tags_of(kp)}

    def delete(self):
        call("resourceKeyPairDelete", "DeleteKeyPair", KeyName=self.id)


INGRESS = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
EGRESS = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]  # expandIPPerms: no ports for "-1"


class SecurityGroup:
    """vpc_security_group.go"""

    def create(self):
        out = call("resourceSecurityGroupCreate", "CreateSecurityGroup", GroupName="tf-web",
                   Description="Managed by Terraform",
                   TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "Name", "Value": "tf-web"}]}])
        self.id = out["GroupId"]
        wait_for_state("waitSecurityGroupCreated",
                       lambda: ((g, "exists") if (g := find_security_group_by_id("waitSecurityGroupCreated", self.id))
                                else (None, "")), [], ["exists"])
        # "AWS defaults all Security Groups to have an ALLOW ALL egress rule. Here we revoke that rule."
        egress_step("resourceSecurityGroupCreate", "RevokeSecurityGroupEgress", GroupId=self.id, IpPermissions=[
            {"IpProtocol": "-1", "FromPort": 0, "ToPort": 0, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        try:
            egress_step("resourceSecurityGroupCreate", "RevokeSecurityGroupEgress", GroupId=self.id, IpPermissions=[
                {"IpProtocol": "-1", "FromPort": 0, "ToPort": 0, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
        except ClientError as e:
            # The provider tolerates these for a group without IPv6.
            if not (code(e) == "InvalidPermission.NotFound"
                    or (code(e) == "InvalidParameterValue" and "remote-ipv6-range" in str(e))):
                raise
        # resourceSecurityGroupUpdate
        group = find_security_group_by_id("resourceSecurityGroupUpdate", self.id)
        assert group is not None
        call("updateSecurityGroupRules (ingress)", "AuthorizeSecurityGroupIngress", GroupId=self.id,
             IpPermissions=INGRESS)
        egress_step("updateSecurityGroupRules (egress)", "AuthorizeSecurityGroupEgress", GroupId=self.id,
                    IpPermissions=EGRESS)
        return self.read()

    def read(self):
        g = find_security_group_by_id("resourceSecurityGroupRead", self.id)
        assert g is not None, self.id
        return {"description": g["Description"], "name": g["GroupName"], "owner_id": g["OwnerId"],
                "vpc_id": g["VpcId"], "ingress": rules_of(g["IpPermissions"]),
                "egress": rules_of(g["IpPermissionsEgress"]), "tags": tags_of(g)}

    def delete(self):
        # deleteLingeringENIs: lists the group's ENIs (only Lambda/Comprehend/DMS ones are acted on).
        call("resourceSecurityGroupDelete (deleteLingeringENIs)", "DescribeNetworkInterfaces",
             Filters=[{"Name": "group-id", "Values": [self.id]}])
        deadline = time.time() + 900
        while True:  # tfresource.RetryWhenAWSErrCodeEquals(DependencyViolation, InvalidGroup.InUse)
            try:
                call("resourceSecurityGroupDelete", "DeleteSecurityGroup", GroupId=self.id)
                break
            except ClientError as e:
                if code(e) == "InvalidGroup.NotFound":
                    return
                if code(e) not in ("DependencyViolation", "InvalidGroup.InUse") or time.time() > deadline:
                    raise
                time.sleep(2)
        # tfresource.RetryUntilNotFound
        wait_for_state("resourceSecurityGroupDelete (RetryUntilNotFound)",
                       lambda: ((g, "exists") if (g := find_security_group_by_id("findSecurityGroupByID", self.id))
                                else (None, "")), ["exists"], [])


class Instance:
    """ec2_instance.go"""

    def __init__(self, ami, sg, key_name):
        self.ami, self.sg, self.key_name = ami, sg, key_name

    def create(self):
        # buildInstanceOpts: no subnet_id, so SecurityGroupIds from vpc_security_group_ids; the
        # defaults it always sends (DisableApiTermination, EbsOptimized, Monitoring, Placement with
        # the configured -- here empty -- zone, HibernationOptions from `hibernation`).
        out = call("resourceInstanceCreate", "RunInstances",
                   ClientToken=str(uuid.uuid4()), ImageId=self.ami, InstanceType="mini", KeyName=self.key_name,
                   MinCount=1, MaxCount=1, SecurityGroupIds=[self.sg], UserData=USER_DATA,
                   DisableApiTermination=False, EbsOptimized=False, Monitoring={"Enabled": False},
                   Placement={"AvailabilityZone": ""}, HibernationOptions={"Configured": False},
                   MetadataOptions={"HttpEndpoint": "enabled", "HttpProtocolIpv6": "disabled",
                                    "HttpTokens": "required", "InstanceMetadataTags": "enabled"},
                   TagSpecifications=[{"ResourceType": "instance", "Tags": [
                       {"Key": "Name", "Value": "tf-web"}, {"Key": "env", "Value": "replay"}]}])
        self.id = out["Instances"][0]["InstanceId"]

        def status():
            i = find_instance_by_id("waitInstanceCreated (statusInstanceState)", self.id)
            return (i, i["State"]["Name"]) if i else (None, "")
        wait_for_state("waitInstanceCreated", status, ["pending"], ["running"])
        # resourceInstanceUpdate with IsNewResource: source_dest_check is still true, no other change: no call.
        return self.read()

    def read(self):
        where = "resourceInstanceRead"
        inst = find_instance_by_id(f"{where} (findInstanceByID)", self.id)
        assert inst is not None, self.id
        where = "resourceInstanceFlatten"
        (itype,) = call(f"{where} (findInstanceTypeByName)", "DescribeInstanceTypes",
                        InstanceTypes=[inst["InstanceType"]])["InstanceTypes"]
        lt = call(f"{where} (flattenInstanceLaunchTemplate/findInstanceTagValue)", "DescribeTags", Filters=[
            {"Name": "resource-id", "Values": [self.id]}, {"Name": "key", "Values": ["aws:ec2launchtemplate:id"]}])
        assert lt["Tags"] == [], lt
        s = {"instance_state": inst["State"]["Name"], "availability_zone": inst["Placement"]["AvailabilityZone"],
             "tenancy": inst["Placement"].get("Tenancy"), "ami": inst["ImageId"],
             "instance_type": inst["InstanceType"], "key_name": inst.get("KeyName"),
             "public_dns": inst.get("PublicDnsName"), "public_ip": inst.get("PublicIpAddress"),
             "private_dns": inst.get("PrivateDnsName"), "private_ip": inst.get("PrivateIpAddress"),
             "metadata_options": metadata_of(inst.get("MetadataOptions")),
             "ebs_optimized": inst.get("EbsOptimized"),
             "monitoring": inst.get("Monitoring", {}).get("State") in ("enabled", "pending"),
             "tags": tags_of(inst)}
        (pni,) = [n for n in inst["NetworkInterfaces"] if n["Attachment"]["DeviceIndex"] == 0]
        s["primary_network_interface_id"] = pni["NetworkInterfaceId"]
        s["subnet_id"] = pni["SubnetId"]
        s["source_dest_check"] = pni["SourceDestCheck"]
        s["associate_public_ip_address"] = "Association" in pni
        s["secondary_private_ips"] = sorted(a["PrivateIpAddress"] for a in pni.get("PrivateIpAddresses", [])
                                            if not a.get("Primary"))
        s["ipv6_address_count"] = len(pni.get("Ipv6Addresses", []))
        if inst.get("SubnetId"):
            s["source_dest_check"] = inst["SourceDestCheck"]
        # readSecurityGroups: IDs when the instance has a subnet, names when its VPC is the default.
        use_id, use_name = bool(inst.get("SubnetId")), not inst.get("SubnetId")
        if inst.get("VpcId"):
            (vpc,) = call("readSecurityGroups (findVPCByID)", "DescribeVpcs", VpcIds=[inst["VpcId"]])["Vpcs"]
            use_name = vpc["IsDefault"]
        s["vpc_security_group_ids"] = sorted(g["GroupId"] for g in inst["SecurityGroups"]) if use_id else []
        s["security_groups"] = sorted(g["GroupName"] for g in inst["SecurityGroups"]) if use_name else []
        shutdown = call("readInstanceShutdownBehavior", "DescribeInstanceAttribute", InstanceId=self.id,
                        Attribute="instanceInitiatedShutdownBehavior")
        s["instance_initiated_shutdown_behavior"] = shutdown["InstanceInitiatedShutdownBehavior"]["Value"]
        # readBlockDevices: DescribeVolumes of the EBS mappings (only when there are any).
        by_vol = {m["Ebs"]["VolumeId"]: m for m in inst.get("BlockDeviceMappings", []) if "Ebs" in m}
        s["ebs_block_device"], s["root_block_device"] = [], []
        if by_vol:
            vols = call("readBlockDevicesFromInstance", "DescribeVolumes", VolumeIds=sorted(by_vol))["Volumes"]
            assert sorted(v["VolumeId"] for v in vols) == sorted(by_vol), (vols, by_vol)
            for v in vols:
                m = by_vol[v["VolumeId"]]
                bd = {"volume_id": v["VolumeId"], "device_name": m["DeviceName"], "volume_size": v["Size"],
                      "volume_type": v["VolumeType"], "encrypted": v.get("Encrypted"),
                      "delete_on_termination": m["Ebs"].get("DeleteOnTermination")}
                root = m["DeviceName"] == inst.get("RootDeviceName")
                s["root_block_device" if root else "ebs_block_device"].append(bd)
        for attr, key, field in (("disableApiStop", "DisableApiStop", "disable_api_stop"),
                                 ("disableApiTermination", "DisableApiTermination", "disable_api_termination")):
            out = call(f"{where} (instance attributes)", "DescribeInstanceAttribute", InstanceId=self.id,
                       Attribute=attr)
            s[field] = out[key]["Value"]
        ud = call(f"{where} (instance attributes)", "DescribeInstanceAttribute", InstanceId=self.id,
                  Attribute="userData")
        s["user_data"] = base64.b64decode(ud["UserData"]["Value"]).decode() if ud.get("UserData", {}).get("Value") \
            else None
        if itype.get("BurstablePerformanceSupported"):
            call(f"{where} (findInstanceCreditSpecificationByID)", "DescribeInstanceCreditSpecifications",
                 InstanceIds=[self.id])
        return s

    def delete(self):
        call("terminateInstance", "TerminateInstances", InstanceIds=[self.id])

        def status():
            i = find_instance_by_id("waitInstanceDeleted (statusInstanceState)", self.id,
                                    terminated_is_not_found=False)
            return (i, i["State"]["Name"]) if i else (None, "")
        wait_for_state("waitInstanceDeleted", status, ["pending", "running", "shutting-down", "stopping", "stopped"],
                       ["terminated"])


class Volume:
    """ebs_volume.go"""

    def __init__(self, zone):
        self.zone = zone

    def create(self):
        out = call("resourceEBSVolumeCreate", "CreateVolume", AvailabilityZone=self.zone,
                   ClientToken=str(uuid.uuid4()), Size=1,
                   TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "tf-data"}]}])
        self.id = out["VolumeId"]

        def status():
            v = find_ebs_volume_by_id("waitVolumeCreated (statusVolume)", self.id)
            return (v, v["State"]) if v else (None, "")
        wait_for_state("waitVolumeCreated", status, ["creating"], ["available"])
        return self.read()

    def read(self):
        v = find_ebs_volume_by_id("resourceEBSVolumeRead (findEBSVolumeByID)", self.id)
        assert v is not None, self.id
        return {"availability_zone": v["AvailabilityZone"], "create_time": v["CreateTime"].isoformat(),
                "encrypted": v["Encrypted"], "iops": v.get("Iops"), "kms_key_id": v.get("KmsKeyId"),
                "multi_attach_enabled": v.get("MultiAttachEnabled"), "outpost_arn": v.get("OutpostArn"),
                "size": v["Size"], "snapshot_id": v.get("SnapshotId"), "throughput": v.get("Throughput"),
                "type": v["VolumeType"], "tags": tags_of(v)}

    def delete(self):
        deadline = time.time() + 600
        while True:  # RetryWhenAWSErrCodeEquals(VolumeInUse)
            try:
                call("resourceEBSVolumeDelete", "DeleteVolume", VolumeId=self.id)
                break
            except ClientError as e:
                if code(e) == "InvalidVolume.NotFound":
                    return
                if code(e) != "VolumeInUse" or time.time() > deadline:
                    raise
                time.sleep(2)

        def status():
            v = find_ebs_volume_by_id("waitVolumeDeleted (statusVolume)", self.id)
            return (v, v["State"]) if v else (None, "")
        wait_for_state("waitVolumeDeleted", status, ["deleting"], [])


class VolumeAttachment:
    """ebs_volume_attachment.go"""

    def __init__(self, device, vol, iid):
        self.device, self.vol, self.iid = device, vol, iid

    def create(self):
        if find_volume_attachment("resourceVolumeAttachmentCreate (findVolumeAttachment)",
                                  self.vol, self.iid, self.device) is None:
            def ready():
                try:
                    out = call("waitVolumeAttachmentInstanceReady", "DescribeInstances", InstanceIds=[self.iid])
                except ClientError as e:
                    if code(e) == "InvalidInstanceID.NotFound":
                        return None, ""
                    raise
                i = out["Reservations"][0]["Instances"][0]
                return i, i["State"]["Name"]
            wait_for_state("waitVolumeAttachmentInstanceReady", ready, ["pending", "stopping"], ["running", "stopped"])
            out = call("resourceVolumeAttachmentCreate", "AttachVolume", Device=self.device, InstanceId=self.iid,
                       VolumeId=self.vol)
            assert out["Device"] == self.device, out

        def status():
            a = find_volume_attachment("waitVolumeAttachmentCreated (statusVolumeAttachmentState)",
                                       self.vol, self.iid, self.device)
            return (a, a["State"]) if a else (None, "")
        wait_for_state("waitVolumeAttachmentCreated", status, ["attaching"], ["attached"])
        return self.read()

    def read(self):
        a = find_volume_attachment("resourceVolumeAttachmentRead (findVolumeAttachment)",
                                   self.vol, self.iid, self.device)
        assert a is not None, "the attachment must be found for the state to keep it"
        return {"device_name": a["Device"], "instance_id": a["InstanceId"], "volume_id": a["VolumeId"]}

    def delete(self):
        try:
            call("resourceVolumeAttachmentDelete", "DetachVolume", Device=self.device, Force=False,
                 InstanceId=self.iid, VolumeId=self.vol)
        except ClientError as e:
            if code(e) == "IncorrectState" and "available" in str(e):
                return
            raise

        def status():
            a = find_volume_attachment("waitVolumeAttachmentDeleted (statusVolumeAttachmentState)",
                                       self.vol, self.iid, self.device)
            return (a, a["State"]) if a else (None, "")
        wait_for_state("waitVolumeAttachmentDeleted", status, ["detaching"], [])


class Eip:
    """ec2_eip.go"""

    def __init__(self, iid):
        self.iid = iid

    def create(self):
        out = call("resourceEIPCreate", "AllocateAddress", Domain="vpc",
                   TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": [{"Key": "Name", "Value": "tf-eip"}]}])
        self.id = out["AllocationId"]
        # tfresource.RetryWhenNotFound(findEIPByAllocationID)
        wait_for_state("resourceEIPCreate (RetryWhenNotFound)",
                       lambda: ((a, "found") if (a := find_eip_by_allocation_id("findEIPByAllocationID", self.id))
                                else (None, "")), [], ["found"])
        # associateEIP
        assoc = call("associateEIP", "AssociateAddress", AllocationId=self.id, InstanceId=self.iid)["AssociationId"]

        def by_association():
            out = call("associateEIP (findEIPByAssociationID)", "DescribeAddresses",
                       Filters=[{"Name": "association-id", "Values": [assoc]}])["Addresses"]
            return (out[0], "found") if len(out) == 1 else (None, "")
        wait_for_state("associateEIP (RetryWhen NotFound)", by_association, [], ["found"])
        return self.read()

    def read(self):
        a = find_eip_by_allocation_id("resourceEIPRead (findEIPByAllocationID)", self.id)
        assert a is not None, self.id
        s = {"allocation_id": a["AllocationId"], "association_id": a.get("AssociationId"),
             "domain": a["Domain"], "instance": a.get("InstanceId"),
             "network_border_group": a.get("NetworkBorderGroup"), "network_interface": a.get("NetworkInterfaceId"),
             "public_ipv4_pool": a.get("PublicIpv4Pool"), "private_ip": a.get("PrivateIpAddress"),
             "public_ip": a["PublicIp"], "tags": tags_of(a)}
        # findEIPDomainNameAttributeByAllocationID
        attrs = call("resourceEIPRead (findEIPDomainNameAttributeByAllocationID)", "DescribeAddressesAttribute",
                     AllocationIds=[self.id], Attribute="domain-name")["Addresses"]
        s["ptr_record"] = attrs[0].get("PtrRecord", "").rstrip(".") if attrs else None
        return s

    def delete(self, association_id):
        if association_id:
            try:
                call("disassociateEIP", "DisassociateAddress", AssociationId=association_id)
            except ClientError as e:
                if code(e) != "InvalidAssociationID.NotFound":
                    raise
        try:
            call("resourceEIPDelete", "ReleaseAddress", AllocationId=self.id)
        except ClientError as e:
            if code(e) != "InvalidAllocationID.NotFound":
                raise


def tags_of(obj):
    return {t["Key"]: t["Value"] for t in obj.get("Tags", []) if not t["Key"].startswith("aws:")}


def rules_of(perms):
    """securityGroupIPPermGather, reduced to what the rule set's hash covers."""
    out = []
    for p in perms:
        cidrs = sorted(r["CidrIp"] for r in p.get("IpRanges", []))
        v6 = sorted(r["CidrIpv6"] for r in p.get("Ipv6Ranges", []))
        groups = sorted(g["GroupId"] for g in p.get("UserIdGroupPairs", []))
        out.append((p["IpProtocol"], p.get("FromPort", 0) if p["IpProtocol"] != "-1" else 0,
                    p.get("ToPort", 0) if p["IpProtocol"] != "-1" else 0, tuple(cidrs), tuple(v6), tuple(groups)))
    return sorted(out)


def metadata_of(m):
    if m is None:
        return None
    return {"http_endpoint": m.get("HttpEndpoint"), "http_protocol_ipv6": m.get("HttpProtocolIpv6"),
            "http_put_response_hop_limit": m.get("HttpPutResponseHopLimit"), "http_tokens": m.get("HttpTokens"),
            "instance_metadata_tags": m.get("InstanceMetadataTags")}


class TerraformReplay(unittest.TestCase):
    def assert_config(self, state, config, what):
        """`terraform plan` shows no change: every configured argument (and schema default)
        reads back as configured."""
        for k, want in config.items():
            self.assertEqual(state.get(k), want, f"{what}.{k}: a plan would show a change")

    def test_apply_refresh_destroy(self):
        print("provider configure", flush=True)
        identity = client("sts").get_caller_identity()
        account = identity["Account"]
        self.assertRegex(account, r"^[0-9]{12}$")
        (image,) = EC2.describe_images(Filters=[{"Name": "name", "Values": ["tiny"]}])["Images"]

        # ---- terraform apply (graph order: key pair and group, instance, volume and EIP, attachment) ----
        print("apply", flush=True)
        kp, sg = KeyPair(), SecurityGroup()
        state = {"kp": kp.create(), "sg": sg.create()}
        inst = Instance(image["ImageId"], sg.id, kp.id)
        state["inst"] = inst.create()
        vol = Volume(state["inst"]["availability_zone"])
        state["vol"] = vol.create()
        eip = Eip(inst.id)
        state["eip"] = eip.create()
        att = VolumeAttachment("/dev/sdf", vol.id, inst.id)
        state["att"] = att.create()

        config = {
            "kp": {"key_name": "tf-deployer", "key_type": "ed25519", "tags": {"Name": "tf-deployer"}},
            "sg": {"name": "tf-web", "description": "Managed by Terraform", "owner_id": account,
                   "tags": {"Name": "tf-web"},
                   "ingress": [("tcp", 22, 22, ("0.0.0.0/0",), (), ())],
                   "egress": [("-1", 0, 0, ("0.0.0.0/0",), (), ())]},
            "inst": {"ami": image["ImageId"], "instance_type": "mini", "key_name": "tf-deployer",
                     "vpc_security_group_ids": [sg.id], "user_data": USER_DATA, "source_dest_check": True,
                     "tags": {"Name": "tf-web", "env": "replay"}, "instance_state": "running",
                     "metadata_options": {"http_endpoint": "enabled", "http_protocol_ipv6": "disabled",
                                          "http_put_response_hop_limit": state["inst"]["metadata_options"][
                                              "http_put_response_hop_limit"],
                                          "http_tokens": "required", "instance_metadata_tags": "enabled"}},
            "vol": {"availability_zone": state["inst"]["availability_zone"], "size": 1, "tags": {"Name": "tf-data"},
                    "multi_attach_enabled": False},
            "eip": {"domain": "vpc", "instance": inst.id, "tags": {"Name": "tf-eip"}},
            "att": {"device_name": "/dev/sdf", "instance_id": inst.id, "volume_id": vol.id},
        }
        for what, want in config.items():
            self.assert_config(state[what], want, what)
        # Present, not empty: fields the state keeps and other resources reference.
        i = state["inst"]
        for field in ("availability_zone", "private_ip", "private_dns", "subnet_id", "primary_network_interface_id",
                      "instance_initiated_shutdown_behavior"):
            self.assertTrue(i[field], f"aws_instance.{field} is empty: {i}")
        self.assertIsInstance(i["metadata_options"]["http_put_response_hop_limit"], int)
        self.assertFalse(i["disable_api_termination"])
        self.assertFalse(i["disable_api_stop"])
        self.assertTrue(state["eip"]["public_ip"] and state["eip"]["association_id"], state["eip"])
        self.assertEqual(state["eip"]["private_ip"], i["private_ip"])
        self.assertEqual(state["eip"]["network_interface"], i["primary_network_interface_id"])
        self.assertTrue(state["kp"]["fingerprint"] and state["kp"]["key_pair_id"], state["kp"])
        self.assertTrue(state["sg"]["vpc_id"], state["sg"])

        # ---- terraform plan: refresh every resource (Read), twice; no change ----
        print("refresh", flush=True)
        readers = {"kp": kp.read, "sg": sg.read, "inst": inst.read, "vol": vol.read, "eip": eip.read, "att": att.read}
        first = {k: r() for k, r in readers.items()}
        second = {k: r() for k, r in readers.items()}
        self.assertEqual(first, second, "a second refresh reads exactly what the first read")
        for what, want in config.items():
            self.assert_config(first[what], want, what)
        for what in state:
            changed = {k for k in set(state[what]) | set(first[what]) if state[what].get(k) != first[what].get(k)}
            # The instance was read before its EIP and attachment existed: AWS changes
            # these computed attributes too (Terraform notes them, the plan stays empty).
            allowed = {"public_ip", "public_dns", "associate_public_ip_address", "ebs_block_device"} \
                if what == "inst" else set()
            self.assertLessEqual(changed, allowed, f"{what} drifted after apply: "
                                 f"{ {k: (state[what].get(k), first[what].get(k)) for k in changed} }")
        i = first["inst"]
        self.assertEqual(i["public_ip"], first["eip"]["public_ip"])
        self.assertTrue(i["associate_public_ip_address"])
        self.assertEqual([(b["device_name"], b["volume_id"], b["volume_size"]) for b in i["ebs_block_device"]],
                         [("/dev/sdf", vol.id, 1)])

        # ---- terraform destroy (reverse dependency order) ----
        print("destroy", flush=True)
        att.delete()
        eip.delete(first["eip"]["association_id"])
        vol.delete()
        inst.delete()
        kp.delete()
        sg.delete()

        # Nothing left behind.
        live = [i["InstanceId"] for r in EC2.describe_instances()["Reservations"] for i in r["Instances"]
                if i["State"]["Name"] != "terminated"]
        self.assertEqual(live, [])
        self.assertEqual(EC2.describe_volumes()["Volumes"], [])
        self.assertEqual(EC2.describe_addresses()["Addresses"], [])
        self.assertEqual(EC2.describe_key_pairs()["KeyPairs"], [])
        self.assertEqual([g["GroupName"] for g in EC2.describe_security_groups()["SecurityGroups"]
                          if g["GroupName"] != "default"], [])
        self.assertEqual(EC2.describe_tags()["Tags"], [])
        actions = sorted({a for _, a in CALLS})
        print(f"{len(CALLS)} provider calls, actions: {', '.join(actions)}", flush=True)
        if SKIPPED:
            print(f"SKIPPED (egress not served yet): {', '.join(SKIPPED)}", flush=True)


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)
