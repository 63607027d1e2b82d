#!/usr/bin/env bash
# Packs what a lent GPU machine lacks into .whl/site.tar.xz (under 64 MiB, the most a call carries):
# the lent machine has python 3.12 with torch, transformers, peft and accelerate, but not pydantic,
# trl, datasets, unsloth or bitsandbytes. Versions are the ones installed here. Then, on the machine:
#   mkdir -p /tmp/site && tar xJf .whl/site.tar.xz -C /tmp/site && export PYTHONPATH=$PWD:/tmp/site
#   python3 bench/gpu_check.py --out /tmp/gc --budget 440 --work /tmp/gcwork
# (carry .whl; copy /tmp/gc/gpu_check.json and a tar of /tmp/gc/logs to $OUT: at most 8 files come back)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
wheels=$(mktemp -d) site=$(mktemp -d)
pins=()
for name in pydantic pydantic_core annotated-types typing-inspection trl datasets dill multiprocess unsloth \
    unsloth_zoo cut_cross_entropy diffusers hf_transfer json5 nest-asyncio structlog tyro docstring-parser \
    typeguard msgspec torchao typer shellingham xxhash bitsandbytes xformers; do
  pins+=("$name==$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$wheels" "${pins[@]}"
for wheel in "$wheels"/*.whl; do unzip -q -o "$wheel" -d "$site"; done
# bitsandbytes ships a library per CUDA version (the machine has CUDA 13); unsloth ships its web studio
find "$site/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name '*cuda13*' ! -name '*cpu*' -delete
rm -rf "$site/studio"
mkdir -p .whl
tar cJf .whl/site.tar.xz -C "$site" .
rm -rf "$wheels" "$site"
ls -la .whl/site.tar.xz
