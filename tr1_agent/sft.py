"""Supervised fine-tuning with LoRA on (prompt, thesis) pairs: trl's ``SFTTrainer`` plus peft.

The loss covers the thesis only. trl's ``assistant_only_loss`` needs ``{% generation %}`` markers in
the chat template and can only patch the templates it knows; SmolLM2's and the test models' ChatML
templates are not among them, so rows use trl's conversational prompt-completion format with
``completion_only_loss``, which masks the prompt under any chat template. Each row carries the
run's ``chat_template_kwargs`` (the Qwen3 thinking switch), which trl passes to the template.

Every run leaves ``adapter/`` (the LoRA weights) and ``merged/`` (the adapter folded into the base
with ``merge_and_unload``: a plain transformers folder that ``--model hf:PATH`` loads).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from datasets import Dataset

from tr1_agent.configs import SFTRunConfig, TrainSettings

__all__ = ["export", "last_checkpoint", "release", "sft_rows", "train_sft", "training_card"]


def last_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-N`` of an interrupted run, which the trainer resumes from."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def export(trainer, base: str, output_dir: Path, cfg: TrainSettings, card: dict) -> Path:
    """Write ``output_dir/adapter`` and ``output_dir/merged`` (with ``card``, :func:`tr1_agent.models.read_card`);
    return the merged folder.

    The merge reloads the base and the saved adapter on the main process instead of merging the
    live model, so it works the same after DDP, FSDP or DeepSpeed ZeRO-3 sharding; the reload runs
    with ZeRO-3 init off (:func:`~tr1_agent.models.zero3_init_off`), as the other ranks never join it.
    Both folders appear by rename, so an interrupted export never passes for a finished one.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tr1_agent.models import CARD, zero3_init_off

    adapter, merged = output_dir / "adapter", output_dir / "merged"
    staging = output_dir / ("adapter.tmp" if cfg.lora_r else "merged.tmp")
    trainer.save_model(str(staging))  # gathers sharded weights; writes on the main process only
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(staging))
        if cfg.lora_r:
            _replace(staging, adapter)
            with zero3_init_off():
                model = AutoModelForCausalLM.from_pretrained(base, dtype=cfg.dtype())
                model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
            staging = output_dir / "merged.tmp"
            model.save_pretrained(str(staging))
            del model
            trainer.processing_class.save_pretrained(str(staging))
        (staging / CARD).write_text(json.dumps(card, indent=2))
        _replace(staging, merged)
    trainer.accelerator.wait_for_everyone()
    return merged


def training_card(rows: Dataset, cfg: TrainSettings, max_new_tokens: int) -> dict:
    """What a replay of the trained model needs to see it as it was trained."""
    chars = max((len(c) for c in rows["context"]), default=None) if "context" in rows.column_names else None
    return {"max_context_chars": chars, "max_new_tokens": max_new_tokens, "enable_thinking": cfg.enable_thinking}


def release(trainer) -> None:
    """Free a finished trainer's device memory (model, optimizer, a colocated vLLM engine) so the next stage
    (evaluation, sampling, another trainer) finds it; the trainer is unusable afterwards."""
    from tr1_agent.models import free_accelerator_memory, shutdown_vllm

    generation = getattr(trainer, "vllm_generation", None)
    if getattr(generation, "llm", None) is not None:
        shutdown_vllm(generation.llm)
        generation.llm = None
    trainer.accelerator.free_memory()  # drops accelerate's references (and a DeepSpeed engine)
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    free_accelerator_memory()


def _replace(src: Path, dst: Path) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    src.rename(dst)


def train_sft(model: str, rows: Dataset, output_dir: str | Path, cfg: SFTRunConfig = SFTRunConfig()) -> Path:
    """Fine-tune ``model`` (a Hub id, a folder or ``"smollm2"``) on ``prompt``/``completion`` rows.

    Resumes from the last checkpoint in ``output_dir/trainer`` when ``save_steps`` left one.
    Returns the merged model folder.
    """
    from trl import SFTConfig, SFTTrainer

    from tr1_agent.models import resolve_model

    base, out = resolve_model(model), Path(output_dir)
    args = SFTConfig(**cfg.trainer_kwargs(str(out / "trainer")), num_train_epochs=cfg.num_train_epochs,
                     max_length=cfg.max_length, completion_only_loss=True)
    trainer = SFTTrainer(model=base, args=args, train_dataset=sft_rows(rows, cfg), peft_config=cfg.lora())
    trainer.train(resume_from_checkpoint=last_checkpoint(out / "trainer"))
    longest = max(len(trainer.processing_class(c[-1]["content"], add_special_tokens=False)["input_ids"])
                  for c in rows["completion"])  # conversational rows: one assistant message
    merged = export(trainer, base, out, cfg, training_card(rows, cfg, -(-longest // 256) * 256))
    release(trainer)
    return merged


def sft_rows(rows: Dataset, cfg: SFTRunConfig) -> Dataset:
    """The columns trl's SFT reads: the pair, and the chat-template switches it renders the pair with."""
    pairs = rows.select_columns(["prompt", "completion"])
    return pairs.add_column("chat_template_kwargs", [cfg.chat_template_kwargs()] * len(pairs))
