"""Does training help on held-out data? A CPU-scale ablation of the Trading-R1 pipeline on SmolLM2-135M-Instruct.

Four models, all scored on the same held-out ticker-days (a purged split of the training window,
``split_days``) and replayed by the benchmark harness on the window after it (2024-06..08):

(a) zero-shot SmolLM2-135M-Instruct;
(b) SFT on theses stitched in code from the contexts (``template_thesis``: real quotes, no API);
(c) (b) + GRPO on the structure reward;
(d) the three-stage curriculum (``run_curriculum``: structure, claims, decision, with self-augmentation).

(b) and (c) are written where the curriculum keeps its stage-1 SFT and GRPO models, so (d) resumes
from (c) instead of training it twice: (d) is (c), then its self-augmentation, then the claims and
decision stages (each an SFT on the previous stage's best sampled theses, GRPO, self-augmentation).
Held-out theses are greedy or sampled with a fixed seed (``--eval-temperature``), with the training budget of
``--max-tokens``; a thesis without ``[[[ACTION]]]`` is decided by the model's own score of the five closings
and counts as a parse failure. Each day's terms and thesis are kept, so every mean gets a bootstrap CI and
every model a paired difference to zero-shot on the same days. Every step caches its output under
``--output-dir`` and a rerun skips what is there.

``--ship DIR`` also writes one model (``--ship-model``) as a single fp16 LoRA adapter over the base, with
its ``tr1_card.json`` (``tr1_agent.adapters.extract_lora``: SFT + GRPO merge two LoRA steps and the
curriculum six, which no one adapter holds, so the adapter is the rank-``--ship-rank`` SVD of the
difference to the base; the card records the share of that difference kept). The shipped ``smollm2-tr1``
adapter was written so:

    OMP_NUM_THREADS=1 python examples/ablation.py --output-dir runs/ablation4 --max-days 12 --heldout-days 16 \
        --sft-steps 40 --grpo-steps 4 --max-tokens 640 --thesis-sections 1 --eval-temperature 0.7 \
        --sft-max-length 1536 --models zero_shot sft sft_grpo --ship tr1_agent/data/adapters/smollm2-tr1

(about 95 min on 2 CPU cores shared with other jobs; docs/training.md has the tables.) Without ``--models``
the same command goes on to the curriculum. That run predates the context-budget fix: its ``--max-chars 300``
contexts ran up to 1,429 characters, now up to 381 (``--max-chars 1371`` is the nearest to what it saw).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from tr1_agent.adapters import extract_lora
from tr1_agent.configs import CurriculumConfig, DatasetConfig, DistillConfig, GRPORunConfig, SFTRunConfig
from tr1_agent.curriculum import run_curriculum
from tr1_agent.datasets import build_prompts, load, save, split_days, with_completions
from tr1_agent.distill import template_thesis
from tr1_agent.grpo import train_grpo
from tr1_agent.llm_agents import make_llm_agent
from tr1_agent.models import SMOLLM2_HUB_ID, read_card, smollm2_path
from tr1_agent.sft import train_sft
from tr1_env.core.actions import Action
from tr1_env.scoring.rewards import TERMS as REWARD_TERMS
from tr1_env.scoring.rewards import RewardConfig, score

MODELS = ("zero_shot", "sft", "sft_grpo", "curriculum")
#: Each model's folder under the curriculum's (zero-shot: the base), named as its evaluation file.
FOLDERS = {"sft": "1-structure/sft", "sft_grpo": "1-structure/grpo", "curriculum_claims": "2-claims/grpo",
           "curriculum": "3-decision/grpo"}


def macro_f1(truth: list[str], predicted: list[str]) -> float:
    """Unweighted mean F1 over the classes present in either list (sklearn's ``f1_score(average="macro")``)."""
    scores = []
    for c in sorted(set(truth) | set(predicted)):
        tp = sum(t == c and p == c for t, p in zip(truth, predicted))
        fp = sum(t != c and p == c for t, p in zip(truth, predicted))
        fn = sum(t == c and p != c for t, p in zip(truth, predicted))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores))


def prior_baselines(train_labels: list[str], truth: list[str], draws: int = 1000, seed: int = 0) -> dict:
    """Accuracy and macro-F1 of the class prior fitted on the training labels: its majority class, and
    predictions drawn from it (the mean over ``draws`` seeded draws)."""
    classes, counts = np.unique(train_labels, return_counts=True)
    majority = [str(classes[counts.argmax()])] * len(truth)
    rng = np.random.default_rng(seed)
    sampled = [list(rng.choice(classes, size=len(truth), p=counts / counts.sum())) for _ in range(draws)]
    return {"majority": {"class": majority[0], "accuracy": float(np.mean([t == majority[0] for t in truth])),
                         "macro_f1": macro_f1(truth, majority)},
            "prior_sampled": {"accuracy": float(np.mean([np.mean([t == p for t, p in zip(truth, s)])
                                                         for s in sampled])),
                              "macro_f1": float(np.mean([macro_f1(truth, [str(p) for p in s]) for s in sampled]))}}


