"""--out: a run writes only where it may, deletes only what a tr1 run wrote there, and writes each file whole.

Every refusal is one line and exit 2, and after every case each file the user had is byte-identical.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import tempfile
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from benchmarks.run import RunConfig, main, run
from benchmarks.run_folder import verify_run
from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, Decision

ARGS = ["--agents", "buy_and_hold", "--start", "2024-06-01", "--end", "2024-06-21", "--tickers", "NVDA",
        "--bootstrap", "0", "--no-tearsheets"]
#: A user's folder whose files sit where a run writes its own (none with a run's file name).
USER_FILES = {"plots/figure1.png": b"\x89PNG my figure", "returns/portfolio_returns.csv": b"date,ret\n2024-01-02,1\n",
              "tearsheets/my_report.html": b"<html>mine</html>", "windows/q1/returns/keep.csv": b"keep\n",
              "notes.txt": b"my notes\n"}


def _make(folder: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return _snapshot(folder)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(argv: list[str], capsys, message: str, alone: bool = True) -> None:
    """Exit 2 and the message on the last stderr line (with ``alone``, the only one: nothing ran)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and (len(err) == 1 or not alone), err


@pytest.mark.parametrize("extra", [{}, {"summary.md": b"# my summary\n"}])
def test_a_folder_no_run_owns_is_refused_untouched(extra, tmp_path, capsys):
    before = _make(tmp_path, {**USER_FILES, **extra})
    _refused([*ARGS, "--out", str(tmp_path)], capsys, "is a non-empty folder that no tr1 run owns")
    assert _snapshot(tmp_path) == before


def test_force_adds_the_runs_files_and_keeps_every_user_file(tmp_path, capsys):
    before = _make(tmp_path, USER_FILES)
    assert main([*ARGS, "--out", str(tmp_path), "--force"]) == 0
    after = _snapshot(tmp_path)
    assert {k: after[k] for k in before} == before and "summary.md" in after
    # the folder is now a run's: the next run needs no --force, replaces the run's reports and no user file
    config = json.loads((tmp_path / "config.json").read_text())
    config["files"]["../victim.txt"] = "0" * 64  # a manifest edited to reach out of its folder
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path.parent / "victim.txt").write_text("outside")
    assert main([*ARGS, "--out", str(tmp_path), "--cost-bps", "50"]) == 0
    after = _snapshot(tmp_path)
    assert {k: after[k] for k in before} == before and (tmp_path.parent / "victim.txt").read_text() == "outside"
    assert json.loads((tmp_path / "config.json").read_text())["config"]["cost_bps"] == 50
    run_id = json.loads((tmp_path / "config.json").read_text())["run_id"]
    assert verify_run(tmp_path) == [f"{name} is not from run {run_id}" for name in sorted(USER_FILES)
                                    if name != "notes.txt"]  # the folder mixes your reports with the run's


@pytest.mark.parametrize("name, when", [("summary.md", "before"), ("returns/buy_and_hold__NVDA.csv", "during")])
def test_force_never_replaces_a_user_file(name, when, tmp_path, capsys):
    """A file a run always writes is checked before anything is written; any other when the run reaches it."""
    before = _make(tmp_path, {**USER_FILES, name: b"mine\n"})
    message = f"{name} is yours (no tr1 run wrote it)" if when == "before" else f"{name} exists and no tr1 run wrote it"
    _refused([*ARGS, "--out", str(tmp_path), "--force"], capsys, message, alone=when == "before")
    after = _snapshot(tmp_path)
    assert {k: after[k] for k in before} == before
    assert (after == before) == (when == "before")


def test_an_empty_out_is_refused_not_the_working_directory(tmp_path, monkeypatch, capsys):
    before = _make(tmp_path, {"plots/p.png": b"png"})
    monkeypatch.chdir(tmp_path)
    _refused([*ARGS, "--out", ""], capsys, "--out is empty")
    assert _snapshot(tmp_path) == before


def test_symlinks_are_followed_and_their_target_checked(tmp_path, capsys):
    user = tmp_path / "user"
    user.mkdir()
    before = _make(user, USER_FILES)
    (tmp_path / "to_user").symlink_to(user)
    _refused([*ARGS, "--out", str(tmp_path / "to_user")], capsys, f"(-> {user}) is a non-empty folder")
    assert _snapshot(user) == before

    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    _refused([*ARGS, "--out", str(tmp_path / "dangling" / "run")], capsys, "which does not exist")
    assert not (tmp_path / "nowhere").exists() and (tmp_path / "dangling").is_symlink()

    (tmp_path / "to_run").symlink_to(tmp_path / "run", target_is_directory=True)
    assert main([*ARGS, "--out", str(tmp_path / "run")]) == 0
    assert main([*ARGS, "--out", str(tmp_path / "to_run"), "--cost-bps", "50"]) == 0  # a run's folder, by its link
    assert verify_run(tmp_path / "run") == [] and (tmp_path / "to_run").is_symlink()


