"""Supervised fine-tuning with LoRA on (prompt, thesis) pairs: trl's ``SFTTrainer`` plus peft.

The loss covers the thesis only. trl's ``assistant_only_loss`` needs ``{% generation %}`` markers in
the chat template and can only patch the templates it knows; SmolLM2's and the test models' ChatML
templates are not among them, so rows use trl's conversational prompt-completion format with
``completion_only_loss``, which masks the prompt under any chat template.

Every run leaves ``adapter/`` (the LoRA weights) and ``merged/`` (the adapter folded into the base
with ``merge_and_unload``: a plain transformers folder that ``--model hf:PATH`` loads).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from datasets import Dataset

from tr1_agent.configs import SFTRunConfig, TrainSettings

__all__ = ["export", "last_checkpoint", "train_sft"]


def last_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-N`` of an interrupted run, which the trainer resumes from."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def export(trainer, base: str, output_dir: Path, cfg: TrainSettings) -> Path:
    """Write ``output_dir/adapter`` and ``output_dir/merged``; return the merged folder.

    The merge reloads the base and the saved adapter on the main process instead of merging the
    live model, so it works the same after DDP, FSDP or DeepSpeed ZeRO-3 sharding. Both folders
    appear by rename, so an interrupted export never passes for a finished one.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter, merged = output_dir / "adapter", output_dir / "merged"
    staging = output_dir / ("adapter.tmp" if cfg.lora_r else "merged.tmp")
    trainer.save_model(str(staging))  # gathers sharded weights; writes on the main process only
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(str(staging))
        if cfg.lora_r:
            _replace(staging, adapter)
            dtype = torch.bfloat16 if trainer.args.bf16 else torch.float32
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), str(adapter))
            staging = output_dir / "merged.tmp"
            model.merge_and_unload().save_pretrained(str(staging))
            trainer.processing_class.save_pretrained(str(staging))
        _replace(staging, merged)
    trainer.accelerator.wait_for_everyone()
    return merged


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
    trainer = SFTTrainer(model=base, args=args, train_dataset=rows.select_columns(["prompt", "completion"]),
                         peft_config=cfg.lora())
    trainer.train(resume_from_checkpoint=last_checkpoint(out / "trainer"))
    return export(trainer, base, out, cfg)
