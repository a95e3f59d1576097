"""The GPU paths of training and replay, checked on CPU by simulating the device.

No GPU runs here: ``torch.cuda`` is monkeypatched to report a device and its capability, several
processes come from accelerate's CPU launcher, vLLM is a stand-in backed by a real tiny model, and
trl configs are asserted field by field.
"""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import make_observation
from transformers.integrations import deepspeed as hf_deepspeed

from tr1_agent import cli, curriculum, grpo, models, sft
from tr1_agent.configs import GRPORunConfig, SFTRunConfig
from tr1_agent.datasets import with_completions
from tr1_env.core.actions import Action
from tr1_env.scoring.rewards import STAGE_WEIGHTS, RewardConfig, score

ROOT = Path(__file__).resolve().parents[1]


def fake_gpu(monkeypatch, capability=(9, 0), count=1):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def rows(n=4, context="Revenue rose 12% to $4.1B. The stock closed at 101.5."):
    from datasets import Dataset

    prompt = [{"role": "system", "content": "You are an analyst."}, {"role": "user", "content": "Decide on AAPL."}]
    return Dataset.from_dict({"prompt": [prompt] * n, "label": ["BUY"] * n, "context": [context] * n})


def test_precision_is_chosen_from_the_capability_in_one_place(monkeypatch):
    assert models.compute_dtype("cpu") == torch.float32
    fake_gpu(monkeypatch, (9, 0))
    assert models.compute_dtype() == torch.bfloat16  # H100/H200
    fake_gpu(monkeypatch, (8, 0))
    assert models.compute_dtype("cuda:0") == torch.bfloat16  # A100
    fake_gpu(monkeypatch, (7, 5))
    assert models.compute_dtype() == torch.float16  # T4: bf16 only emulated


def test_cuda_defaults_fit_a_gpu_field_by_field(monkeypatch, tmp_path):
    fake_gpu(monkeypatch, (9, 0))
    kw = GRPORunConfig().trainer_kwargs(str(tmp_path))
    assert (kw["per_device_train_batch_size"], kw["gradient_accumulation_steps"]) == (2, 4)  # 8 = one group
    assert kw["activation_checkpointing"] is True and kw["use_cpu"] is False
    assert (kw["bf16"], kw["fp16"], kw["model_init_kwargs"]) == (True, False, {"dtype": torch.bfloat16})
    assert kw["ddp_timeout"] == 4 * 3600
    kw = SFTRunConfig().trainer_kwargs(str(tmp_path))
    assert (kw["per_device_train_batch_size"], kw["gradient_accumulation_steps"]) == (1, 8)
    kw = SFTRunConfig(per_device_train_batch_size=3, gradient_accumulation_steps=2,
                      gradient_checkpointing=False).trainer_kwargs(str(tmp_path))  # the user's settings win
    assert (kw["per_device_train_batch_size"], kw["gradient_accumulation_steps"], kw["activation_checkpointing"]) == (
        3, 2, False)
    fake_gpu(monkeypatch, (7, 0))  # V100: fp16 AMP; LoRA keeps the frozen base fp16, a full fine-tune fp32 masters
    kw = SFTRunConfig().trainer_kwargs(str(tmp_path))
    assert (kw["bf16"], kw["fp16"], kw["model_init_kwargs"]["dtype"]) == (False, True, torch.float16)
    assert SFTRunConfig(lora_r=0).trainer_kwargs(str(tmp_path))["model_init_kwargs"]["dtype"] == torch.float32


