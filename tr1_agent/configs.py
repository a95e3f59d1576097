"""Settings of the Trading-R1 training pipeline, one dataclass per concern, mirrored 1:1 as ``tr1 train`` flags.

Light on purpose: importing this module loads neither torch nor trl, so ``tr1 --help`` stays fast.
Field help texts are the flag help texts (see :func:`tr1_env.util.cli_args.add_dataclass_args`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tr1_env.context.anonymize import DEFAULT_LEVEL, LEVELS
from tr1_env.data.schema import PAPER_TICKERS
from tr1_env.scoring.labels import HELDOUT_WINDOW
from tr1_env.scoring.rewards import STAGES

#: Token budgets from measured theses (``scripts/measure_lengths.py``; docs/training.md, Lengths).
GRPO_MAX_COMPLETION_LENGTH = 6144
SFT_MAX_LENGTH = 16384


@dataclass(frozen=True)
class DatasetConfig:
    """Which ticker-days become prompts, and how their contexts are drawn."""

    tickers: tuple[str, ...] = field(default=PAPER_TICKERS, metadata={"help": "tickers to sample"})
    start: str = field(default="2024-01-01", metadata={"help": "first day of the training window"})
    end: str = field(default="2024-05-31", metadata={
        "help": "last day of the training window; labels use no price after it, so its last ~15 sessions drop out"})
    eval_start: str = field(default=HELDOUT_WINDOW[0], metadata={
        "help": "first day of the held-out replay window, which a training window may not overlap"})
    eval_end: str = field(default=HELDOUT_WINDOW[1], metadata={"help": "last day of the held-out replay window"})
    eval_windows: tuple[str, ...] = field(default=(), metadata={
        "help": "more evaluation windows as START:END (e.g. a walk-forward protocol's test windows); the training "
                "window may overlap none of them"})
    anonymize: str | None = field(default=None, metadata={
        "choices": LEVELS, "const": DEFAULT_LEVEL,
        "help": "anonymized contexts at this level ('names' or 'strict'; bare: strict; tr1_env.context.anonymize), "
                "fresh pseudonyms per row, kept in the row's pseudonyms column"})
    variants: int = field(default=4, metadata={
        "help": "distinct random modality subsets per ticker-day (the paper builds about 20)"})
    max_days: int | None = field(default=None, metadata={
        "help": "at most this many labelled days per ticker, drawn at random (None: all)"})
    max_chars: int = field(default=24_000, metadata={
        "help": "character budget of each context (~2.6 chars per prompt token with SmolLM2's tokenizer: 24,000 "
                "make 5-8K-token prompts); small models want a few thousand"})
    modality_prob: float = field(default=0.7, metadata={"help": "chance each modality is kept in a variant"})
    seed: int = field(default=0, metadata={"help": "seed of the day and modality draws"})
    store: str | None = field(default=None, metadata={"help": "store folder (default: the embedded store)"})


@dataclass(frozen=True)
class DistillConfig:
    """Reverse reasoning distillation: teacher filter, planner, writer, stitched in code."""

    output_dir: str = field(default="runs/distill", metadata={
        "help": "where the SFT dataset (Arrow + JSONL) and report.json go"})
    teacher_model: str = field(default="gpt-4.1", metadata={"help": "model giving the recommendation (a)"})
    planner_model: str = field(default="gpt-4.1-mini", metadata={"help": "model listing supporting perspectives (b)"})
    writer_model: str = field(default="gpt-4.1-nano", metadata={"help": "cheap model elaborating each perspective (c)"})
    base_url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible endpoint of all three roles (default: $OPENAI_BASE_URL or OpenAI)"})
    teacher_base_url: str | None = field(default=None, metadata={"help": "endpoint of the teacher (default: base_url)"})
    planner_base_url: str | None = field(default=None, metadata={"help": "endpoint of the planner (default: base_url)"})
    writer_base_url: str | None = field(default=None, metadata={"help": "endpoint of the writer (default: base_url)"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "environment variable holding the API key (never logged, cached or reported)"})
    accept: str = field(default="exact", metadata={
        "help": "rejection sampling: keep a day when the teacher's action equals the label (exact), has its "
                "direction (direction), or always (any: for tests; the thesis still argues for the label)",
        "choices": ("exact", "direction", "any")})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature of all three roles"})
    seed: int = field(default=0, metadata={"help": "sampling seed sent to the API and seed of the quote draws"})
    teacher_max_tokens: int = field(default=512, metadata={"help": "completion budget of a teacher call"})
    planner_max_tokens: int = field(default=512, metadata={"help": "completion budget of a planner call"})
    writer_max_tokens: int = field(default=768, metadata={"help": "completion budget of a writer call"})
    concurrency: int = field(default=8, metadata={"help": "API calls in flight at once, per role"})
    max_retries: int = field(default=5, metadata={"help": "retries of a rate-limited, timed-out or failed call"})
    timeout: float = field(default=120.0, metadata={"help": "seconds before one API call times out"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "on-disk call cache (default: $TR1_CACHE): a rerun repeats no call"})
    think: bool = field(default=True, metadata={
        "help": "open each thesis with the plan inside <think> (for thinking models such as Qwen3)"})
    bullets: int = field(default=5, metadata={"help": "claims per section (the reward wants 4 to 7)"})
    max_sections: int = field(default=7, metadata={
        "help": "analysis sections per thesis, before the conclusion (the reward wants 5 to 7)"})
    min_structure: float = field(default=0.5, metadata={"help": "drop stitched theses with a lower R_structure"})
    min_evidence: float = field(default=0.5, metadata={"help": "drop stitched theses with a lower R_evidence"})
    teacher_input_price: float = field(default=2.0, metadata={"help": "USD per 1M teacher prompt tokens"})
    teacher_output_price: float = field(default=8.0, metadata={"help": "USD per 1M teacher completion tokens"})
    planner_input_price: float = field(default=0.4, metadata={"help": "USD per 1M planner prompt tokens"})
    planner_output_price: float = field(default=1.6, metadata={"help": "USD per 1M planner completion tokens"})
    writer_input_price: float = field(default=0.1, metadata={"help": "USD per 1M writer prompt tokens"})
    writer_output_price: float = field(default=0.4, metadata={"help": "USD per 1M writer completion tokens"})

    def __post_init__(self):
        if not 4 <= self.bullets <= 7:
            raise ValueError(f"bullets must be within the reward's ideal 4..7, got {self.bullets}")
        if not 1 <= self.max_sections <= 7:
            raise ValueError(f"max_sections must be within 1..7, got {self.max_sections}")


@dataclass(frozen=True)
class TrainSettings:
    """What SFT and GRPO share: optimisation, LoRA, precision, chat template, checkpoints.

    Batch size, accumulation, checkpointing and precision default to None: chosen for the device
    (:meth:`trainer_kwargs`), so one command fits a GPU's memory and stays fast on a CPU.
    """

    #: (per-device batch, gradient accumulation) when left unset, on CUDA and on CPU.
    AUTO_BATCH: ClassVar[dict[str, tuple[int, int]]] = {"cuda": (1, 8), "cpu": (4, 1)}

    learning_rate: float = field(default=2e-4, metadata={"help": "peak AdamW learning rate"})
    max_steps: int = field(default=100, metadata={"help": "optimizer steps (-1: run num_train_epochs)"})
    per_device_train_batch_size: int | None = field(default=None, metadata={
        "help": "sequences per device per micro-batch (None: 1 on CUDA, where theses run to 10K tokens; 4 on CPU)"})
    gradient_accumulation_steps: int | None = field(default=None, metadata={
        "help": "micro-batches per optimizer step (None: 8 on CUDA, 1 on CPU)"})
    warmup_steps: float = field(default=0.0, metadata={
        "help": "linear learning-rate warm-up: steps, or a share of all steps when below 1"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (0: full fine-tuning, no adapter)"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA branch"})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "modules wrapped by LoRA: 'all-linear' or a comma list such as q_proj,v_proj"})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "recompute activations in backward to save GPU memory (None: on with CUDA, off on CPU, where it "
                "only costs time)"})
    precision: str | None = field(default=None, metadata={
        "help": "training precision (None: from the device, tr1_agent.models.compute_dtype: bf16 on CUDA cards "
                "with compute capability 8.0+, fp16 on older ones, fp32 on CPU)", "choices": ("bf16", "fp16", "fp32")})
    enable_thinking: bool = field(default=True, metadata={
        "help": "Qwen3 chat templates: let the model think in <think> before the thesis; passed as enable_thinking "
                "to every chat template (SFT data, GRPO rollouts, evaluation, sampling); templates without the "
                "switch ignore it"})
    ddp_timeout: int = field(default=4 * 3600, metadata={
        "help": "seconds a process waits for the others under accelerate launch (the curriculum's main process "
                "evaluates and samples alone meanwhile)"})
    save_steps: int = field(default=0, metadata={
        "help": "checkpoint every N steps, and resume from the last one on rerun (0: only the final model)"})
    logging_steps: int = field(default=1, metadata={"help": "log every N steps"})
    seed: int = field(default=0, metadata={"help": "seed of LoRA init, data order and sampling"})

    def lora(self):
        """The peft ``LoraConfig``, or None for full fine-tuning."""
        if self.lora_r == 0:
            return None
        from peft import LoraConfig

        targets = self.lora_target_modules
        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=targets if targets == "all-linear" else targets.split(","),
                          task_type="CAUSAL_LM")

    def dtype(self):
        """The training precision as a torch dtype: :attr:`precision`, else the device's."""
        import torch

        from tr1_agent.models import compute_dtype

        names = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
        return names[self.precision] if self.precision else compute_dtype()

    def chat_template_kwargs(self) -> dict[str, Any]:
        """What every chat template of a run receives."""
        return {"enable_thinking": self.enable_thinking}

    def trainer_kwargs(self, output_dir: str) -> dict[str, Any]:
        """``TrainingArguments`` shared by trl's SFT and GRPO configs, with the unset settings chosen for the device.

        trl defaults to bf16 and gradient checkpointing; on CPU both hurt (bf16 matmuls are slow,
        checkpointing recomputes for nothing). fp16 mixed precision needs float32 master weights,
        so a full fine-tune loads float32 then; LoRA keeps the frozen base in fp16 (its adapter is float32).
        """
        import torch

        cuda = torch.cuda.is_available()
        dtype = self.dtype()
        batch, accumulation = self.AUTO_BATCH["cuda" if cuda else "cpu"]
        load = torch.float32 if dtype == torch.float16 and not self.lora_r else dtype
        return dict(
            output_dir=output_dir, learning_rate=self.learning_rate, max_steps=self.max_steps,
            per_device_train_batch_size=self.per_device_train_batch_size or batch,
            gradient_accumulation_steps=self.gradient_accumulation_steps or accumulation,
            warmup_steps=self.warmup_steps,
            activation_checkpointing=cuda if self.gradient_checkpointing is None else self.gradient_checkpointing,
            bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, use_cpu=not cuda,
            model_init_kwargs={"dtype": load}, ddp_timeout=self.ddp_timeout,
            save_strategy="steps" if self.save_steps else "no", save_steps=self.save_steps or 500,
            logging_steps=self.logging_steps, seed=self.seed, report_to="none",
        )


