#!/usr/bin/env bash
# Builds .gpu/, what the toy GPU scripts need on the device machine beside the checkout: the machine's
# image has torch but not diffusers (the toy VAE is built on its AutoencoderKL), PyAV or ftfy, and all
# that travels must fit in 64 MiB (the checkout is about 41). So:
#   .gpu/site.tar.xz  this machine's diffusers without its pipelines (0.9 MB packed), and stand-ins for
#                     PyAV and ftfy (scripts/gpu_standins: the toy runs import them but never use them)
#   .gpu/stage1       the U-Net and model_index.json of a student (STUDENT, optional); gpu_lib.sh's
#                     complete_student adds the built-in VAE, text encoder and prior on the device
#
#   bash scripts/gpu_carry.sh [STUDENT]
#
# Then, with the device tool (carry [".gpu"]), the command starts with
#   mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site && for m in diffusers av ftfy; do
#   python3 -c "import $m" 2>/dev/null && rm -rf /tmp/site/$m /tmp/site/$m.py; done; export PYTHONPATH=/tmp/site;
# (a package the image does have is used instead), e.g. `bash scripts/gpu_toy_swaps.sh $OUT .gpu/stage1 300`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo "/.gpu/" >> .git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu
site=$(mktemp -d)
diffusers=$(python3 -c "import diffusers, os; print(os.path.dirname(diffusers.__file__))")
cp -r "$diffusers" "$site/" && rm -rf "$site/diffusers/pipelines/"* "$site/diffusers/modular_pipelines/"*
cp -r scripts/gpu_standins/. "$site/"
find "$site" -name __pycache__ -prune -exec rm -rf {} +
tar -cJf .gpu/site.tar.xz -C "$site" . && rm -rf "$site"
if [ $# -ge 1 ]; then
  mkdir -p .gpu/stage1 && cp -r "$1/unet" "$1/model_index.json" .gpu/stage1/
fi
du -sh .gpu
