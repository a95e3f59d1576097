"""PPO (Schulman et al., 2017) in one CleanRL-style file, and FLAG-TRADER's training run built on it.

The algorithm works with any actor-critic exposing two calls:

- ``policy.encode(observations) -> list`` of per-observation features, without gradient (for an LLM,
  the frozen layers' output; for an MLP, the observation as a tensor);
- ``policy(features, action_mask) -> (logits [B, K], values [B])``, the trainable part.

so the same rollout, GAE and loss code trains :class:`~tr1_agent.flag_trader.policy.FlagTraderPolicy`
and, in the tests, an MLP on CartPole beside stable-baselines3's PPO. Environments are a plain list,
stepped in lockstep and reset by hand; an episode ends on ``terminated or truncated`` without
bootstrapping, as in CleanRL (the Trading prompt states the session count, so its period end is
part of the state). An env may restrict the actions through ``info["action_mask"]``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch.distributions import Categorical

from tr1_agent.flag_trader.config import FlagPPOConfig, PPOConfig
from tr1_env.util.files import jsonable

__all__ = ["PPO", "Rollout", "compute_gae", "run_episodes", "train_flag_trader"]

logger = logging.getLogger(__name__)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, episode_starts: torch.Tensor, last_values: torch.Tensor,
                last_dones: torch.Tensor, gamma: float, gae_lambda: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and lambda-returns of a ``[T, N]`` rollout.

    Same convention as SB3's ``RolloutBuffer.compute_returns_and_advantage``: ``episode_starts[t]`` is 1
    where observation ``t`` began an episode, ``last_dones`` whether the observation after the rollout did.
    """
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(last_values)
    for t in reversed(range(len(rewards))):
        if t == len(rewards) - 1:
            next_nonterminal, next_values = 1.0 - last_dones, last_values
        else:
            next_nonterminal, next_values = 1.0 - episode_starts[t + 1], values[t + 1]
        delta = rewards[t] + gamma * next_values * next_nonterminal - values[t]
        last_gae = delta + gamma * gae_lambda * next_nonterminal * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


@dataclass
class Rollout:
    """One PPO batch. Tensors are ``[T, N]`` (``[T, N, K]`` for masks); ``features`` is flat, index ``t * N + n``."""

    features: list[Any]
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    episode_starts: torch.Tensor
    action_masks: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    episode_returns: list[float]


def _action_mask(info: dict, n_actions: int) -> torch.Tensor:
    return torch.as_tensor(info.get("action_mask", np.ones(n_actions, dtype=bool)), dtype=torch.bool)


