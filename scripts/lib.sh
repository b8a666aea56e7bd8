# Shared by the scripts beside it: the toolchain lorafit needs, and Debian's
# PyTorch for the side-by-side checks. Source it; it changes to the repo root.
export GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_torch() {
  if ! /usr/bin/python3 -c "import torch, torchvision" 2>/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-torch python3-torchvision libopenblas0-pthread
  fi
}

# run_with_lorafit SCRIPT.py [ARGS...]: builds lorafit into a scratch
# directory and runs SCRIPT.py --lorafit BIN --dir DIR ARGS..., then cleans up.
run_with_lorafit() {
  local script=$1
  shift
  need_torch
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  go build -o "$scratch/lorafit" ./cmd/lorafit
  /usr/bin/python3 "$script" --lorafit "$scratch/lorafit" --dir "$scratch" "$@"
}
