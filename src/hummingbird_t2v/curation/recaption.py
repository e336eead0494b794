"""LLM re-captioning: rewrite each clip's caption from the original and the measured facts.

Backends:
- `OpenAIChatBackend`: any server speaking the OpenAI chat-completions protocol (vLLM, llama.cpp
  server, Ollama, ...). Requests run concurrently (the server batches them), with a timeout,
  retries with exponential backoff on transient failures, and no retry on malformed answers.
- `TransformersBackend`: a local causal LM loaded from a folder (or a single .gguf file).

Every answer is validated (non-empty, bounded length, no chat boilerplate); a failed call or an
invalid answer keeps the original caption and records why. Answers are cached on disk, keyed by a
hash of everything that went into the request, so a resumed or repeated run does not pay twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from hummingbird_t2v.curation.config import RecaptionConfig
from hummingbird_t2v.errors import ConfigError, HummingbirdError

DEFAULT_TEMPLATE = {
    "system": (
        "You rewrite the captions of short video clips for training a text-to-video model. "
        "Write one or two plain English sentences that describe what is visible and how the camera moves. "
        "Keep every fact of the original caption, use the measured camera motion, and do not invent "
        "objects the original does not suggest. Answer with the caption only."
    ),
    "user": (
        "Original caption: {caption}\n"
        "Measured facts: duration {duration_s:.1f} s; camera: {camera_motion}; amount of motion: {motion_amount}.\n"
        "Write the new caption in at most {max_words} words."
    ),
}

# Openers and markers that mean the model chatted instead of answering with a caption.
_BOILERPLATE = re.compile(
    r"^(sure|certainly|of course|okay|ok[,.!]|here is|here's|here are|as an ai|i'm sorry|i am sorry|i cannot|"
    r"i can't|i can not|unfortunately|absolutely)\b",
    re.IGNORECASE,
)
_MARKUP = re.compile(r"(<\|[^>]*\|>|<start_of_turn>|<end_of_turn>|```|\[INST\])", re.IGNORECASE)
_ECHO = re.compile(r"(original caption:|measured facts:|write the new caption)", re.IGNORECASE)
_LABEL = re.compile(r"^(new |rewritten |improved |final )?caption\s*:\s*", re.IGNORECASE)


class RecaptionError(HummingbirdError):
    """The re-captioning backend cannot be used as configured."""


class CallFailed(Exception):
    """One request failed; `reason` is recorded in the manifest (timeout, http_500, malformed_response, ...)."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after  # seconds the server asked us to wait (HTTP Retry-After)


class ChatBackend(Protocol):
    identity: str  # what the answers depend on besides the messages (model name or path); part of the cache key

    def complete(self, messages: list[dict[str, str]]) -> str: ...


def motion_amount(magnitude: float | None) -> str:
    """Words for the 90th-percentile flow speed (half-diagonals per second)."""
    if magnitude is None:
        return "unknown"
    if magnitude < 0.02:
        return "none"
    if magnitude < 0.15:
        return "little"
    if magnitude < 0.5:
        return "moderate"
    return "a lot"


def load_template(path: str | None) -> dict[str, str]:
    """The built-in template, or a YAML file with `system` and `user` strings (same placeholders)."""
    if path is None:
        return dict(DEFAULT_TEMPLATE)
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"recaption.template {file}: cannot read it as YAML ({error})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("user"), str):
        raise ConfigError(f"recaption.template {file}: needs a 'user' string (and optionally 'system')")
    template = {"system": str(raw.get("system") or ""), "user": raw["user"]}
    try:
        build_messages({"caption": "x"}, template, 10)
    except (KeyError, ValueError, IndexError) as error:
        raise ConfigError(
            f"recaption.template {file}: bad placeholder {error}; use {{caption}}, {{camera_motion}}, "
            "{motion_amount}, {duration_s} and {max_words}"
        ) from None
    return template


def build_messages(record: dict[str, Any], template: dict[str, str], max_words: int) -> list[dict[str, str]]:
    facts = {
        "caption": (record.get("caption") or "").strip() or "(none)",
        "camera_motion": record.get("camera_motion") or "unknown",
        "motion_amount": motion_amount(record.get("motion_magnitude")),
        "duration_s": float(record.get("duration_s") or 0.0),
        "max_words": max_words,
    }
    messages = []
    if template.get("system"):
        messages.append({"role": "system", "content": template["system"].format(**facts)})
    messages.append({"role": "user", "content": template["user"].format(**facts)})
    return messages


