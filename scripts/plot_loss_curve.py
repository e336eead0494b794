"""Draw training loss against clips seen, from one or more runs' logs/train.csv, as a PNG (PIL only).

    python scripts/plot_loss_curve.py OUT.png RUN_DIR:BATCH[:LABEL] [RUN_DIR:BATCH[:LABEL] ...]

Runs are drawn one after the other on the x axis (a continued run starts where the previous ended),
each in its own colour, with the loss on a log scale.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT, MARGIN = 800, 450, 70
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def read_run(spec: str) -> tuple[str, list[tuple[float, float]]]:
    parts = spec.split(":")
    folder, batch = Path(parts[0]), int(parts[1])
    label = parts[2] if len(parts) > 2 else folder.name
    with (folder / "logs" / "train.csv").open(encoding="utf-8") as handle:
        rows = [(int(row["step"]) * batch, float(row["loss"])) for row in csv.DictReader(handle)]
    return label, rows


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    out, runs = Path(argv[0]), [read_run(spec) for spec in argv[1:]]
    curves, offset = [], 0
    for label, rows in runs:
        curves.append((label, [(offset + clips, loss) for clips, loss in rows]))
        offset += rows[-1][0]
    losses = [loss for _, points in curves for _, loss in points]
    low, high = math.log10(min(losses)), math.log10(max(losses))
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = MARGIN, WIDTH - 20, 20, HEIGHT - 50

    def to_xy(clips: float, loss: float) -> tuple[float, float]:
        x = left + (right - left) * clips / offset
        y = bottom - (bottom - top) * (math.log10(loss) - low) / max(high - low, 1e-9)
        return x, y

    draw.rectangle([left, top, right, bottom], outline="black")
    for exponent in range(math.floor(low), math.ceil(high) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0**exponent
            if low <= math.log10(value) <= high:
                _, y = to_xy(0, value)
                draw.line([left - 4, y, left, y], fill="black")
                draw.text((5, y - 6), f"{value:g}", fill="black")
    for tick in range(6):
        clips = offset * tick / 5
        x, _ = to_xy(clips, math.exp(low * math.log(10)))
        draw.line([x, bottom, x, bottom + 4], fill="black")
        draw.text((x - 15, bottom + 8), f"{clips / 1000:.0f}k", fill="black")
    draw.text(((left + right) // 2 - 60, HEIGHT - 20), "training clips seen", fill="black")
    draw.text((left + 5, top + 5), "loss (log scale)", fill="black")
    for index, (label, points) in enumerate(curves):
        color = COLORS[index % len(COLORS)]
        draw.line([to_xy(*point) for point in points], fill=color, width=2)
        draw.text((right - 260, top + 10 + 16 * index), label, fill=color)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
