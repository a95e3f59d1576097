"""README.md and docs/ against the code: cheap commands run as written, the rest must parse, and every
flag, file, Python name and ``runs/`` path they mention must exist or be made by a documented command."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from benchmarks.calibrate import build_parser as calibrate_parser
from benchmarks.config import RunConfig
from benchmarks.perf import build_parser as perf_parser
from benchmarks.run import build_parser as run_parser
from tr1_agent.configs import CurriculumConfig
from tr1_env.cli import build_parser as tr1_parser
from tr1_env.cli import main as tr1
from tr1_env.util.cli_args import from_args

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: ``tr1`` commands cheap enough to run for real (the embedded store, no model, no network).
RUN = (("context",), ("labels",), ("score",), ("data", "build"))
#: What the documented commands write under their ``--output-dir``.
MAKES = {"distill": ("sft",), "sft": ("merged", "adapter"), "grpo": ("merged", "adapter"), "flag-ppo": ("",),
         "curriculum": tuple(f"{i}-{stage}/{step}/merged" for i, stage in enumerate(CurriculumConfig().stages, 1)
                             for step in ("sft", "grpo"))}
THESIS = """<technical>
### Technical picture: **bullish**
- The close held above its moving averages all week, which argues for more upside into next week. *AAPL* `market data`
</technical>
[[[BUY]]]"""


def _commands() -> list[tuple[str, list[str]]]:
    """Every shell command in a ``bash`` block, continuation lines joined and comments dropped."""
    out = []
    for path in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                words = shlex.split(line, comments=True)
                if words:
                    out.append((path.name, words))
    return out


def _inline(pattern: str) -> list[str]:
    """Inline code spans (outside fenced blocks) that match ``pattern``."""
    spans = []
    for path in DOCS:
        prose = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        spans += [s for s in re.findall(r"`([^`\n]+)`", prose) if re.search(pattern, s)]
    return spans


def _tr1_args(words: list[str]) -> list[str] | None:
    """The ``tr1`` arguments of a command line (also under ``accelerate launch -m tr1_env.cli``), else None."""
    if words[0] == "tr1":
        return [w for w in words[1:] if w != "..."]
    if "-m" in words and words[words.index("-m") + 1] == "tr1_env.cli":
        return [w for w in words[words.index("-m") + 2:] if w != "..."]
    return None


def _option(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def _parsers() -> list[argparse.ArgumentParser]:
    """The ``tr1`` parser, every sub-command's parser below it, ``benchmarks/run.py``'s and ``perf.py``'s, and the
    examples' that the docs quote flags of."""
    from examples import ablation, flag_trader_paper

    found, todo = [], [tr1_parser(), run_parser(), perf_parser(), ablation.parser(), flag_trader_paper.build_parser(),
                       calibrate_parser()]
    while todo:
        parser = todo.pop()
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return found


def test_commands_run_or_parse_as_written(tmp_path, monkeypatch):
    (tmp_path / "tests" / "data").mkdir(parents=True)
    (tmp_path / "tests" / "data" / "raw_mini").symlink_to(ROOT / "tests" / "data" / "raw_mini")
    (tmp_path / "thesis.txt").write_text(THESIS)  # the one input the docs leave to the reader: a model's thesis
    monkeypatch.chdir(tmp_path)
    checked = {"ran": [], "parsed": 0}
    for _, words in _commands():
        if (args := _tr1_args(words)) is not None:
            if ">" in args:
                args, target = args[: args.index(">")], args[args.index(">") + 1]
            else:
                target = None
            if tuple(args[:2]) in RUN or tuple(args[:1]) in RUN:
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    tr1(args)
                if target:
                    Path(target).write_text(printed.getvalue())
                checked["ran"].append((args[0], printed.getvalue()))
            else:
                tr1_parser().parse_args(args)
                checked["parsed"] += 1
        elif words[:2] == ["python", "benchmarks/run.py"]:
            from_args(RunConfig, run_parser().parse_args(words[2:])).agents.weight_map()
            checked["parsed"] += 1
        elif words[:2] == ["python", "benchmarks/calibrate.py"]:
            calibrate_parser().parse_args(words[2:])
            checked["parsed"] += 1
    ran = dict(checked["ran"])
    assert set(ran) == {"context", "labels", "score", "data"}  # the docs still show each cheap command
    assert "## Market data" in ran["context"] and ran["labels"].startswith("date,signal,label\n")
    assert json.loads(ran["score"])["decision_action"] == "BUY"
    assert (tmp_path / "ctx.txt").read_text().startswith("## ") and (tmp_path / "my_store" / "prices.parquet").exists()
    assert checked["parsed"] >= 10


def test_runs_paths_are_made_by_a_documented_command():
    """Every ``runs/...`` the docs name (``--model hf:runs/...``, ``--dataset``, ``--sft-data``) is written by one."""
    made, read = {RunConfig().outputs.out}, []  # the replay's own output folder
    for doc, words in _commands():
        args = _tr1_args(words) or words
        out = _option(args, "--output-dir")
        if args[:1] == ["train"] and out:
            made |= {f"{out}/{suffix}".rstrip("/") for suffix in MAKES[args[1]]}
        if words[:2] == ["python", "benchmarks/run.py"] and (out := _option(words, "--out")):
            made.add(out)  # a replay writes its --out folder
        command = [w for w in words if "=" not in w or w.startswith("-")]  # no VAR=value prefixes
        if command[:1] == ["python"] and command[1].startswith("examples/") and (folder := _option(words, "--out")):
            made.add(folder)  # so does an example's
        read += [(doc, m) for w in args if w != out and (m := re.fullmatch(r"(?:hf:|flag:)?(runs/[\w./-]+)", w))]
    read += [("inline", m) for s in _inline(r"runs/\w") for w in s.split()
             if (m := re.fullmatch(r"(?:hf:|flag:)?(runs/[\w./-]+)", w))]
    assert read
    assert [(doc, m.group(0)) for doc, m in read if m.group(1).rstrip("/") not in made] == []


def test_flags_files_and_names_in_the_prose_exist():
    flags = {s for p in _parsers() for a in p._actions for s in a.option_strings}
    mentioned = {f for span in _inline(r"--[a-z]") for f in re.findall(r"--[a-z][a-z0-9-]*(?![\w*-])", span)}
    assert mentioned and mentioned - flags == set()

    files = {m.rstrip(".,;:") for span in _inline(r"^(tr1_env|tr1_agent|baselines|benchmarks|examples|tests|docs)/")
             for m in span.split()[:1]}
    assert files and [f for f in files if not (ROOT / f).exists()] == []

    names = _inline(r"^(tr1_env|tr1_agent|baselines|benchmarks)(\.\w+)+$")
    assert names
    for name in names:
        module, attrs = name, []
        while True:
            try:
                obj = importlib.import_module(module)
                break
            except ModuleNotFoundError:
                module, _, attr = module.rpartition(".")
                attrs.insert(0, attr)
        for attr in attrs:
            obj = getattr(obj, attr)


@pytest.mark.parametrize("doc", [d for d in DOCS if "```python" in d.read_text()], ids=lambda d: d.name)
def test_python_snippets_run(doc):
    """The quick start runs with a stub standing in for the reader's model."""
    for snippet in re.findall(r"```python\n(.*?)```", doc.read_text(), re.S):
        exec(compile(snippet, str(doc), "exec"), {"my_llm": lambda prompt: "[[[HOLD]]]"})