@dataclass(frozen=True)
class SFTRunConfig(TrainSettings):
    """Supervised fine-tuning on (prompt, thesis) pairs; loss on the thesis only."""

    max_steps: int = field(default=-1, metadata={"help": "optimizer steps (-1: run num_train_epochs)"})
    num_train_epochs: float = field(default=2.0, metadata={"help": "passes over the data when max_steps is -1"})
    max_length: int | None = field(default=SFT_MAX_LENGTH, metadata={
        "help": "tokens per prompt + thesis; longer pairs lose the end of the thesis, decision included (None: no "
                "limit). The default holds a 24,000-character prompt and a thesis of the longest format "
                "(docs/training.md, Lengths)"})


@dataclass(frozen=True)
class GRPORunConfig(TrainSettings):
    """Group-relative policy optimisation against the environment's three rewards."""

    AUTO_BATCH: ClassVar[dict[str, tuple[int, int]]] = {"cuda": (2, 4), "cpu": (8, 1)}

    learning_rate: float = field(default=1e-5, metadata={"help": "peak AdamW learning rate"})
    per_device_train_batch_size: int | None = field(default=None, metadata={
        "help": "completions per device per micro-batch (None: 2 on CUDA, 8 on CPU); batch x accumulation x "
                "devices must divide by num_generations"})
    gradient_accumulation_steps: int | None = field(default=None, metadata={
        "help": "micro-batches per optimizer step (None: 4 on CUDA, 1 on CPU)"})
    num_generations: int = field(default=8, metadata={"help": "completions per prompt (the group)"})
    max_completion_length: int = field(default=GRPO_MAX_COMPLETION_LENGTH, metadata={
        "help": "tokens per completion; a thesis cut short loses its decision (default: the longest thesis format, "
                "docs/training.md, Lengths)"})
    mask_truncated_completions: bool = field(default=True, metadata={
        "help": "leave completions cut at max_completion_length out of the loss (they carry no decision)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "rollout nucleus sampling"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient to the starting model (0: no reference model)"})
    epsilon: float = field(default=0.2, metadata={"help": "clipping range of the probability ratio"})
    num_iterations: int = field(default=1, metadata={"help": "optimisation passes per generated batch"})
    loss_type: str = field(default="dapo", metadata={
        "help": "trl loss aggregation", "choices": ("grpo", "dr_grpo", "dapo", "bnpo")})
    scale_rewards: str = field(default="group", metadata={
        "help": "advantage scaling", "choices": ("group", "batch", "none")})
    use_vllm: bool = field(default=False, metadata={"help": "generate rollouts with vLLM (CUDA only)"})
    vllm_mode: str = field(default="colocate", metadata={
        "help": "vLLM inside the training processes (colocate) or a `trl vllm-serve` server (server)",
        "choices": ("colocate", "server")})
    vllm_server_base_url: str | None = field(default=None, metadata={"help": "URL of `trl vllm-serve` (server mode)"})
    vllm_gpu_memory_utilization: float | None = field(default=None, metadata={
        "help": "GPU memory share a vLLM engine takes (colocated rollouts, the curriculum's evaluation and sampling); "
                "None: room for the model's weights twice over, at least 0.3 (tr1_agent.grpo.vllm_memory_share)"})

