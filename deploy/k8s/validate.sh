#!/usr/bin/env bash
# Validates the manifests offline: deploy/k8s/validate.sh [FILE...]
# (default: every manifest here). Needs the test venv (make interop-venv)
# and Go, which fetches KEDA's CRD (the ScaledObject schema) from its module.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${NOVYRA_PYTHON:-$root/.stack/venv/bin/python}"
keda_version="v2.18.1"
k8s_version="1.33"
dir="$(GOFLAGS=-mod=mod go mod download -json "github.com/kedacore/keda/v2@$keda_version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
crd="$dir/config/crd/bases/keda.sh_scaledobjects.yaml"
[ -f "$crd" ] || { echo "KEDA CRD not found at $crd" >&2; exit 1; }
if [ "$#" -eq 0 ]; then set -- "$here"/*.yaml; fi
exec "$python" "$here/validate.py" "$crd" "$k8s_version" "$@"
