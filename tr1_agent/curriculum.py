"""The three-stage curriculum: Structure, then Claims, then Decision, easy to hard.

Each stage:
1. SFT warm start. Stage 1 trains on the distilled theses when given; otherwise, and in every
   later stage, on self-augmented data: the best of several sampled theses per prompt, scored
   with the stage's rewards (stage 1 samples the base model, later stages reuse what the
   previous stage produced in step 4). Held-out days are filtered out of distilled data. An
   empty warm-start set skips the SFT.
2. GRPO with the stage's reward weights (:data:`tr1_env.scoring.rewards.STAGE_WEIGHTS`).
3. Evaluation: mean reward terms of greedy theses on held-out ticker-days -> ``eval.json``.
4. Self-augmentation: the GRPO model's best theses become the next stage's SFT data.

Layout under ``output_dir``: ``data/`` (train and held-out prompts, built once), ``eval_base.json``,
and one ``<i>-<stage>/`` folder per stage holding ``bootstrap/`` (stage 1 without distilled data),
``sft/`` and ``grpo/`` (each with ``adapter/`` and ``merged/``), ``eval.json``, ``augment/`` and, last,
``stage_done.json``. A rerun skips finished stages and, inside a stage, finished steps.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
from datasets import Dataset

from tr1_agent.configs import CurriculumConfig, DatasetConfig, GRPORunConfig, SFTRunConfig
from tr1_agent.datasets import build_prompts, day_keys, load, save, split_days, with_completions
from tr1_agent.grpo import evaluate, generate, train_grpo
from tr1_agent.sft import train_sft
from tr1_env.core.actions import Action
from tr1_env.scoring.rewards import RewardConfig, score

__all__ = ["distributed_state", "keeps", "run_curriculum", "sampling", "self_augment"]

logger = logging.getLogger(__name__)


def self_augment(model: str, rows: Dataset, reward: RewardConfig, cfg: CurriculumConfig,
                 grpo: GRPORunConfig) -> Dataset:
    """SFT rows from ``model``'s own best theses: best of ``augment_samples`` per prompt by the stage's total
    reward, keeping the top ``augment_keep`` share of prompts among those :func:`keeps` accepts."""
    rows = rows.shuffle(seed=grpo.seed).select(range(min(cfg.augment_prompts, len(rows))))
    samples = generate(model, rows, n=cfg.augment_samples, temperature=cfg.augment_temperature, seed=grpo.seed,
                       **sampling(cfg, grpo, model))
    best, rewards, floors = [], [], []
    for texts, label, context in zip(samples, rows["label"], rows["context"]):
        totals = [score(t, Action[label], context, reward).total for t in texts]
        best.append(texts[int(np.argmax(totals))])
        rewards.append(max(totals))
        floors.append(score("", Action[label], context, reward).total)
    ranked = [int(i) for i in np.argsort(rewards)[::-1] if keeps(rewards[i], floors[i], cfg.augment_min_reward)]
    keep = sorted(ranked[: round(cfg.augment_keep * len(rows))])
    out = with_completions(rows.select(keep), [best[i] for i in keep])
    return out.add_column("reward", [rewards[i] for i in keep])


def keeps(reward: float, empty: float, min_reward: float | None) -> bool:
    """Whether a best thesis becomes SFT data: above ``min_reward`` inclusive when set, else strictly above what
    an empty answer scores under the stage's reward (0 for structure and claims; the missing-decision penalty
    for the decision stage, so a parsed but imperfect decision is kept)."""
    return reward >= min_reward if min_reward is not None else reward > empty


def sampling(cfg: CurriculumConfig, grpo: GRPORunConfig, model: str) -> dict:
    """How the curriculum samples outside GRPO (evaluation, self-augmentation): as GRPO's rollouts do."""
    from tr1_agent.grpo import vllm_share

    return dict(max_new_tokens=grpo.max_completion_length, batch_size=cfg.generation_batch_size,
                use_vllm=grpo.use_vllm, enable_thinking=grpo.enable_thinking,
                gpu_memory_utilization=vllm_share(grpo, model) if grpo.use_vllm else 0.3)


def distributed_state(timeout_s: int):
    """accelerate's process state, created here first so its process group gets ``timeout_s``.

    The first ``PartialState()`` creates the group, with the 10-minute NCCL default unless told
    otherwise; the trainers' ``ddp_timeout`` then comes too late, and the other ranks would give up
    while the main process evaluates and samples alone.
    """
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=timeout_s))


