"""A curation run: discover clips, measure them (resumably), decide, re-caption, write the outputs.

Layout of OUT:
    manifest.parquet, manifest.csv   every clip with its facts, scores, decision and reasons
    curated.csv                      kept clips in the trainer's CSV layout, with the new captions
    summary.json                     counts, drop reasons, timings
    .curate/run.json                 the run's input and config (checked by --resume)
    .curate/measure.jsonl            one line per measured clip (the resume journal)
    .curate/recaption.jsonl          one line per re-captioned clip
    .curate/recaption_cache.jsonl    raw LLM answers keyed by request hash
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hummingbird_t2v.curation.config import CurateConfig, config_to_dict
from hummingbird_t2v.curation.decisions import decide
from hummingbird_t2v.curation.engines import run_engine
from hummingbird_t2v.curation.journal import Journal, write_json_atomic
from hummingbird_t2v.curation.manifest import write_curated_csv, write_manifest
from hummingbird_t2v.curation.sources import discover
from hummingbird_t2v.curation.stages import measure_clip
from hummingbird_t2v.errors import ConfigError, HummingbirdError

STATE_DIR = ".curate"
_RECAPTION_FIELDS = ("clip_id", "caption", "caption_original", "recaption_status")


class RunStateError(HummingbirdError):
    """OUT holds a run that this invocation may not silently continue or overwrite."""


@dataclass
class CurationSummary:
    clips: int
    measured_now: int
    kept: int
    failed: int
    drop_reasons: dict[str, int]
    recaption: dict[str, int]
    measure_seconds: float
    clips_per_second: float
    outputs: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        text = [
            f"{self.clips} clips: {self.kept} kept, {self.clips - self.kept} dropped ({self.failed} unreadable); "
            f"measured {self.measured_now} now at {self.clips_per_second:.2f} clips/s"
        ]
        text += [f"  drop {reason}: {count}" for reason, count in sorted(self.drop_reasons.items())]
        text += [f"  recaption {status}: {count}" for status, count in sorted(self.recaption.items())]
        text += [f"  {name}: {path}" for name, path in self.outputs.items()]
        return text


def _prepare_state(state: Path, run_info: dict[str, Any], resume: bool, overwrite: bool) -> None:
    run_file = state / "run.json"
    if run_file.exists() and not (resume or overwrite):
        raise RunStateError(
            f"{state.parent} already holds a curation run; pass --resume to continue it, "
            "--overwrite to start again, or choose another output folder"
        )
    if overwrite and state.exists():
        shutil.rmtree(state)
    if resume and run_file.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        if previous.get("input") != run_info["input"]:
            raise RunStateError(
                f"--resume: {state.parent} was started on {previous.get('input')}, not {run_info['input']}"
            )
        if previous.get("measurement_fingerprint") != run_info["measurement_fingerprint"]:
            raise ConfigError(
                "--resume: the probe, quality, DOVER or motion settings (or the stages) differ from the interrupted "
                "run, so its measurements would not match; resume with the same config or use --overwrite "
                "(thresholds may change freely)"
            )
    write_json_atomic(run_file, {**run_info, "status": "running"})


def _recaption(decided: list[dict[str, Any]], config: CurateConfig, state: Path, show_progress: bool) -> Counter[str]:
    from hummingbird_t2v.curation.recaption import Recaptioner, ResponseCache, is_transient, load_template, make_backend

    journal = Journal(state / "recaption.jsonl")
    done = journal.load()
    wanted = [
        r for r in decided if r.get("status") == "ok" and (r.get("keep") or not config.recaption.only_kept)
    ]
    todo = [r for r in wanted if r["clip_id"] not in done or is_transient(done[r["clip_id"]].get("recaption_status"))]
    if todo:
        template = load_template(config.recaption.template)
        recaptioner = Recaptioner(
            backend=make_backend(config.recaption),
            config=config.recaption,
            cache=ResponseCache(state / "recaption_cache.jsonl"),
            template=template,
        )
        with journal, tqdm(total=len(todo), unit="clip", desc="recaption", disable=not show_progress, file=sys.stderr) as bar:
            for result in recaptioner.run(todo):
                entry = {key: result.get(key) for key in _RECAPTION_FIELDS}
                journal.append(entry)
                done[entry["clip_id"]] = entry
                bar.update(1)
    wanted_ids = {r["clip_id"] for r in wanted}
    statuses: Counter[str] = Counter()
    for record in decided:
        entry = done.get(record["clip_id"]) if record["clip_id"] in wanted_ids else None
        if entry is not None:
            record.update({key: entry[key] for key in _RECAPTION_FIELDS[1:]})
        else:
            reason = "failed" if record.get("status") != "ok" else "dropped"
            record.update(caption_original=record.get("caption"), recaption_status=f"skipped:{reason}")
        statuses[record["recaption_status"]] += 1
    return statuses


def run_curation(
    input_path: str | Path,
    output_dir: str | Path,
    config: CurateConfig,
    *,
    data_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
) -> CurationSummary:
    """Curate INPUT into OUT; see the module docstring for the files written."""
    collection = discover(input_path, data_dir)
    output = Path(output_dir)
    state = output / STATE_DIR
    if config.quality.dover.weights and "quality" in config.stages:
        from hummingbird_t2v.curation.dover import cached_scorer

        cached_scorer(config.quality.dover)  # fail on unusable weights before any clip is measured
    run_info = {
        "input": str(Path(input_path).resolve()),
        "data_dir": str(collection.data_dir),
        "layout": collection.layout,
        "clips": len(collection.records),
        "measurement_fingerprint": config.measurement_fingerprint(),
        "config": config_to_dict(config),
    }
    if "recaption" in config.stages:
        from hummingbird_t2v.curation.recaption import check_config

        check_config(config.recaption)
    _prepare_state(state, run_info, resume, overwrite)

    journal = Journal(state / "measure.jsonl")
    measured = journal.load()
    pending = [record for record in collection.records if record["clip_id"] not in measured]
    started = time.perf_counter()
    measure = functools.partial(measure_clip, config=config)
    with journal, tqdm(total=len(pending), unit="clip", desc="measure", disable=not show_progress, file=sys.stderr) as bar:
        for result in run_engine(measure, pending, config.engine):
            journal.append(result)
            measured[result["clip_id"]] = result
            bar.update(1)
    elapsed = time.perf_counter() - started

    # The manifest follows the collection's order, one row per clip, whatever the history of the run.
    records = [{**measured[record["clip_id"]], **record} for record in collection.records]
    decided = decide(records, config)
    if "recaption" in config.stages:
        recaption_counts = _recaption(decided, config, state, show_progress)
    else:
        for record in decided:
            record.update(caption_original=record.get("caption"), recaption_status="skipped:stage_off")
        recaption_counts = Counter({"skipped:stage_off": len(decided)})

    output.mkdir(parents=True, exist_ok=True)
    parquet, table_csv = write_manifest(decided, output)
    curated = write_curated_csv(decided, collection.layout, output)
    reasons: Counter[str] = Counter()
    for record in decided:
        for reason in filter(None, (record.get("drop_reasons") or "").split(" | ")):
            reasons[reason.split(" ", 1)[0]] += 1
    summary = CurationSummary(
        clips=len(decided),
        measured_now=len(pending),
        kept=sum(1 for r in decided if r["keep"]),
        failed=sum(1 for r in decided if r.get("status") != "ok"),
        drop_reasons=dict(reasons),
        recaption=dict(recaption_counts),
        measure_seconds=elapsed,
        clips_per_second=len(pending) / elapsed if elapsed > 0 and pending else 0.0,
        outputs={"manifest": str(parquet), "manifest_csv": str(table_csv), "curated": str(curated)},
    )
    write_json_atomic(output / "summary.json", summary.__dict__)
    write_json_atomic(state / "run.json", {**run_info, "status": "complete"})
    return summary
