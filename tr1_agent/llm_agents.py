"""LLM agents: a prompt goes to a model (an API, local transformers, vLLM), the thesis comes back parsed.

Every completion is cached on disk the moment it finishes, keyed by the request, so a replay
that dies halfway resumes where it stopped and a finished replay reruns for free. An answer
without a readable ``[[[ACTION]]]`` is flagged ``parse_failed`` and still decides, so a benchmark
scores it rather than crash: a transformers model with ``force_decision`` (the benchmark harness's
default) picks the likeliest of the five closings after its own text, any other agent holds.
:meth:`LLMAgent.complete` is the same cached call without the parsing, for pipelines that are not
trading decisions (distillation's planner and writer, sampling theses to score). A call that failed
(an HTTP error after the retries, a refused or silent server, a malformed response) is not an
answer: nothing of it is cached, :meth:`LLMAgent.complete` marks it with an ``error`` entry and
:meth:`LLMAgent.act` raises :class:`~tr1_env.core.agents.AgentError` with the decisions that did succeed.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import os
import random
import threading
import weakref
from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

from tqdm.auto import tqdm

from tr1_agent.api_limits import CHARS_PER_TOKEN, ApiGovernor, Reservation
from tr1_agent.cache import CallCache
from tr1_env.context.prompt import SYSTEM_PROMPT
from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, AgentError, Decision, Observation
from tr1_env.execution.llm_cost import decision_cost
from tr1_env.scoring.thesis import parse_thesis
from tr1_env.util.files import cache_root
from tr1_env.util.redact import redact_url, scrub, url_secrets
from tr1_env.util.threads import torch_threads

__all__ = ["LLMAgent", "OpenAIChatAgent", "TransformersAgent", "VLLMAgent", "make_llm_agent"]

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
Completion = dict[str, Any]
_PROGRESS_MIN = 5  # batches shorter than this run without a progress bar
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")


class LLMAgent(Agent):
    """Cache lookup, de-duplication, parsing; subclasses only turn messages into completions.

    ``calls`` counts completions that came from the model rather than the cache.
    """

    def __init__(self, system_prompt: str = SYSTEM_PROMPT, cache_dir: str | Path | None = None, use_cache: bool = True):
        self.system_prompt = system_prompt
        self.cache = CallCache(Path(cache_dir or cache_root()) / "llm_calls.sqlite") if use_cache else None
        self.calls = 0

    @property
    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything besides the messages that decides the answer (backend, model, sampling, seed)."""

    @abstractmethod
    def _generate(self, todo: dict[str, Messages], done: Callable[[str, Completion], None]) -> None:
        """Answer each ``key -> messages`` and call ``done(key, completion)`` as each one finishes.

        A completion is ``{"text", "prompt_tokens", "completion_tokens", "finish_reason"}``; one with
        an ``"error"`` entry (one line, naming the endpoint) is a failed call: not cached, not a decision.
        """

    def act(self, observations: Sequence[Observation]) -> list[Decision]:
        """One decision per observation; a failed call raises :class:`AgentError` (a failure is never a HOLD)."""
        completions = self.complete([self.messages(obs.prompt) for obs in observations])
        decisions = [None if "error" in c else self._decision(c) for c in completions]
        errors = [c["error"] for c in completions if "error" in c]
        if errors:
            raise AgentError(f"{len(errors)} of {len(completions)} calls failed: {errors[0]}", decisions)
        return decisions

    def messages(self, prompt: str) -> Messages:
        """The conversation that asks this agent about ``prompt``: its system prompt, then ``prompt``."""
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}]

    def complete(self, conversations: Sequence[Messages], check: Callable[[str], str | None] | None = None
                 ) -> list[Completion]:
        """The model's answer to each conversation, from the cache when it holds one.

        Each completion has ``text``, token counts, ``finish_reason`` and ``cached``; one with an
        ``error`` entry is a failed call, not cached, so the next run asks again. Repeated
        conversations are asked once. ``check(text)`` returns why an answer is unusable (an invalid
        allocation), or None: an unusable answer is a failed call too, its ``error`` that reason.
        """
        settings = self.settings
        keys = [CallCache.key({**settings, "messages": m}) for m in conversations]
        results: dict[str, Completion] = {}
        todo: dict[str, Messages] = {}
        for key, conversation in zip(keys, conversations):
            if key in results or key in todo:
                continue
            hit = self.cache.get(key) if self.cache is not None else None
            if hit is None:
                todo[key] = conversation
            else:
                results[key] = hit

        def done(key: str, completion: Completion) -> None:
            if check is not None and "error" not in completion and (why := check(completion["text"])):
                completion = {**completion, "error": f"{self.name}: {why}"}
            if self.cache is not None and "error" not in completion:
                self.cache.put(key, completion)
            results[key] = completion
            self.calls += 1

        if todo:
            self._generate(todo, done)
        return [{**results[key], "cached": key not in todo} for key in keys]

    def _decision(self, completion: Completion) -> Decision:
        text = completion["text"]
        action = parse_thesis(text).decision
        meta = {k: v for k, v in completion.items() if k != "text"}
        meta.update(model=self.name, parse_failed=action is None)
        if action is None and completion.get("forced_decision"):
            action = Action[completion["forced_decision"]]
        return Decision(action=Action.HOLD if action is None else action, thesis=text, meta=meta)

    def _progress(self, total: int):
        return tqdm(total=total, disable=total < _PROGRESS_MIN, desc=self.name, unit="call")


