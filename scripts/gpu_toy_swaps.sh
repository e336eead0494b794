#!/usr/bin/env bash
# Issues 4 and 5 with swapped captions (objective.caption_swap_probability=0.5, docs/pruning.md), on
# one GPU, every training side by side (each is too small to keep a GPU busy alone), then every
# evaluation at EVAL_N prompts against the 50-step teacher with CFG 3 on the same prompts and noise:
#   stage 1 (issue 4), from the built-in model, 900 steps of 8 clips, lr 2e-4, feature term 0.1:
#     s1-caption, s1-paper, s1-importance   the three layouts, distilled (DDIM 25, no CFG)
#     pruned-caption/paper/importance       the same layouts pruned without distillation (DDIM 25, CFG 3)
#     STAGE1_STUDENT                         the CPU-trained student the stage-2 arms start from
#   stage 2 (issue 5), from STAGE1_STUDENT, CD_STEPS steps of CD_BATCH clips, w ~ U[1, 3]:
#     cd              LoRA r16, lr 2e-4, no reward
#     cd-color        the same with the toy colour reward (weight 1, log-prob)
#     cd-full         full fine-tuning, lr 5e-5, no reward
#     cd-full-color   full fine-tuning with the colour reward
#   (the reward arms keep the swapped captions, like every arm here; run 14 of docs/toy-recipe-results.md
#   found a reward on swapped clips at low t pulling against the target, so read them with that in mind)
#   each read at 4 steps (and at step 200) and 8 steps, and paired with the teacher
#   (`toyworld compare`, exact McNemar).
#
#   bash scripts/gpu_toy_swaps.sh OUT_DIR STAGE1_STUDENT [TRAIN_SECONDS]
#
# On the device machine: `bash scripts/gpu_carry.sh STUDENT` here first (diffusers and the student
# travel in .gpu/), then the command that script's header gives, ending in
# `bash scripts/gpu_toy_swaps.sh $OUT .gpu/stage1 300` with timeout_s about 540.
# Each training is cut at TRAIN_SECONDS (default 300) and then exported from its newest checkpoint.
# Results (logs, train.csv, evaluation JSON, comparisons) go to OUT_DIR/logs.tar.gz, refreshed after
# every step; the U-Nets of the three stage-2 students closest to the teacher (the smallest worst gap)
# to OUT_DIR/weights.tar.part-* (cat them | tar -x). Environment: DEVICE (cuda), EVAL_N (384),
# S1_STEPS (900), CD_STEPS (400), CD_BATCH (16), EVAL_JOBS (10 at once). Runs from a checkout:
# PYTHONPATH=src, no install needed. CPU smoke run (9.3 min on 2 cores): DEVICE=cpu S1_STEPS=2 CD_STEPS=2 CD_BATCH=2
# EVAL_N=2 EVAL_JOBS=3 bash scripts/gpu_toy_swaps.sh /tmp/out STUDENT 300 (with the stand-ins of gpu_carry.sh on PYTHONPATH).
set -uo pipefail
out=${1:?usage: gpu_toy_swaps.sh OUT_DIR STAGE1_STUDENT [TRAIN_SECONDS]}
student=${2:?usage: gpu_toy_swaps.sh OUT_DIR STAGE1_STUDENT [TRAIN_SECONDS]}
seconds=${3:-300}
device=${DEVICE:-cuda}
eval_n=${EVAL_N:-384}
builtin=src/hummingbird_t2v/assets/toy/model
run=runs/toy-gpu-swaps
source scripts/gpu_lib.sh

complete_student "$student"
common=(--set model.unet.path="$builtin" --set model.vae.path="$builtin" --set model.text_encoder.path="$builtin"
        --set model.prior.path="$builtin" --set data.toyworld.vocabulary=core --set data.toyworld.size=200000
        --set objective.caption_swap_probability=0.5 --set data.num_workers=2 --set sample.every=0
        --set "sample.prompts=[]" --set logging.tensorboard=false --set checkpoint.every=100 --set checkpoint.keep=5
        --set run.device="$device" --set run.cpu_threads=1)
stage1=(distill --config configs/toy_distill.yaml "${common[@]}" --set objective.guidance_scale=3 --set optim.lr=2e-4
        --set run.max_steps="${S1_STEPS:-900}" --set objective.feature_loss_weight=0.1 --set data.toyworld.seed=9)
stage2=(consistency --config configs/toy_consistency.yaml "${common[@]}" --set objective.student="$student"
        --set objective.w_min=1 --set objective.w_max=3 --set sample.guidance_scale=2 --set data.toyworld.seed=12
        --set run.max_steps="${CD_STEPS:-400}" --set data.batch_size="${CD_BATCH:-16}")
no_reward=(--set 'objective.rewards=[]')
color=(--set 'objective.rewards=[{name: toy, weights: null, weight: 1.0, num_frames: null, options: {attributes: [color], mode: log_prob}}]')
full=(--set objective.trainable=full --set optim.lr=5e-5)