def validate_caption(text: str, max_words: int) -> tuple[str | None, str]:
    """Clean an answer; returns (caption, "") or (None, reason) when it is not a usable caption."""
    cleaned = text.strip()
    cleaned = _LABEL.sub("", cleaned).strip()
    if len(cleaned) >= 2 and cleaned[0] == cleaned[-1] and cleaned[0] in "\"'\u201c\u201d":
        cleaned = cleaned[1:-1].strip()
    if not cleaned:
        return None, "empty"
    if _MARKUP.search(cleaned):
        return None, "boilerplate"
    if _BOILERPLATE.match(cleaned):
        return None, "boilerplate"
    if _ECHO.search(cleaned):
        return None, "echoed_prompt"
    paragraphs = [line for line in cleaned.splitlines() if line.strip()]
    if len(paragraphs) > 2:
        return None, "not_a_single_caption"
    cleaned = " ".join(" ".join(paragraphs).split())
    if len(cleaned.split()) > max_words:
        return None, "too_long"
    return cleaned, ""


class ResponseCache:
    """Append-only JSONL of {key, text}; safe across threads and after a kill (a torn last line is ignored)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
            # Drop a torn tail so that the next append starts on a fresh line.
            with path.open("rb+") as handle:
                data = handle.read()
                if data and not data.endswith(b"\n"):
                    handle.truncate(data.rfind(b"\n") + 1)

    @staticmethod
    def key(identity: str, messages: list[dict[str, str]], options: dict[str, Any]) -> str:
        payload = json.dumps({"identity": identity, "messages": messages, "options": options}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, text: str) -> None:
        with self._lock:
            self._entries[key] = text
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"key": key, "text": text}) + "\n")

    def __len__(self) -> int:
        return len(self._entries)


class OpenAIChatBackend:
    """POST {base_url}/chat/completions with the standard library; thread-safe."""

    _RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

    def __init__(self, config: RecaptionConfig, sleep: Any = time.sleep) -> None:
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"recaption.base_url {config.base_url!r} must start with http:// or https://")
        self.model = config.model
        self.identity = f"openai:{config.base_url}:{config.model}"
        self.api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self.timeout = config.timeout_s
        self.max_retries = config.max_retries
        self.backoff = config.backoff_s
        self.options = {"temperature": config.temperature, "max_tokens": config.max_tokens}
        self._sleep = sleep

    def _post(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read() or b"", dict(error.headers or {})

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, **self.options}).encode()
        last = CallFailed("unknown")
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                self._sleep(min(60.0, max(delay, last.retry_after or 0.0)))
            try:
                status, payload, headers = self._post(body)
            except TimeoutError:
                last = CallFailed("timeout", f"no answer within {self.timeout:g}s")
                continue
            except (urllib.error.URLError, ConnectionError, OSError) as error:
                reason = getattr(error, "reason", error)
                if isinstance(reason, TimeoutError):
                    last = CallFailed("timeout", f"no answer within {self.timeout:g}s")
                else:
                    last = CallFailed("connection_error", str(reason))
                continue
            if status in self._RETRY_STATUS:
                try:
                    retry_after: float | None = float(headers.get("Retry-After", ""))
                except ValueError:
                    retry_after = None
                last = CallFailed(f"http_{status}", payload[:200].decode(errors="replace"), retry_after)
                continue
            if status != 200:
                raise CallFailed(f"http_{status}", payload[:200].decode(errors="replace"))
            return _parse_chat_answer(payload)
        raise last


def _parse_chat_answer(payload: bytes) -> str:
    try:
        answer = json.loads(payload)
        content = answer["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as error:
        raise CallFailed("malformed_response", f"{type(error).__name__}: {payload[:120]!r}") from None
    if not isinstance(content, str):
        raise CallFailed("malformed_response", f"content is {type(content).__name__}")
    return content


class TransformersBackend:
    """A local chat model from a folder (or a .gguf file, which needs the `gguf` package)."""

    def __init__(self, config: RecaptionConfig) -> None:
        if not config.model_path:
            raise ConfigError("recaption.model_path is required for the transformers backend (a model folder or .gguf file)")
        path = Path(config.model_path)
        if not path.exists():
            raise ConfigError(f"recaption.model_path {path} does not exist")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            if path.is_file() and path.suffix == ".gguf":
                self.tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
                self.model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            else:
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, ImportError) as error:
            raise RecaptionError(f"cannot load a causal LM from {path}: {error}") from None
        self.model.to(config.device).eval()
        self.device = config.device
        self.identity = f"transformers:{path.resolve()}"
        self.options = {"temperature": config.temperature, "max_tokens": config.max_tokens}
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        chat = bool(getattr(self.tokenizer, "chat_template", None))
        if chat:
            inputs = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        else:
            inputs = self.tokenizer(completion_prompt(messages), return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        sampling = self.options["temperature"] > 0
        with self._lock, torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.options["max_tokens"],
                do_sample=sampling,
                temperature=self.options["temperature"] if sampling else None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        text = self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        if chat:
            return text
        # A base model keeps writing further examples after its answer: the answer is the first line.
        answer = text.strip().split("\n", 1)[0]
        if answer.strip() == _COMPLETION_EXAMPLE_ANSWER:
            raise CallFailed("echoed_example", "the model repeated the prompt's example caption")
        return answer


_COMPLETION_EXAMPLE_ANSWER = "A man rides a surfboard across a breaking wave as the camera pans left to follow him."
_COMPLETION_EXAMPLE = (
    "Original caption: man surfing\n"
    "Measured facts: duration 6.0 s; camera: camera pans left; amount of motion: a lot.\n"
    f"New caption: {_COMPLETION_EXAMPLE_ANSWER}\n\n"
)


def completion_prompt(messages: list[dict[str, str]]) -> str:
    """A one-shot plain-text prompt for base models without a chat template."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    user = messages[-1]["content"]
    return (system + "\n\n" if system else "") + _COMPLETION_EXAMPLE + user + "\nNew caption:"


