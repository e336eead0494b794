"""One training loop with pluggable objectives (docs/training.md).

Modules (imported directly; this package stays light so that the CLI starts fast):
`config` (TrainConfig: YAML + `--set` overrides), `components` (U-Net, frozen VAE and text
encoder from presets or model folders), `data` (per-rank sharded, resumable batch stream),
`objective` (the TrainBatch -> loss seam), `objectives` (registry; `diffusion` is the base/teacher
objective), `loop` (Trainer), `ema`, `checkpointing`, `logging` (CSV / TensorBoard), `cli`
(`hummingbird train ...`).
"""
