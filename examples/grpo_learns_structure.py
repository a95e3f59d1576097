"""GRPO teaches SmolLM2-135M-Instruct the thesis structure, on CPU.

Base SmolLM2 almost never opens an XML section (mean R_structure 0.004 on the held-out samples
below, 0 of 112 samples in earlier probes, even with a format example in the prompt), so nearly
every GRPO group ties, its advantages are zero and nothing is learnt: RL needs a policy that
sometimes does the right thing. The paper's answer is an SFT warm start before RL, and this script uses a tiny one:
8 LoRA steps on theses stitched in code from the contexts (``template_thesis``: real quotes, no
API). GRPO on the structure reward alone then takes over. Mean R_structure on 8 held-out
ticker-days (4 samples each, temperature 1, 128 tokens) is measured three times with the same
prompts and seeds: untrained, after the warm start, after GRPO.

Measured on 2 idle CPU cores (46 min wall, ~115 s per GRPO step; an earlier run peaked at 16 GB RSS):
untrained 0.004, warm start 0.040, after 20 GRPO steps 0.180 (means of 32 samples, no intervals).

    OMP_NUM_THREADS=1 python examples/grpo_learns_structure.py --output-dir runs/structure
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tr1_agent.configs import DatasetConfig, DistillConfig, GRPORunConfig, SFTRunConfig
from tr1_agent.datasets import build_prompts, split_days, with_completions
from tr1_agent.distill import template_thesis
from tr1_agent.grpo import evaluate, train_grpo
from tr1_agent.models import smollm2_path
from tr1_agent.sft import train_sft
from tr1_env.scoring.rewards import RewardConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="runs/grpo_learns_structure")
    p.add_argument("--sft-steps", type=int, default=8, help="warm-start LoRA steps (batch 2, learning rate 1e-3)")
    p.add_argument("--grpo-steps", type=int, default=20, help="GRPO steps, one prompt x --generations each")
    p.add_argument("--grpo-lr", type=float, default=5e-4, help="GRPO learning rate (LoRA r=16)")
    p.add_argument("--generations", type=int, default=8, help="completions per prompt (the GRPO group)")
    p.add_argument("--max-tokens", type=int, default=128, help="completion budget in training and evaluation")
    p.add_argument("--eval-samples", type=int, default=4, help="sampled theses per held-out prompt")
    args = p.parse_args()
    out = Path(args.output_dir)
    started = time.time()

    data = DatasetConfig(tickers=("AAPL", "MSFT", "NVDA", "AMZN", "JPM", "XOM", "LLY", "SPY"), max_days=4,
                         variants=1, max_chars=400)
    train, heldout = split_days(build_prompts(data), n_days=8, seed=0)
    no_plan = DistillConfig(think=False)  # a <think> plan would fill the whole 128-token budget
    theses = {i: t for i, row in enumerate(train) if (t := template_thesis(row, no_plan))}
    warm = with_completions(train.select(list(theses)), list(theses.values()))
    structure = RewardConfig.for_stage("structure")
    sampling = dict(n=args.eval_samples, temperature=1.0, max_new_tokens=args.max_tokens, seed=0)

    def measure(model: str) -> dict:
        return evaluate(model, heldout, structure, **sampling)

    base = str(smollm2_path())
    results = {"untrained": measure(base)}
    print("untrained", results["untrained"], flush=True)

    sft = SFTRunConfig(max_steps=args.sft_steps, per_device_train_batch_size=2, learning_rate=1e-3, max_length=768)
    warmed = str(train_sft(base, warm, out / "sft", sft))
    results["warm_start"] = measure(warmed)
    print("warm start", results["warm_start"], flush=True)

    grpo = GRPORunConfig(max_steps=args.grpo_steps, learning_rate=args.grpo_lr, num_generations=args.generations,
                         per_device_train_batch_size=2, gradient_accumulation_steps=args.generations // 2,
                         max_completion_length=args.max_tokens,  # one group per step, backward 2 at a time
                         mask_truncated_completions=False)  # 128 tokens truncate nearly every thesis: learn anyway
    trained = str(train_grpo(warmed, train, out / "grpo", grpo, structure))
    results["grpo"] = measure(trained)
    print("after GRPO", results["grpo"], flush=True)

    results["minutes"] = round((time.time() - started) / 60, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v["structure"] if isinstance(v, dict) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