def test_cpu_defaults_are_unchanged(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CPU machine only")
    kw = GRPORunConfig().trainer_kwargs(str(tmp_path))
    assert (kw["per_device_train_batch_size"], kw["gradient_accumulation_steps"], kw["activation_checkpointing"],
            kw["bf16"], kw["fp16"], kw["use_cpu"]) == (8, 1, False, False, False, True)


def test_grpo_config_lengths_thinking_and_vllm_context(tiny_qwen3_path, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    data = rows()
    cfg = GRPORunConfig(max_steps=1, num_generations=4, enable_thinking=False)
    args = grpo.grpo_config(str(tiny_qwen3_path), data, str(tmp_path), cfg, RewardConfig.for_stage("decision"))
    assert args.max_completion_length == 6144 and args.mask_truncated_completions is True
    assert args.chat_template_kwargs == {"enable_thinking": False}
    assert args.reward_weights == list(STAGE_WEIGHTS["decision"])
    assert args.vllm_max_model_length is None  # no vLLM asked for
    monkeypatch.setattr(grpo, "vllm_share", lambda cfg, model: 0.42)
    cfg = GRPORunConfig(use_vllm=True, max_completion_length=100, num_generations=4)
    args = grpo.grpo_config(str(tiny_qwen3_path), data, str(tmp_path), cfg, RewardConfig())
    tok = AutoTokenizer.from_pretrained(tiny_qwen3_path)
    rendered = tok.apply_chat_template(data[0]["prompt"], add_generation_prompt=True, tokenize=False)
    assert args.vllm_max_model_length == len(tok(rendered, add_special_tokens=False)["input_ids"]) + 100
    assert args.vllm_gpu_memory_utilization == 0.42


def test_vllm_memory_share_covers_the_weights_on_small_cards():
    qwen3_4b = 4_022_468_096  # Qwen3-4B's parameters, tied embeddings once
    assert grpo.vllm_memory_share(qwen3_4b, 2, 80 * 2**30) == 0.3  # H100: trl's default suffices
    assert grpo.vllm_memory_share(qwen3_4b, 2, 24 * 10**9) == 0.67  # 2 x 8.04 GB of 24 GB
    assert grpo.vllm_memory_share(qwen3_4b, 2, 16 * 10**9) == 0.9  # capped: no room to colocate


def test_several_gpus_in_one_process_print_both_launch_forms(monkeypatch):
    fake_gpu(monkeypatch, count=8)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as exc:
        cli.check_launch(["train", "grpo", "--output-dir", "runs/g"])
    msg = str(exc.value)
    assert "accelerate launch --num_processes 8 -m tr1_env.cli train grpo --output-dir runs/g" in msg
    assert "CUDA_VISIBLE_DEVICES=0 tr1 train grpo --output-dir runs/g" in msg
    monkeypatch.setenv("WORLD_SIZE", "8")  # under accelerate launch / torchrun
    cli.check_launch(["train", "grpo"])
    fake_gpu(monkeypatch, count=1)
    monkeypatch.delenv("WORLD_SIZE")
    cli.check_launch(["train", "grpo"])


class _FakeZeRO3:
    def is_zero3(self):
        return True


def test_rank0_loads_are_whole_models_under_a_zero3_trainer(tiny_qwen3_path):
    """A registered ZeRO-3 config makes transformers build models under deepspeed.zero.Init (here: fails, as
    deepspeed is absent; on GPUs: waits for ranks that never come). The rank-0 loads switch it off."""
    from transformers import AutoModelForCausalLM

    config = _FakeZeRO3()
    hf_deepspeed.set_hf_deepspeed_config(config)
    try:
        assert hf_deepspeed.is_deepspeed_zero3_enabled()
        with pytest.raises(Exception):
            AutoModelForCausalLM.from_pretrained(tiny_qwen3_path)
        lm, _ = models.load_model_and_tokenizer(str(tiny_qwen3_path), device="cpu")
        assert sum(p.numel() for p in lm.parameters()) > 0
        assert hf_deepspeed.is_deepspeed_zero3_enabled()  # restored for the trainer
    finally:
        hf_deepspeed.unset_hf_deepspeed_config()


def test_export_merges_under_a_zero3_trainer_and_writes_the_card(tiny_qwen3_path, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = SFTRunConfig(lora_r=4, enable_thinking=False)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_qwen3_path),
                                LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    accelerator = types.SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
    trainer = types.SimpleNamespace(save_model=lambda path: peft_model.save_pretrained(path), accelerator=accelerator,
                                    processing_class=AutoTokenizer.from_pretrained(tiny_qwen3_path))
    card = sft.training_card(rows(), cfg, 512)
    config = _FakeZeRO3()
    hf_deepspeed.set_hf_deepspeed_config(config)
    try:
        merged = sft.export(trainer, str(tiny_qwen3_path), tmp_path, cfg, card)
    finally:
        hf_deepspeed.unset_hf_deepspeed_config()
    assert (merged / "config.json").exists() and (tmp_path / "adapter" / "adapter_config.json").exists()
    assert models.read_card(str(merged)) == {"max_context_chars": len(rows()[0]["context"]), "max_new_tokens": 512,
                                             "enable_thinking": False}


@pytest.mark.slow
def test_curriculum_state_has_the_long_timeout_across_processes(tmp_path):
    """Two CPU processes (torchrun, as ``accelerate launch`` starts them; its ``--cpu`` starts one): the group is
    made with the long timeout, and the main process's slow step (3 s) is waited for and its result shared."""
    from conftest import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "tests" / "scripts" / "timeout_ranks.py"), str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["timeout_s"] for r in ranks] == [7200, 7200]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["value"] for r in ranks] == [{"made_by": 0}, {"made_by": 0}]


