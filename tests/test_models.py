import time

import pytest
import torch
import transformers
from conftest import tiny_qwen3
from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

from tr1_agent.models import SMOLLM2_HUB_ID, load_model_and_tokenizer, resolve_model, smollm2_path


def test_tiny_qwen3_builds_fast_and_generates(tmp_path):
    start = time.perf_counter()
    path = tiny_qwen3(tmp_path)
    assert time.perf_counter() - start < 3
    assert tiny_qwen3(tmp_path) == path  # reused

    model, tokenizer = load_model_and_tokenizer(str(path))
    assert model.config.model_type == "qwen3" and model.config.num_hidden_layers == 2
    assert model.dtype == torch.float32 and not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Buy or sell?"}], add_generation_prompt=True,
                                         tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(tokenizer("any text, even ünïcode €")["input_ids"]) == "any text, even ünïcode €"
    ids = tokenizer("<|im_start|><think>x</think>[[[BUY]]]<|im_end|>")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>x</think>[[[BUY]]]"  # as Qwen3 decodes
    batch = tokenizer([text, text + " more"], padding=True, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[0] == 2 and out.shape[1] <= batch["input_ids"].shape[1] + 5


def test_tiny_qwen3_is_deterministic(tmp_path):
    a = load_model_and_tokenizer(str(tiny_qwen3(tmp_path / "a")))[0]
    b = load_model_and_tokenizer(str(tiny_qwen3(tmp_path / "b")))[0]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_resolve_model_passes_other_names_through(tmp_path):
    assert resolve_model("Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def _disk_full(*args, **kwargs):
    raise OSError("disk full")


class _FakeGGUF:
    """Stands in for transformers' GGUF loading (30 s) with the tiny model, to test the conversion's bookkeeping."""

    def __init__(self, source, fail_on_save=False):
        self.source, self.fail_on_save, self.loads = source, fail_on_save, 0

    def tokenizer(self, path, gguf_file=None, **kw):
        tokenizer = PreTrainedTokenizerFast.from_pretrained(self.source)
        if self.fail_on_save:
            tokenizer.save_pretrained = _disk_full
        return tokenizer

    def model(self, path, gguf_file=None, **kw):
        self.loads += 1
        model = Qwen3ForCausalLM.from_pretrained(self.source)
        model.config.quantization_config = {"quant_method": "gguf"}
        return model


def _patch_gguf(monkeypatch, fake):
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake.tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake.model)


def test_smollm2_conversion_is_atomic_and_done_once(tmp_path, tiny_qwen3_path, monkeypatch):
    cache = tmp_path / "cache"
    failing = _FakeGGUF(tiny_qwen3_path, fail_on_save=True)
    _patch_gguf(monkeypatch, failing)
    with pytest.raises(OSError, match="disk full"):
        smollm2_path(cache)
    assert list(cache.iterdir()) == []  # no half folder, no staging left over

    fake = _FakeGGUF(tiny_qwen3_path)
    _patch_gguf(monkeypatch, fake)
    path = smollm2_path(cache)
    assert path == cache / "smollm2-135m-instruct"
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    assert "quantization_config" not in (path / "config.json").read_text()
    assert smollm2_path(cache) == path and fake.loads == 1
    monkeypatch.undo()
    model, _ = load_model_and_tokenizer(str(path))
    assert model.config.model_type == "qwen3"


@pytest.mark.slow
def test_smollm2_folder_reloads_fast_and_answers(smollm2_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("smollm2") == str(smollm2_dir)
    assert resolve_model(SMOLLM2_HUB_ID) in (SMOLLM2_HUB_ID, str(smollm2_dir))  # the Hub copy when cached
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer("smollm2")
    assert time.perf_counter() - start < 5
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    messages = [{"role": "user", "content": "What is the capital of France? One word."}]
    batch = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert "paris" in tokenizer.decode(out[0, batch["input_ids"].shape[1]:]).lower()

