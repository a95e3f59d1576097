"""GRPO against the environment's own rewards, and the rollouts that measure them.

The three reward functions are :func:`tr1_env.rewards.score`'s terms, exactly what the thesis
environment pays: trl calls each with the completions plus every dataset column (``label`` and
``context`` among them) and sums them with ``reward_weights`` taken from the stage's
:class:`~tr1_env.rewards.RewardConfig`. Each term is logged on its own (``rewards/structure/mean``...).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from datasets import Dataset

from tr1_agent.configs import GRPORunConfig
from tr1_agent.sft import export, last_checkpoint
from tr1_env.actions import Action
from tr1_env.rewards import RewardConfig, score

__all__ = ["decision", "evaluate", "evidence", "generate", "reward_functions", "structure", "train_grpo"]


def _text(completion) -> str:
    """trl passes conversational completions as ``[{"role": "assistant", "content": ...}]``."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def structure(completions: list, cfg: RewardConfig, **_) -> list[float]:
    """R_structure (sections, headers, bullets, bold, tables)."""
    return [score(_text(c), None, None, cfg).structure for c in completions]


def evidence(completions: list, context: list[str], cfg: RewardConfig, **_) -> list[float]:
    """R_evidence, with every quote checked against the row's context."""
    return [score(_text(c), None, ctx, cfg).evidence for c, ctx in zip(completions, context)]


def decision(completions: list, label: list[str], cfg: RewardConfig, **_) -> list[float]:
    """R_decision, the paper's asymmetric matrix against the row's label."""
    return [score(_text(c), Action[y], None, cfg).decision for c, y in zip(completions, label)]


def reward_functions(cfg: RewardConfig) -> tuple[list, list[float]]:
    """The three reward functions (picklable partials, named for trl's logs) and their weights."""
    funcs = [partial(f, cfg=cfg) for f in (structure, evidence, decision)]
    return funcs, [cfg.w_structure, cfg.w_evidence, cfg.w_decision]


def train_grpo(model: str, rows: Dataset, output_dir: str | Path, cfg: GRPORunConfig = GRPORunConfig(),
               reward: RewardConfig = RewardConfig.for_stage("structure")) -> Path:
    """GRPO from ``model`` on the prompts of ``rows`` (with ``label`` and ``context`` columns).

    Resumes from the last checkpoint in ``output_dir/trainer`` when ``save_steps`` left one.
    Returns the merged model folder.
    """
    from trl import GRPOConfig, GRPOTrainer

    from tr1_agent.models import resolve_model

    base, out = resolve_model(model), Path(output_dir)
    funcs, weights = reward_functions(reward)
    vllm = {"vllm_server_base_url": cfg.vllm_server_base_url} if cfg.vllm_server_base_url else {}
    args = GRPOConfig(
        **cfg.trainer_kwargs(str(out / "trainer")), num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_p=cfg.top_p,
        beta=cfg.beta, epsilon=cfg.epsilon, num_iterations=cfg.num_iterations, loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards, reward_weights=weights, use_vllm=cfg.use_vllm, vllm_mode=cfg.vllm_mode,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, **vllm)
    trainer = GRPOTrainer(model=base, reward_funcs=funcs, args=args, train_dataset=rows, peft_config=cfg.lora())
    trainer.train(resume_from_checkpoint=last_checkpoint(out / "trainer"))
    return export(trainer, base, out, cfg)


def generate(model: str, rows: Dataset, n: int = 1, max_new_tokens: int = 512, temperature: float = 0.0,
             batch_size: int = 8, seed: int = 0, use_vllm: bool = False) -> list[list[str]]:
    """``n`` completions per row's ``prompt`` (greedy at temperature 0), with vLLM or transformers."""
    from tr1_agent.models import load_model_and_tokenizer, resolve_model

    prompts = list(rows["prompt"])
    if use_vllm:
        from vllm import LLM, SamplingParams

        params = SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens, seed=seed)
        return [[o.text for o in out.outputs] for out in LLM(model=resolve_model(model), seed=seed).chat(prompts, params)]

    import torch

    lm, tokenizer = load_model_and_tokenizer(model)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    torch.manual_seed(seed)
    texts = []
    for start in range(0, len(prompts), batch_size):
        chat = tokenizer.apply_chat_template(prompts[start : start + batch_size], add_generation_prompt=True,
                                             tokenize=False)
        batch = tokenizer(chat, padding=True, return_tensors="pt", add_special_tokens=False).to(lm.device)
        with torch.inference_mode():
            out = lm.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=n,
                              pad_token_id=tokenizer.pad_token_id, **sampling)
        texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


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

    return {"n": len(scores), "structure": mean(s.structure for s in scores),
            "evidence": mean(s.evidence for s in scores), "decision": mean(s.decision for s in scores),
            "total": mean(s.total for s in scores), "fabricated_per_thesis": mean(s.n_fabricated for s in scores),
            "decided": mean(s.decision_action is not None for s in scores),
            "mean_chars": mean(len(t) for t in texts)}