def test_release_frees_the_trainer_and_its_vllm_engine():
    calls = []
    llm = types.SimpleNamespace(shutdown=lambda: calls.append("shutdown"), llm_engine=None)
    trainer = types.SimpleNamespace(vllm_generation=types.SimpleNamespace(llm=llm), model=object(),
                                    model_wrapped=object(), optimizer=object(), lr_scheduler=object(),
                                    accelerator=types.SimpleNamespace(free_memory=lambda: calls.append("free")))
    sft.release(trainer)
    assert calls == ["shutdown", "free"]
    assert trainer.vllm_generation.llm is None and trainer.model is None and trainer.optimizer is None


def test_self_augmentation_keeps_theses_that_beat_an_empty_answer():
    context = "Revenue rose 12% to $4.1B."
    structure = RewardConfig.for_stage("structure")
    assert score("", Action.BUY, context, structure).total == 0.0
    assert not curriculum.keeps(0.0, 0.0, None) and curriculum.keeps(0.01, 0.0, None)
    assert curriculum.keeps(0.0, 0.0, 0.0)  # an explicit threshold is inclusive
    decision = RewardConfig.for_stage("decision")
    empty = score("", Action.BUY, context, decision).total
    assert empty < 0  # the missing-decision penalty
    wrong = score("[[[HOLD]]]", Action.BUY, context, decision).total
    assert wrong > empty and curriculum.keeps(wrong, empty, None)


def test_the_thinking_switch_reaches_sft_rows_and_sampling(tiny_qwen3_path, monkeypatch):
    data = with_completions(rows(2), ["<think>plan</think> thesis [[[BUY]]]"] * 2)
    out = sft.sft_rows(data, SFTRunConfig(enable_thinking=False))
    assert out.column_names == ["prompt", "completion", "chat_template_kwargs"]
    assert out[0]["chat_template_kwargs"] == {"enable_thinking": False}
    from transformers import PreTrainedTokenizerFast

    seen = []
    render = PreTrainedTokenizerFast.apply_chat_template

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("enable_thinking"))
        return render(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerFast, "apply_chat_template", spy)
    grpo.generate(str(tiny_qwen3_path), rows(1), max_new_tokens=2, enable_thinking=False)
    from tr1_agent.llm_agents import TransformersAgent

    agent = TransformersAgent(str(tiny_qwen3_path), max_new_tokens=2, enable_thinking=False, use_cache=False)
    agent.act([make_observation("Decide.")])
    assert seen == [False, False]
    assert agent.settings["enable_thinking"] is False


class _FakeVLLM:
    """vllm.LLM's calls that VLLMAgent makes, answered by a transformers model: prompt log-probabilities exact."""

    def __init__(self, model, seed=0, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.lm = AutoModelForCausalLM.from_pretrained(model).eval()
        self.tok = AutoTokenizer.from_pretrained(model)
        self.chat_kwargs = []

    def get_tokenizer(self):
        return self.tok

    def chat(self, conversations, params, use_tqdm=False, chat_template_kwargs=None):
        self.chat_kwargs.append(chat_template_kwargs)
        sample = types.SimpleNamespace(text="no decision here", token_ids=[1, 2], finish_reason="length")
        return [types.SimpleNamespace(outputs=[sample], prompt_token_ids=[0] * 5) for _ in conversations]

    def generate(self, prompts, params, use_tqdm=False):
        outs = []
        for p in prompts:
            ids = p["prompt_token_ids"]
            with torch.inference_mode():
                logp = self.lm(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
            lps = [None] + [{t: types.SimpleNamespace(logprob=float(logp[j - 1, t]))} for j, t in enumerate(ids)
                            if j > 0]
            outs.append(types.SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=lps))
        return outs


def test_vllm_agent_forces_the_same_decision_as_transformers(tiny_qwen3_path, monkeypatch, tmp_path):
    fake = types.ModuleType("vllm")
    fake.LLM = _FakeVLLM
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from tr1_agent.llm_agents import TransformersAgent, VLLMAgent

    (tiny_qwen3_path / models.CARD).write_text(json.dumps({"max_new_tokens": 77, "enable_thinking": False}))
    try:
        agent = VLLMAgent(str(tiny_qwen3_path), force_decision=True, use_cache=False)
        assert agent.max_new_tokens == 77 and agent.enable_thinking is False  # from the checkpoint's card
        obs = [make_observation("Decide on AAPL."), make_observation("Decide on MSFT.", ticker="MSFT")]
        decisions = agent.act(obs)
    finally:
        (tiny_qwen3_path / models.CARD).unlink()
    assert agent.engine.chat_kwargs == [{"enable_thinking": False}]
    reference = TransformersAgent(str(tiny_qwen3_path), max_new_tokens=2, use_cache=False, enable_thinking=False)
    for o, d in zip(obs, decisions):
        assert d.meta["parse_failed"] and d.meta["forced_decision"] == d.action.name
        messages = [{"role": "system", "content": reference.system_prompt}, {"role": "user", "content": o.prompt}]
        chat = reference.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                       enable_thinking=False)
        assert d.action.name == reference._forced_decision(chat, "no decision here")


