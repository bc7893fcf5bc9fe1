#!/usr/bin/env bash
# The AWS CLI against a running Kumo (started by tests/tests/e2e/ec2.rs).
# Needs: KUMO_EC2_VENV (with awscli), KUMO_EC2_ENDPOINT, KUMO_EC2_REGION,
# KUMO_EC2_KEY_ID, KUMO_EC2_SECRET.
set -euo pipefail
export AWS_ACCESS_KEY_ID="$KUMO_EC2_KEY_ID" AWS_SECRET_ACCESS_KEY="$KUMO_EC2_SECRET"
export AWS_DEFAULT_REGION="${KUMO_EC2_REGION:-kumo-1}" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_MAX_ATTEMPTS=2 AWS_PAGER=""
aws() { "$KUMO_EC2_VENV/bin/aws" --endpoint-url "$KUMO_EC2_ENDPOINT" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(aws ec2 describe-regions --query 'Regions[].RegionName' --output text)" = "$AWS_DEFAULT_REGION" ] || fail describe-regions
image=$(aws ec2 describe-images --filters Name=name,Values=tiny --query 'Images[0].ImageId' --output text)
[[ $image == ami-* ]] || fail "describe-images: $image"
aws ec2 describe-instance-types --instance-types mini --query 'InstanceTypes[0].InstanceType' --output text | grep -qx mini \
    || fail describe-instance-types

id=$(aws ec2 run-instances --image-id "$image" --instance-type mini --count 1 --client-token cli-token-1 \
    --tag-specifications 'ResourceType=instance,Tags=[{Key=Name,Value=cli}]' --query 'Instances[0].InstanceId' --output text)
[[ $id == i-* ]] || fail "run-instances: $id"
again=$(aws ec2 run-instances --image-id "$image" --instance-type mini --count 1 --client-token cli-token-1 \
    --tag-specifications 'ResourceType=instance,Tags=[{Key=Name,Value=cli}]' --query 'Instances[0].InstanceId' --output text)
[ "$again" = "$id" ] || fail "the same client token launched $again besides $id"
aws ec2 wait instance-running --instance-ids "$id"
aws ec2 describe-instances --filters Name=tag:Name,Values=cli --query 'Reservations[].Instances[].InstanceId' --output text \
    | grep -qx "$id" || fail "describe-instances by tag"
ip=$(aws ec2 describe-instances --instance-ids "$id" --query 'Reservations[0].Instances[0].PrivateIpAddress' --output text)
[[ $ip =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "no PrivateIpAddress: $ip"
eni=$(aws ec2 describe-network-interfaces --filters "Name=attachment.instance-id,Values=$id" \
    --query 'NetworkInterfaces[0].PrivateIpAddress' --output text)
[ "$eni" = "$ip" ] || fail "describe-network-interfaces: $eni, not $ip"
# The stock describe-volumes sends MaxResults=1000 (capped, not refused).
aws ec2 describe-volumes --query 'Volumes' --output text >/dev/null || fail describe-volumes
account=$(aws sts get-caller-identity --query Account --output text)
[[ $account =~ ^[0-9]{12}$ ]] || fail "sts get-caller-identity: $account"
owner=$(aws ec2 describe-instances --instance-ids "$id" --query 'Reservations[0].OwnerId' --output text)
[ "$owner" = "$account" ] || fail "OwnerId $owner is not the account $account"
if out=$(aws ec2 describe-instances --instance-ids i-0123456789abcdef0 2>&1); then fail "unknown id accepted"; fi
grep -q InvalidInstanceID.NotFound <<<"$out" || fail "unknown id: $out"
aws ec2 terminate-instances --instance-ids "$id" >/dev/null
aws ec2 wait instance-terminated --instance-ids "$id"
[ "$(aws ec2 describe-instances --instance-ids "$id" --query 'Reservations[0].Instances[0].State.Name' --output text)" = terminated ] \
    || fail "terminated instance not visible"
echo "awscli: ok"
