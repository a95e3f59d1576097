"""GPU memory estimate of training Qwen3-4B with the default lengths: an estimate, not a measurement.

Parameters are counted exactly on the meta device from Qwen3-4B's published config (no download);
the rest is arithmetic: bf16 weights, LoRA (r=16, all linear layers) or full fine-tuning with
AdamW (fp32 master, grads, two moments), activations under gradient checkpointing (each layer's
input kept, one layer recomputed at a time), and the logits the loss needs (bf16 plus an fp32
copy). vLLM's colocated share comes on top for GRPO. CUDA context, allocator fragmentation and
NCCL buffers (a few GB) are not counted. Replace these figures with measured ones when a GPU runs
``scripts/gpu_check.py``.

    python scripts/memory_estimate.py
"""

from __future__ import annotations

import json

GB = 1e9
QWEN3_4B = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
                max_position_embeddings=40960)


def estimate(params: int, lora: int, tokens: int, logit_tokens: int, gpus: int = 1, zero3: bool = False,
             cfg: dict = QWEN3_4B) -> dict:
    h, f, n, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    weights = 2 * params / (gpus if zero3 else 1)
    states = 16 * lora if lora else 16 * params / (gpus if zero3 else 1)  # fp32 master + grad + Adam m, v
    checkpoints = n * tokens * h * 2
    layer = tokens * (10 * h + 3 * f) * 2  # one layer's recomputed activations (SDPA attention, SwiGLU)
    logits = logit_tokens * v * (2 + 4)
    parts = {"weights": weights, "optimizer": states, "activations": checkpoints + layer, "logits": logits}
    return {k: round(x / GB, 1) for k, x in {**parts, "total": sum(parts.values())}.items()}


def main() -> None:
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, Qwen3Config

    from tr1_agent.configs import GRPO_MAX_COMPLETION_LENGTH, SFT_MAX_LENGTH

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(Qwen3Config(**QWEN3_4B))
    model.tie_weights()  # not done on the meta device by itself
    params = sum(p.numel() for p in model.parameters())
    c = QWEN3_4B
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    h, f = c["hidden_size"], c["intermediate_size"]
    lora = 16 * c["num_hidden_layers"] * ((h + q) * 2 + (h + kv) * 2 + (h + f) * 3)
    prompt = 8000  # the longest measured prompt at 24,000 characters: 7,932 tokens
    grpo_tokens = 2 * (prompt + GRPO_MAX_COMPLETION_LENGTH)  # per-device micro-batch of 2 on CUDA
    print(json.dumps({
        "params": params, "lora_params_r16": lora,
        "sft_lora_1gpu (1 x 16384 tokens)": estimate(params, lora, SFT_MAX_LENGTH, SFT_MAX_LENGTH),
        "grpo_lora_1gpu (2 x (8000 + 6144) tokens, before vLLM)": estimate(
            params, lora, grpo_tokens, 2 * GRPO_MAX_COMPLETION_LENGTH),
        "sft_full_ddp_per_gpu": estimate(params, 0, SFT_MAX_LENGTH, SFT_MAX_LENGTH),
        "sft_full_zero3_8gpu_per_gpu": estimate(params, 0, SFT_MAX_LENGTH, SFT_MAX_LENGTH, gpus=8, zero3=True),
        "vllm_colocated_share_bf16_weights_twice_GB": round(2 * 2 * params / GB, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
