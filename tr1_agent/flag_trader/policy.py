"""FLAG-TRADER's actor-critic: one partially frozen causal LM under both the policy and the value head.

The embeddings and the lower decoder layers are frozen; the top ``trainable_layers`` layers and the
final norm train. Both heads read the last prompt token's final hidden state, so the policy and the
value losses update the same trainable layers (arXiv 2502.11433, Fig. 2).

The frozen part is a fixed function of the prompt, so :meth:`FlagTraderPolicy.encode` runs it once
per observation and returns the hidden states entering the first trainable layer; PPO's epochs rerun
only the trainable top on them (:meth:`FlagTraderPolicy.forward`). An update then costs a few
layers instead of the whole model, and the rollout's log-probabilities come from the same function
the update differentiates.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tr1_agent.models import compute_dtype, load_model_and_tokenizer

__all__ = ["ANSWER_PREFIX", "HEADS", "FlagTraderPolicy"]

#: The env's required answer line starts so; the next token names the action.
ANSWER_PREFIX = "Action:"
#: ``tokens``: the LM's own logits of each action name's first token (pre-trained knowledge, no new
#: weights); ``linear``: a new zero-initialised linear head, for action names that share a first token.
HEADS = ("tokens", "linear")
_WEIGHTS, _META = "trainable.safetensors", "flag_trader.json"


class _Skip(nn.Module):
    """Stands in for a decoder layer (or the final norm) that the current pass must not run."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


