#!/usr/bin/env bash
# Stage 1 from the built-in model (stage E with its caption prior), three students side by side on
# one GPU (each is too small to keep a GPU busy alone), then their evaluations, in a fixed time:
#   imp        importance layout (configs/toy_importance_layout.yaml), the plain stage-1 loss
#   imp-feat   the same plus feature distillation (objective.feature_loss_weight = FEATURE_WEIGHT)
#   paper-feat the paper map (configs/toy_paper_layout.yaml) plus feature distillation
# All three distil the teacher at the guidance it samples with (3) and carry its caption prior, so
# their rows compare with the teacher's (docs/toy-model.md: n = 96, with prior).
#
#   bash scripts/gpu_toy_stage1_features.sh OUT_DIR [TRAIN_SECONDS]
#
# Each training is cut at TRAIN_SECONDS (default 380) and then exported from its newest checkpoint.
# Results (logs, evaluation JSON) go to OUT_DIR/logs.tar.gz, refreshed after every step; the
# trained U-Nets to OUT_DIR/weights.tar.part-* (cat them | tar -x). Environment: DEVICE (cuda),
# STEPS (3000), BATCH (32), LR (2e-4), FEATURE_WEIGHT (0.1), EVAL_N (96). Runs from a checkout.
set -uo pipefail
out=${1:?usage: gpu_toy_stage1_features.sh OUT_DIR [TRAIN_SECONDS]}
seconds=${2:-380}
device=${DEVICE:-cuda}
eval_n=${EVAL_N:-96}
builtin=src/hummingbird_t2v/assets/toy/model
run=runs/toy-gpu-stage1
source scripts/gpu_lib.sh

stage1=(--config configs/toy_distill.yaml --set model.unet.path="$builtin" --set model.vae.path="$builtin"
        --set model.text_encoder.path="$builtin" --set model.prior.path="$builtin" --set objective.guidance_scale=3
        --set data.toyworld.vocabulary=core --set data.toyworld.size=200000 --set data.num_workers=3
        --set run.max_steps="${STEPS:-3000}" --set data.batch_size="${BATCH:-32}" --set optim.lr="${LR:-2e-4}"
        --set sample.every=0 --set "sample.prompts=[]" --set logging.tensorboard=false --set checkpoint.every=100
        --set run.device="$device" --set run.cpu_threads=2)
feature=(--set objective.feature_loss_weight="${FEATURE_WEIGHT:-0.1}")
train imp distill "${stage1[@]}" --set objective.layout=configs/toy_importance_layout.yaml &
train imp-feat distill "${stage1[@]}" --set objective.layout=configs/toy_importance_layout.yaml "${feature[@]}" &
train paper-feat distill "${stage1[@]}" --set objective.layout=configs/toy_paper_layout.yaml "${feature[@]}" &
wait
echo "training done at ${SECONDS}s" >> "$log"

pack_weights imp imp-feat paper-feat

# The same prompts and noise as the teacher's n = 96 row; stage-1 students sample without CFG.
for name in imp imp-feat paper-feat; do
  if [ -f "$run/$name/model/model_index.json" ]; then
    evaluate "$name" --model "$run/$name/model" --n "$eval_n" --guidance-scale 1
  fi
done

echo "all done at ${SECONDS}s" | tee -a "$log"
pack_logs
ls -la "$out"
