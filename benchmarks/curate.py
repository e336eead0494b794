"""Throughput of the curation stages on generated 320p clips: clips per second per core, and engines.

    python benchmarks/curate.py                 # 24 clips of 4 s at 320x512, 24 fps
    python benchmarks/curate.py --clips 64 --seconds 8 --workers 2 --markdown out.md
    python benchmarks/curate.py --dover         # also time the full-size DOVER model (slow on CPU)

Per-stage numbers are measured in this process on one core (OpenCV and torch limited to one
thread), so they are "clips/s/core". The engine comparison runs the whole measurement stage on the
same clips with the local process pool and with Ray Data on the same number of CPUs; Ray's start-up
is reported separately from its steady-state rate.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the clip generator lives with the tests

from curation_helpers import add_subject, natural_texture, pan_camera, render, write_video

from hummingbird_t2v.curation.config import CurateConfig, EngineConfig, RecaptionConfig, config_from_dict
from hummingbird_t2v.curation.engines import run_engine
from hummingbird_t2v.curation.motion import analyse_motion
from hummingbird_t2v.curation.probe import DecodePlan, decode_for_analysis
from hummingbird_t2v.curation.quality import technical_quality
from hummingbird_t2v.curation.recaption import DEFAULT_TEMPLATE, OpenAIChatBackend, Recaptioner, ResponseCache
from hummingbird_t2v.curation.stages import measure_clip


def make_clips(folder: Path, count: int, seconds: float, fps: float, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    height, width = size
    paths = []
    for index in range(count):
        texture = natural_texture(rng, height * 2, width * 2)
        angle = rng.uniform(0, 2 * np.pi)
        camera = pan_camera(size, (np.cos(angle) * width * 0.15, np.sin(angle) * height * 0.15), (width / 2, height / 2))
        frames = add_subject(render(texture, camera, size, fps, seconds), natural_texture(rng, height // 3, height // 3), fps, (30, 0))
        paths.append(write_video(folder / f"clip_{index:04d}.mp4", frames, fps, crf=20))
    return paths


def per_stage(paths: list[Path], plan: DecodePlan) -> dict[str, float]:
    """Seconds per clip of each stage, single-threaded."""
    cv2.setNumThreads(1)
    timings: dict[str, list[float]] = {"decode": [], "quality": [], "motion": []}
    for path in paths:
        started = time.perf_counter()
        clip = decode_for_analysis(path, plan)
        decoded = time.perf_counter()
        technical_quality(clip.quality_luma, clip.luma_means, min(clip.info.width, clip.info.height))
        scored = time.perf_counter()
        analyse_motion(clip.frames, clip.times)
        moved = time.perf_counter()
        timings["decode"].append(decoded - started)
        timings["quality"].append(scored - decoded)
        timings["motion"].append(moved - scored)
    return {stage: statistics.median(values) for stage, values in timings.items()}


def engine_rate(paths: list[Path], config: CurateConfig, engine: EngineConfig) -> dict[str, float]:
    records = [{"clip_id": p.name, "path": str(p), "caption": ""} for p in paths]
    function = functools.partial(measure_clip, config=config)
    started = time.perf_counter()
    first = None
    count = 0
    for _ in run_engine(function, records, engine):
        count += 1
        if first is None:
            first = time.perf_counter()
    ended = time.perf_counter()
    steady = (count - 1) / (ended - first) if count > 1 and ended > first else float("nan")
    return {"total_s": ended - started, "first_result_s": first - started, "clips_per_s": count / (ended - started), "steady_clips_per_s": steady}


class _FixedLatencyServer:
    def __init__(self, latency: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(latency)
                body = json.dumps({"choices": [{"message": {"content": "A textured wall while the camera pans left."}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def recaption_rate(count: int, latency: float, concurrency: int) -> float:
    server = _FixedLatencyServer(latency)
    config = RecaptionConfig(base_url=server.url, concurrency=concurrency, timeout_s=10)
    recaptioner = Recaptioner(OpenAIChatBackend(config), config, ResponseCache(None), dict(DEFAULT_TEMPLATE))
    records = [{"clip_id": str(i), "caption": f"clip {i}", "camera_motion": "camera pans left", "duration_s": 4.0} for i in range(count)]
    started = time.perf_counter()
    assert sum(1 for r in recaptioner.run(records) if r["recaption_status"] == "rewritten") == count
    rate = count / (time.perf_counter() - started)
    server.httpd.shutdown()
    return rate


def dover_seconds(path: Path) -> float:
    import torch

    from hummingbird_t2v.curation.dover import DOVER, DoverScorer

    torch.set_num_threads(1)
    scorer = DoverScorer(DOVER().state_dict())
    started = time.perf_counter()
    scorer.score_file(path)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--workers", type=int, default=2, help="CPUs for the engine comparison")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--dover", action="store_true", help="time the full-size DOVER model on one clip")
    parser.add_argument("--markdown", type=Path, help="also write the results as a markdown section here")
    args = parser.parse_args()

    size = (320, 512)
    lines = [f"Curation throughput, {args.clips} generated clips of {args.seconds:g} s at {size[0]}x{size[1]}, {args.fps:g} fps, H.264", ""]
    with tempfile.TemporaryDirectory() as folder:
        paths = make_clips(Path(folder), args.clips, args.seconds, args.fps, size)
        stage = per_stage(paths, DecodePlan())
        lines += ["| stage (one core) | s/clip | clips/s/core |", "| --- | ---: | ---: |"]
        for name, seconds in stage.items():
            lines.append(f"| {name} | {seconds:.4f} | {1 / seconds:.1f} |")
        whole = sum(stage.values())
        lines.append(f"| probe+quality+motion | {whole:.4f} | {1 / whole:.1f} |")
        if args.dover:
            seconds = dover_seconds(paths[0])
            lines.append(f"| DOVER full-size, CPU | {seconds:.2f} | {1 / seconds:.3f} |")
        lines.append("")

        config = config_from_dict({"stages": ["quality", "motion"]})
        engines = {
            "in-process (1 core)": EngineConfig(workers=1),
            f"local pool ({args.workers} processes)": EngineConfig(workers=args.workers),
        }
        if not args.no_ray:
            engines[f"Ray Data (local, {args.workers} CPUs)"] = EngineConfig(kind="ray", ray_num_cpus=args.workers, ray_object_store_mb=128)
        lines += [
            "| engine | wall s | first result s | clips/s | steady clips/s | steady clips/s/core |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, engine in engines.items():
            result = engine_rate(paths, config, engine)
            cores = 1 if engine.kind == "local" and engine.workers == 1 else args.workers
            lines.append(
                f"| {name} | {result['total_s']:.2f} | {result['first_result_s']:.2f} | {result['clips_per_s']:.2f} "
                f"| {result['steady_clips_per_s']:.2f} | {result['steady_clips_per_s'] / cores:.2f} |"
            )
        lines.append("")

    lines += ["| re-caption client (server latency 50 ms) | captions/s |", "| --- | ---: |"]
    for concurrency in (1, 8):
        lines.append(f"| concurrency {concurrency} | {recaption_rate(48, 0.05, concurrency):.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