class _Session:
    """An event loop on a thread of its own with one API client and one limit of calls in flight, built on first use
    and closed with its agent: callers on any thread (a notebook's, whose loop is running, too) submit coroutines
    and wait, and the client's connections are opened once, not once per batch."""

    def __init__(self, client: Callable[[], Any], concurrency: int):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tr1-api", daemon=True)
        self.thread.start()
        self.client = self.run(_built(client))
        self.limit = asyncio.Semaphore(concurrency)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"  # the client holds the key

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_closed() or not self.thread.is_alive():  # closed, or a forked copy without the thread
            return
        self.run(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


async def _built(make: Callable[[], Any]) -> Any:
    return make()  # on the session's loop: an async client binds to the loop it is made on


class OpenAIChatAgent(LLMAgent):
    """Any OpenAI-compatible chat endpoint: OpenAI itself, a vLLM server, a local test server.

    Calls run concurrently (at most ``concurrency`` in flight), each bounded by ``timeout`` seconds,
    and are retried at most ``max_retries`` times with exponential backoff and jitter on rate limits,
    timeouts, 5xx, refused or dropped connections and malformed responses; a call still failing then
    (or refused outright: 400, 401, 404, 422) is a failed call, not a HOLD. So a server that never
    answers costs at most about ``timeout * (max_retries + 1)`` seconds per batch. With a ``governor``
    (:class:`~tr1_agent.api_limits.ApiGovernor`) each request waits for its rate limits' slot and reserves its
    worst-case price first, shared with every other caller of the run. The API key is read
    from ``api_key_env`` when needed and never stored on the agent, so it cannot reach the cache,
    a decision's metadata, a repr or a log; credentials in ``base_url`` are redacted wherever the
    endpoint is named. A server that echoes the key or the credentials, in an error or in a reply,
    has them masked before the text is cached, stored or shown.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 1024,
        concurrency: int = 8,
        max_retries: int = 3,
        timeout: float = 60,
        seed: int | None = 0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        system_prompt: str = SYSTEM_PROMPT,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        governor: ApiGovernor | None = None,
    ):
        super().__init__(system_prompt, cache_dir, use_cache)
        self.name = model
        self.model = model
        self.governor = governor if governor is not None and governor.active else None
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key_env = api_key_env
        self.reasoning = model.rsplit("/", 1)[-1].lower().startswith(_REASONING_PREFIXES)
        self.temperature = None if self.reasoning else temperature
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.seed = seed
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.requests = 0  # HTTP requests sent, retries included
        self._session: _Session | None = None
        self._opening = threading.Lock()
        self._api_key()  # fail now, not after the first batch is built

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.model!r}, base_url={redact_url(self.base_url)!r}, "
                f"api_key_env={self.api_key_env!r})")

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "backend": "openai-chat",
            "model": self.model,
            "base_url": redact_url(self.base_url),  # the cache key survives a password change
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if urlparse(self.base_url).hostname in _LOCAL_HOSTS:
            return "EMPTY"  # local servers (vLLM, llm-katan) want a header, not a secret
        raise RuntimeError(
            f"{self.model} at {redact_url(self.base_url)} needs an API key: set the {self.api_key_env} "
            "environment variable"
        )

    def _generate(self, todo: dict[str, Messages], done: Callable[[str, Completion], None]) -> None:
        """On the agent's event loop (:class:`_Session`): concurrent ``act`` calls (a replay's tickers asked side by
        side) share one client, its kept-alive connections and the ``concurrency`` limit."""
        with self._opening:
            if self._session is None:
                self._session = _Session(self._client, self.concurrency)
                weakref.finalize(self, self._session.close)
        self._session.run(self._agenerate(todo, done))

    def _client(self):
        import openai

        return openai.AsyncOpenAI(  # retries are ours: backoff, logging and the request count
            api_key=self._api_key(), base_url=self.base_url, timeout=self.timeout, max_retries=0
        )

    async def _agenerate(self, todo: dict[str, Messages], done: Callable[[str, Completion], None]) -> None:
        session = self._session
        with self._progress(len(todo)) as bar:

            async def one(key: str, messages: Messages) -> None:
                async with session.limit:
                    completion = await self._complete(session.client, messages)
                done(key, completion)
                bar.update()

            await asyncio.gather(*(one(k, m) for k, m in todo.items()))

    async def _complete(self, client, messages: Messages) -> Completion:
        import openai

        limit_name = "max_completion_tokens" if self.reasoning else "max_tokens"
        params: dict[str, Any] = {limit_name: self.max_tokens}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.seed is not None:
            params["seed"] = self.seed
        for attempt in itertools.count():
            reservation = await self._reserve(messages)
            self.requests += 1
            try:
                response = await client.chat.completions.create(model=self.model, messages=messages, **params)
                choice, usage = response.choices[0], response.usage
                self._settle(reservation, usage)
                return {
                    "text": self._scrub(choice.message.content or ""),
                    "prompt_tokens": usage.prompt_tokens if usage else None,
                    "completion_tokens": usage.completion_tokens if usage else None,
                    **({"cached_prompt_tokens": cached} if (cached := getattr(getattr(
                        usage, "prompt_tokens_details", None), "cached_tokens", None)) else {}),
                    "finish_reason": choice.finish_reason,
                }
            except (openai.APIError, ValueError, TypeError, AttributeError, IndexError) as exc:
                # ValueError...IndexError: a 200 whose body is not JSON or not a chat completion
                self._settle(reservation, None, failed=True)
                if attempt == self.max_retries or not _retryable(exc):
                    return {"text": "", "error": self._failure(exc, attempt + 1)}
                delay = self._backoff(attempt, exc)
                logger.warning("%s at %s: %s, retry %d/%d in %.2fs", self.model, redact_url(self.base_url),
                               _describe(exc), attempt + 1, self.max_retries, delay)
                await asyncio.sleep(delay)

    async def _reserve(self, messages: Messages) -> Reservation | None:
        """The governor's slot for one request (waited for here) and its reserved price; None without one."""
        if self.governor is None:
            return None
        prompt = math.ceil(sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN)
        reserve = (self.governor.reserve, self.model, prompt, self.max_tokens)
        # a shared governor is a Ray actor: ask it off the event loop; a local one answers under a lock at once
        reservation = await asyncio.to_thread(*reserve) if self.governor.shared else reserve[0](*reserve[1:])
        if reservation.delay > 0:
            await asyncio.sleep(reservation.delay)
        return reservation

    def _settle(self, reservation: Reservation | None, usage, failed: bool = False) -> None:
        """What the request cost, told to the governor: its usage at the price table's price (a failed request
        costs nothing; a reply without usage costs its reservation)."""
        if reservation is None:
            return
        cost = 0.0 if failed else None
        if usage is not None and not failed:
            cost = decision_cost({"model": self.model, "prompt_tokens": usage.prompt_tokens,
                                  "completion_tokens": usage.completion_tokens})
        self.governor.settle(reservation, cost)

    def _scrub(self, text: str) -> str:
        """``text`` from the server with the key and the base URL's credentials masked."""
        return scrub(text, os.environ.get(self.api_key_env), *url_secrets(self.base_url))

    def _failure(self, exc: Exception, attempts: int) -> str:
        """One line naming the model, the endpoint and the last error, with no secret and no control
        character (a terminal escape sent by the server) in it."""
        detail = self._scrub(" ".join(str(exc).split()))[:200]  # masked whole: a cut could split a key
        detail = "".join(c if c.isprintable() else "?" for c in detail)
        return (f"{self.model} at {redact_url(self.base_url)}: {_describe(exc)} after {attempts} attempt"
                f"{'s' if attempts > 1 else ''}: {detail}")

    def _backoff(self, attempt: int, exc: Exception) -> float:
        """The server's Retry-After when it sends one, else exponential backoff with equal jitter."""
        response = getattr(exc, "response", None)
        try:
            return min(self.backoff_max, float(response.headers["retry-after"]))
        except (AttributeError, KeyError, TypeError, ValueError):
            delay = min(self.backoff_max, self.backoff_base * 2**attempt)
            return random.uniform(delay / 2, delay)