TERMS = tuple(term.name for term in REWARD_TERMS)


def heldout_metrics(model: str, rows, max_new_tokens: int, temperature: float = 0.0) -> dict:
    """Theses of ``model`` on ``rows`` (greedy, or sampled with a fixed seed), scored as the env does; a thesis
    without ``[[[ACTION]]]`` is decided by the model's own score of the five closings (``force_decision``) and
    counts as a parse failure. ``days`` keeps each day's terms and thesis, for paired comparisons and reading."""
    agent = make_llm_agent(f"hf:{model}", max_new_tokens=max_new_tokens, temperature=temperature,
                           batch_size=len(rows), use_cache=False, force_decision=True, enable_thinking=False)
    completions = agent.complete(list(rows["prompt"]))
    days = []
    for c, row in zip(completions, rows):
        s = score(c["text"], Action[row["label"]], row["context"], RewardConfig())
        days.append({"ticker": row["ticker"], "date": str(row["date"])[:10], "label": row["label"],
                     **{term: getattr(s, term) for term in TERMS}, "fabricated": s.n_fabricated > 0,
                     "parse_failed": s.decision_action is None,
                     "predicted": s.decision_action.name if s.decision_action else c["forced_decision"],
                     "thesis": c["text"]})
    truth, predicted = [d["label"] for d in days], [d["predicted"] for d in days]
    return {"n": len(days), **{term: float(np.mean([d[term] for d in days])) for term in TERMS},
            "fabricated_rate": float(np.mean([d["fabricated"] for d in days])),
            "parse_failure_rate": float(np.mean([d["parse_failed"] for d in days])),
            "accuracy": float(np.mean([p == t for p, t in zip(predicted, truth)])),
            "macro_f1": macro_f1(truth, predicted), "predicted": predicted, "days": days}


def per_day(result: dict) -> dict[str, np.ndarray]:
    """Each held-out day's reward terms, fabrication, parse failure and hit (0/1), in the held-out order."""
    days = result["days"]
    return {**{term: np.array([d[term] for d in days], float) for term in TERMS},
            "fabricated": np.array([d["fabricated"] for d in days], float),
            "parse_failed": np.array([d["parse_failed"] for d in days], float),
            "accuracy": np.array([d["predicted"] == d["label"] for d in days], float)}


def mean_ci(values: np.ndarray, reps: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile bootstrap CI (``arch``'s IID bootstrap over days: one block per ticker, purged)."""
    from arch.bootstrap import IIDBootstrap

    values = np.asarray(values, float)
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0]), float(values[0])
    boot = IIDBootstrap(values, seed=seed)
    lo, hi = boot.conf_int(np.mean, reps=reps, method="percentile", size=level).ravel()
    return float(values.mean()), float(lo), float(hi)


def compare_to_zero_shot(results: dict[str, dict], reps: int = 2000) -> dict[str, dict]:
    """Per model and metric: the mean with its CI, and the paired difference to zero-shot on the same days with
    its CI (a difference whose CI excludes 0 is what training bought, at 95 %)."""
    base = per_day(results["zero_shot"]) if "days" in results.get("zero_shot", {}) else None
    out = {}
    for name, result in results.items():
        if "days" not in result:
            continue
        mine = per_day(result)
        out[name] = {metric: {"mean_ci": mean_ci(v, reps),
                              **({"diff_ci": mean_ci(v - base[metric], reps)}
                                 if base is not None and name != "zero_shot" else {})} for metric, v in mine.items()}
    return out


def weights_digest(model: str) -> str:
    """sha256 of a model folder's safetensors weights (GRPO whose groups all tie leaves them unchanged)."""
    digest = hashlib.sha256()
    for file in sorted(Path(model).glob("*.safetensors")):
        with file.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def cached(path: Path, make: Callable[[], dict]) -> dict:
    """``path``'s JSON when a previous run wrote it, else ``make()`` written there (atomically)."""
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".tmp").write_text(json.dumps(value, indent=2))
    path.with_suffix(".tmp").replace(path)
    return value