def make_backend(config: RecaptionConfig) -> ChatBackend:
    if config.backend == "openai":
        return OpenAIChatBackend(config)
    return TransformersBackend(config)


def check_config(config: RecaptionConfig) -> None:
    """Cheap checks run before any clip is measured, so a typo does not surface hours later."""
    load_template(config.template)
    if config.backend == "openai":
        OpenAIChatBackend(config)
        _check_server_reachable(config.base_url)
    elif not config.model_path or not Path(config.model_path).exists():
        raise ConfigError(
            f"recaption.model_path {config.model_path!r} does not exist; the transformers backend needs a model "
            "folder or .gguf file"
        )


def _check_server_reachable(base_url: str, timeout_s: float = 3.0) -> None:
    """Fail before hours of measuring when nothing listens at the LLM server's address."""
    parsed = urllib.parse.urlsplit(base_url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout_s).close()
    except OSError as error:
        raise RecaptionError(
            f"no LLM server answers at {base_url} ({error.strerror or error}); start one (vLLM, llama.cpp server, "
            "Ollama), set recaption.base_url, or curate without re-captioning: --stages quality,motion"
        ) from None


# Failures that say nothing about the clip: a later run (--resume) asks again.
_TRANSIENT = ("fallback:timeout", "fallback:connection_error", "fallback:http_408", "fallback:http_429", "fallback:http_5")


def is_transient(status: str | None) -> bool:
    return bool(status) and status.startswith(_TRANSIENT)


@dataclass
class Recaptioner:
    """Rewrites the captions of records concurrently; every record comes back exactly once."""

    backend: ChatBackend
    config: RecaptionConfig
    cache: ResponseCache
    template: dict[str, str]

    def _one(self, record: dict[str, Any]) -> dict[str, Any]:
        original = record.get("caption") or ""
        result = {**record, "caption_original": original, "caption": original}
        messages = build_messages(record, self.template, self.config.max_words)
        options = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        key = ResponseCache.key(self.backend.identity, messages, options)
        text = self.cache.get(key)
        source = "cached"
        if text is None:
            source = "rewritten"
            try:
                text = self.backend.complete(messages)
            except CallFailed as failure:
                return {**result, "recaption_status": f"fallback:{failure.reason}"}
            self.cache.put(key, text)
        caption, problem = validate_caption(text, self.config.max_words)
        if caption is None:
            return {**result, "recaption_status": f"fallback:{problem}"}
        return {**result, "caption": caption, "recaption_status": source}

    def run(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Yield re-captioned records as they finish, with at most `concurrency` requests in flight.

        Raises RecaptionError when the server is unreachable for many requests in a row before any
        succeeded: a stopped server should stop the run, not turn every caption into a fallback.
        """
        limit = self.config.concurrency
        give_up_after = max(8, 2 * limit)
        unreachable = 0
        answered = False
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="recaption") as pool:
            pending: set[Future[dict[str, Any]]] = set()
            iterator = iter(records)
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < limit:
                    record = next(iterator, None)
                    if record is None:
                        exhausted = True
                    else:
                        pending.add(pool.submit(self._one, record))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    if result["recaption_status"] == "fallback:connection_error":
                        unreachable += 1
                    else:
                        answered, unreachable = True, 0
                    yield result
                if not answered and unreachable >= give_up_after:
                    for future in pending:
                        future.cancel()
                    raise RecaptionError(
                        f"the re-captioning server {getattr(self.backend, 'url', self.backend.identity)} refused "
                        f"{unreachable} requests in a row; start it (or fix recaption.base_url) and rerun with --resume, "
                        "or rerun with --resume --stages quality,motion to skip re-captioning"
                    )
