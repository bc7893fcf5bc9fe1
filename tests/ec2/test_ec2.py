"""boto3 against a running Kumo: the scenario of issue 7, end to end.

Started by tests/tests/e2e/ec2.rs with a real controller, agent, libvirtd and
TCG guests. Environment: KUMO_EC2_ENDPOINT, KUMO_EC2_REGION, KUMO_EC2_KEY_ID,
KUMO_EC2_SECRET (the first project's key) and KUMO_EC2_OTHER_KEY_ID,
KUMO_EC2_OTHER_SECRET (a key of another project).
"""

import base64
import datetime
import hashlib
import os
import subprocess
import time
import unittest
import urllib.error
import urllib.request
import uuid
from unittest import mock

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

ENDPOINT = os.environ["KUMO_EC2_ENDPOINT"]
REGION = os.environ.get("KUMO_EC2_REGION", "kumo-1")
KEY, SECRET = os.environ["KUMO_EC2_KEY_ID"], os.environ["KUMO_EC2_SECRET"]
OTHER_KEY, OTHER_SECRET = os.environ["KUMO_EC2_OTHER_KEY_ID"], os.environ["KUMO_EC2_OTHER_SECRET"]
PUBLIC_KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl e2e@kumo"
WAIT = {"Delay": 3, "MaxAttempts": 100}


def client(key=KEY, secret=SECRET, service="ec2"):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}),
    )