def _left_pad(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[tokens_i, hidden]`` tensors into ``[B, T, hidden]`` padded on the left, plus the attention mask."""
    length = max(len(r) for r in rows)
    out = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=out.device)
    for i, r in enumerate(rows):
        out[i, length - len(r):] = r
        mask[i, length - len(r):] = 1
    return out, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding, so a prompt's features do not depend on its batch."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _action_tokens(tokenizer, names: Sequence[str]) -> list[int]:
    """Each action's first answer token after ``Action:`` (`` sell``, `` hold``, `` buy`` with SmolLM2)."""
    prefix = tokenizer(ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    answers = [tokenizer(f"{ANSWER_PREFIX} {name}", add_special_tokens=False)["input_ids"] for name in names]
    first = [a[len(prefix)] for a in answers]
    if any(a[:len(prefix)] != prefix for a in answers) or len(set(first)) < len(first):
        raise ValueError(f"this tokenizer does not tell {tuple(names)} apart by their first answer token; "
                         "use head='linear'")
    return first


class FlagTraderPolicy(nn.Module):
    """Policy and value network over the allowed actions (``action_names``, in env action order).

    Invalid actions get probability exactly zero: the policy only ever scores the allowed actions
    (every other vocabulary token is out of its support), and ``action_mask`` sets the logits of
    disallowed ones to ``-inf``. Precision is the device's (:func:`tr1_agent.models.compute_dtype`):
    on CUDA the frozen part runs in bf16 (fp16 on cards without native bf16) while the trainable
    layers keep float32 master weights, under bf16 autocast; fp16 has no loss scaling here, so
    the trainable layers run in float32 on such cards. On CPU everything is float32.
    """

    def __init__(self, model: nn.Module, tokenizer, action_names: Sequence[str], trainable_layers: int = 2,
                 head: str = "tokens", model_name: str | None = None):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.lm, self.tokenizer = model, tokenizer
        self.action_names, self.head = tuple(action_names), head
        self.model_name = model_name or model.config.name_or_path
        n_layers = len(self.backbone.layers)
        if not 0 <= trainable_layers <= n_layers:
            raise ValueError(f"trainable_layers must be in 0..{n_layers}, got {trainable_layers}")
        self.trainable_layers, self.split = trainable_layers, n_layers - trainable_layers

        model.requires_grad_(False)
        for module in (*self.backbone.layers[self.split:], self.backbone.norm):
            module.float().requires_grad_(True)  # float32 master weights even when the frozen part is bf16
        hidden = model.config.hidden_size
        device = model.get_input_embeddings().weight.device
        if head == "tokens":
            ids = _action_tokens(tokenizer, self.action_names)
            rows = model.get_output_embeddings().weight[ids].detach().float().clone()
            self.register_buffer("action_embeddings", rows, persistent=False)
        else:
            self.policy_head = nn.Linear(hidden, len(self.action_names), device=device)
            nn.init.zeros_(self.policy_head.weight)  # a uniform policy until the rewards say otherwise
            nn.init.zeros_(self.policy_head.bias)
        #: Added to the policy logits, fixed in training: :meth:`calibrate` sets it, zero otherwise.
        self.register_buffer("logit_bias", torch.zeros(len(self.action_names), device=device), persistent=False)
        self.value_head = nn.Linear(hidden, 1, device=device)
        nn.init.zeros_(self.value_head.weight)  # V = 0 at first: no value gradient reaches the trunk yet
        nn.init.zeros_(self.value_head.bias)

    @classmethod
    def from_pretrained(cls, name: str, action_names: Sequence[str], trainable_layers: int = 2, head: str = "tokens",
                        device: str | None = None) -> "FlagTraderPolicy":
        """Load ``name`` (``"smollm2"``, a Hub id or a folder) in the device's precision."""
        model, tokenizer = load_model_and_tokenizer(name, device=device)
        return cls(model, tokenizer, action_names, trainable_layers, head, model_name=name)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> tuple["FlagTraderPolicy", dict]:
        """The policy saved by :meth:`save` (base model + trainable weights) and the metadata saved with it."""
        path = Path(path)
        meta = json.loads((path / _META).read_text())
        policy = cls.from_pretrained(meta["model"], meta["action_names"], meta["trainable_layers"], meta["head"],
                                     device)
        state = load_file(path / _WEIGHTS)
        missing = set(policy.trainable_state()) - set(state)
        unexpected = set(state) - set(policy.trainable_state())
        if missing or unexpected:
            raise ValueError(f"{path} does not match its base model: missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]}")
        policy.load_state_dict(state, strict=False)
        policy.logit_bias.copy_(torch.tensor(meta.get("logit_bias", policy.logit_bias.tolist())))
        return policy, meta

    def save(self, path: str | Path, **meta: Any) -> Path:
        """Write the trainable weights (top layers, final norm, heads) and what rebuilds the rest.

        The frozen weights are the base model's and are not copied: a SmolLM2 checkpoint with two
        trainable layers is ~28 MB.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.trainable_state().items()}, path / _WEIGHTS)
        info = {"model": self.model_name, "action_names": list(self.action_names),
                "trainable_layers": self.trainable_layers, "head": self.head,
                "logit_bias": self.logit_bias.tolist(), **meta}
        (path / _META).write_text(json.dumps(info, indent=2, default=str))
        return path

    @torch.no_grad()
    def calibrate(self, prompts: Sequence[str], batch_size: int = 8) -> torch.Tensor:
        """Make the mean action log-probability over ``prompts`` equal for every action, and return the bias.

        Contextual calibration (Zhao et al., 2021): SmolLM2's token head starts with a strong prior for
        one action (`` sell``), which a short PPO warm-up only deepens; subtracting the mean log-probabilities
        keeps what the model tells apart between states and drops its prior. The bias stays fixed in training
        and travels with the checkpoint.
        """
        self.logit_bias.zero_()
        logps = [self(self.encode(prompts[i:i + batch_size]))[0].log_softmax(-1) for i in range(0, len(prompts),
                                                                                                 batch_size)]
        self.logit_bias.copy_(-torch.cat(logps).mean(0))
        return self.logit_bias

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def parameter_counts(self) -> tuple[int, int]:
        """``(trainable, total)`` parameters, heads included (tied embeddings counted once)."""
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def param_groups(self, lr: float, head_lr: float) -> list[dict]:
        """Optimizer groups: pre-trained layers at ``lr``, the freshly initialised heads at ``head_lr``."""
        heads = [p for name, p in self.trainable_state().items() if name.split(".")[0].endswith("_head")]
        trunk = [p for name, p in self.trainable_state().items() if not name.split(".")[0].endswith("_head")]
        return [{"params": trunk, "lr": lr}, {"params": heads, "lr": head_lr}]

    @property
    def backbone(self) -> nn.Module:
        """The decoder stack (embeddings, layers, final norm) without the LM head."""
        return self.lm.get_decoder()

    @property
    def device(self) -> torch.device:
        return self.value_head.weight.device

    def render(self, prompt: str) -> str:
        """The model input: the env prompt as the user turn, the assistant turn opened with ``Action:``."""
        if self.tokenizer.chat_template is None:
            return f"{prompt}\n{ANSWER_PREFIX}"
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + ANSWER_PREFIX

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """The frozen part: hidden states entering the first trainable layer, one ``[tokens, hidden]`` per prompt."""
        batch = self.tokenizer([self.render(p) for p in prompts], return_tensors="pt", padding=True,
                               padding_side="left", add_special_tokens=self.tokenizer.chat_template is None
                               ).to(self.device)  # a chat template writes its own special tokens
        mask = batch["attention_mask"]
        with self._running(range(self.split), norm=False), self._autocast(grad=False):
            hidden = self.backbone(input_ids=batch["input_ids"], attention_mask=mask,
                                   position_ids=_positions(mask)).last_hidden_state
        return [h[m.bool()] for h, m in zip(hidden, mask)]

    def forward(self, features: Sequence[torch.Tensor],
                action_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The trainable part on :meth:`encode`'s output: float32 logits ``[B, K]`` (``-inf`` where
        ``action_mask`` is False) and values ``[B]``."""
        hidden, mask = _left_pad(features)
        hidden = hidden.float()  # the frozen part's bf16/fp16 output enters float32 layers (autocast recasts)
        with self._running(range(self.split, len(self.backbone.layers)), norm=True), self._autocast(grad=True):
            out = self.backbone(inputs_embeds=hidden, attention_mask=mask, position_ids=_positions(mask))
        last = out.last_hidden_state[:, -1].float()
        logits = ((last @ self.action_embeddings.T if self.head == "tokens" else self.policy_head(last))
                  + self.logit_bias)
        if action_mask is not None:
            logits = logits.masked_fill(~action_mask.to(logits.device), float("-inf"))
        return logits, self.value_head(last).squeeze(-1)

    @contextmanager
    def _running(self, layers: range, norm: bool) -> Iterator[None]:
        """Run the backbone with only ``layers`` (and the final norm if ``norm``); the rest pass hidden states through.

        Going through the backbone's own forward keeps its mask, rotary and per-layer-type logic.
        """
        full, final = self.backbone.layers, self.backbone.norm
        self.backbone.layers = nn.ModuleList(layer if i in layers else _Skip() for i, layer in enumerate(full))
        if not norm:
            self.backbone.norm = _Skip()
        try:
            yield
        finally:
            self.backbone.layers, self.backbone.norm = full, final

    def _autocast(self, grad: bool):
        """Autocast to the device's precision; fp16 only where no gradient flows (it would need loss scaling)."""
        dtype = compute_dtype(self.device)
        enabled = dtype == torch.bfloat16 or (dtype == torch.float16 and not grad)
        return torch.autocast(self.device.type, dtype=dtype if enabled else torch.bfloat16, enabled=enabled)