class PPO:
    """Collect ``rollout_steps`` per env, compute GAE, then ``update_epochs`` passes of clipped-PPO minibatches.

    ``optimizer`` defaults to Adam over the policy's trainable parameters at ``cfg.lr``.
    """

    def __init__(self, policy: torch.nn.Module, envs: Sequence[gym.Env], cfg: PPOConfig,
                 optimizer: torch.optim.Optimizer | None = None, seed: int = 0):
        self.policy, self.envs, self.cfg = policy, list(envs), cfg
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = optimizer or torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5)
        self.n_actions = int(self.envs[0].action_space.n)
        resets = [env.reset(seed=seed + i) for i, env in enumerate(self.envs)]
        self._features = policy.encode([obs for obs, _ in resets])
        self._masks = torch.stack([_action_mask(info, self.n_actions) for _, info in resets])
        self._starts = torch.ones(len(self.envs))
        self._episode_return = np.zeros(len(self.envs))
        self.global_step = 0

    @torch.no_grad()
    def collect(self) -> Rollout:
        """Step every env ``rollout_steps`` times with sampled actions; each observation is encoded once."""
        T, N, cfg = self.cfg.rollout_steps, len(self.envs), self.cfg
        actions, logprobs, values, rewards, starts = (torch.zeros(T, N) for _ in range(5))
        masks = torch.zeros(T, N, self.n_actions, dtype=torch.bool)
        features: list[Any] = []
        finished: list[float] = []
        for t in range(T):
            logits, value = self.policy(self._features, self._masks)
            dist = Categorical(logits=logits)
            action = dist.sample()
            features += self._features
            actions[t], logprobs[t], values[t] = action.cpu(), dist.log_prob(action).cpu(), value.cpu()
            masks[t], starts[t] = self._masks, self._starts
            observations, infos = [], []
            for n, env in enumerate(self.envs):
                obs, reward, terminated, truncated, info = env.step(int(action[n]))
                rewards[t, n] = reward * cfg.reward_scale
                self._episode_return[n] += reward
                self._starts[n] = float(terminated or truncated)
                if terminated or truncated:
                    finished.append(float(self._episode_return[n]))
                    self._episode_return[n] = 0.0
                    obs, info = env.reset()
                observations.append(obs)
                infos.append(info)
            self._features = self.policy.encode(observations)
            self._masks = torch.stack([_action_mask(info, self.n_actions) for info in infos])
        self.global_step += T * N
        _, last_values = self.policy(self._features, self._masks)
        advantages, returns = compute_gae(rewards, values, starts, last_values.cpu(), self._starts.clone(),
                                          cfg.gamma, cfg.gae_lambda)
        return Rollout(features, actions.long(), logprobs, values, rewards, starts, masks, advantages, returns,
                       finished)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """Clipped policy loss + value loss - entropy bonus on shuffled minibatches; stop early past the KL target."""
        cfg, device = self.cfg, next(iter(self.params)).device
        flat = {k: getattr(rollout, k).flatten(0, 1).to(device)
                for k in ("actions", "logprobs", "values", "advantages", "returns", "action_masks")}
        batch = len(rollout.features)
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl",
                                                         "clip_fraction", "grad_norm")}
        epochs = 0
        for epoch in range(cfg.update_epochs):
            epochs, stop = epoch + 1, False
            for idx in torch.randperm(batch).split(cfg.minibatch_size):
                logits, new_values = self.policy([rollout.features[i] for i in idx], flat["action_masks"][idx])
                dist = Categorical(logits=logits)
                logratio = dist.log_prob(flat["actions"][idx]) - flat["logprobs"][idx]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean().item()
                    stats["approx_kl"].append(approx_kl)
                    stats["clip_fraction"].append(((ratio - 1).abs() > cfg.clip_coef).float().mean().item())
                if cfg.target_kl and approx_kl > 1.5 * cfg.target_kl:
                    stop = True
                    break

                adv = flat["advantages"][idx]
                if cfg.norm_adv and len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                value_loss = (new_values - flat["returns"][idx]) ** 2
                if cfg.vf_clip:
                    old = flat["values"][idx]
                    clipped = old + (new_values - old).clamp(-cfg.vf_clip, cfg.vf_clip)
                    value_loss = torch.max(value_loss, (clipped - flat["returns"][idx]) ** 2)
                value_loss = value_loss.mean()
                entropy = dist.entropy().mean()
                loss = policy_loss - cfg.ent_coef * entropy + cfg.vf_coef * value_loss

                self.optimizer.zero_grad()
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                for key, value in (("policy_loss", policy_loss), ("value_loss", value_loss), ("entropy", entropy),
                                   ("grad_norm", grad_norm)):
                    stats[key].append(value.item())
            if stop:
                break
        returns, values = rollout.returns.flatten(), rollout.values.flatten()
        var = torch.var(returns)
        explained = float(1 - torch.var(returns - values) / var) if var > 0 else float("nan")
        return {**{k: float(np.mean(v)) if v else float("nan") for k, v in stats.items()},
                "epochs": epochs, "explained_variance": explained}

    def learn(self, total_timesteps: int,
              on_update: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Alternate :meth:`collect` and :meth:`update` until ``total_timesteps`` env steps; stats of each update."""
        history = []
        while self.global_step < total_timesteps:
            start = time.perf_counter()
            rollout = self.collect()
            stats = self.update(rollout)
            elapsed = time.perf_counter() - start
            episodes = rollout.episode_returns
            stats.update(update=len(history) + 1, global_step=self.global_step,
                         steps_per_s=rollout.rewards.numel() / elapsed, episodes=len(episodes),
                         episode_return=float(np.mean(episodes)) if episodes else float("nan"))
            history.append(stats)
            logger.info("step %d | episode return %.4f | policy %.4f value %.4f entropy %.3f | kl %.4f clip %.2f "
                        "| epochs %d | %.2f steps/s", stats["global_step"], stats["episode_return"],
                        stats["policy_loss"], stats["value_loss"], stats["entropy"], stats["approx_kl"],
                        stats["clip_fraction"], stats["epochs"], stats["steps_per_s"])
            if on_update:
                on_update(stats)
        return history


@torch.no_grad()
def run_episodes(policy: torch.nn.Module, envs: Sequence[gym.Env], greedy: bool = True) -> list[dict[str, Any]]:
    """Run one episode per env (in lockstep, batched); per env its daily positions, log returns and rewards.

    ``greedy`` takes the most probable action, as a deployed agent would; otherwise actions are sampled.
    """
    results = [{"positions": [], "log_returns": [], "rewards": [], "actions": []} for _ in envs]
    pending = {n: env.reset() for n, env in enumerate(envs)}  # env index -> (observation, info)
    n_actions = int(envs[0].action_space.n)
    while pending:
        active = list(pending)
        masks = torch.stack([_action_mask(pending[n][1], n_actions) for n in active])
        logits, _ = policy(policy.encode([pending[n][0] for n in active]), masks)
        actions = logits.argmax(-1) if greedy else Categorical(logits=logits).sample()
        for n, action in zip(active, actions.tolist()):
            obs, reward, terminated, truncated, info = envs[n].step(action)
            for key, value in (("positions", info["position"]), ("log_returns", info["log_return"]),
                               ("rewards", reward), ("actions", action)):
                results[n][key].append(value)
            pending[n] = (obs, info)
            if terminated or truncated:
                del pending[n]
    return results


def _make_envs(cfg: FlagPPOConfig, store, start: str, end: str, episode_length: int = 0) -> list[gym.Env]:
    from tr1_env.envs.trading_env import TradingEnv
    from tr1_env.envs.wrappers import RandomStart

    envs = [TradingEnv(store, ticker, start, end, obs_mode="text", action_mode=cfg.action_mode,
                       execution=cfg.execution, window=cfg.window, news_items=cfg.news_items) for ticker in cfg.tickers]
    return [RandomStart(env, episode_length) for env in envs] if episode_length else envs


def _test_report(episode: dict[str, Any], action_names: Sequence[str]) -> dict[str, Any]:
    """InvestorBench metrics (no costs, rf 0, as FLAG-TRADER reports them) of the agent and of buy-and-hold,
    plus the net-of-cost CR."""
    from tr1_env.evaluation.metrics import investorbench

    simple = np.expm1(episode["log_returns"])
    counts = np.bincount(episode["actions"], minlength=len(action_names))
    return {**investorbench(episode["positions"], simple), "cr_net_of_costs": float(np.sum(episode["rewards"])),
            "buy_and_hold": investorbench(np.ones(len(simple)), simple), "days": len(simple),
            "actions": dict(zip(action_names, counts.tolist()))}


def train_flag_trader(cfg: FlagPPOConfig) -> dict[str, Any]:
    """Warm up on ``train_start..train_end`` with PPO, save the checkpoint, report metrics on the test window.

    ``cfg.output_dir`` receives the checkpoint (trainable weights + heads + config) and ``metrics.json``
    (written last: a run that has it is finished); ``cfg.evaluate=False`` leaves its ``test`` empty.
    """
    from tr1_agent.flag_trader.policy import FlagTraderPolicy
    from tr1_env.data.store import Store

    torch.manual_seed(cfg.seed)
    store = Store(cfg.store)
    envs = _make_envs(cfg, store, cfg.train_start, cfg.train_end, cfg.episode_length)
    policy = FlagTraderPolicy.from_pretrained(cfg.model, envs[0].unwrapped.action_names, cfg.trainable_layers,
                                              cfg.head, cfg.device)
    if cfg.calibrate:
        prompts = [env.unwrapped.observation_at(day) for env in envs for day in env.unwrapped.days[:-1]]
        bias = policy.calibrate(prompts)
        logger.info("calibrated on %d warm-up sessions: logit bias %s", len(prompts), bias.tolist())
    trainable, total = policy.parameter_counts()
    logger.info("%s: %d of %d parameters trainable (%.2f%%)", cfg.model, trainable, total, 100 * trainable / total)
    optimizer = torch.optim.Adam(policy.param_groups(cfg.lr, cfg.head_lr), eps=1e-5)
    ppo = PPO(policy, envs, cfg, optimizer, seed=cfg.seed)
    out = Path(cfg.output_dir)

    def checkpoint(stats: dict[str, float]) -> None:
        if cfg.save_every and stats["update"] % cfg.save_every == 0:
            policy.save(out, config=asdict(cfg), global_step=ppo.global_step)

    start = time.perf_counter()
    history = ppo.learn(cfg.total_timesteps, on_update=checkpoint)
    train_seconds = time.perf_counter() - start
    policy.save(out, config=asdict(cfg), global_step=ppo.global_step)
    test = run_episodes(policy, _make_envs(cfg, store, cfg.test_start, cfg.test_end)) if cfg.evaluate else []
    report = {"checkpoint": str(out), "model": cfg.model, "trainable_layers": cfg.trainable_layers,
              "trainable_params": trainable, "total_params": total, "trainable_share": trainable / total,
              "global_step": ppo.global_step, "train_seconds": train_seconds,
              "test_window": [cfg.test_start, cfg.test_end],
              "test": {t: _test_report(ep, policy.action_names) for t, ep in zip(cfg.tickers, test)},
              "train_history": history}
    (out / "metrics.json").write_text(json.dumps(jsonable(report), indent=2))
    return report