def code_of(call, *args, **kwargs):
    """The EC2 error code a call fails with (and the HTTP status)."""
    try:
        call(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{call.__name__} succeeded")


def raw_call(params, key=KEY, secret=SECRET, when=None):
    """A hand-signed POST (for actions botocore does not know, and old dates)."""
    body = "&".join(f"{k}={v}" for k, v in {"Version": "2016-11-15", **params}.items())
    req = AWSRequest(method="POST", url=ENDPOINT, data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    auth = SigV4Auth(Credentials(key, secret), "ec2", REGION)
    if when is None:
        auth.add_auth(req)
    else:
        with mock.patch("botocore.auth.datetime") as dt:
            dt.datetime.utcnow.return_value = when
            dt.datetime.now.return_value = when
            auth.add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=body.encode(), method="POST", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def forged_body_call(signed_params, sent_params):
    """Signs one body, sends another with the signed body's SHA-256 claimed in
    X-Amz-Content-SHA256 (issue 12: the attack on a SigV4 that trusts that header)."""
    signed = "&".join(f"{k}={v}" for k, v in {"Version": "2016-11-15", **signed_params}.items())
    sent = "&".join(f"{k}={v}" for k, v in {"Version": "2016-11-15", **sent_params}.items())
    req = AWSRequest(method="POST", url=ENDPOINT, data=signed,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(KEY, SECRET), "ec2", REGION).add_auth(req)
    headers = {k: v for k, v in req.prepare().headers.items() if k.lower() != "content-length"}
    headers["X-Amz-Content-SHA256"] = hashlib.sha256(signed.encode()).hexdigest()
    r = urllib.request.Request(ENDPOINT, data=sent.encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Ec2Scenario(unittest.TestCase):
    def test_scenario(self):
        ec2 = client()
        other = client(OTHER_KEY, OTHER_SECRET)

        # STS on the same endpoint: the account is the 12-digit OwnerId.
        identity = client(service="sts").get_caller_identity()
        account = identity["Account"]
        self.assertRegex(account, r"^[0-9]{12}$")
        self.assertTrue(identity["Arn"].startswith(f"arn:aws:iam::{account}:user/"), identity)
        attrs = {a["AttributeName"]: [v["AttributeValue"] for v in a["AttributeValues"]]
                 for a in ec2.describe_account_attributes()["AccountAttributes"]}
        self.assertEqual(attrs["supported-platforms"], ["VPC"])
        default_vpc = attrs["default-vpc"][0]
        self.assertEqual([v["VpcId"] for v in ec2.describe_vpcs(
            Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]], [default_vpc])

        # What exists.
        regions = [r["RegionName"] for r in ec2.describe_regions()["Regions"]]
        self.assertEqual(regions, [REGION])
        zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
        self.assertTrue(zones, "the agent's zone")
        zone = zones[0]
        types = {t["InstanceType"]: t for t in ec2.describe_instance_types()["InstanceTypes"]}
        self.assertIn("mini", types)
        self.assertGreaterEqual(types["mini"]["VCpuInfo"]["DefaultVCpus"], 1)
        images = ec2.describe_images(Filters=[{"Name": "name", "Values": ["tiny"]}])["Images"]
        self.assertEqual(len(images), 1, images)
        image_id = images[0]["ImageId"]
        self.assertTrue(image_id.startswith("ami-"))
        live_filter = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
        self.assertEqual(ec2.describe_instances(Filters=live_filter)["Reservations"], [])

        # Key pair.
        kp = ec2.import_key_pair(KeyName="E2E_Key-2024", PublicKeyMaterial=PUBLIC_KEY)
        self.assertTrue(kp["KeyFingerprint"].startswith("SHA256:"))
        self.assertEqual(code_of(ec2.import_key_pair, KeyName="E2E_Key-2024", PublicKeyMaterial=PUBLIC_KEY)[0],
                         "InvalidKeyPair.Duplicate")
        ec2.delete_key_pair(KeyName="never-made")  # AWS: deleting an unknown key succeeds

        # A security group (Kumo's own), with an SSH rule.
        sg = ec2.create_security_group(GroupName="E2E Web (ec2)", Description="web servers")["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        groups = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"]
        self.assertEqual(groups[0]["GroupName"], "E2E Web (ec2)")
        self.assertEqual(groups[0]["OwnerId"], account)
        self.assertEqual(groups[0]["VpcId"], default_vpc)
        self.assertEqual(groups[0]["IpPermissions"][0]["FromPort"], 22)
        rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [sg]}])["SecurityGroupRules"]
        self.assertEqual(sorted((r["IsEgress"], r["IpProtocol"], r["FromPort"]) for r in rules),
                         [(False, "tcp", 22), (True, "-1", -1)])
        self.assertEqual(groups[0]["IpPermissions"][0]["IpRanges"], [{"CidrIp": "0.0.0.0/0"}])

        # Egress rules (issue 13): AWS's default allow-all rule is a real rule;
        # authorize, read back, duplicates and unknown rules refused, revoke.
        allow_all = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        self.assertEqual([(p["IpProtocol"], p["IpRanges"]) for p in groups[0]["IpPermissionsEgress"]],
                         [("-1", [{"CidrIp": "0.0.0.0/0"}])])
        egress = [{"IpProtocol": "tcp", "FromPort": 8080, "ToPort": 8080, "IpRanges": [{"CidrIp": "10.9.0.0/16"}],
                   "UserIdGroupPairs": [{"GroupId": sg}]}]
        self.assertEqual(code_of(ec2.authorize_security_group_egress, GroupId=sg, IpPermissions=egress, DryRun=True),
                         ("DryRunOperation", 412))
        ec2.authorize_security_group_egress(GroupId=sg, IpPermissions=egress)
        self.assertEqual(code_of(ec2.authorize_security_group_egress, GroupId=sg, IpPermissions=egress)[0],
                         "InvalidPermission.Duplicate")
        ec2.revoke_security_group_egress(GroupId=sg, IpPermissions=[allow_all])
        self.assertEqual(code_of(ec2.revoke_security_group_egress, GroupId=sg, IpPermissions=[allow_all])[0],
                         "InvalidPermission.NotFound")
        out = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]["IpPermissionsEgress"]
        self.assertEqual(sorted((p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]],
                                 [g["GroupId"] for g in p["UserIdGroupPairs"]]) for p in out),
                         [("tcp", 8080, 8080, [], [sg]), ("tcp", 8080, 8080, ["10.9.0.0/16"], [])])
        rules = ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [sg]}])["SecurityGroupRules"]
        self.assertEqual(sorted((r["IsEgress"], r["IpProtocol"], r["FromPort"], r.get("CidrIpv4", "")) for r in rules),
                         [(False, "tcp", 22, "0.0.0.0/0"), (True, "tcp", 8080, ""), (True, "tcp", 8080, "10.9.0.0/16")])
        filtered = ec2.describe_security_groups(Filters=[{"Name": "egress.ip-permission.cidr", "Values": ["10.9.0.0/16"]}])
        self.assertEqual([g["GroupId"] for g in filtered["SecurityGroups"]], [sg])
        # Back to AWS's default for the instances below.
        ec2.revoke_security_group_egress(GroupId=sg, IpPermissions=egress)
        ec2.authorize_security_group_egress(GroupId=sg, IpPermissions=[allow_all])
        out = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]["IpPermissionsEgress"]
        self.assertEqual([(p["IpProtocol"], p["IpRanges"]) for p in out], [("-1", [{"CidrIp": "0.0.0.0/0"}])])
        vpcs = ec2.describe_vpcs()["Vpcs"]
        subnets = ec2.describe_subnets()["Subnets"]
        self.assertEqual(len(vpcs), len(subnets))

        # A VPC of its own with two subnets (each a Kumo network with its own VLAN).
        vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16", TagSpecifications=[
            {"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": "e2e-vpc"}]}])["Vpc"]
        vpc_id = vpc["VpcId"]
        self.assertEqual((vpc["CidrBlock"], vpc["IsDefault"], vpc["OwnerId"]), ("10.77.0.0/16", False, account))
        ec2.get_waiter("vpc_available").wait(VpcIds=[vpc_id], WaiterConfig=WAIT)
        self.assertEqual(code_of(ec2.create_vpc, CidrBlock="10.0.0.0/8")[0], "InvalidVpc.Range")
        self.assertEqual(code_of(ec2.create_vpc, CidrBlock="10.78.0.0/16", DryRun=True), ("DryRunOperation", 412))
        sub_a = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.77.1.0/24", AvailabilityZone=zone)["Subnet"]
        sub_b = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.77.2.0/24")["Subnet"]
        ec2.get_waiter("subnet_available").wait(SubnetIds=[sub_a["SubnetId"]], WaiterConfig=WAIT)
        self.assertEqual((sub_a["VpcId"], sub_a["CidrBlock"], sub_a["AvailabilityZone"]), (vpc_id, "10.77.1.0/24", zone))
        self.assertEqual(code_of(ec2.create_subnet, VpcId=vpc_id, CidrBlock="10.99.0.0/24")[0], "InvalidSubnet.Range")
        self.assertEqual(code_of(ec2.create_subnet, VpcId=vpc_id, CidrBlock="10.77.1.0/25")[0], "InvalidSubnet.Conflict")
        self.assertEqual(code_of(ec2.create_subnet, VpcId="vpc-0123456789abcdef0", CidrBlock="10.77.3.0/24")[0],
                         "InvalidVpcID.NotFound")
        in_vpc = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
        self.assertEqual(sorted(x["SubnetId"] for x in in_vpc), sorted([sub_a["SubnetId"], sub_b["SubnetId"]]))
        self.assertEqual([v["VpcId"] for v in ec2.describe_vpcs(
            Filters=[{"Name": "tag:Name", "Values": ["e2e-vpc"]}])["Vpcs"]], [vpc_id])
        self.assertEqual(code_of(other.describe_vpcs, VpcIds=[vpc_id])[0], "InvalidVpcID.NotFound")
        self.assertEqual(code_of(other.delete_subnet, SubnetId=sub_b["SubnetId"])[0], "InvalidSubnetID.NotFound")
        vpc_sg = ec2.create_security_group(GroupName="e2e-in-vpc", Description="in the VPC", VpcId=vpc_id)["GroupId"]
        self.assertEqual(ec2.describe_security_groups(GroupIds=[vpc_sg])["SecurityGroups"][0]["VpcId"], vpc_id)
        # An instance launched into the subnet: an address of it, the subnet's VPC in every view.
        placed = ec2.run_instances(ImageId=image_id, InstanceType="mini", MinCount=1, MaxCount=1,
                                   SubnetId=sub_a["SubnetId"], SecurityGroupIds=[vpc_sg])["Instances"][0]
        self.assertEqual((placed["SubnetId"], placed["VpcId"]), (sub_a["SubnetId"], vpc_id))
        self.assertTrue(placed["PrivateIpAddress"].startswith("10.77.1."), placed)
        enis = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["NetworkInterfaces"]
        self.assertEqual([(e["SubnetId"], e["PrivateIpAddress"]) for e in enis],
                         [(sub_a["SubnetId"], placed["PrivateIpAddress"])])
        self.assertEqual(code_of(ec2.delete_vpc, VpcId=vpc_id)[0], "DependencyViolation")
        self.assertEqual(code_of(ec2.delete_subnet, SubnetId=sub_a["SubnetId"])[0], "DependencyViolation")
        ec2.delete_subnet(SubnetId=sub_b["SubnetId"])
        ec2.terminate_instances(InstanceIds=[placed["InstanceId"]])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[placed["InstanceId"]], WaiterConfig=WAIT)
        for _ in range(30):  # the port is freed once the host confirms the domain is gone
            try:
                ec2.delete_subnet(SubnetId=sub_a["SubnetId"])
                break
            except ClientError as e:
                self.assertEqual(e.response["Error"]["Code"], "DependencyViolation")
                time.sleep(2)
        self.assertEqual(code_of(ec2.delete_vpc, VpcId=vpc_id)[0], "DependencyViolation")  # its group
        ec2.delete_security_group(GroupId=vpc_sg)
        self.assertEqual(code_of(ec2.delete_vpc, VpcId=vpc_id, DryRun=True), ("DryRunOperation", 412))
        ec2.delete_vpc(VpcId=vpc_id)
        self.assertEqual(code_of(ec2.describe_vpcs, VpcIds=[vpc_id])[0], "InvalidVpcID.NotFound")
        self.assertEqual(len(ec2.describe_vpcs()["Vpcs"]), len(vpcs))

        # DryRun.
        self.assertEqual(code_of(ec2.run_instances, ImageId=image_id, InstanceType="mini", MinCount=1, MaxCount=1,
                                 DryRun=True), ("DryRunOperation", 412))

        # Two instances with user data and a client token; the same token returns them again.
        token = str(uuid.uuid4())
        run = dict(ImageId=image_id, InstanceType="mini", MinCount=2, MaxCount=2, KeyName="E2E_Key-2024", SecurityGroupIds=[sg],
                   UserData="#!/bin/sh\necho hello from user data\n", ClientToken=token,
                   TagSpecifications=[{"ResourceType": "instance",
                                       "Tags": [{"Key": "Name", "Value": "e2e"}, {"Key": "suite", "Value": "ec2"}]}])
        first = ec2.run_instances(**run)
        ids = sorted(i["InstanceId"] for i in first["Instances"])
        self.assertEqual(len(ids), 2)
        self.assertEqual(first["OwnerId"], account)
        for i in first["Instances"]:
            self.assertEqual([g["GroupId"] for g in i["SecurityGroups"]], [sg])
            self.assertEqual(i["StateReason"]["Code"], "pending")
        again = ec2.run_instances(**run)
        self.assertEqual(sorted(i["InstanceId"] for i in again["Instances"]), ids)
        self.assertEqual(again["ReservationId"], first["ReservationId"])

        ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig=WAIT)
        running = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["running"]},
                                                  {"Name": "tag:suite", "Values": ["ec2"]}])
        found = sorted(i["InstanceId"] for r in running["Reservations"] for i in r["Instances"])
        self.assertEqual(found, ids)
        inst = running["Reservations"][0]["Instances"][0]
        self.assertEqual(inst["InstanceType"], "mini")
        self.assertEqual(inst["KeyName"], "E2E_Key-2024")
        self.assertEqual(inst["Placement"]["AvailabilityZone"], zone)
        # Networking in every view, agreeing with DescribeNetworkInterfaces and DescribeSubnets.
        ip = inst["PrivateIpAddress"]
        self.assertEqual(inst["PrivateDnsName"], f"ip-{ip.replace('.', '-')}.{REGION}.compute.internal")
        self.assertEqual(inst["SecurityGroups"], [{"GroupName": "E2E Web (ec2)", "GroupId": sg}])
        self.assertEqual(inst["RootDeviceType"], "ebs")
        self.assertEqual(inst["StateTransitionReason"], "")
        (nic,) = inst["NetworkInterfaces"]
        self.assertEqual((nic["PrivateIpAddress"], nic["SubnetId"], nic["VpcId"]), (ip, inst["SubnetId"], inst["VpcId"]))
        self.assertEqual(nic["Attachment"]["DeviceIndex"], 0)
        self.assertRegex(nic["MacAddress"], r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
        self.assertEqual(nic["Groups"], [{"GroupName": "E2E Web (ec2)", "GroupId": sg}])
        enis = ec2.describe_network_interfaces(NetworkInterfaceIds=[nic["NetworkInterfaceId"]])["NetworkInterfaces"]
        self.assertEqual([(e["Attachment"]["InstanceId"], e["MacAddress"], e["PrivateIpAddress"]) for e in enis],
                         [(inst["InstanceId"], nic["MacAddress"], ip)])
        subnet = ec2.describe_subnets(SubnetIds=[inst["SubnetId"]])["Subnets"][0]
        self.assertEqual(subnet["VpcId"], inst["VpcId"])
        by_ip = ec2.describe_instances(Filters=[{"Name": "private-ip-address", "Values": [ip]}])["Reservations"]
        self.assertEqual([i["InstanceId"] for r in by_ip for i in r["Instances"]], [inst["InstanceId"]])
        # Instance attributes: what Terraform and Ansible read back.
        user_data = ec2.describe_instance_attribute(InstanceId=ids[0], Attribute="userData")["UserData"]["Value"]
        self.assertEqual(base64.b64decode(user_data), b"#!/bin/sh\necho hello from user data\n")
        ec2.modify_instance_attribute(InstanceId=ids[0], DisableApiTermination={"Value": True})
        self.assertTrue(ec2.describe_instance_attribute(InstanceId=ids[0], Attribute="disableApiTermination")
                        ["DisableApiTermination"]["Value"])
        self.assertEqual(code_of(ec2.terminate_instances, InstanceIds=[ids[0]])[0], "OperationNotPermitted")
        ec2.modify_instance_attribute(InstanceId=ids[0], DisableApiTermination={"Value": False})
        self.assertEqual(code_of(ec2.modify_instance_attribute, InstanceId=ids[0],
                                 InstanceType={"Value": "small"})[0], "IncorrectInstanceState")
        self.assertIn({"Key": "Name", "Value": "e2e"}, inst["Tags"])
        # Metadata options: the change answers "pending" with the new values, Describe reads them back.
        self.assertEqual(inst["MetadataOptions"]["HttpTokens"], "optional")
        changed = ec2.modify_instance_metadata_options(InstanceId=ids[0], HttpTokens="required",
                                                       HttpPutResponseHopLimit=2, InstanceMetadataTags="enabled")
        self.assertEqual(changed["InstanceId"], ids[0])
        self.assertEqual(changed["InstanceMetadataOptions"]["State"], "pending")
        opts = ec2.describe_instances(InstanceIds=[ids[0]])["Reservations"][0]["Instances"][0]["MetadataOptions"]
        self.assertEqual({k: opts[k] for k in ("State", "HttpTokens", "HttpPutResponseHopLimit", "HttpEndpoint",
                                                "HttpProtocolIpv6", "InstanceMetadataTags")},
                         {"State": "applied", "HttpTokens": "required", "HttpPutResponseHopLimit": 2,
                          "HttpEndpoint": "enabled", "HttpProtocolIpv6": "disabled", "InstanceMetadataTags": "enabled"})
        self.assertEqual(code_of(ec2.modify_instance_metadata_options, InstanceId=ids[0], HttpTokens="always")[0],
                         "InvalidParameterValue")
        # An Elastic IP's domain-name attribute (PTR): set, read back, reset.
        alloc = ec2.allocate_address(Domain="vpc")
        ec2.modify_address_attribute(AllocationId=alloc["AllocationId"], DomainName="web.example.com")
        (attr,) = ec2.describe_addresses_attribute(AllocationIds=[alloc["AllocationId"]],
                                                   Attribute="domain-name")["Addresses"]
        self.assertEqual((attr["PublicIp"], attr["PtrRecord"]), (alloc["PublicIp"], "web.example.com."))
        self.assertEqual(code_of(ec2.modify_address_attribute, AllocationId=alloc["AllocationId"],
                                 DomainName="-bad-.example")[0], "InvalidParameterValue")
        ec2.reset_address_attribute(AllocationId=alloc["AllocationId"], Attribute="domain-name")
        (attr,) = ec2.describe_addresses_attribute(AllocationIds=[alloc["AllocationId"]],
                                                   Attribute="domain-name")["Addresses"]
        self.assertNotIn("PtrRecord", attr)
        ec2.release_address(AllocationId=alloc["AllocationId"])
        self.assertEqual(ec2.describe_addresses()["Addresses"], [])
        none = ec2.describe_instances(Filters=[{"Name": "tag:suite", "Values": ["other"]}])
        self.assertEqual(none["Reservations"], [])

        # Tags and pagination.
        ec2.create_tags(Resources=ids, Tags=[{"Key": f"k{n}", "Value": str(n)} for n in range(4)])
        pages = list(ec2.get_paginator("describe_tags").paginate(
            Filters=[{"Name": "resource-type", "Values": ["instance"]}], PaginationConfig={"PageSize": 5}))
        tags = [t for p in pages for t in p["Tags"]]
        self.assertEqual(len(tags), 12, tags)
        self.assertGreaterEqual(len(pages), 3)
        ec2.delete_tags(Resources=ids, Tags=[{"Key": "k0"}])
        left = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["k0"]}])["Tags"]
        self.assertEqual(left, [])
        listed = [i["InstanceId"] for p in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:suite", "Values": ["ec2"]}], PaginationConfig={"PageSize": 5})
                  for r in p["Reservations"] for i in r["Instances"]]
        self.assertEqual(sorted(listed), ids)

        # The console log: boto3 decodes GetConsoleOutput's base64.
        target = ids[1]
        for _ in range(60):
            out = ec2.get_console_output(InstanceId=target).get("Output", "")
            if f"KUMO-READY instance-id={target}" in out:
                break
            time.sleep(3)
        else:
            self.fail(f"no KUMO-READY in the console of {target}: {out[-2000:]}")

        # Stop, start, reboot.
        ec2.stop_instances(InstanceIds=[ids[0]])
        ec2.get_waiter("instance_stopped").wait(InstanceIds=[ids[0]], WaiterConfig=WAIT)
        stopped = ec2.describe_instances(InstanceIds=[ids[0]])["Reservations"][0]["Instances"][0]
        self.assertTrue(stopped["StateTransitionReason"].startswith("User initiated ("), stopped)
        self.assertEqual(stopped["StateReason"]["Code"], "Client.UserInitiatedShutdown")
        # The instance type changes while stopped (a running one was refused above); an
        # unknown type changes nothing; the next start runs the guest with the new memory.
        self.assertEqual(code_of(ec2.modify_instance_attribute, InstanceId=ids[0],
                                 InstanceType={"Value": "no-such-type"})[0], "InvalidInstanceAttributeValue")
        ec2.modify_instance_attribute(InstanceId=ids[0], InstanceType={"Value": "small"})
        self.assertEqual(ec2.describe_instance_attribute(InstanceId=ids[0], Attribute="instanceType")
                         ["InstanceType"]["Value"], "small")
        ec2.start_instances(InstanceIds=[ids[0]])
        ec2.get_waiter("instance_running").wait(InstanceIds=[ids[0]], WaiterConfig=WAIT)
        resized = ec2.describe_instances(InstanceIds=[ids[0]])["Reservations"][0]["Instances"][0]
        self.assertEqual(resized["InstanceType"], "small")
        dominfo = subprocess.run(["virsh", "-c", "qemu:///system", "dominfo", f"kumo-{ids[0]}"],
                                 capture_output=True, text=True, check=True).stdout
        self.assertRegex(dominfo, r"Max memory:\s+1048576 KiB", dominfo)
        self.assertEqual(ec2.describe_instance_attribute(InstanceId=ids[0], Attribute="instanceType")
                         ["InstanceType"]["Value"], "small")
        ec2.reboot_instances(InstanceIds=[ids[0]])
        status = ec2.describe_instance_status(InstanceIds=ids)["InstanceStatuses"]
        self.assertEqual(sorted(s["InstanceId"] for s in status), ids)

        # A volume: create, attach, snapshot, detach, delete.
        vol = ec2.create_volume(AvailabilityZone=zone, Size=1,
                                TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "suite", "Value": "ec2"}]}])
        vol_id = vol["VolumeId"]
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol_id], WaiterConfig=WAIT)
        att = ec2.attach_volume(VolumeId=vol_id, InstanceId=target, Device="/dev/sdf")
        self.assertEqual(att["Device"], "/dev/sdf")
        ec2.get_waiter("volume_in_use").wait(VolumeIds=[vol_id], WaiterConfig=WAIT)
        # Like EC2: the volume is in-use at once, its attachment "attaching" until the guest has the disk.
        for _ in range(60):
            vols = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [target]}])["Volumes"]
            self.assertEqual([v["VolumeId"] for v in vols], [vol_id])
            if vols[0]["Attachments"][0]["State"] == "attached":
                break
            time.sleep(2)
        else:
            self.fail(f"{vol_id} never attached: {vols}")
        self.assertEqual(vols[0]["Attachments"][0]["Device"], "/dev/sdf")
        shown = ec2.describe_instances(InstanceIds=[target])["Reservations"][0]["Instances"][0]
        self.assertEqual([(m["DeviceName"], m["Ebs"]["VolumeId"]) for m in shown["BlockDeviceMappings"]],
                         [("/dev/sdf", vol_id)])
        # The stock CLI's MaxResults=1000 is capped, not refused.
        self.assertEqual(len(ec2.describe_volumes(MaxResults=1000)["Volumes"]), 1)
        snap = ec2.create_snapshot(VolumeId=vol_id, Description="e2e")
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap["SnapshotId"]], WaiterConfig=WAIT)
        ec2.detach_volume(VolumeId=vol_id)
        ec2.get_waiter("volume_available").wait(VolumeIds=[vol_id], WaiterConfig=WAIT)
        ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])
        ec2.delete_volume(VolumeId=vol_id)
        ec2.get_waiter("volume_deleted").wait(VolumeIds=[vol_id], WaiterConfig=WAIT)

        # An image from an instance.
        made = ec2.create_image(InstanceId=target, Name="e2e-image")
        ec2.get_waiter("image_available").wait(ImageIds=[made["ImageId"]], WaiterConfig=WAIT)
        ec2.deregister_image(ImageId=made["ImageId"])
        self.assertEqual(code_of(ec2.describe_images, ImageIds=[made["ImageId"]])[0], "InvalidAMIID.NotFound")

        # Negative cases.
        self.assertEqual(code_of(client(KEY, "x" * 40).describe_instances), ("AuthFailure", 401))
        self.assertEqual(code_of(client("AKIAAAAAAAAAAAAAAAAA", SECRET).describe_instances), ("AuthFailure", 401))
        old = datetime.datetime.utcnow() - datetime.timedelta(minutes=20)
        status, body = raw_call({"Action": "DescribeRegions"}, when=old)
        self.assertEqual(status, 400, body)
        self.assertIn("<Code>RequestExpired</Code>", body)
        # A presigned URL (query-string SigV4; botocore signs EC2's for POST) works; a changed expiry does not.
        url = ec2.generate_presigned_url("describe_regions", ExpiresIn=60)
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=30) as resp:
            self.assertIn(f"<regionName>{REGION}</regionName>", resp.read().decode())
        forged = url.replace("X-Amz-Expires=60", "X-Amz-Expires=600")
        try:
            urllib.request.urlopen(urllib.request.Request(forged, data=b"", method="POST"), timeout=30)
            self.fail("a presigned URL with a changed expiry was accepted")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 401)
            self.assertIn("<Code>AuthFailure</Code>", e.read().decode())
        # A presigned read may be used again until it expires, as on AWS (the AWS CLI
        # itself sends byte-identical reads); a presigned change acts once (issue 12).
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=30) as resp:
            self.assertIn(f"<regionName>{REGION}</regionName>", resp.read().decode())
        change = ec2.generate_presigned_url("create_key_pair", Params={"KeyName": "presigned-once"}, ExpiresIn=60)
        with urllib.request.urlopen(urllib.request.Request(change, data=b"", method="POST"), timeout=30) as resp:
            self.assertIn("<keyName>presigned-once</keyName>", resp.read().decode())
        try:
            urllib.request.urlopen(urllib.request.Request(change, data=b"", method="POST"), timeout=30)
            self.fail("a presigned change was accepted twice")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 401)
            self.assertIn("already used", e.read().decode())
        ec2.delete_key_pair(KeyName="presigned-once")
        # A signed DescribeInstances whose body is swapped for DescribeKeyPairs is refused (issue 12).
        status, body = forged_body_call({"Action": "DescribeInstances"}, {"Action": "DescribeKeyPairs"})
        self.assertEqual(status, 401, body)
        self.assertIn("<Code>AuthFailure</Code>", body)
        self.assertNotIn("keySet", body)
        status, body = raw_call({"Action": "LaunchRockets"})
        self.assertEqual(status, 400, body)
        self.assertIn("<Code>InvalidAction</Code>", body)
        self.assertEqual(code_of(ec2.describe_instances, InstanceIds=["i-bad"])[0], "InvalidInstanceID.Malformed")
        self.assertEqual(code_of(ec2.describe_instances, InstanceIds=["i-0123456789abcdef0"])[0],
                         "InvalidInstanceID.NotFound")
        self.assertEqual(code_of(ec2.run_instances, ImageId="ami-0123456789abcdef0", InstanceType="mini",
                                 MinCount=1, MaxCount=1)[0], "InvalidAMIID.NotFound")

        # Another project's keys see and touch nothing.
        self.assertEqual(other.describe_instances()["Reservations"], [])
        self.assertEqual(other.describe_key_pairs()["KeyPairs"], [])
        self.assertEqual(other.describe_tags()["Tags"], [])
        self.assertEqual(code_of(other.terminate_instances, InstanceIds=[ids[0]])[0], "InvalidInstanceID.NotFound")
        self.assertEqual(code_of(other.create_tags, Resources=[ids[0]], Tags=[{"Key": "x", "Value": "y"}])[0],
                         "InvalidInstanceID.NotFound")
        self.assertEqual(code_of(other.get_console_output, InstanceId=ids[0])[0], "InvalidInstanceID.NotFound")

        # Terminate; terminated instances stay visible; every resource is gone.
        ec2.terminate_instances(InstanceIds=ids)
        ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig=WAIT)
        states = {i["State"]["Name"] for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]}
        self.assertEqual(states, {"terminated"})
        ec2.revoke_security_group_ingress(GroupId=sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        for _ in range(30):
            try:
                ec2.delete_security_group(GroupId=sg)
                break
            except ClientError as e:
                self.assertEqual(e.response["Error"]["Code"], "DependencyViolation")
                time.sleep(2)
        self.assertEqual(code_of(ec2.describe_security_groups, GroupIds=[sg])[0], "InvalidGroup.NotFound")
        ec2.delete_key_pair(KeyName="E2E_Key-2024")
        self.assertEqual(ec2.describe_key_pairs()["KeyPairs"], [])
        self.assertEqual(ec2.describe_volumes()["Volumes"], [])
        self.assertEqual(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"], [])
        self.assertEqual(ec2.describe_tags()["Tags"], [])
        self.assertNotIn("e2e-image", [i["Name"] for i in ec2.describe_images(Owners=["self"])["Images"]])
        self.assertEqual(ec2.describe_instances(Filters=live_filter)["Reservations"], [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