@pytest.mark.parametrize("link", ["summary.md", "returns"])
def test_a_symlink_inside_a_run_folder_is_never_followed_out(link, tmp_path, capsys):
    """A run's own file (or folder) swapped for a link to the user's: the next run neither deletes nor writes
    through it (begin_run removes the earlier run's summary and returns by name)."""
    out, mine = tmp_path / "run", tmp_path / "mine"
    assert main([*ARGS, "--out", str(out)]) == 0
    before = _make(mine, {"summary.md": b"my summary\n", "buy_and_hold__NVDA.csv": b"my returns\n"})
    target = out / link
    target.unlink() if target.is_file() else shutil.rmtree(target)
    target.symlink_to(mine / "summary.md" if link == "summary.md" else mine)
    _refused([*ARGS, "--out", str(out)], capsys, "a symlink leads out of the run folder", alone=False)
    assert _snapshot(mine) == before and target.is_symlink()


def _main_unprivileged(argv: list[str], folder: Path) -> tuple[int, str]:
    """``main(argv)`` and its stderr, as a user that file modes apply to: root ignores a folder's missing write
    bit, so as root it runs in a forked child that has dropped to ``nobody``."""
    if os.geteuid() != 0:
        err = io.StringIO()
        with redirect_stderr(err):
            code = main(argv)
        return code, err.getvalue()
    folder.chmod(0o755)  # nobody may walk to it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with os.fdopen(write, "w") as err, redirect_stderr(err):
                code = main(argv)
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as err:
        text = err.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), text


@pytest.mark.parametrize("where", ["read-only folder", "inside a read-only folder"])
def test_an_unwritable_out_is_one_line_and_nothing_written(where):
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        out = locked if where == "read-only folder" else locked / "run"
        code, err = _main_unprivileged([*ARGS, "--out", str(out)], base)
        locked.chmod(0o755)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert ("the folder is not writable" if out == locked else f"{locked} is not writable") in err
        assert list(locked.iterdir()) == []


# --- a file is written whole or not at all ----------------------------------------------------------------


class Alternating(Agent):
    name = "alternating"

    def act(self, observations):
        return [Decision(Action.BUY if o.position <= 0 else Action.SELL) for o in observations]


@pytest.mark.parametrize("fault", ["disk full mid-write", "rename fails"])
def test_a_writer_failing_halfway_keeps_the_previous_file(fault, tmp_path, monkeypatch):
    """The decisions of a replay are rewritten when its schedule changes; the write dies halfway (after half
    the bytes reached the disk) or at the rename: the previous file is intact and verify_run flags the run.
    Fails when tr1_env.util.files.atomic_write writes in place."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    cfg = RunConfig.of(agents=(), agent=("test_run_folder:Alternating",), tickers=("NVDA",), start="2024-06-01",
                       end="2024-06-21", bootstrap=0, tearsheets=False, out=str(tmp_path))
    run(cfg)
    target = tmp_path / "decisions" / "Alternating__NVDA.json"
    before = target.read_bytes()
    write_text, replace = pathlib.Path.write_text, os.replace

    def half_then_full(self, data, *args, **kwargs):
        if "Alternating__NVDA" in self.name:
            write_text(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(28, "No space left on device")
        return write_text(self, data, *args, **kwargs)

    def failing_rename(src, dst, *args, **kwargs):
        if "Alternating__NVDA" in str(dst):
            raise OSError(5, "Input/output error")
        return replace(src, dst, *args, **kwargs)

    if fault == "disk full mid-write":
        monkeypatch.setattr(pathlib.Path, "write_text", half_then_full)
    else:
        monkeypatch.setattr(os, "replace", failing_rename)
    with pytest.raises(OSError):
        run(cfg.replace(decision_every=2))
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert verify_run(tmp_path)[0].endswith("did not finish")
    assert not list(tmp_path.rglob(".*partial*"))  # no temp file left behind


def test_saved_decisions_come_back_as_a_reload_reads_them(tmp_path):
    """save_decisions returns the frame load_decisions would read from the file (the run books it without reading
    the file again); rows with other keys (a file from another version) still load, as a frame of records."""
    import pandas as pd

    from benchmarks.run_folder import decisions_frame, load_decisions, save_decisions

    rows = [{"date": f"2024-01-0{d}", "action": a, "position_before": p, "thesis": "t", "meta": meta}
            for d, a, p, meta in [(2, "BUY", 0.0, {"rsi": 31.5}), (3, "HOLD", 0.5, {"rsi": float("nan")}),
                                  (4, "SELL", 0.5, {})]]
    saved = save_decisions(tmp_path / "a.json", "f1", rows)
    loaded = load_decisions(tmp_path / "a.json", "f1")
    pd.testing.assert_frame_equal(saved, loaded)
    records = json.loads((tmp_path / "a.json").read_text())["decisions"]
    by_records = pd.DataFrame(records).assign(date=lambda d: pd.to_datetime(d["date"])).set_index("date")
    pd.testing.assert_frame_equal(loaded, by_records)
    assert loaded["meta"].iloc[1] == {"rsi": None}
    ragged = [*records[:2], {**records[2], "extra": 1}]
    pd.testing.assert_frame_equal(decisions_frame(ragged), pd.DataFrame(ragged).assign(
        date=lambda d: pd.to_datetime(d["date"])).set_index("date"))