def _retryable(exc: Exception) -> bool:
    """Worth asking again: timeouts, dropped or refused connections, 408/409/429/5xx, malformed bodies."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return True  # connection errors (timeouts included) and malformed responses


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return type(exc).__name__ + (f" ({status})" if status else "")


class _LocalAgent(LLMAgent):
    """A model that runs in this process, fed in chunks so each finished chunk is cached.

    ``max_new_tokens`` and ``enable_thinking`` left as None come from the checkpoint's card
    (:func:`tr1_agent.models.read_card`: how it was trained), else 512 tokens and Qwen3's thinking on.
    """

    backend: str

    def __init__(self, model: str, max_new_tokens: int | None, temperature: float, seed: int, batch_size: int,
                 system_prompt: str, cache_dir: str | Path | None, use_cache: bool,
                 enable_thinking: bool | None = None):
        from tr1_agent.models import read_card, resolve_model

        super().__init__(system_prompt, cache_dir, use_cache)
        self.model = model
        self.path = resolve_model(model)
        card = read_card(self.path)
        self.max_new_tokens = max_new_tokens or card.get("max_new_tokens") or 512
        self.enable_thinking = card.get("enable_thinking", True) if enable_thinking is None else enable_thinking
        self.temperature = temperature
        self.seed = seed
        self.batch_size = batch_size

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.path,
            "weights": _weights_fingerprint(self.path),
            "temperature": self.temperature,
            "max_tokens": self.max_new_tokens,
            "seed": self.seed,
            # on is every template's default: cache keys made before the switch existed stay valid
            **({} if self.enable_thinking else {"enable_thinking": False}),
        }

    @property
    def chat_template_kwargs(self) -> dict[str, Any]:
        return {"enable_thinking": self.enable_thinking}

    def _chunks(self, todo: dict[str, Messages]) -> Iterator[list[tuple[str, Messages]]]:
        """Longest prompts first and together, so padding is small and memory peaks early."""
        items = sorted(todo.items(), key=lambda kv: -len(kv[1][-1]["content"]))
        with self._progress(len(items)) as bar:
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                yield chunk
                bar.update(len(chunk))


def _weights_fingerprint(path: str) -> str | None:
    """Names, sizes and mtimes of a local folder's weights: a checkpoint retrained in place
    must not be answered from the old one's cache. None for a Hub id (pinned by its name)."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    stats = sorted(
        f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
        for f in folder.iterdir()
        if f.suffix in (".safetensors", ".bin", ".pt", ".gguf")
    )
    return hashlib.sha256("\n".join(stats).encode()).hexdigest()[:16]