def replay(models: dict[str, str], args, out: Path) -> dict:
    """The harness's replay of each model next to buy-and-hold: its leaderboard (portfolio CR and Sharpe with
    bootstrap CIs) and per-ticker summary (parse failures and forced decisions included)."""
    import pandas as pd

    from benchmarks.config import RunConfig
    from benchmarks.run import run

    specs = {name: "smollm2" if name == "zero_shot" else f"hf:{path}" for name, path in models.items()}
    cfg = RunConfig.of(agents=("buy_and_hold",), model=tuple(specs.values()), tickers=tuple(args.replay_tickers),
                       llm_decision_every=args.decision_every, llm_max_chars=args.max_chars,
                       smollm2_decision_every=args.decision_every, tearsheets=False, out=str(out / "replay"))
    summary = run(cfg)
    return {"agents": specs, "leaderboard": pd.read_csv(out / "replay" / "leaderboard.csv").to_dict("records"),
            "summary": summary.to_dict("records")}


def ship(trained: str, args: argparse.Namespace, data: DatasetConfig, n_heldout: int, seed: int) -> dict:
    """Write ``trained`` to ``args.ship`` as one fp16 LoRA adapter over SmolLM2 with its card; return the card."""
    card = {"base_model": SMOLLM2_HUB_ID, "stage": args.ship_model, "command": command(args),
            "train_window": [data.start, data.end], "tickers": list(data.tickers),
            "heldout": f"{n_heldout} ticker-days held out of it (split_days, purged, seed {data.seed})",
            "eval_window": [data.eval_start, data.eval_end], "seed": seed, "lora_rank": args.ship_rank,
            **read_card(trained)}  # max_context_chars, max_new_tokens, enable_thinking: how it was trained
    kept = extract_lora(str(smollm2_path()), trained, args.ship, args.ship_rank, base_name=SMOLLM2_HUB_ID, card=card)
    card["energy_kept"] = round(min(kept.values()), 6)  # of the difference to the base, the worst layer
    (Path(args.ship) / "tr1_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run, every setting spelled out."""
    return "python examples/ablation.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if v is not None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="runs/ablation")
    p.add_argument("--tickers", nargs="+", default=["AAPL", "MSFT", "NVDA", "AMZN", "JPM", "XOM", "LLY", "SPY"])
    p.add_argument("--max-days", type=int, default=6, help="labelled days per ticker in the training window")
    p.add_argument("--max-chars", type=int, default=300, help="context budget (characters)")
    p.add_argument("--heldout-days", type=int, default=8, help="ticker-days held out (purged) for evaluation")
    p.add_argument("--sft-steps", type=int, default=3, help="SFT steps per warm start (batch 1, learning rate 1e-3)")
    p.add_argument("--grpo-steps", type=int, default=2, help="GRPO steps per stage, one prompt x --generations")
    p.add_argument("--curriculum-sft-steps", type=int, default=1,
                   help="SFT steps on the self-augmented data of the claims and decision stages")
    p.add_argument("--curriculum-grpo-steps", type=int, default=1, help="GRPO steps of the claims and decision stages")
    p.add_argument("--grpo-lr", type=float, default=5e-4)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128, help="completion budget in training and evaluation")
    p.add_argument("--eval-temperature", type=float, default=0.0,
                   help="held-out theses: 0 greedy, else sampled at this temperature with a fixed seed (greedy "
                        "decoding of a small model loops on a repeated phrase)")
    p.add_argument("--sft-max-length", type=int, default=704,
                   help="SFT sequence length in tokens (prompt + thesis; longer theses are cut, and a cut "
                        "thesis never shows its closing tags or decision)")
    p.add_argument("--thesis-sections", type=int, default=7,
                   help="most analysis sections of a stitched SFT thesis (1: ~500 tokens, its first section closes "
                        "within ~200)")
    p.add_argument("--augment-prompts", type=int, default=2)
    p.add_argument("--augment-samples", type=int, default=2)
    p.add_argument("--replay-tickers", nargs="+", default=["NVDA", "AAPL", "SPY"])
    p.add_argument("--decision-every", type=int, default=62,
                   help="sessions between LLM decisions in the replay (62: one, held through the 62-session window)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                   help="models to train, score and replay, in order (a prefix of the four: each builds on the last)")
    p.add_argument("--ship", help="write --ship-model (one of --models) here as one LoRA adapter with its card, and "
                                  "score the adapter on the held-out days")
    p.add_argument("--ship-model", choices=MODELS[1:], default="sft_grpo")
    p.add_argument("--ship-rank", type=int, default=16,
                   help="rank of the shipped adapter (16: 9.8 MB in fp16; exact for SFT + GRPO at --lora-r 8)")
    return p


def main() -> None:
    p = parser()
    args = p.parse_args()
    if args.ship and args.ship_model not in args.models:
        p.error(f"--ship-model {args.ship_model} is not among --models {' '.join(args.models)}")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    data = DatasetConfig(tickers=tuple(args.tickers), max_days=args.max_days, variants=1, max_chars=args.max_chars)
    train, heldout = split_days(build_prompts(data), n_days=args.heldout_days, seed=data.seed)
    if not (out / "warm").exists():
        # a <think> plan would fill the whole completion budget
        no_plan = DistillConfig(think=False, max_sections=args.thesis_sections)
        theses = {i: t for i, row in enumerate(train) if (t := template_thesis(row, no_plan))}
        save(with_completions(train.select(list(theses)), list(theses.values())), out / "warm")
    base = str(smollm2_path())
    lora = dict(lora_r=args.lora_r, lora_alpha=2 * args.lora_r, enable_thinking=False, seed=0)
    sft = SFTRunConfig(max_steps=args.sft_steps, per_device_train_batch_size=1, learning_rate=1e-3,
                       max_length=args.sft_max_length,
                       **lora)
    grpo = GRPORunConfig(max_steps=args.grpo_steps, learning_rate=args.grpo_lr, num_generations=args.generations,
                         per_device_train_batch_size=2, gradient_accumulation_steps=args.generations // 2,
                         max_completion_length=args.max_tokens, save_steps=2,
                         mask_truncated_completions=False, **lora)  # 128 tokens truncate every thesis: learn anyway
    curriculum = CurriculumConfig(model=base, output_dir=str(out / "curriculum"), sft_data=str(out / "warm"),
                                  heldout_days=args.heldout_days, augment_prompts=args.augment_prompts,
                                  augment_samples=args.augment_samples, generation_batch_size=args.heldout_days)
    stage1 = out / "curriculum" / "1-structure"

    def evaluation(model: str, *_) -> dict:
        """Held-out metrics of ``model``, computed once (the curriculum's own stage evaluations included); the
        intermediate claims stage is not scored (10 CPU minutes)."""
        name = "zero_shot" if model == base else next(
            n for n, f in FOLDERS.items() if Path(model).resolve() == (out / "curriculum" / f / "merged").resolve())
        if name == "curriculum_claims":
            return {"n": 0, "skipped": "not scored: the CPU budget"}
        digest = weights_digest(model)
        for done in sorted((out / "eval").glob("*.json")):  # identical weights write identical greedy theses
            if done.stem != name and (same := json.loads(done.read_text())).get("weights_sha256") == digest:
                return cached(out / "eval" / f"{name}.json", lambda: {**same, "same_weights_as": done.stem})
        return cached(out / "eval" / f"{name}.json", lambda: {
            **heldout_metrics(model, heldout, args.max_tokens, args.eval_temperature), "weights_sha256": digest})

    def train_model(name: str) -> str:
        if name == "zero_shot":
            return base
        if name == "sft":
            merged = stage1 / "sft" / "merged"
            return str(merged if merged.exists() else train_sft(base, load(out / "warm"), stage1 / "sft", sft))
        if name == "sft_grpo":
            merged = stage1 / "grpo" / "merged"
            return str(merged if merged.exists() else train_grpo(
                str(stage1 / "sft" / "merged"), train, stage1 / "grpo", grpo, RewardConfig.for_stage("structure")))
        later = {"sft": replace(sft, max_steps=args.curriculum_sft_steps),  # stage 1 is (b) and (c), made above
                 "grpo": replace(grpo, max_steps=args.curriculum_grpo_steps)}
        return run_curriculum(curriculum, data, **later, evaluate_fn=evaluation)[-1]["model"]

    models, results = {}, {}
    for name in args.models:
        models[name] = train_model(name)
        results[name] = evaluation(models[name])
        print(f"{time.time() - started:.0f} s", name,
              {k: v for k, v in results[name].items() if k not in ("predicted", "days")},
              flush=True)
    if args.ship:  # the adapter as it ships (a rank-``--ship-rank`` SVD), scored on the same days
        if not (Path(args.ship) / "adapter_config.json").exists():
            ship(models[args.ship_model], args, data, len(heldout), grpo.seed)
        results["shipped"] = cached(out / "eval" / "shipped.json", lambda: {
            **heldout_metrics(args.ship, heldout, args.max_tokens, args.eval_temperature), "stage": args.ship_model})
    baselines = prior_baselines(list(train["label"]), list(heldout["label"]))
    intervals = compare_to_zero_shot(results)
    board = replay(models, args, out)  # the harness resumes: decisions already made are read back, not remade
    report = {"command": command(args),
              "models": models, "heldout": results, "intervals": intervals, "baselines": baselines, "replay": board,
              "heldout_days": sorted(zip(heldout["ticker"], heldout["date"])),
              "heldout_labels": list(heldout["label"]), "train_rows": len(train),
              "minutes_this_run": round((time.time() - started) / 60, 1)}
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: {m: v for m, v in r.items() if m not in ("predicted", "days")} for k, r in results.items()},
                     indent=2))
    print(json.dumps(intervals, indent=2))
    print(json.dumps(baselines, indent=2))
    print(json.dumps(board["leaderboard"], indent=2, default=str))


if __name__ == "__main__":
    main()
