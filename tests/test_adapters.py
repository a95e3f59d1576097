"""LoRA adapters: extracted from a merged checkpoint, loaded onto their base, shipped as the smollm2-tr1 row."""

from __future__ import annotations

import json

import pytest
import torch

from tr1_agent.adapters import extract_lora, low_rank
from tr1_agent.models import BUILTIN_ADAPTERS, load_model_and_tokenizer, read_card
from tr1_env.contamination.cutoffs import model_cutoff

SHIPPED = BUILTIN_ADAPTERS["smollm2-tr1"]


def test_low_rank_is_exact_at_the_difference_rank():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(12, 3, generator=g) @ torch.randn(3, 9, generator=g)
    b, a = low_rank(delta, 3)
    assert b.shape == (12, 3) and a.shape == (3, 9)
    torch.testing.assert_close(b @ a, delta, atol=1e-5, rtol=1e-5)


def test_extracted_adapter_loads_onto_its_base_and_inherits_its_cutoff(tmp_path, tiny_qwen3_path):
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(tiny_qwen3_path)
    g = torch.Generator().manual_seed(1)
    layer = trained.model.layers[0].self_attn.q_proj
    layer.weight.data += 0.05 * torch.randn(layer.weight.shape[0], 2, generator=g) @ torch.randn(
        2, layer.weight.shape[1], generator=g)
    trained.save_pretrained(tmp_path / "trained")
    kept = extract_lora(str(tiny_qwen3_path), str(tmp_path / "trained"), tmp_path / "adapter", rank=2,
                        base_name=str(tiny_qwen3_path), dtype=torch.float32, card={"max_new_tokens": 7})
    assert list(kept) == ["model.layers.0.self_attn.q_proj"] and kept["model.layers.0.self_attn.q_proj"] > 0.999
    assert read_card(str(tmp_path / "adapter")) == {"max_new_tokens": 7}

    model, tokenizer = load_model_and_tokenizer(str(tmp_path / "adapter"), device="cpu")
    ids = tokenizer("the stock closed higher", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, trained(ids).logits, atol=1e-4, rtol=1e-4)
    assert not hasattr(model, "peft_config")  # merged: generation runs at the base's speed

    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    assert model_cutoff(f"hf:{tmp_path / 'adapter'}").date == model_cutoff("smollm2").date


def test_shipped_adapter_is_small_and_its_card_complete():
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) <= 10_000_000  # weights, config and card: 10 MB at most
    card = read_card(str(SHIPPED))
    for key in ("base_model", "stage", "command", "train_window", "heldout", "seed", "max_new_tokens",
                "max_context_chars", "enable_thinking", "lora_rank"):
        assert card.get(key) is not None, key
    config = json.loads((SHIPPED / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == card["base_model"]
    assert model_cutoff("smollm2-tr1").date == model_cutoff("smollm2").date
    assert model_cutoff(f"hf:{SHIPPED}").date == model_cutoff("smollm2").date


@pytest.mark.slow
def test_shipped_adapter_loads(smollm2_dir):
    from safetensors.torch import load_file

    model, _ = load_model_and_tokenizer("smollm2-tr1", device="cpu")
    base, _ = load_model_and_tokenizer("smollm2", device="cpu")
    lora = load_file(SHIPPED / "adapter_model.safetensors")
    assert lora and all(t.dtype == torch.float16 for t in lora.values())
    changed = [n for n, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all(n.endswith("proj.weight") for n in changed)


def test_default_run_replays_the_shipped_adapter_beside_zero_shot_smollm2():
    from benchmarks.config import RunConfig
    from benchmarks.run import resolve_agents

    specs = {s.label: s for s in resolve_agents(RunConfig())}
    zero, tuned = specs["smollm2 (every 62 sessions)"], specs["smollm2-tr1 (every 62 sessions)"]
    assert zero.every == tuned.every == 62 and tuned.llm and tuned.model == "smollm2-tr1"
    card = read_card(str(SHIPPED))
    assert tuned.settings["max_new_tokens"] == card["max_new_tokens"]
    assert tuned.settings["max_chars"] == card["max_context_chars"]  # replayed as trained, not on 1,500 characters