class TransformersAgent(_LocalAgent):
    """A local Hugging Face model (a Hub id, a folder, ``"smollm2"``), generating in padded batches.

    The prompts of a run share their first few hundred tokens (system prompt and instructions):
    that prefix is encoded once and its key/value cache kept on the agent; each batch starts from
    it and encodes only what follows (padding goes between prefix and suffix, masked out, with
    positions counted over real tokens). Generation stops once a row has closed its decision line
    (``]]]``); a reply without a decision is decided by scoring the five closings from the
    generation's own key/value cache (only the few closing tokens are new), not by encoding prompt
    and text a second time.
    """

    backend = "transformers"
    stop = "]]]"  # the end of the decision line

    def __init__(
        self,
        model: str,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        batch_size: int = 4,
        seed: int = 0,
        dtype: str = "auto",
        device: str | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        force_decision: bool = False,
        enable_thinking: bool | None = None,
        reuse_cache: bool = True,
        reuse_prefix: bool = True,
        threads: int | None = None,
    ):
        """``reuse_cache=False`` scores forced decisions by re-encoding prompt and text, ``reuse_prefix=False``
        encodes every prompt whole (the plain references). ``threads``: torch threads while generating (None:
        the process's setting); one is fastest on a busy CPU (see :func:`torch_threads`)."""
        from tr1_agent.models import load_model_and_tokenizer

        super().__init__(model, max_new_tokens, temperature, seed, batch_size, system_prompt, cache_dir, use_cache,
                         enable_thinking)
        self.name = f"hf:{model}"
        self.force_decision = force_decision
        self.reuse_cache = reuse_cache
        self.reuse_prefix = reuse_prefix
        self.threads = threads
        self._prefix: tuple[list[int], list[tuple[Any, Any]]] | None = None  # token ids, their keys and values
        self.lm, self.tokenizer = load_model_and_tokenizer(self.path, dtype=dtype, device=device)

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "force_decision": self.force_decision, "stop": self.stop}

    def _forced_decision(self, prompt: str, generated: str) -> str:
        """The action the model itself finds likeliest after its own text and ``[[[``, among the five only.

        Small models (SmolLM2-135M) rarely reach the final decision line within a short budget;
        scoring the five closings (summed token log-probabilities) keeps the decision the model's
        own instead of defaulting to HOLD. The completion still counts as ``parse_failed``. This is
        the plain version (one forward over the whole text); :meth:`_generate` scores from the
        generation's own key/value cache instead, and perf.py runs both.
        """
        prefix = self.tokenizer(prompt + generated.rstrip() + "\n[[[", add_special_tokens=False)["input_ids"]
        return self._score_closings(prefix, None, None, 0)

    def _score_closings(self, new_ids: list[int], cache, mask, position: int) -> str:
        """Feed ``new_ids`` after ``cache`` (None: from scratch), then score the five ``<ACTION>]]]`` closings
        together: one batch of five rows over that cache, each its closing but the last token (right-padded:
        attention is causal, so padding after a row's tokens changes none of their logits)."""
        import torch

        device = self.lm.device

        def forward(rows: list[list[int]], past, past_mask, start: int):
            ids = torch.tensor(rows, device=device)
            full = torch.ones_like(ids)
            if past_mask is not None:
                full = torch.cat([past_mask.expand(len(rows), -1), full], dim=1)
            positions = torch.arange(start, start + ids.shape[1], device=device).expand(len(rows), -1)
            out = self.lm(input_ids=ids, attention_mask=full, position_ids=positions, cache=past,
                          use_cache=True, logits_to_keep=ids.shape[1])
            return out, full

        endings = [self.tokenizer(f"{action.name}]]]", add_special_tokens=False)["input_ids"] for action in Action]
        width = max(map(len, endings)) - 1
        with torch.inference_mode():
            first, first_mask = forward([new_ids], cache, mask, position)
            logits = first.logits[:, -1:].expand(len(endings), -1, -1)
            if width:  # each closing's later tokens, predicted from the cache of everything before them
                past = first.cache
                past.batch_repeat_interleave(len(endings))
                rows = [e[:-1] + [self.tokenizer.pad_token_id] * (width + 1 - len(e)) for e in endings]
                more, _ = forward(rows, past, first_mask, position + len(new_ids))
                logits = torch.cat([logits, more.logits], dim=1)
            logp = logits.float().log_softmax(-1)
            scores = [float(sum(logp[j, k, token] for k, token in enumerate(e))) for j, e in enumerate(endings)]
        return Action(int(torch.tensor(scores).argmax())).name

    @staticmethod
    def _cache_of(layers: list[tuple[Any, Any]]):
        """A key/value cache holding ``(keys, values)`` per layer, views included: a forward appends by
        concatenating, never writing into them."""
        from transformers import DynamicCache

        out = DynamicCache()
        for i, (keys, values) in enumerate(layers):
            out.update(keys, values, i)
        return out

    def _row_cache(self, cache, row: int, keep: int):
        """Row ``row`` of a batched generation cache, its first ``keep`` positions (views, no copy)."""
        return self._cache_of([(layer.keys[row : row + 1, :, :keep], layer.values[row : row + 1, :, :keep])
                               for layer in cache.layers])

    def _shared_prefix(self, prompts: list[list[int]]) -> int:
        """How many first tokens of every prompt the kept prefix cache holds (0: none), one short of the
        shortest prompt so each row has a token of its own to predict from. The kept prefix shrinks to
        what these prompts share with it (a slice of its cache: attention is causal); with none kept,
        or nothing shared, the longest common prefix of two or more prompts is encoded and kept."""
        import torch
        from transformers.cache_utils import DynamicLayer

        if not self.reuse_prefix or (self._prefix is not None and self._prefix[1] is None):
            return 0  # off, or this model's cache cannot be extended
        shortest = max(min(map(len, prompts)) - 1, 0)
        if self._prefix is not None and (common := os.path.commonprefix([*prompts, self._prefix[0]])[:shortest]):
            if len(common) < len(self._prefix[0]):
                self._prefix = common, [(k[:, :, : len(common)], v[:, :, : len(common)]) for k, v in self._prefix[1]]
            return len(common)
        common = os.path.commonprefix(prompts)[:shortest]
        if len(prompts) < 2 or not common:
            return 0
        with torch.inference_mode():
            out = self.lm(input_ids=torch.tensor([common], device=self.lm.device), use_cache=True, logits_to_keep=1)
        cache = out.cache
        # a batch extends plain key/value layers only (sliding-window or recurrent caches: encode prompts whole)
        plain = all(type(layer) is DynamicLayer for layer in cache.layers)
        self._prefix = common, [(layer.keys, layer.values) for layer in cache.layers] if plain else None
        return len(common) if plain else 0

    def _batch(self, prompts: list[list[int]], shared: int) -> dict[str, Any]:
        """Token ids and attention mask of a batch: the ``shared`` first tokens, then padding (masked out),
        then each prompt's own tokens, so all rows end in the last column (left padding when ``shared`` is 0)."""
        import torch

        width = max(map(len, prompts))
        pad = self.tokenizer.pad_token_id
        ids = [p[:shared] + [pad] * (width - len(p)) + p[shared:] for p in prompts]
        mask = [[1] * shared + [0] * (width - len(p)) + [1] * (len(p) - shared) for p in prompts]
        return {"input_ids": torch.tensor(ids, device=self.lm.device),
                "attention_mask": torch.tensor(mask, device=self.lm.device)}

    def _generate(self, todo: dict[str, Messages], done: Callable[[str, Completion], None]) -> None:
        with torch_threads(self.threads):
            self._generate_batches(todo, done)

    def _generate_batches(self, todo: dict[str, Messages], done: Callable[[str, Completion], None]) -> None:
        import torch
        from transformers.cache_utils import DynamicLayer

        eos = self.lm.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos])
        sampling = ({"do_sample": True, "temperature": self.temperature} if self.temperature > 0
                    else {"do_sample": False})
        closing = self.tokenizer("\n[[[", add_special_tokens=False)["input_ids"]
        texts = {key: self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                         **self.chat_template_kwargs) for key, messages in todo.items()}
        prompts = {key: self.tokenizer(text, add_special_tokens=False)["input_ids"] for key, text in texts.items()}
        shared = self._shared_prefix(list(prompts.values()))
        for chunk in self._chunks(todo):
            batch = self._batch([prompts[key] for key, _ in chunk], shared)
            prefix = None
            if shared:  # the kept prefix cache, once per row (views; generation appends to copies)
                prefix = self._cache_of([(k.expand(len(chunk), -1, -1, -1), v.expand(len(chunk), -1, -1, -1))
                                         for k, v in self._prefix[1]])
            with torch.random.fork_rng(), torch.inference_mode():  # seeded sampling, caller's RNG untouched
                torch.manual_seed(self.seed)
                # stop once every row has written its decision line (or EOS, or the budget)
                out = self.lm.generate(
                    **batch, cache=prefix, max_new_tokens=self.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id, stop_strings=[self.stop], tokenizer=self.tokenizer,
                    return_dict_in_generate=True, **sampling
                )
            width = batch["input_ids"].shape[1]
            new = out.sequences[:, width:].cpu()
            is_eos = torch.isin(new, eos_ids)
            is_end = is_eos | (new == self.tokenizer.pad_token_id)  # rows stopped at the decision line are padded
            stopped = is_end.any(dim=1)
            first = is_end.int().argmax(dim=1)
            ends_on_eos = is_eos[torch.arange(len(new)), first] & stopped
            lengths = torch.where(stopped, first + ends_on_eos.int(), new.shape[1])  # an EOS counts, padding not
            prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
            cached = out.cache.get_seq_length() - width  # generated tokens already in the cache
            # rows are sliced out of plain key/value layers only (sliding-window or recurrent caches: re-encode)
            reusable = self.reuse_cache and all(type(layer) is DynamicLayer for layer in out.cache.layers)
            for i, (key, _) in enumerate(chunk):
                text = self.tokenizer.decode(new[i, : lengths[i]], skip_special_tokens=True)
                completion = {
                    "text": text,
                    "prompt_tokens": prompt_lengths[i],
                    "completion_tokens": int(lengths[i]),
                    "finish_reason": "stop" if stopped[i] or text.rstrip().endswith(self.stop) else "length",
                }
                if self.force_decision and parse_thesis(completion["text"]).decision is None and not reusable:
                    completion["forced_decision"] = self._forced_decision(texts[key], completion["text"])
                elif self.force_decision and parse_thesis(completion["text"]).decision is None:
                    # the generation's cache already holds prompt + text: feed only what it lacks, then score
                    own = new[i, : int(lengths[i]) - int(ends_on_eos[i])].tolist()
                    while own and not self.tokenizer.decode(own[-1:]).strip():  # as rstrip() on the text
                        own.pop()
                    keep = min(len(own), cached)
                    mask = batch["attention_mask"][i : i + 1]
                    completion["forced_decision"] = self._score_closings(
                        own[keep:] + closing, self._row_cache(out.cache, i, width + keep),
                        torch.cat([mask, mask.new_ones(1, keep)], dim=1), prompt_lengths[i] + keep)
                done(key, completion)