def test_replay_uses_a_checkpoint_cards_budget_context_and_thinking(tmp_path):
    from benchmarks.config import RunConfig
    from benchmarks.roster import _llm_spec

    (tmp_path / models.CARD).write_text(json.dumps({"max_context_chars": 24000, "max_new_tokens": 6144,
                                                    "enable_thinking": False}))
    spec = _llm_spec(f"hf:{tmp_path}", RunConfig().agents)
    assert (spec.settings["max_new_tokens"], spec.settings["max_chars"], spec.settings["enable_thinking"]) == (
        6144, 24000, False)
    spec = _llm_spec("vllm:Qwen/Qwen3-4B", RunConfig().agents)  # no card: the GPU backend's defaults
    assert (spec.settings["max_new_tokens"], spec.settings["max_chars"]) == (6144, 24000)
    assert spec.settings["force_decision"] is True
    # no card: the run's (CPU) settings
    spec = _llm_spec("hf:Qwen/Qwen3-4B", RunConfig.of(local_max_new_tokens=300).agents)
    assert spec.settings["max_new_tokens"] == 300 and "max_chars" not in spec.settings


def test_param_count_counts_tied_embeddings_once(tiny_qwen3_path):
    lm, _ = models.load_model_and_tokenizer(str(tiny_qwen3_path), device="cpu")
    assert lm.config.tie_word_embeddings
    # vocab x 64 embeddings once, 2 layers of attention (64->64, 64->32 x2, 64->64) + MLP 3 x 64 x 128 + norms
    vocab = lm.config.vocab_size
    layer = 64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 64 * 2 + 16 * 2
    assert models.param_count(str(tiny_qwen3_path)) == vocab * 64 + 2 * layer + 64


@pytest.mark.slow
def test_gpu_check_script_runs_at_toy_scale_on_cpu(tmp_path):
    """scripts/gpu_check.py --cpu-smoke: every part of the device check runs, so a lent GPU's minutes go to figures."""
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dtype"] == "float32" and report["device"] == "cpu"
    grpo_part, ppo, agent = report["grpo-135m"], report["flag-ppo"], report["hf-agent"]
    assert grpo_part["steps"] == 1 and grpo_part["mean_completion_tokens"] == [4.0]  # random weights: full length
    assert ppo["timesteps"] == 4 and 0 < ppo["trainable_share"] < 1
    assert agent["batch"] == 2 and agent["generated_tokens"] <= 2 * 4


def test_vllm_sampling_sizes_its_engine_and_shuts_it_down(tiny_qwen3_path, monkeypatch):
    from transformers import AutoTokenizer

    made = []

    class Engine:
        def __init__(self, model, **kwargs):
            self.kwargs, self.stopped, self.seeds = kwargs, False, []
            made.append(self)

        def chat(self, prompts, params, use_tqdm=False, chat_template_kwargs=None):
            self.template = chat_template_kwargs
            self.seeds.append(params["seed"])
            sample = types.SimpleNamespace(text=f"t{params['seed']}", token_ids=[1], finish_reason="stop")
            return [types.SimpleNamespace(outputs=[sample], prompt_token_ids=[1, 2]) for _ in prompts]

        def shutdown(self):
            self.stopped = True

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = Engine, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    data = rows(2)
    out = grpo.generate(str(tiny_qwen3_path), data, n=3, max_new_tokens=50, temperature=1.0, use_vllm=True,
                        enable_thinking=False, gpu_memory_utilization=0.25)
    assert out == [["t0", "t1", "t2"]] * 2  # sample i drawn with seed + i
    tok = AutoTokenizer.from_pretrained(tiny_qwen3_path)
    prompt = len(tok(tok.apply_chat_template(data[0]["prompt"], add_generation_prompt=True, tokenize=False),
                     add_special_tokens=False)["input_ids"])
    (engine,) = made
    assert engine.kwargs["max_model_len"] == prompt + 50 and engine.kwargs["gpu_memory_utilization"] == 0.25
    assert engine.template == {"enable_thinking": False} and engine.stopped
