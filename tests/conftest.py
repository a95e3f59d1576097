"""Shared fixtures: offline models and a real OpenAI-compatible server. Nothing here touches a network."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: 2 cores, oversubscription is ruinous

import gc
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest

from benchmarks.fake_api import ChatHandler, completion
from tr1_env.core.agents import Observation

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def make_observation(prompt: str, ticker: str = "AAPL", date: str = "2024-06-03") -> Observation:
    """An observation carrying only a prompt, for agents that read nothing else."""
    return Observation(
        ticker=ticker,
        date=pd.Timestamp(date),
        prompt=prompt,
        context=prompt,
        features=np.zeros(0, dtype=np.float32),
        feature_names=(),
        history=pd.DataFrame(),
        news=pd.DataFrame(),
    )


def random_days(store, n: int, seed: int, start: str = "2023-03-01", end: str = "2025-10-31") -> Iterator[tuple]:
    """``n`` seeded random (ticker, session, seed) triples: the ticker-days that property tests sweep."""
    from tr1_env.data.schema import TICKERS

    rng = np.random.default_rng(seed)
    for _ in range(n):
        ticker = TICKERS[rng.integers(len(TICKERS))]
        days = store.trading_days(ticker, start, end)
        yield ticker, days[rng.integers(len(days))], int(rng.integers(1 << 30))


def growth(fn, make_input, n: int, factor: int = 4, repeats: int = 3) -> float:
    """How much longer ``fn`` takes (CPU time, best of ``repeats``) on ``make_input(factor * n)`` than on
    ``make_input(n)``: about ``factor`` when linear, ``factor ** 2`` when quadratic. A complexity property, not a
    speed target: the load of the machine scales both runs alike."""
    def best(arg) -> float:
        times = []
        for _ in range(repeats):
            start = time.process_time()
            fn(arg)
            times.append(time.process_time() - start)
        return max(min(times), 1e-4)

    small, large = make_input(n), make_input(factor * n)
    return best(large) / best(small)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: A ChatML chat template (Qwen3's turns, without its tool and thinking logic).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_qwen3(tmp_dir: str | Path, seed: int = 0) -> Path:
    """A random 2-layer Qwen3 (hidden 64) with a byte-level BPE tokenizer trained on the spot.

    Tests across the project build one in well under a second instead of downloading (the
    ``tiny_qwen3_path`` fixture); built into ``tmp_dir/tiny-qwen3`` and reused when already there.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    target = Path(tmp_dir) / "tiny-qwen3"
    if (target / "config.json").exists():
        return target
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [
        "<fundamentals> <technical> <news> <macro> <conclusion> [[[STRONG_BUY]]] [[[BUY]]] [[[HOLD]]] "
        "[[[SELL]]] [[[STRONG_SELL]]] system user assistant",
        "The company reported revenue growth, earnings beat estimates and the stock closed higher.",
        "Price, volume, moving average, RSI, MACD, Bollinger bands, interest rates, inflation.",
    ]
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    bpe.add_tokens(["<think>", "</think>"])  # plain added tokens, as in Qwen3: decoding keeps them
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def pytest_collection_finish(session) -> None:
    """Freeze what collection imported (torch, transformers, pandas: ~450k objects that live as long as the process):
    every full collection after it, a trainer's and ``free_accelerator_memory``'s ``gc.collect`` among them (dozens
    per curriculum), scans only what the tests make, ~0.5 s less each on this machine."""
    gc.collect()
    gc.freeze()


#: Fixtures whose tests share one xdist worker under ``--dist loadgroup``: each worker that runs one starts its own
#: local Ray or llm-katan server (seconds, and their processes take CPU from the other worker while up).
SHARED_WORKER = {"local_ray": "ray", "katan": "katan"}


@pytest.hookimpl(tryfirst=True)  # before xdist's hook reads the groups into the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules holding a ``slow`` test first, each kept whole (module fixtures set up once): xdist hands out
    tests in this order, so its workers end on short tests together instead of one idling through a long one."""
    for item in items:
        for fixture, group in SHARED_WORKER.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


@pytest.fixture(scope="session")
def tiny_qwen3_path(tmp_path_factory) -> Path:
    """A random 2-layer Qwen3 with its own tokenizer (see :func:`tiny_qwen3`)."""
    return tiny_qwen3(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as safetensors, converted once into ``$TR1_CACHE`` (~25 s the first time)."""
    from tr1_agent.models import smollm2_path

    return smollm2_path()


