"""Settings of FLAG-TRADER's PPO, mirrored 1:1 by the flags of ``tr1 train flag-ppo``.

Light on purpose: building the command line imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tr1_env.execution import Execution

__all__ = ["FlagPPOConfig", "PPOConfig"]


@dataclass
class PPOConfig:
    """The algorithm alone (any actor-critic). Defaults suit a pre-trained LLM trading daily (small lr, short
    horizon)."""

    rollout_steps: int = field(default=64, metadata={"help": "steps per env between updates (batch = steps x envs)"})
    update_epochs: int = field(default=4, metadata={"help": "passes over each batch"})
    minibatch_size: int = field(default=32, metadata={"help": "samples per gradient step"})
    lr: float = field(default=1e-5, metadata={"help": "learning rate (of the trainable LM layers)"})
    gamma: float = field(default=0.9, metadata={
        "help": "discount factor (a daily position pays off the next day; a long horizon adds market noise)"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    clip_coef: float = field(default=0.2, metadata={"help": "PPO ratio clip range"})
    vf_clip: float = field(default=0.0, metadata={
        "help": "clip of the value update around the rollout's values, in scaled-reward units; 0 disables (SB3)"})
    ent_coef: float = field(default=0.01, metadata={"help": "entropy bonus coefficient"})
    vf_coef: float = field(default=0.5, metadata={"help": "value loss coefficient (loss = MSE, SB3's scale)"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "global gradient-norm clip"})
    target_kl: float = field(default=0.05, metadata={
        "help": "stop an update's epochs once approx KL > 1.5 x this (SB3's rule); 0 disables"})
    norm_adv: bool = field(default=True, metadata={"help": "normalise advantages per minibatch"})
    reward_scale: float = field(default=10.0, metadata={
        "help": "multiply env rewards by this before GAE: value targets near 1, so the value loss does not drown "
                "the policy gradient in the shared layers"})


@dataclass
class FlagPPOConfig(PPOConfig):
    """One run: warm up (train) on the early window, then report InvestorBench metrics on the later one."""

    model: str = field(default="smollm2", metadata={
        "help": "'smollm2' (offline SmolLM2-135M-Instruct), a Hub id or a folder"})
    trainable_layers: int = field(default=2, metadata={"help": "top decoder layers trained (plus the final norm)"})
    head: str = field(default="tokens", metadata={
        "help": "policy head: 'tokens' = the LM's logits of the action names, 'linear' = a new masked linear head",
        "choices": ["tokens", "linear"]})
    tickers: tuple[str, ...] = field(default=("MSFT", "JNJ", "TSLA"), metadata={
        "help": "one env per ticker, all driving one shared policy (the paper trains one per asset: pass one)"})
    train_start: str = field(default="2020-07-01", metadata={"help": "first session of the warm-up window"})
    train_end: str = field(default="2020-09-30", metadata={"help": "last session of the warm-up window"})
    test_start: str = field(default="2020-10-01", metadata={"help": "first session of the test window"})
    test_end: str = field(default="2021-05-28", metadata={"help": "last session of the test window"})
    action_mode: str = field(default="sell_hold_buy", metadata={
        "help": "Trading env actions ('five' needs --head linear)", "choices": ["sell_hold_buy", "five"]})
    execution: Execution = field(default_factory=Execution, metadata={
        "help": "fills and costs, as the replay books them (the paper: at the close, 10 bps)"})
    window: int = field(default=10, metadata={"help": "sessions of market features in the prompt"})
    news_items: int = field(default=5, metadata={"help": "headlines in the prompt"})
    store: str | None = field(default=None, metadata={"help": "store folder (default: the embedded store)"})
    total_timesteps: int = field(default=3840, metadata={"help": "env steps in all (summed over envs)"})
    episode_length: int = field(default=0, metadata={
        "help": "decisions per training episode, each starting on a random warm-up session (a long warm-up seen "
                "in a short run); 0: every episode is the whole warm-up window, as in the paper"})
    calibrate: bool = field(default=False, metadata={
        "help": "before training, subtract the policy's mean action log-probabilities over the warm-up sessions "
                "(flat position) from its logits, so it starts without the LM's prior for one action "
                "(contextual calibration; the paper does not)"})
    head_lr: float = field(default=1e-3, metadata={"help": "learning rate of the freshly initialised heads"})
    seed: int = field(default=0, metadata={"help": "seed of torch and the envs"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda if available)"})
    evaluate: bool = field(default=True, metadata={
        "help": "after training, run the greedy policy over the test window into metrics.json (off: replay the "
                "checkpoint with benchmarks/run.py --model flag:PATH instead)"})
    save_every: int = field(default=5, metadata={"help": "updates between checkpoints (0: only at the end)"})
    output_dir: str = field(default="runs/flag-ppo", metadata={"help": "checkpoint and metrics.json go here"})
