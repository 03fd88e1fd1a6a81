#!/usr/bin/env bash
# CUDA check of the speed settings (training.precision, channels_last, loader workers): the CUDA
# tests of tests/test_precision.py, then benchmarks/throughput.py on the GPU at 112 and 224 px
# (precision auto, and fp32 at 224 px for the mixed-precision gain). About 6 minutes on an H100.
#
# For a CUDA machine without a package registry that has torch, timm, peft, numpy, scikit-learn,
# pyyaml, matplotlib and scikit-image: the rest comes as wheels in wheels/, which
# benchmarks/gpu_wheels.sh downloads here. From the repository root, with wheels/ beside it:
#     OUT=/some/folder bash benchmarks/gpu_check.sh      # results under $OUT (default runs/gpu_check)
# (with the device tool: carry ["wheels"], command "bash benchmarks/gpu_check.sh")
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_check}"
SITE="${SITE:-/tmp/cldf_site}"
PYTHON="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$SITE"

"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" wheels/*.whl || exit 1
"$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" . || exit 1
export PYTHONPATH="$SITE"
# Avalanche imports wandb on import (its confusion-matrix metric) and cldf never logs to W&B: without
# the package (too large to carry, see gpu_wheels.sh) an empty module stands in.
"$PYTHON" -c "import wandb" 2>/dev/null || { mkdir -p "$SITE/wandb" && : > "$SITE/wandb/__init__.py"; }

{ nvidia-smi -L; "$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0),
'bf16' if torch.cuda.is_bf16_supported() else 'no bf16')"; } 2>&1 | tee "$OUT/device.txt"
timeout 180 "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_precision.py 2>&1 | tee "$OUT/test_precision.txt"
timeout 300 "$PYTHON" benchmarks/throughput.py --device cuda --sizes 112 224 --reps 2 --train-per-class 64 \
    --test-per-class 64 --out "$OUT/throughput_cuda.md" 2>&1 | grep -v -i warn | tee "$OUT/throughput_cuda.log"
timeout 150 "$PYTHON" benchmarks/throughput.py --device cuda --precision fp32 --sizes 224 --reps 2 --train-per-class 64 \
    --test-per-class 64 --out "$OUT/throughput_cuda_fp32.md" 2>&1 | grep -v -i warn | tee "$OUT/throughput_cuda_fp32.log"