def _once(path: Path, make, save_fn=None, load_fn=None):
    """Load ``path`` when a previous run finished it, else make and save it (JSON by default).

    Under ``accelerate launch`` the main process goes first and the others load its result, so
    sampling, evaluation and data building run once, not once per GPU.
    """
    from accelerate import PartialState

    with PartialState().main_process_first():
        if path.exists():
            return (load_fn or _read_json)(path)
        value = make()
        (save_fn or _write_json)(value, path)
        return value


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _write_json(value: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)  # atomic: a marker is whole or absent


def _data(cfg: CurriculumConfig, data: DatasetConfig) -> tuple[Dataset, Dataset]:
    """Train and held-out prompts, built on the first run and reloaded after (a rerun sees the same days)."""
    root = Path(cfg.output_dir) / "data"

    def make() -> dict:
        train, heldout = split_days(build_prompts(data), cfg.heldout_days, seed=data.seed)
        save(train, root / "train")
        save(heldout, root / "heldout")
        return asdict(data)

    _once(root / "dataset_config.json", make)
    return load(root / "train"), load(root / "heldout")


def run_curriculum(cfg: CurriculumConfig, data: DatasetConfig = DatasetConfig(), sft: SFTRunConfig = SFTRunConfig(),
                   grpo: GRPORunConfig = GRPORunConfig(), reward: RewardConfig = RewardConfig(),
                   stage_weights: dict[str, tuple[float, float, float]] | None = None,
                   evaluate_fn: Callable[[str, Dataset, RewardConfig], dict] | None = None) -> list[dict]:
    """Run (or resume) every stage; return each stage's ``stage_done.json`` record.

    Each stage scores with ``reward``'s settings and its weights from ``stage_weights`` (default
    :data:`~tr1_env.scoring.rewards.STAGE_WEIGHTS`). ``evaluate_fn(model, heldout, reward)`` replaces the held-out
    evaluation (default: :func:`~tr1_agent.grpo.evaluate`, sampling as GRPO does), so a caller that scores
    more (decision accuracy, an ablation's own table) evaluates each model once.
    """
    distributed_state(max(sft.ddp_timeout, grpo.ddp_timeout))
    if sft.enable_thinking != grpo.enable_thinking:
        raise ValueError(f"--sft-enable-thinking ({sft.enable_thinking}) and --grpo-enable-thinking "
                         f"({grpo.enable_thinking}) differ: the stages would train the model on two prompt formats")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = _data(cfg, data)
    def held_out(model: str, stage_reward: RewardConfig) -> dict:
        if evaluate_fn is not None:
            return evaluate_fn(model, heldout, stage_reward)
        return evaluate(model, heldout, stage_reward, **sampling(cfg, grpo, model))

    _once(out / "eval_base.json", partial(held_out, cfg.model, reward))

    model, warm = cfg.model, None
    if cfg.sft_data:
        held = day_keys(heldout)
        warm = load(cfg.sft_data).filter(lambda r: (r["ticker"], r["date"]) not in held)
    records = []
    for i, stage in enumerate(cfg.stages, 1):
        folder, stage_reward = out / f"{i}-{stage}", reward.with_stage(stage, stage_weights)
        marker = folder / "stage_done.json"
        if marker.exists():
            record = json.loads(marker.read_text())
            model, warm = record["model"], load(record["augment"])
            records.append(record)
            logger.info("stage %s already done: %s", stage, record["model"])
            continue
        started = time.time()
        folder.mkdir(parents=True, exist_ok=True)
        if warm is None:
            warm = _once(folder / "bootstrap", partial(self_augment, model, train, stage_reward, cfg, grpo), save,
                         load)
        if len(warm):
            start = folder / "sft" / "merged"
            model = str(start if start.exists() else train_sft(model, warm, folder / "sft", sft))
        final = folder / "grpo" / "merged"
        model = str(final if final.exists() else train_grpo(model, train, folder / "grpo", grpo, stage_reward))
        scores = _once(folder / "eval.json", partial(held_out, model, stage_reward))
        warm = _once(folder / "augment", partial(self_augment, model, train, stage_reward, cfg, grpo), save, load)
        record = {"stage": stage, "weights": stage_reward.weights, "model": model,
                  "adapter": str(folder / "grpo" / "adapter"), "eval": scores, "augment": str(folder / "augment"),
                  "augment_rows": len(warm), "seconds": round(time.time() - started, 1)}
        records.append(_once(marker, record.copy))
        logger.info("stage %s done: %s", stage, scores)
    return records