class VLLMAgent(_LocalAgent):
    """A vLLM engine in this process (``pip install tr1[gpu]``); ``engine_kwargs`` go to ``vllm.LLM``.

    With ``force_decision``, a reply without ``[[[ACTION]]]`` gets the action the model scores
    likeliest after its own text and ``[[[``, as :class:`TransformersAgent` does, from vLLM's prompt
    log-probabilities of the five closings.
    """

    backend = "vllm"

    def __init__(
        self,
        model: str,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        batch_size: int = 256,
        seed: int = 0,
        system_prompt: str = SYSTEM_PROMPT,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        force_decision: bool = False,
        enable_thinking: bool | None = None,
        **engine_kwargs: Any,
    ):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise ImportError("VLLMAgent needs vLLM: pip install tr1[gpu]") from exc

        super().__init__(model, max_new_tokens, temperature, seed, batch_size, system_prompt, cache_dir, use_cache,
                         enable_thinking)
        self.name = f"vllm:{model}"
        self.force_decision = force_decision
        self.engine = LLM(model=self.path, seed=seed, **engine_kwargs)
        self._scoring = SamplingParams(max_tokens=1, prompt_logprobs=0)  # the logprob of each prompt token

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "force_decision": self.force_decision}

    def _forced_decisions(self, messages: list[Messages], generated: list[str]) -> list[str]:
        """Per reply, the likeliest of the five closings ``ACTION]]]`` after ``reply + "\\n[[["``, by summed
        token log-probabilities, tokenised as :meth:`TransformersAgent._forced_decision` does."""
        tokenizer = self.engine.get_tokenizer()
        endings = [tokenizer(f"{a.name}]]]", add_special_tokens=False)["input_ids"] for a in Action]
        prompts = []
        for conversation, text in zip(messages, generated):
            chat = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False,
                                                 **self.chat_template_kwargs)
            prefix = tokenizer(chat + text.rstrip() + "\n[[[", add_special_tokens=False)["input_ids"]
            prompts += [{"prompt_token_ids": prefix + ending} for ending in endings]
        outputs = self.engine.generate(prompts, self._scoring, use_tqdm=False)
        actions = []
        for i in range(len(generated)):
            scores = []
            for ending, out in zip(endings, outputs[i * len(endings) : (i + 1) * len(endings)]):
                tail = zip(out.prompt_token_ids[-len(ending) :], out.prompt_logprobs[-len(ending) :])
                scores.append(sum(position[token].logprob for token, position in tail))
            actions.append(Action(max(range(len(scores)), key=scores.__getitem__)).name)
        return actions

    def _generate(self, todo: dict[str, Messages], done: Callable[[str, Completion], None]) -> None:
        from vllm import SamplingParams

        sampling = SamplingParams(temperature=self.temperature, max_tokens=self.max_new_tokens, seed=self.seed)
        for chunk in self._chunks(todo):
            outputs = self.engine.chat([m for _, m in chunk], sampling, use_tqdm=False,
                                       chat_template_kwargs=self.chat_template_kwargs)
            completions = [{
                "text": output.outputs[0].text,
                "prompt_tokens": len(output.prompt_token_ids),
                "completion_tokens": len(output.outputs[0].token_ids),
                "finish_reason": output.outputs[0].finish_reason,
            } for output in outputs]
            undecided = [i for i, c in enumerate(completions)
                         if self.force_decision and parse_thesis(c["text"]).decision is None]
            if undecided:
                forced = self._forced_decisions([chunk[i][1] for i in undecided],
                                                [completions[i]["text"] for i in undecided])
                for i, action in zip(undecided, forced):
                    completions[i]["forced_decision"] = action
            for (key, _), completion in zip(chunk, completions):
                done(key, completion)


def make_llm_agent(spec: str, **kwargs: Any) -> LLMAgent:
    """``hf:<id or path>`` -> transformers, ``vllm:<id>`` -> vLLM, ``smollm2`` -> the offline
    SmolLM2 on transformers (``smollm2-tr1``: with the shipped adapter), anything else -> an OpenAI-compatible
    model name."""
    if spec.startswith("hf:"):
        return TransformersAgent(spec[3:], **kwargs)
    if spec.startswith("vllm:"):
        return VLLMAgent(spec[5:], **kwargs)
    from tr1_agent.models import BUILTIN_ADAPTERS

    if spec == "smollm2" or spec in BUILTIN_ADAPTERS:
        return TransformersAgent(spec, **kwargs)
    return OpenAIChatAgent(model=spec, **kwargs)
