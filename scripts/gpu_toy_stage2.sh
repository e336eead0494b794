#!/usr/bin/env bash
# Stage 2 from a stage-1 student of the built-in model (stage E with its caption prior), three
# students side by side on one GPU (each is too small to keep a GPU busy alone), then their
# evaluations, in a fixed time. All three: LoRA, w ~ U[1, 3] around the teacher's guidance 3.
#   cd         consistent fps in both teacher passes (the default), no reward
#   cd-quirk   the released fps quirk (the unconditional teacher pass at the U-Net's default fps 16)
#   cd-color   consistent fps with the toy colour reward (weight 1)
# Issue 5 asks what the quirk does on the toy world (cd against cd-quirk) and whether the reward
# lifts its attribute without hurting the others (cd against cd-color); the 50-step teacher is
# evaluated on the same prompts for the 5-point comparison.
#
#   bash scripts/gpu_toy_stage2.sh OUT_DIR STAGE1_STUDENT [TRAIN_SECONDS]
#
# STAGE1_STUDENT: a stage-1 model folder (a bare unet/ + model_index.json is completed with the
# built-in model's VAE and text encoder). Each training is cut at TRAIN_SECONDS (default 330) and
# then exported from its newest checkpoint. Results (logs, evaluation JSON) go to
# OUT_DIR/logs.tar.gz, refreshed after every step; the trained U-Nets to OUT_DIR/weights.tar.part-*
# (cat them | tar -x), the evaluation videos to OUT_DIR/videos.tar.part-*. Environment: DEVICE (cuda), CD_STEPS (600), CD_BATCH (32), CD_LR (2e-4),
# EVAL_N (96). Runs from a checkout: PYTHONPATH=src, no install needed.
set -uo pipefail
out=${1:?usage: gpu_toy_stage2.sh OUT_DIR STAGE1_STUDENT [TRAIN_SECONDS]}
student=${2:?usage: gpu_toy_stage2.sh OUT_DIR STAGE1_STUDENT [TRAIN_SECONDS]}
seconds=${3:-330}
device=${DEVICE:-cuda}
eval_n=${EVAL_N:-96}
builtin=src/hummingbird_t2v/assets/toy/model
run=runs/toy-gpu-stage2
source scripts/gpu_lib.sh

complete_student "$student"

stage2=(--config configs/toy_consistency.yaml --set model.unet.path="$builtin" --set model.vae.path="$builtin"
        --set model.text_encoder.path="$builtin" --set model.prior.path="$builtin" --set objective.student="$student"
        --set objective.w_min=1 --set objective.w_max=3 --set sample.guidance_scale=2 --set data.toyworld.vocabulary=core
        --set data.toyworld.size=200000 --set run.max_steps="${CD_STEPS:-600}" --set data.batch_size="${CD_BATCH:-32}"
        --set data.num_workers=3 --set optim.lr="${CD_LR:-2e-4}" --set sample.every=0 --set "sample.prompts=[]"
        --set logging.tensorboard=false --set checkpoint.every=100 --set run.device="$device" --set run.cpu_threads=2)
train cd consistency "${stage2[@]}" --set 'objective.rewards=[]' &
train cd-quirk consistency "${stage2[@]}" --set 'objective.rewards=[]' --set objective.uncond_fps_quirk=true &
train cd-color consistency "${stage2[@]}" \
  --set 'objective.rewards=[{name: toy, weights: null, weight: 1.0, num_frames: null, options: {attributes: [color], mode: log_prob}}]' &
wait
echo "training done at ${SECONDS}s" >> "$log"

pack_weights cd cd-quirk cd-color

# The same prompts and noise as every earlier n = 96 row. The 4-step students' and the teacher's
# videos come back too (videos.tar.part-*), for paired comparisons (`hummingbird toyworld compare`).
mkdir -p "$run/videos"
evaluate teacher-50 --model "$builtin" --n "$eval_n" --guidance-scale 3 --steps 50 --save-videos "$run/videos/teacher-50.npz"
for name in cd cd-quirk cd-color; do
  if [ -f "$run/$name/model/model_index.json" ]; then
    evaluate "$name-4" --model "$run/$name/model" --n "$eval_n" --steps 4 --save-videos "$run/videos/$name-4.npz"
    evaluate "$name-8" --model "$run/$name/model" --n "$eval_n" --steps 8
  fi
done
(cd "$run" && tar -cf - videos) | split -b 15m - "$out/videos.tar.part-"

echo "all done at ${SECONDS}s" | tee -a "$log"
pack_logs
ls -la "$out"
