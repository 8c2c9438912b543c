#!/bin/sh
# Prints the ConfigMap agentbus-authority made from an authority's directory
# (the one `agentbus authority config` and `agentbus tenant create` keep):
# nats-accounts.conf, which the NATS nodes include, and tenants.json and
# admins.json, which `agentbus authority serve` reads. Public keys and ids
# only: the seeds go into the Secret agentbus-authority (deploy/README.md).
#
#   deploy/kubernetes/authority-configmap.sh ./authority | kubectl apply -f -
#
# Run it again after each `agentbus tenant create` or `tenant export`: the
# NATS nodes reload the accounts and the authority reads the tenants again.
set -eu
dir=${1:?usage: authority-configmap.sh <authority directory> [namespace]}
namespace=${2:-agentbus}
if [ ! -f "$dir/nats-accounts.conf" ]; then
  echo "authority-configmap.sh: no $dir/nats-accounts.conf: run agentbus authority config --dir $dir --out $dir/nats-accounts.conf first" >&2
  exit 2
fi
set -- --from-file="$dir/nats-accounts.conf"
# No tenant yet: no tenants.json nor admins.json.
for file in tenants.json admins.json; do
  if [ -f "$dir/$file" ]; then set -- "$@" --from-file="$dir/$file"; fi
done
exec kubectl create configmap agentbus-authority --namespace "$namespace" "$@" --dry-run=client --output yaml
