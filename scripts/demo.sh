#!/usr/bin/env bash
# The main job on the shipped default model and real data (no ../shared needed).
set -euo pipefail
VITKIT=${1:-build/vitkit}
echo "== vitkit info vit_b_16"
"$VITKIT" info vit_b_16