@dataclass(frozen=True)
class CurriculumConfig:
    """Stages and the data that flows between them."""

    model: str = field(default="smollm2", metadata={"help": "starting model: a Hub id, a folder or smollm2"})
    output_dir: str = field(default="runs/curriculum", metadata={"help": "checkpoints, evaluations and markers"})
    sft_data: str | None = field(default=None, metadata={
        "help": "distilled SFT dataset (`tr1 train distill` output) for stage 1's warm start; without it stage 1 "
                "warms up on the base model's own best theses"})
    stages: tuple[str, ...] = field(default=STAGES, metadata={
        "help": "stages in order, each with its reward weights", "choices": STAGES})
    heldout_days: int = field(default=16, metadata={"help": "ticker-days held out of training for evaluation"})
    augment_prompts: int = field(default=64, metadata={"help": "training prompts sampled for self-augmentation"})
    augment_samples: int = field(default=4, metadata={"help": "theses sampled per prompt; the best is kept"})
    augment_keep: float = field(default=0.5, metadata={
        "help": "share of prompts (those with the best rewards) whose best thesis becomes SFT data"})
    augment_min_reward: float | None = field(default=None, metadata={
        "help": "only theses whose stage reward reaches this become SFT data (None: those scoring above an empty "
                "answer: > 0 for structure and claims, above the missing-decision penalty for decision)"})
    augment_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of self-augmentation"})
    generation_batch_size: int = field(default=8, metadata={"help": "prompts per batch when sampling locally"})
