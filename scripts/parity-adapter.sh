#!/usr/bin/env bash
# LoRA adapter parity against PyTorch (not part of `go test ./...`: it needs
# Debian's torch and ~300 MB of scratch space). See scripts/parity_adapter.py;
# arguments are passed on to it (e.g. --cases 2,3).
set -euo pipefail
export GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")/.."
if ! /usr/bin/python3 -c "import torch, torchvision" 2>/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch python3-torchvision libopenblas0-pthread
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/lorafit" ./cmd/lorafit
/usr/bin/python3 scripts/parity_adapter.py --lorafit "$dir/lorafit" --dir "$dir" "$@"
