"""One LoRA adapter over the base model for a checkpoint trained in several merged LoRA steps.

The curriculum merges each stage's adapter before the next (SFT, then GRPO, three times), so its
final model is the base plus a sum of low-rank updates, which no single saved adapter holds. Its
difference to the base, layer by layer, is still low-rank; a truncated SVD of each difference gives
a standard peft adapter (``PeftModel.from_pretrained`` loads it) that is small enough to ship.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["extract_lora", "low_rank"]


def low_rank(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` with ``B @ A`` the best rank-``rank`` approximation of ``delta`` (Eckart-Young), the singular
    values split evenly between the two factors."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


def extract_lora(base: str, trained: str, output_dir: str | Path, rank: int, base_name: str | None = None,
                 dtype: torch.dtype = torch.float16, card: dict | None = None) -> dict:
    """Write ``trained - base`` as a rank-``rank`` LoRA adapter (``dtype`` weights) to ``output_dir``.

    Every linear layer whose weight changed becomes a LoRA target; any other changed parameter raises,
    as an adapter could not carry it. ``base_name`` is recorded as the adapter's base model (the Hub id, so
    the adapter loads anywhere and inherits the base's training cutoff). ``card`` is written as
    ``tr1_card.json``. Returns the share of each difference's energy (squared Frobenius norm) kept.
    The base's tokenizer is not copied: :func:`~tr1_agent.models.load_model_and_tokenizer` loads it.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tr1_agent.models import CARD, resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=torch.float32)
    after = AutoModelForCausalLM.from_pretrained(trained, dtype=torch.float32).state_dict()
    linear = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    changed = {}
    for name, weight in model.state_dict().items():
        if not torch.equal(weight, after[name]):
            module = name.removesuffix(".weight")
            if module not in linear or not name.endswith(".weight"):
                raise ValueError(f"{name} differs from the base but is no linear layer's weight: no LoRA holds it")
            changed[module] = after[name] - weight
    if not changed:
        raise ValueError(f"{trained} equals its base {base}: nothing to extract")
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=sorted(changed),
                                            task_type="CAUSAL_LM"))
    kept = {}
    for module, delta in changed.items():
        layer = peft.base_model.model.get_submodule(module)
        b, a = low_rank(delta, rank)
        layer.lora_A["default"].weight.data = a.to(dtype)
        layer.lora_B["default"].weight.data = b.to(dtype)
        kept[module] = float(((b @ a).norm() / delta.norm()) ** 2)
    peft.peft_config["default"].base_model_name_or_path = base_name or base
    out = Path(output_dir)
    peft.save_pretrained(str(out))  # no tokenizer: the base's loads with it (tr1_agent.models.load_model_and_tokenizer)
    # peft's blank card, naming the local base path; tr1_card.json says more
    (out / "README.md").unlink(missing_ok=True)
    if card is not None:
        (out / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return kept
