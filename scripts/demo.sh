#!/usr/bin/env bash
# The main job on the shipped default model and real data (no ../shared needed):
# the default model evaluated on the Fashion-MNIST test set from Debian's
# dataset-fashion-mnist package (top-1, top-5, per class, images/s).
set -euo pipefail
VITKIT=${1:-build/vitkit}
MODEL=${MODEL:-models/vit-tiny-fmnist.safetensors}
echo "== vitkit info $MODEL"
"$VITKIT" info "$MODEL"
echo
echo "== vitkit eval $MODEL --data fashion-mnist"
"$VITKIT" eval "$MODEL" --data fashion-mnist
