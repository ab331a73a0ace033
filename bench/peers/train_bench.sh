#!/usr/bin/env bash
# bench/peers/train_bench.sh: training speed of vitkit against PyTorch 1.13 on the
# same model, batch and threads, in one run (issue [train] item 7: goal >= 1.5x
# PyTorch's images/s). Default: the Fashion-MNIST model (models/vit-tiny-fmnist.safetensors,
# or configs/vit-tiny-fmnist.toml's architecture with random weights), batch 128,
# 2 threads, fp32. One step = forward + cross-entropy + backward + AdamW, random data
# (vitkit bench --train, torch_train_bench.py), interleaved in rounds.
# usage: bench/peers/train_bench.sh [run.sh flags: --model --batch --threads --rounds --reps --runtimes]
exec "$(dirname "$0")/run.sh" --train "$@"
