"""``tr1 train ...``: distillation, SFT, GRPO and the curriculum, registered through ``tr1.commands``.

Importing this module loads no training stack: each handler imports what it needs. Dataclass
configs become flags 1:1; dataset flags carry a ``data-`` prefix, and the curriculum's SFT and
GRPO settings ``sft-`` and ``grpo-`` prefixes. Other registrars add commands to the same group
through :func:`train_commands`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys

from tr1_agent.configs import CurriculumConfig, DatasetConfig, DistillConfig, GRPORunConfig, SFTRunConfig
from tr1_agent.flag_trader.config import FlagPPOConfig
from tr1_env.cli import add_reward_args, add_weights_arg, reward_config
from tr1_env.scoring.rewards import STAGE_WEIGHTS, STAGES
from tr1_env.util.cli_args import add_dataclass_args, from_args

__all__ = ["check_launch", "register", "register_flag_ppo", "train_commands"]


def train_commands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The sub-commands of ``tr1 train``, created on first use so that several registrars can add to them."""
    train = subparsers.choices.get("train")
    if train is None:
        train = subparsers.add_parser("train", help="train Trading-R1 models (distill, sft, grpo, curriculum)")
        train.commands = train.add_subparsers(dest="train_command", required=True, metavar="COMMAND")
    return train.commands


def _print(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def check_launch(argv: list[str] | None = None) -> None:
    """Stop with both launch commands when several GPUs are visible to one process.

    trl's trainers refuse that case (``Trainer`` would wrap the model in ``nn.DataParallel``);
    ``accelerate launch`` and ``torchrun`` set ``WORLD_SIZE``, and one visible GPU is fine.
    """
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus <= 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    args = shlex.join(sys.argv[1:] if argv is None else argv)
    raise SystemExit(f"{gpus} GPUs are visible to this one process, which trl's trainers refuse. Use them all:\n"
                     f"  accelerate launch --num_processes {gpus} -m tr1_env.cli {args}\n"
                     f"or one of them:\n  CUDA_VISIBLE_DEVICES=0 tr1 {args}")


def _rows(ns: argparse.Namespace):
    from tr1_agent.datasets import build_prompts, load

    return load(ns.dataset) if ns.dataset else build_prompts(from_args(DatasetConfig, ns, "data-"))


def cmd_distill(ns: argparse.Namespace) -> None:
    from tr1_agent.distill import distill

    _, report = distill(_rows(ns), from_args(DistillConfig, ns))
    _print({k: report[k] for k in ("rows", "kept", "status", "by_label", "usage")})


def cmd_sft(ns: argparse.Namespace) -> None:
    from tr1_agent.datasets import load
    from tr1_agent.sft import train_sft

    check_launch()
    print(train_sft(ns.model, load(ns.dataset), ns.output_dir, from_args(SFTRunConfig, ns)))


def cmd_grpo(ns: argparse.Namespace) -> None:
    from tr1_agent.grpo import train_grpo

    check_launch()
    print(train_grpo(ns.model, _rows(ns), ns.output_dir, from_args(GRPORunConfig, ns), reward_config(ns)))


def cmd_curriculum(ns: argparse.Namespace) -> None:
    from tr1_agent.curriculum import run_curriculum

    check_launch()
    weights = {stage: tuple(getattr(ns, f"reward_{stage}_weights")) for stage in STAGE_WEIGHTS}
    _print(run_curriculum(from_args(CurriculumConfig, ns), from_args(DatasetConfig, ns, "data-"),
                          from_args(SFTRunConfig, ns, "sft-"), from_args(GRPORunConfig, ns, "grpo-"),
                          reward_config(ns), weights))


def cmd_flag_ppo(ns: argparse.Namespace) -> None:
    from tr1_agent.flag_trader.ppo import train_flag_trader

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = train_flag_trader(from_args(FlagPPOConfig, ns))
    _print({k: report[k] for k in ("checkpoint", "trainable_share", "test")})


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train distill|sft|grpo|curriculum`` (the ``tr1.commands`` entry point)."""
    commands = train_commands(subparsers)

    distill = commands.add_parser("distill", help="reverse reasoning distillation: SFT theses from API models")
    distill.add_argument("--dataset", help="saved prompt dataset (default: build one from the --data-* flags)")
    add_dataclass_args(distill, DistillConfig)
    add_dataclass_args(distill, DatasetConfig, prefix="data-")
    distill.set_defaults(func=cmd_distill)

    sft = commands.add_parser("sft", help="LoRA SFT on prompt/thesis pairs; saves adapter/ and merged/")
    sft.add_argument("--model", default="smollm2", help="Hub id, local folder or smollm2 (default: smollm2)")
    sft.add_argument("--dataset", required=True, help="SFT dataset folder or .jsonl (e.g. distill's sft)")
    sft.add_argument("--output-dir", required=True, help="where adapter/ and merged/ go")
    add_dataclass_args(sft, SFTRunConfig)
    sft.set_defaults(func=cmd_sft)

    grpo = commands.add_parser("grpo", help="GRPO against the environment's rewards; saves adapter/ and merged/")
    grpo.add_argument("--model", default="smollm2", help="Hub id, local folder or smollm2 (default: smollm2)")
    grpo.add_argument("--dataset", help="saved prompt dataset (default: build one from the --data-* flags)")
    grpo.add_argument("--output-dir", required=True, help="where adapter/ and merged/ go")
    grpo.add_argument("--stage", default="structure", choices=STAGES, help="curriculum stage whose reward weights "
                      "apply (default: structure)")
    add_reward_args(grpo)
    add_dataclass_args(grpo, GRPORunConfig)
    add_dataclass_args(grpo, DatasetConfig, prefix="data-")
    grpo.set_defaults(func=cmd_grpo)

    curriculum = commands.add_parser("curriculum", help="Structure -> Claims -> Decision: SFT, GRPO and "
                                     "self-augmentation per stage; resumes after the last finished stage")
    add_dataclass_args(curriculum, CurriculumConfig)
    add_dataclass_args(curriculum, DatasetConfig, prefix="data-")
    add_dataclass_args(curriculum, SFTRunConfig, prefix="sft-")
    add_dataclass_args(curriculum, GRPORunConfig, prefix="grpo-")
    add_reward_args(curriculum, weights=False)
    for stage, weights in STAGE_WEIGHTS.items():
        add_weights_arg(curriculum, f"--reward-{stage}-weights", f"reward weights of the {stage} stage (default: "
                        f"{' '.join(map(str, weights))})", weights)
    curriculum.set_defaults(func=cmd_curriculum)


def register_flag_ppo(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train flag-ppo`` (FLAG-TRADER, the ``tr1.commands`` entry point of the same name)."""
    parser = train_commands(subparsers).add_parser(
        "flag-ppo", help="FLAG-TRADER: PPO on a partially frozen LLM over the Trading env")
    add_dataclass_args(parser, FlagPPOConfig)
    parser.set_defaults(func=cmd_flag_ppo)
