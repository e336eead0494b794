#!/usr/bin/env bash
# Issue 3, the sign of the direction of motion (docs/toy-model.md, "What holds it back"): four
# trainings of the built-in toy model side by side on one GPU, then each read by the toy evaluator
# on BIG_N prompts (motion confusion) and by the direction-swap probe with --travel:
#   stconv              + spatiotemporal convs (3x3x3, docs/models.md), the usual eps objective
#   pure-noise          + the first sampling step trained from pure noise (objective.pure_noise_x0_weight,
#                         docs/training.md): the model reads the direction off the noise, not the caption
#   pyramid-pure-noise  + the same, and per-frame multi-resolution noise hiding each frame's layout
#                         (objective.frame_pyramid_noise)
#   caption-reward      + the frame-and-caption embedding (its layer at 10x the learning rate) and the
#                         toy_motion reward on the model's own samples stopped at high noise
#                         (objective.reward_latents: sampled; the run session 11 proposed for a GPU)
#
#   bash scripts/gpu_toy_motion_sign.sh OUT_DIR [TRAIN_SECONDS]
#
# Each training is cut at TRAIN_SECONDS (default 270); the evaluations add about 4 min (session 9
# measured about 40 s per eval call on an H200). Results go to OUT_DIR/logs.tar.gz (NAME.train.csv:
# watch reward_toy_motion climb, or not), the U-Nets to OUT_DIR/weights.tar.part-* (cat them | tar -x).
# Environment: DEVICE (cuda), STEPS (3000), BATCH (64), LR (1e-4), REWARD_WEIGHT (0.01),
# PURE_NOISE_WEIGHT (0.02), BIG_N (384), PROBE_N (48). Runs from a checkout: PYTHONPATH=src. A CPU smoke run: DEVICE=cpu STEPS=2 BATCH=2
# BIG_N=2 PROBE_N=2 EVAL_SECONDS=300 bash scripts/gpu_toy_motion_sign.sh /tmp/out 400 (6.8 min; 8 files
# back: 7 weight parts and the logs, the device tool's limit).
set -uo pipefail
out=${1:?usage: gpu_toy_motion_sign.sh OUT_DIR [TRAIN_SECONDS]}
seconds=${2:-270}
device=${DEVICE:-cuda}
big_n=${BIG_N:-384}
builtin=src/hummingbird_t2v/assets/toy/model
run=runs/toy-gpu-sign
source scripts/gpu_lib.sh

base=(base --config configs/toy_teacher_core.yaml --set model.unet.path="$builtin" --set objective.frame_offset_noise=0.25
      --set optim.lr="${LR:-1e-4}" --set optim.warmup_steps=20 --set run.max_steps="${STEPS:-3000}"
      --set data.batch_size="${BATCH:-64}" --set data.num_workers=4 --set data.toyworld.size=200000 --set data.toyworld.seed=19
      --set sample.every=0 --set "sample.prompts=[]" --set logging.tensorboard=false --set checkpoint.every=100
      --set run.device="$device" --set run.cpu_threads=2)
reward=(--set "objective.rewards=[{name: toy_motion, weight: ${REWARD_WEIGHT:-0.01}}]" --set objective.reward_latents=sampled)
pure_noise=(--set objective.pure_noise_x0_weight="${PURE_NOISE_WEIGHT:-0.02}")
train stconv "${base[@]}" --set model.unet.config.spatiotemporal_conv=true &
train pure-noise "${base[@]}" "${pure_noise[@]}" &
train pyramid-pure-noise "${base[@]}" "${pure_noise[@]}" --set objective.frame_pyramid_noise=0.8 &
train caption-reward "${base[@]}" --set model.unet.config.frame_caption_embedding=true \
  --set 'optim.lr_multipliers={frame_caption_embedding: 10}' "${reward[@]}" &
wait
echo "training done at ${SECONDS}s" >> "$log"
pack_weights stconv pure-noise pyramid-pure-noise caption-reward

# The same prompts and noise as the built-in model's n = 384 column in docs/toy-model.md (stage E:
# motion 54.7 %, 142 of 291 moving-on-the-asked-axis videos the asked way).
for name in stconv pure-noise pyramid-pure-noise caption-reward; do
  [ -f "$run/$name/model/model_index.json" ] || continue
  evaluate "$name-big" --model "$run/$name/model" --n "$big_n" --guidance-scale 3 --confusion motion
  timeout 120 python3 -m hummingbird_t2v.cli toyworld probe --model "$run/$name/model" --swap direction \
    --n "${PROBE_N:-48}" --timesteps 999,900,800,600 --travel --device "$device" > "$logs/probe-$name.log" 2>&1
  echo "probe $name: exit $? at ${SECONDS}s" >> "$log"
  pack_logs
done

echo "all done at ${SECONDS}s" | tee -a "$log"
pack_logs
ls -la "$out"