for layout in caption paper importance; do
  train "s1-$layout" "${stage1[@]}" --set objective.layout="configs/toy_${layout}_layout.yaml" &
done
train cd "${stage2[@]}" "${no_reward[@]}" --set optim.lr=2e-4 &
train cd-color "${stage2[@]}" "${color[@]}" --set optim.lr=2e-4 &
train cd-full "${stage2[@]}" "${no_reward[@]}" "${full[@]}" &
train cd-full-color "${stage2[@]}" "${color[@]}" "${full[@]}" &

# The layouts pruned from the teacher without distillation (prune writes a whole model folder).
for layout in caption paper importance; do
  python3 -m hummingbird_t2v.cli prune --teacher "$builtin" --layout "configs/toy_${layout}_layout.yaml" \
    --no-guidance-projection --overwrite -o "$run/pruned-$layout" > "$logs/prune-$layout.log" 2>&1
done
wait
echo "training done at ${SECONDS}s" >> "$log"
for name in cd cd-color cd-full cd-full-color; do
  [ -d "$run/$name/checkpoints/step-00000200" ] &&
    python3 -m hummingbird_t2v.cli train export --run "$run/$name" --checkpoint "$run/$name/checkpoints/step-00000200" \
      -o "$run/$name/model-200" >> "$logs/$name.log" 2>&1
done
pack_logs

# Every evaluation on the same prompts and noise, EVAL_JOBS at a time; videos kept for the pairings.
videos=$run/videos
mkdir -p "$videos"
evals=()
evals+=("teacher-50 --model $builtin --guidance-scale 3 --steps 50 --confusion color --save-videos $videos/teacher-50.npz")
evals+=("stage1-cpu --model $student --guidance-scale 1 --steps 25 --confusion motion --save-videos $videos/stage1-cpu.npz")
for layout in caption paper importance; do
  evals+=("s1-$layout --model $run/s1-$layout/model --guidance-scale 1 --steps 25 --confusion motion --save-videos $videos/s1-$layout.npz")
  evals+=("pruned-$layout --model $run/pruned-$layout --guidance-scale 3 --steps 25")
done
for name in cd cd-color cd-full cd-full-color; do
  evals+=("$name-4 --model $run/$name/model --steps 4 --confusion color --save-videos $videos/$name-4.npz")
  evals+=("$name-200-4 --model $run/$name/model-200 --steps 4 --save-videos $videos/$name-200-4.npz")
  evals+=("$name-8 --model $run/$name/model --steps 8")
done
for job in "${evals[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "${EVAL_JOBS:-10}" ]; do wait -n; done
  read -r -a words <<< "$job"
  evaluate "${words[@]}" --n "$eval_n" --threads 1 &
done
wait

# Paired against the teacher (and the GPU caption student against the CPU one).
pairs=("teacher-50 stage1-cpu" "stage1-cpu s1-caption" "teacher-50 s1-caption" "teacher-50 s1-paper"
       "teacher-50 s1-importance" "cd-4 cd-color-4" "cd-full-4 cd-full-color-4" "cd-4 cd-full-4")
for name in cd cd-color cd-full cd-full-color; do pairs+=("teacher-50 $name-4" "teacher-50 $name-200-4"); done
for pair in "${pairs[@]}"; do
  read -r a b <<< "$pair"
  [ -f "$videos/$a.npz" ] && [ -f "$videos/$b.npz" ] &&
    python3 -m hummingbird_t2v.cli toyworld compare "$videos/$a.npz" "$videos/$b.npz" > "$logs/compare-$a-vs-$b.txt" 2>&1 &
done
wait
echo "evaluations done at ${SECONDS}s" >> "$log"
pack_logs

# The three stage-2 students whose worst attribute is closest to the teacher's come back.
best=$(python3 - "$logs" 2>> "$log" <<'EOF'
import json, pathlib, sys
logs = pathlib.Path(sys.argv[1])
def model_accuracy(name):
    path = logs / f"{name}.json"
    if not path.exists():
        return None
    return next(r["accuracy"] for r in json.loads(path.read_text())["results"] if r["source"] == "model")
teacher = model_accuracy("teacher-50")
gaps = {}
for path in logs.glob("cd*-4.json"):
    accuracy = model_accuracy(path.stem)
    if teacher and accuracy:
        gaps[path.stem] = min(accuracy[a] - teacher[a] for a in teacher)
ranked = sorted(gaps, key=gaps.get, reverse=True)
print("\n".join(f"{name} worst gap {100 * gaps[name]:+.1f}" for name in ranked), file=sys.stderr)
print(" ".join(name[:-2].replace("-200", "/model-200") for name in ranked[:3]))
EOF
)
echo "weights back: $best" >> "$log"
# shellcheck disable=SC2086  # one word per student
pack_weights $best

echo "all done at ${SECONDS}s" | tee -a "$log"
pack_logs
ls -la "$out"
