#!/usr/bin/env bash
# Three toy trainings side by side on one GPU (each is too small to keep a GPU busy alone), then
# their evaluations, in a fixed time:
#   teacher-f      the built-in model trained on, with a frame position embedding (added if it has
#                  none) whose layer learns 10x faster than the rest (issue 3: direction of motion;
#                  stage E of the built-in model is this run from stage D, docs/toy-model.md)
#   cd-long        stage 2 (LoRA, no reward) from a stage-1 student, with 8x run 4's batch
#   cd-long-color  the same with the toy colour reward
#
#   bash scripts/gpu_toy_side_by_side.sh OUT_DIR STAGE1_STUDENT [TRAIN_SECONDS]
#
# STAGE1_STUDENT: a stage-1 model folder (a bare unet/ + model_index.json is completed with the
# built-in model's VAE and text encoder). Each training is cut at TRAIN_SECONDS (default 380); one
# cut before its last step is exported from its newest checkpoint and says so in its log. Results
# (logs, evaluation JSON) go to OUT_DIR/logs.tar.gz, refreshed after every step, and the trained U-Nets,
# packed as soon as the trainings end, to OUT_DIR/weights.tar.part-* (cat them | tar -x): a call cut
# short still returns both (the device tool returns at most 8 files). Environment: DEVICE (cuda), TEACHER_STEPS (800), TEACHER_BATCH (64), CD_STEPS (500),
# CD_BATCH (32), CD_LR (2e-4), EVAL_N (96), BIG_N (384: the teacher and the built-in model on more
# prompts, for the direction of motion). Runs from a checkout: PYTHONPATH=src, no install needed.
set -uo pipefail
out=${1:?usage: gpu_toy_side_by_side.sh OUT_DIR STAGE1_STUDENT [TRAIN_SECONDS]}
student=${2:?usage: gpu_toy_side_by_side.sh OUT_DIR STAGE1_STUDENT [TRAIN_SECONDS]}
seconds=${3:-380}
device=${DEVICE:-cuda}
eval_n=${EVAL_N:-96}
big_n=${BIG_N:-384}
builtin=src/hummingbird_t2v/assets/toy/model
run=runs/toy-gpu-side
source scripts/gpu_lib.sh

complete_student "$student"

common=(--set sample.every=0 --set "sample.prompts=[]" --set logging.tensorboard=false --set checkpoint.every=100 --set run.device="$device"
        --set run.cpu_threads=2)
train teacher-f base --config configs/toy_teacher_core.yaml --set model.unet.path="$builtin" \
  --set model.unet.config.frame_position_embedding=true --set 'optim.lr_multipliers={frame_embedding: 10}' \
  --set objective.frame_offset_noise=0.25 --set optim.lr=4e-4 --set run.max_steps="${TEACHER_STEPS:-800}" \
  --set data.batch_size="${TEACHER_BATCH:-64}" --set data.num_workers=4 --set data.toyworld.size=200000 \
  --set sample.guidance_scale=3 "${common[@]}" &
stage2=(--config configs/toy_consistency.yaml --set model.unet.path="$builtin" --set model.vae.path="$builtin"
        --set model.text_encoder.path="$builtin" --set objective.student="$student" --set objective.w_min=1
        --set objective.w_max=3 --set sample.guidance_scale=2 --set data.toyworld.vocabulary=core
        --set run.max_steps="${CD_STEPS:-500}" --set data.batch_size="${CD_BATCH:-32}" --set data.num_workers=2
        --set optim.lr="${CD_LR:-2e-4}" "${common[@]}")
train cd-long consistency "${stage2[@]}" --set 'objective.rewards=[]' &
train cd-long-color consistency "${stage2[@]}" \
  --set 'objective.rewards=[{name: toy, weights: null, weight: 1.0, num_frames: null, options: {attributes: [color], mode: log_prob}}]' &
wait
echo "training done at ${SECONDS}s" >> "$log"

pack_weights teacher-f cd-long cd-long-color

# Evaluations: the same prompts and noise as every earlier row (first EVAL_N of the core world).
if [ -f "$run/teacher-f/model/model_index.json" ]; then
  evaluate teacher-f-25 --model "$run/teacher-f/model" --n "$eval_n" --guidance-scale 3 --confusion motion
  evaluate teacher-f-50 --model "$run/teacher-f/model" --n "$eval_n" --guidance-scale 3 --steps 50
  evaluate teacher-f-big --model "$run/teacher-f/model" --n "$big_n" --guidance-scale 3 --confusion motion
fi
evaluate builtin-big --model "$builtin" --n "$big_n" --guidance-scale 3 --confusion motion
for name in cd-long cd-long-color; do
  if [ -f "$run/$name/model/model_index.json" ]; then
    for steps in 4 8; do evaluate "$name-$steps" --model "$run/$name/model" --n "$eval_n" --steps "$steps"; done
  fi
done

echo "all done at ${SECONDS}s" | tee -a "$log"
pack_logs
ls -la "$out"
