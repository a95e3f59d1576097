"""Token counts of the prompts and stitched theses the pipeline makes, with SmolLM2's tokenizer.

The figures behind the SFT/GRPO length defaults (docs/training.md, "Lengths"): prompts at the
default 24,000-character context budget, and the code-stitched theses of distillation
(``template_thesis``: the real layout and quotes, template opinions) with and without the
``<think>`` plan. Writer opinions run 15-90 words, longer than the template's, so the thesis
figures are a floor; the upper bound printed last assumes 7 sections x 7 bullets of 90 words.

    python scripts/measure_lengths.py --tickers NVDA AAPL MSFT --max-days 20
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tickers", nargs="+", default=["NVDA", "AAPL", "MSFT", "SPY"])
    p.add_argument("--max-days", type=int, default=15)
    p.add_argument("--max-chars", type=int, default=24_000)
    ns = p.parse_args()

    from transformers import AutoTokenizer

    from tr1_agent.configs import DatasetConfig, DistillConfig
    from tr1_agent.datasets import build_prompts
    from tr1_agent.distill import template_thesis
    from tr1_agent.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2"))
    rows = build_prompts(DatasetConfig(tickers=tuple(ns.tickers), max_days=ns.max_days, variants=1,
                                       max_chars=ns.max_chars))
    prompt = [len(tok.apply_chat_template(r, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
              for r in rows["prompt"]]
    think, plain = [], []
    for row in rows:
        for out, cfg in ((think, DistillConfig(think=True)), (plain, DistillConfig(think=False))):
            text = template_thesis(row, cfg)
            if text:
                out.append(len(tok(text, add_special_tokens=False)["input_ids"]))
    words = len(tok(" ".join(["revenue"] * 90), add_special_tokens=False)["input_ids"])

    def stats(v) -> dict:
        a = np.asarray(v)
        return {"n": len(a), "median": int(np.median(a)), "p95": int(np.percentile(a, 95)), "max": int(a.max())}

    print(json.dumps({"prompt_tokens": stats(prompt), "thesis_tokens_think": stats(think),
                      "thesis_tokens_no_think": stats(plain),
                      "thesis_upper_bound_tokens": 7 * 7 * (words + 40),
                      "chars_per_prompt_token": round(float(np.mean([len(str(r)) for r in rows["context"]]))
                                                      / float(np.mean(prompt)), 2)}, indent=2))


if __name__ == "__main__":
    main()
