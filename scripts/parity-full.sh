#!/usr/bin/env bash
# Full-size ResNet-50 parity against PyTorch (not part of `go test ./...`: it
# needs Debian's torch and ~1 GB of scratch space). See scripts/parity_full.py.
set -euo pipefail
export GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd
cd "$(dirname "$0")/.."
if ! /usr/bin/python3 -c "import torch, torchvision" 2>/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch python3-torchvision libopenblas0-pthread
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/lorafit" ./cmd/lorafit
/usr/bin/python3 scripts/parity_full.py --lorafit "$dir/lorafit" --dir "$dir"
