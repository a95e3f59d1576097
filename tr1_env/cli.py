"""The ``tr1`` command. tr1_env's own commands live here; other layers add theirs through the
``tr1.commands`` entry-point group (a function taking the subparsers object), so the environment
never imports the training stack.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from tr1_env.data.build import BuildConfig
from tr1_env.data.finnhub import FinnhubUpdate
from tr1_env.data.synth import SynthConfig
from tr1_env.data.user_import import ImportConfig
from tr1_env.scoring.labels import LabelConfig
from tr1_env.scoring.rewards import STAGES
from tr1_env.util.cli_args import add_dataclass_args, from_args


def _store(path: str | None):
    from tr1_env.data.store import Store

    return Store(path)


def cmd_data_build(ns: argparse.Namespace) -> None:
    from tr1_env.data.build import build_store

    counts = build_store(from_args(BuildConfig, ns))
    print(json.dumps(counts, indent=2))


def cmd_data_import(ns: argparse.Namespace) -> None:
    from tr1_env.data.user_import import import_store

    print(json.dumps(import_store(from_args(ImportConfig, ns)), indent=2))


def cmd_data_synth(ns: argparse.Namespace) -> None:
    from tr1_env.data.synth import synth_store

    print(json.dumps(synth_store(from_args(SynthConfig, ns)), indent=2))


def cmd_data_finnhub(ns: argparse.Namespace) -> None:
    from tr1_env.data.finnhub import FinnhubUpdate, update_store

    print(json.dumps(update_store(from_args(FinnhubUpdate, ns)), indent=2))


def cmd_labels(ns: argparse.Namespace) -> None:
    from tr1_env.scoring.labels import LabelConfig, label_name, make_labels

    close = _store(ns.store).closes(ns.ticker)
    frame = make_labels(close, ns.fit_start or ns.start, ns.fit_end or ns.end, ns.start, ns.end,
                        from_args(LabelConfig, ns))
    out = frame.assign(label=frame["label"].map(lambda c: label_name(c) or ""))
    out["signal"] = out["signal"].round(6)
    out.index = out.index.strftime("%Y-%m-%d")
    out.to_csv(sys.stdout, columns=["signal", "label"])


def cmd_context(ns: argparse.Namespace) -> None:
    from tr1_env.context.reference import build_context

    mods = tuple(m.strip() for m in ns.modalities.split(",")) if ns.modalities else None
    ctx = build_context(_store(ns.store), ns.ticker, ns.date, modalities=mods, seed=ns.seed)
    if ns.anonymize:
        from tr1_env.context.anonymize import Pseudonyms, anonymize

        ctx = anonymize(ctx, Pseudonyms.for_episode(ctx.ticker, ns.seed), ns.anonymize)
    print(ctx.text if ns.context_only else ctx.prompt)


def cmd_audit(ns: argparse.Namespace) -> None:
    from tr1_env.contamination.audit import AuditConfig, audit, format_audit

    cfg = from_args(AuditConfig, ns)
    rates = audit(cfg)
    print(format_audit(rates, cfg))
    if ns.json:
        Path(ns.json).write_text(json.dumps({name: {"hits": r.hits, "n": r.n, "rate": r.rate, "ci": r.interval,
                                                    "chance": r.chance} for name, r in rates.items()}, indent=2))


def _read(path: str, flag: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"{flag} {path}: not a file")
    return Path(path).read_text()


def reward_config(ns: argparse.Namespace):
    """The ``RewardConfig`` of :func:`add_reward_args`' flags: the settings, the stage's weights
    (``ns.stage``, when given) and then ``--reward-weights``."""
    from tr1_env.scoring.rewards import WEIGHT_FIELDS, RewardConfig

    cfg = from_args(RewardConfig, ns, "reward-", skip=WEIGHT_FIELDS)
    if getattr(ns, "stage", None):
        cfg = cfg.with_stage(ns.stage)
    weights = getattr(ns, "reward_weights", None)
    return cfg.with_weights(weights) if weights else cfg


def add_weights_arg(parser: argparse.ArgumentParser, flag: str, description: str,
                    default: tuple[float, ...] | None = None) -> None:
    """``flag`` taking one weight per reward term, in the order of :data:`tr1_env.scoring.rewards.TERMS`."""
    from tr1_env.scoring.rewards import TERMS

    parser.add_argument(flag, type=float, nargs=len(TERMS), default=default, help=description,
                        metavar=tuple(f"W_{term.name.upper()}" for term in TERMS))


def add_reward_args(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    """``--reward-*`` flags, one per ``RewardConfig`` setting, and ``--reward-weights`` (one weight per term)."""
    from tr1_env.scoring.rewards import TERMS, WEIGHT_FIELDS, RewardConfig

    add_dataclass_args(parser, RewardConfig, "reward-", skip=WEIGHT_FIELDS)
    if weights:
        names = [f"R_{term.name}" for term in TERMS]
        add_weights_arg(parser, "--reward-weights", f"weights of {', '.join(names[:-1])} and {names[-1]} (default: "
                        f"the stage's, or {' '.join(f'{term.weight:g}' for term in TERMS)})")


def cmd_score(ns: argparse.Namespace) -> None:
    from tr1_env.core.actions import Action
    from tr1_env.scoring.rewards import score

    context = _read(ns.context, "--context") if ns.context else None
    completion = _read(ns.completion, "--completion")
    cfg = reward_config(ns)
    label = Action.parse(ns.label) if ns.label else None
    print(json.dumps(score(completion, label, context, cfg).to_dict(), indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tr1", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build and inspect the point-in-time store").add_subparsers(
        dest="data_command", required=True)
    build = data.add_parser("build", help="import raw vendor files into a store (one Parquet table per source)")
    add_dataclass_args(build, BuildConfig)
    build.set_defaults(func=cmd_data_build)
    own = data.add_parser("import", help="build a store from your own prices (and news, statements, dividends, "
                          "splits, profiles, membership) in the documented schema (docs/data.md); exit 2 on bad input")
    add_dataclass_args(own, ImportConfig)
    own.set_defaults(func=cmd_data_import)
    synth = data.add_parser("synth", help="write a synthetic store (factor-model prices, splits, dividends, templated "
                            "news and statements) for load and planted-signal tests; never market data")
    add_dataclass_args(synth, SynthConfig)
    synth.set_defaults(func=cmd_data_synth)
    live = data.add_parser("finnhub", help="fetch news, analyst trends, insider trades, earnings (and candles) "
                           "from Finnhub into a store; key from FINNHUB_API_KEY")
    add_dataclass_args(live, FinnhubUpdate)
    live.set_defaults(func=cmd_data_finnhub)

    labels = sub.add_parser("labels", help="print date,signal,label CSV (Trading-R1's five-class labels)")
    labels.add_argument("--ticker", required=True)
    labels.add_argument("--start", required=True, help="first labelled day")
    labels.add_argument("--end", required=True, help="last labelled day")
    labels.add_argument("--fit-start", help="first day of the threshold-fitting window (default: --start)")
    labels.add_argument("--fit-end", help="last day of the threshold-fitting window (default: --end)")
    labels.add_argument("--store", help="store folder (default: the embedded store)")
    add_dataclass_args(labels, LabelConfig)
    labels.set_defaults(func=cmd_labels)

    context = sub.add_parser("context", help="print the ticker-day prompt")
    context.add_argument("--ticker", required=True)
    context.add_argument("--date", required=True)
    context.add_argument("--store", help="store folder (default: the embedded store)")
    subset = context.add_mutually_exclusive_group()
    subset.add_argument("--modalities", help="comma list of market,news,fundamentals,sentiment,macro (default: all)")
    subset.add_argument("--seed", type=int, help="draw a random modality subset with this seed instead")
    context.add_argument("--context-only", action="store_true", help="print the context without instructions")
    context.add_argument("--anonymize", nargs="?", const="strict", choices=("names", "strict"),
                         help="pseudonyms for names, dates relative to the decision day, price levels rebased (first "
                         "session shown = 100); 'strict' (a bare --anonymize) also masks every other name, date form, "
                         "amount and macro level (tr1_env.context.anonymize)")
    context.set_defaults(func=cmd_context)

    audit = sub.add_parser("audit", help="attack anonymized contexts (mined names, sector, dates, macro dating, "
                           "FOMC text, price levels): each rate with a 95%% CI against chance")
    from tr1_env.contamination.audit import AuditConfig

    add_dataclass_args(audit, AuditConfig)
    audit.add_argument("--json", help="also write the rates to this JSON file")
    audit.set_defaults(func=cmd_audit)

    score = sub.add_parser("score", help="score a thesis: JSON with each reward term")
    score.add_argument("--completion", required=True, help="file with the model's thesis")
    score.add_argument("--context", help="file with the context the thesis cites (enables the quote check)")
    score.add_argument("--label", help="true action, e.g. BUY (omit to skip the decision term)")
    score.add_argument("--stage", choices=STAGES, help="curriculum stage weights")
    add_reward_args(score)
    score.set_defaults(func=cmd_score)

    for ep in entry_points(group="tr1.commands"):
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    ns = build_parser().parse_args(argv)
    try:
        ns.func(ns)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        print(f"tr1: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
