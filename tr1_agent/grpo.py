"""GRPO against the environment's own rewards, and the rollouts that measure them.

The reward functions are :func:`tr1_env.scoring.rewards.score`'s terms (one per row of
:data:`tr1_env.scoring.rewards.TERMS`), exactly what the thesis environment pays: trl calls each with the
completions plus every dataset column (``label`` and ``context`` among them) and sums them with
``reward_weights`` taken from the stage's :class:`~tr1_env.scoring.rewards.RewardConfig`. Each term is logged on
its own (``rewards/structure/mean``...). trl calls them one after the other on the same completions, so they
share one scoring (one parse) per completion through a small cache.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from tr1_agent.configs import GRPORunConfig
from tr1_agent.sft import export, last_checkpoint, release, training_card
from tr1_env.core.actions import Action
from tr1_env.scoring.rewards import TERMS, RewardBreakdown, RewardConfig, score

__all__ = ["RewardTerm", "evaluate", "generate", "grpo_config", "prompt_tokens", "reward_functions",
           "train_grpo", "vllm_memory_share", "vllm_share"]

logger = logging.getLogger(__name__)


def _text(completion) -> str:
    """trl passes conversational completions as ``[{"role": "assistant", "content": ...}]``."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


@lru_cache(maxsize=4096)
def _breakdown(text: str, label: str, context: str, cfg: RewardConfig) -> RewardBreakdown:
    return score(text, Action[label], context, cfg)


class RewardTerm:
    """One term of :func:`~tr1_env.scoring.rewards.score` as a trl reward function: picklable, and named
    (``__name__``) for trl's logs."""

    def __init__(self, term: str, cfg: RewardConfig):
        self.__name__, self.cfg = term, cfg

    def __call__(self, completions: list, label: list[str], context: list[str], **_) -> list[float]:
        return [getattr(_breakdown(_text(c), y, ctx, self.cfg), self.__name__)
                for c, y, ctx in zip(completions, label, context)]

    def __repr__(self) -> str:
        return f"RewardTerm({self.__name__!r})"


def reward_functions(cfg: RewardConfig) -> tuple[list[RewardTerm], list[float]]:
    """trl's ``reward_funcs`` and ``reward_weights``: one function per term of
    :data:`~tr1_env.scoring.rewards.TERMS` (R_evidence checking every quote against the row's context,
    R_decision against the row's label) and its weight."""
    return [RewardTerm(term.name, cfg) for term in TERMS], cfg.weights


def prompt_tokens(tokenizer, prompts: list, chat_template_kwargs: dict[str, Any]) -> int:
    """Tokens of the longest conversational prompt, rendered as the rollouts render it."""
    return max(len(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True,
                                                 **chat_template_kwargs)["input_ids"]) for p in prompts)


def vllm_memory_share(params: int, bytes_per_param: int, device_bytes: int) -> float:
    """The GPU share for a vLLM engine: its weights twice over (weights, then KV cache and activations),
    at least trl's 0.3, at most 0.9.

    Qwen3-4B in bf16 (8.0 GB) gets 0.3 of an 80 GB card but 0.67 of a 24 GB one, where 0.3 would not
    even hold the weights.
    """
    return min(0.9, max(0.3, round(2 * params * bytes_per_param / device_bytes, 2)))


def vllm_share(cfg: GRPORunConfig, model: str) -> float:
    """:attr:`GRPORunConfig.vllm_gpu_memory_utilization`, or :func:`vllm_memory_share` of ``model`` on this GPU."""
    import torch

    from tr1_agent.models import compute_dtype, param_count

    if cfg.vllm_gpu_memory_utilization is not None or not torch.cuda.is_available():
        return cfg.vllm_gpu_memory_utilization or 0.3
    share = vllm_memory_share(param_count(model), compute_dtype().itemsize,
                              torch.cuda.get_device_properties(0).total_memory)
    if share > 0.5 and cfg.use_vllm and cfg.vllm_mode == "colocate":
        logger.warning("vLLM needs %.0f%% of this GPU for %s: colocated training may run out of memory; consider "
                       "--vllm-mode server on its own GPU", 100 * share, model)
    return share


def grpo_config(base: str, rows: Dataset, output_dir: str, cfg: GRPORunConfig, reward: RewardConfig):
    """trl's ``GRPOConfig`` for this run: device-chosen batch and precision, the thinking switch in every rollout's
    chat template, truncated theses masked, and vLLM's context sized to the longest prompt plus a completion."""
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    template = cfg.chat_template_kwargs()
    vllm = {"vllm_server_base_url": cfg.vllm_server_base_url} if cfg.vllm_server_base_url else {}
    if cfg.use_vllm and cfg.vllm_mode == "colocate":
        tokenizer = AutoTokenizer.from_pretrained(base)
        vllm.update(vllm_max_model_length=prompt_tokens(tokenizer, list(rows["prompt"]), template)
                    + cfg.max_completion_length, vllm_gpu_memory_utilization=vllm_share(cfg, base))
    return GRPOConfig(
        **cfg.trainer_kwargs(output_dir), num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, mask_truncated_completions=cfg.mask_truncated_completions,
        chat_template_kwargs=template, temperature=cfg.temperature, top_p=cfg.top_p, beta=cfg.beta,
        epsilon=cfg.epsilon, num_iterations=cfg.num_iterations, loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards, reward_weights=reward_functions(reward)[1], use_vllm=cfg.use_vllm,
        vllm_mode=cfg.vllm_mode, **vllm)


