#!/usr/bin/env bash
# A backbone pretrained here, for the founding study on a machine that cannot
# download ImageNet weights: torchvision's ResNet-50 (random init, seeded)
# trained fully on Fashion-MNIST — a dataset other than MNIST — with
# lorafit's full fine-tuning. fc keeps its 1,000 outputs (Fashion-MNIST uses
# the first 10), so the study's cases and their parameter counts stay the
# blog's. Writes OUT/model.safetensors (torchvision's keys: pass it as
# --weights) and OUT/result.json with the Fashion-MNIST test accuracy.
#
#   scripts/pretrain-fashion.sh [OUT] [EPOCHS] [IMAGES] [ARCH]
#     defaults: runs/fashion-resnet50, 3 epochs, all 60,000 training images, resnet50
set -euo pipefail
source "$(dirname "$0")/lib.sh"
out=${1:-runs/fashion-resnet50}
epochs=${2:-3}
images=${3:-0}
arch=${4:-resnet50}
[ -d /usr/share/datasets/fashion-mnist ] || {
  echo "$0: Fashion-MNIST is Debian's dataset-fashion-mnist: apt-get install -y dataset-fashion-mnist" >&2
  exit 1
}
go run ./cmd/lorafit train --full --data fashion-mnist --weights random:0 --model "$arch" \
  --epochs "$epochs" --limit-train "$images" --batch 64 --optimizer adamw --lr 1e-3 --weight-decay 0.05 --warmup 0.05 \
  --augment --seed 0 --out "$out"