@dataclass
class KatanServer:
    base_url: str
    model: str

    def completed_requests(self) -> int:
        """Chat completions the server has answered (its own Prometheus counter)."""
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/metrics", timeout=5) as response:
            text = response.read().decode()
        return int(re.search(r"^llm_katan_requests_total\{[^}]*\} (\d+)", text, re.MULTILINE).group(1))


@pytest.fixture(scope="session")
def katan(smollm2_dir, tmp_path_factory) -> Iterator[KatanServer]:
    """llm-katan serving SmolLM2 as ``gpt-4.1`` over the OpenAI API on a free local port."""
    exe = shutil.which("llm-katan", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if exe is None:
        pytest.skip("llm-katan is not installed (pip install tr1[dev])")
    port, logs = free_port(), tmp_path_factory.mktemp("katan")
    server = KatanServer(base_url=f"http://127.0.0.1:{port}/v1", model="gpt-4.1")
    command = [exe, "--model", str(smollm2_dir), "--name", server.model, "--host", "127.0.0.1", "--port", str(port),
               "--device", "cpu", "--no-quantize", "--disable-dashboard", "--log-level", "warning",
               "--stats-file", str(logs / "stats.json")]
    log = open(logs / "server.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE_ENV})
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"llm-katan exited with {process.returncode}:\n{(logs / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"llm-katan not ready in 90 s:\n{(logs / 'server.log').read_text()[-3000:]}")
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def store():
    """The embedded point-in-time store (loaded once per session)."""
    from tr1_env.data.store import Store

    return Store()


# --- a scripted OpenAI-compatible server for fault injection ------------------------------------

API_THESIS = "<conclusion>\n### Call\n- Momentum is strong.\n</conclusion>\n[[[BUY]]]"


class _ApiHandler(ChatHandler):
    """Answers each chat completion with the next entry of ``server.script`` (``server.default`` once it is
    empty): "ok" or 200 a completion holding ``server.reply``, another int that HTTP status, "silent" no answer at all
    (an int's error message is ``server.error`` when set), "garbled" a 200 whose body is broken JSON, "echo-key" a 401
    whose message repeats the key (as some providers do), "echo-ok" a 200 completion whose text repeats the bearer token
    and the Authorization header. Each request's Authorization header and JSON body are kept in ``server.seen``."""

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.body()
        with self.server.lock:
            self.server.requests += 1
            self.server.seen.append({"authorization": self.headers.get("Authorization"), "body": body,
                                     "at": time.monotonic()})
            step = self.server.script.pop(0) if self.server.script else self.server.default
        if step == "silent":
            self.server.release.wait(30)
            return
        if step in ("ok", 200, "garbled", "echo-ok"):
            auth = self.headers.get("Authorization") or ""
            echo = f"\nYour token {auth.partition(' ')[2]} ({auth})" if step == "echo-ok" else ""
            reply = self.server.reply(body) if callable(self.server.reply) else self.server.reply
            status, payload = 200, completion(body["model"], reply + echo, 11, 7)
        elif step == "echo-key":
            status, payload = 401, {"error": {"message": f"Incorrect API key provided: {self.headers['Authorization']}",
                                              "type": "invalid_request_error", "code": "invalid_api_key"}}
        else:
            status, payload = step, {"error": {"message": self.server.error or f"scripted {step}", "type": "scripted",
                                               "code": None}}
        data = b'{"id": "chatcmpl-1", "choices": [tru' if step == "garbled" else json.dumps(payload).encode()
        self.answer(status, data, self.server.headers if status != 200 else {})


@pytest.fixture
def api_server() -> Iterator[ThreadingHTTPServer]:
    """A local scripted server: set ``.script``, ``.default``, ``.reply`` (a text, or a function of the request's
    JSON body), ``.error`` and ``.headers`` (sent with each error status); read ``.requests`` and ``.seen``;
    ``.base_url`` ends in /v1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ApiHandler)
    server.daemon_threads, server.script, server.requests, server.seen = True, [], 0, []
    server.default, server.reply, server.error, server.headers = "ok", API_THESIS, None, {}
    server.lock, server.release = threading.Lock(), threading.Event()
    server.base_url = f"http://127.0.0.1:{server.server_port}/v1"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