def train_grpo(model: str, rows: Dataset, output_dir: str | Path, cfg: GRPORunConfig = GRPORunConfig(),
               reward: RewardConfig = RewardConfig.for_stage("structure")) -> Path:
    """GRPO from ``model`` on the prompts of ``rows`` (with ``label`` and ``context`` columns).

    Resumes from the last checkpoint in ``output_dir/trainer`` when ``save_steps`` left one.
    Returns the merged model folder; the trainer's memory (and its vLLM engine's) is freed first.
    """
    from trl import GRPOTrainer

    from tr1_agent.models import resolve_model

    base, out = resolve_model(model), Path(output_dir)
    args = grpo_config(base, rows, str(out / "trainer"), cfg, reward)
    trainer = GRPOTrainer(model=base, reward_funcs=reward_functions(reward)[0], args=args, train_dataset=rows,
                          peft_config=cfg.lora())
    trainer.train(resume_from_checkpoint=last_checkpoint(out / "trainer"))
    merged = export(trainer, base, out, cfg, training_card(rows, cfg, cfg.max_completion_length))
    release(trainer)
    return merged


def generate(model: str, rows: Dataset, n: int = 1, max_new_tokens: int = 512, temperature: float = 0.0,
             batch_size: int = 8, seed: int = 0, use_vllm: bool = False, enable_thinking: bool = True,
             gpu_memory_utilization: float = 0.3) -> list[list[str]]:
    """``n`` completions per row's ``prompt`` (greedy at temperature 0), generated by the LLM agents' own code
    (:class:`~tr1_agent.llm_agents.VLLMAgent` or :class:`~tr1_agent.llm_agents.TransformersAgent`).

    Sample ``i`` of every prompt is drawn with seed ``seed + i``, leaving the caller's random state
    alone; nothing is cached, as the model under training changes between calls. ``enable_thinking``
    goes to the chat template. A vLLM engine takes ``gpu_memory_utilization`` of the GPU and a
    context of the longest prompt plus ``max_new_tokens`` (no more KV cache than that needs); the
    model or engine is freed before returning, so the next stage finds the memory.
    """
    from tr1_agent.llm_agents import make_llm_agent
    from tr1_agent.models import free_accelerator_memory, resolve_model, shutdown_vllm

    conversations = list(rows["prompt"])
    engine = {}
    if use_vllm:
        from transformers import AutoTokenizer

        longest = prompt_tokens(AutoTokenizer.from_pretrained(resolve_model(model)), conversations,
                                {"enable_thinking": enable_thinking})
        engine = {"gpu_memory_utilization": gpu_memory_utilization, "max_model_len": longest + max_new_tokens}
    agent = make_llm_agent(("vllm:" if use_vllm else "hf:") + model, max_new_tokens=max_new_tokens,
                           temperature=temperature, batch_size=batch_size, seed=seed, use_cache=False,
                           enable_thinking=enable_thinking, **engine)
    try:
        draws = []
        for i in range(n if temperature > 0 else min(n, 1)):  # greedy decoding gives one answer n times
            agent.seed = seed + i
            draws.append([c["text"] for c in agent.complete(conversations)])
    finally:
        if use_vllm:
            shutdown_vllm(agent.engine)
        del agent
        free_accelerator_memory()
    return [[draws[i % len(draws)][row] for i in range(n)] for row in range(len(conversations))]


def evaluate(model: str, rows: Dataset, reward: RewardConfig = RewardConfig(), **sampling) -> dict[str, float]:
    """Mean reward terms of ``model``'s theses on ``rows`` (the held-out slice), scored as the env does.

    ``sampling`` goes to :func:`generate`: greedy by default; with ``n`` and ``temperature`` the means
    run over every sample.
    """
    samples = generate(model, rows, **sampling)
    pairs = [(t, y, ctx) for texts, y, ctx in zip(samples, rows["label"], rows["context"]) for t in texts]
    texts = [t for t, _, _ in pairs]
    scores = [score(t, Action[y], ctx, reward) for t, y, ctx in pairs]

    def mean(values) -> float:
        return float(np.mean(list(values)))

    return {"n": len(scores), **{term.name: mean(getattr(s, term.name) for s in scores) for term in TERMS},
            "total": mean(s.total for s in scores), "fabricated_per_thesis": mean(s.n_fabricated for s in scores),
            "decided": mean(s.decision_action is not None for s in scores),
            "mean_chars": mean(len(t) for t in texts)}
