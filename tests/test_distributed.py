"""Cells on Ray and in shards give the files of one in-process run; a killed worker is retried and counted once.

Ray runs locally with 2 CPUs, a small object store and no dashboard, started once for the module (the runs find
it initialised and leave it up); the shards and merge need no Ray.
"""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

import benchmarks.run as run_module
from benchmarks.config import RunConfig
from benchmarks.executors import RayExecutor
from benchmarks.mapping import in_order
from benchmarks.merge import main as merge_main
from benchmarks.run import main
from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, Decision

WALK = ["--tickers", "AAPL", "MSFT", "--walk-forward", "quarterly", "--start", "2024-01-01", "--end", "2024-06-30",
        "--bootstrap", "100", "--no-tearsheets"]
REPORTS = ("summary.csv", "leaderboard.csv", "windows.csv", "leaderboard.md", "costs.csv")
KILL_DIR = "TR1_TEST_KILL_DIR"


class KillOnce(Agent):
    """Momentum, except that in a Ray worker (not the test's process) it kills its own process (SIGKILL, as the OOM
    killer would) when first asked about MSFT after 2024-04-15, in the middle of its second window's cell; a marker
    file in ``$TR1_TEST_KILL_DIR`` arms it exactly once."""

    name = "kill_once"

    def act(self, observations):
        folder, driver = os.environ.get(KILL_DIR), os.environ.get(f"{KILL_DIR}_PID")
        late = [o for o in observations if o.ticker == "MSFT" and f"{o.date:%Y-%m-%d}" >= "2024-04-15"]
        if folder and driver != str(os.getpid()) and late and not (Path(folder) / "killed").exists():
            (Path(folder) / "killed").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return [Decision(Action.BUY if o.history["close"].iloc[-1] > o.history["close"].iloc[-5] else Action.SELL)
                for o in observations]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    ray = pytest.importorskip("ray")
    kill_dir = tmp_path_factory.mktemp("kill")
    os.environ[KILL_DIR] = str(kill_dir)  # before Ray starts: its workers inherit the environment
    os.environ[f"{KILL_DIR}_PID"] = str(os.getpid())
    os.environ["TR1_CACHE"] = str(tmp_path_factory.mktemp("worker-cache"))  # the workers' LLM call cache
    ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield kill_dir
    ray.shutdown()
    os.environ.pop(KILL_DIR, None)
    os.environ.pop(f"{KILL_DIR}_PID", None)
    os.environ.pop("TR1_CACHE", None)


def _same(a: Path, b: Path) -> None:
    for name in REPORTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    returns = sorted(p.relative_to(a) for p in a.glob("windows/*/returns/*.csv"))
    assert returns and returns == sorted(p.relative_to(b) for p in b.glob("windows/*/returns/*.csv"))
    for name in returns:  # on Ray, booked and rendered by the workers
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    summary = [(folder / "summary.md").read_text().split("\nRun id: ")[0] for folder in (a, b)]
    assert summary[0] == summary[1]
    coverage = [json.loads((folder / "config.json").read_text())["coverage"] for folder in (a, b)]
    assert coverage[0] == coverage[1]  # the first contexts, built by the workers on Ray


def test_ray_with_two_workers_writes_the_files_of_the_in_process_run(local_ray, tmp_path, capsys, monkeypatch):
    agents = ["--agents", "buy_and_hold", "ma_crossover", "random"]
    assert main([*agents, *WALK, "--out", str(tmp_path / "here")]) == 0
    checked, original = [], run_module._same_actions  # the run's checks of its workers' books against its saves

    def same_actions(booked, saved):
        checked.append(original(booked, saved))
        return checked[-1]

    monkeypatch.setattr(run_module, "_same_actions", same_actions)
    assert main([*agents, *WALK, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert len(checked) == 12 and all(checked)  # 3 agents x 2 tickers x 2 windows, each booked by its worker
    _same(tmp_path / "here", tmp_path / "ray")
    meta = json.loads((tmp_path / "ray" / "config.json").read_text())
    assert meta["status"] == "complete" and meta["config"]["executor"] == "ray"
    assert "cells: 100%" in capsys.readouterr().err  # one bar over the 6 cells (3 agents x 2 windows)


def test_sb3_fits_run_ahead_on_ray_and_the_cells_reload_them(local_ray, tmp_path, monkeypatch):
    """PPO's fits for both windows start at once (one policy pooled over the tickers per window, the default), into
    the workers' SB3 cache; each cell's own fit reloads its window's (no second model) and the files are the
    in-process run's; a rerun, which replays nothing, fits nothing ahead."""
    agents = ["--agents", "buy_and_hold", "ppo", "--sb3-steps", "64"]
    workers_cache = Path(os.environ["TR1_CACHE"])  # the fixture's, which the workers inherited
    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "driver-cache"))
    assert main([*agents, *WALK, "--out", str(tmp_path / "here")]) == 0
    ahead, original = [], RayExecutor.fit_ahead

    def fit_ahead(self, cells, left):
        original(self, cells, left)
        ahead.extend(len(refs) for refs in self._fits.values())

    monkeypatch.setattr(RayExecutor, "fit_ahead", fit_ahead)
    assert main([*agents, *WALK, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert ahead == [1, 1]  # ppo's two windows' fits, sent before any cell ran
    _same(tmp_path / "here", tmp_path / "ray")
    assert main([*agents, *WALK, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert ahead == [1, 1]  # the rerun replays nothing, so fits nothing ahead
    models = sorted(p.relative_to(workers_cache) for p in (workers_cache / "sb3").rglob("*.zip"))
    assert len(models) == 2 and models == sorted(p.relative_to(tmp_path / "driver-cache")
                                                 for p in (tmp_path / "driver-cache" / "sb3").rglob("*.zip"))


def test_ray_map_runs_the_items_in_order_with_the_shared_inputs_once(local_ray):
    items = [(x / 7,) for x in range(25)]  # more items than tasks: chunks of several, joined in order
    with RayExecutor(RunConfig()) as executor:
        assert executor.map(round, items, ndigits=2) == in_order(round, items, ndigits=2)
        assert executor.map(round, items[:1], ndigits=1) == [0.0]  # one item: here, no task


def test_a_killed_worker_is_retried_and_nothing_is_counted_twice(local_ray, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    agents = ["--agents", "buy_and_hold", "--agent", "test_distributed:KillOnce"]
    assert main([*agents, *WALK, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert (local_ray / "killed").exists()  # a worker died in the middle of the MSFT cell and Ray ran it again
    assert main([*agents, *WALK, "--out", str(tmp_path / "here")]) == 0
    _same(tmp_path / "here", tmp_path / "ray")
    saved = json.loads((tmp_path / "ray" / "windows" / "2024-04-01_2024-06-30" / "decisions" /
                        "KillOnce__MSFT.json").read_text())["decisions"]
    assert len(saved) == len({d["date"] for d in saved}) == 62  # each session once, none from the killed attempt


def test_an_api_model_on_ray_under_limits_writes_the_in_process_files(local_ray, api_server, tmp_path, monkeypatch):
    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))  # this process's cache; the workers have their own
    argv = ["--agents", "buy_and_hold", "--model", "gpt-4.1", "--base-url", api_server.base_url, "--tickers", "NVDA",
            "AAPL", "--start", "2024-06-03", "--end", "2024-06-21", "--llm-decision-every", "7", "--bootstrap", "0",
            "--no-tearsheets"]
    assert main([*argv, "--out", str(tmp_path / "here")]) == 0
    limits = ["--executor", "ray", "--rpm", "600", "--max-cost-usd", "1"]  # the governor an actor of the cluster
    assert main([*argv, "--out", str(tmp_path / "ray"), *limits]) == 0
    for name in ("summary.csv", "leaderboard.csv"):
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name
    assert api_server.requests == 8  # 2 tickers x 2 decisions, once per run


def test_rate_limits_and_the_budget_hold_across_ray_workers(local_ray):
    import ray

    from tr1_agent.api_limits import ApiGovernor, BudgetExhausted

    governor = ApiGovernor(rpm={"*": 120}, max_cost_usd=0.1)  # 2 requests/s; gpt-4.1 reserves $0.01 a call here
    governor.share()

    @ray.remote(num_cpus=1)
    def ask(governor, n):
        return [time.time() + governor.reserve("gpt-4.1", 1000, 1000).delay for _ in range(n)]

    starts = sorted(s for per in ray.get([ask.remote(governor, 3), ask.remote(governor, 3)]) for s in per)
    # one clock for both workers: k + 1 starts span at least (k - 1) / 2 s (2 a second after a burst of 2)
    assert all(starts[j] - starts[i] >= (j - i - 1) * 0.5 - 0.05 for i in range(6) for j in range(i + 1, 6))
    with pytest.raises(BudgetExhausted):  # 6 of 10 cents in flight: the 5th more fails, in whichever worker
        ray.get(ask.options(max_retries=0).remote(governor, 5))


def test_shards_merge_into_the_files_of_one_run(tmp_path, capsys):
    agents = ["--agents", "buy_and_hold", "ma_crossover", "random", "always_hold"]
    assert main([*agents, *WALK, "--out", str(tmp_path / "whole")]) == 0
    shards = [str(tmp_path / f"shard{i}") for i in (1, 2)]
    for i, out in enumerate(shards, 1):
        assert main([*agents, *WALK, "--out", out, "--shard", f"{i}/2"]) == 0
        assert not (Path(out) / "summary.csv").exists()  # a shard writes decisions, not reports
    assert merge_main([*shards, "--out", str(tmp_path / "merged")]) == 0
    _same(tmp_path / "whole", tmp_path / "merged")
    capsys.readouterr()
    assert merge_main([shards[0], "--out", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "ma_crossover in 2024-01-01_2024-03-31" in err and len(err.strip().splitlines()) == 1
    assert merge_main([*shards, shards[1], "--out", str(tmp_path / "twice")]) == 2
    assert "is in more than one shard" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists() and not (tmp_path / "twice").exists()  # refused before writing


class InterruptOnce(Agent):
    """Momentum that presses Ctrl-C (raises KeyboardInterrupt) in its second window while ``$TR1_TEST_INTERRUPT``
    is set."""

    name = "interrupt_once"

    def act(self, observations):
        if os.environ.get("TR1_TEST_INTERRUPT") and any(f"{o.date:%Y-%m-%d}" >= "2024-04-15" for o in observations):
            raise KeyboardInterrupt
        return [Decision(Action.HOLD) for _ in observations]


def test_ctrl_c_leaves_a_folder_the_next_run_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("TR1_TEST_INTERRUPT", "1")
    argv = ["--agents", "buy_and_hold", "--agent", "test_distributed:InterruptOnce", *WALK, "--out", str(tmp_path)]
    assert main(argv) == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err
    assert json.loads((tmp_path / "config.json").read_text())["status"] == "running"
    first = tmp_path / "windows" / "2024-01-01_2024-03-31" / "decisions" / "InterruptOnce__AAPL.json"
    kept = first.stat().st_mtime_ns
    monkeypatch.delenv("TR1_TEST_INTERRUPT")
    assert main(argv) == 0
    assert first.stat().st_mtime_ns == kept  # the first window was reloaded, not asked again
    assert json.loads((tmp_path / "config.json").read_text())["status"] == "complete"


def test_ray_is_optional_and_tr1_bench_merge_is_registered(tmp_path, monkeypatch, capsys):
    import argparse
    import sys

    from benchmarks.merge import register

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the ray extra were not installed
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "ray" else object())
    assert main(["--agents", "buy_and_hold", "--executor", "ray", "--out", str(tmp_path / "run")]) == 2
    assert "pip install 'tr1[ray]'" in capsys.readouterr().err and not (tmp_path / "run").exists()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()  # tomllib is 3.11+
    commands = pyproject.split('[project.entry-points."tr1.commands"]')[1].split("\n[")[0]
    assert 'bench = "benchmarks.merge:register"' in commands and "\nray = [" in pyproject
    parser = argparse.ArgumentParser(prog="tr1")
    register(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["bench", "merge", "a", "b", "--out", "c"])
    assert ns.shards == ["a", "b"] and ns.out == "c" and callable(ns.func)


def test_the_portfolio_track_on_ray_and_in_shards_writes_the_in_process_files(local_ray, api_server, tmp_path,
                                                                               monkeypatch, capsys):
    """Agent x window cells: the LLM's second month is decided from the weights its first month's book carried
    (its prompt shows them), so its cells chain; on Ray, in two shards merged, the files are the in-process run's."""
    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))  # this process's cache; the workers have their own
    api_server.reply = 'Tilt to Apple.\n{"AAPL": 0.5, "XOM": 0.3, "CASH": 0.2}'
    argv = ["--portfolio", "--agents", "buy_and_hold", "equal_weight", "--model", "gpt-4.1", "--base-url",
            api_server.base_url, "--tickers", "AAPL", "XOM", "--start", "2024-04-01", "--end", "2024-05-31",
            "--walk-forward", "monthly", "--llm-decision-every", "10", "--bootstrap", "100", "--no-tearsheets"]
    assert main([*argv, "--out", str(tmp_path / "here")]) == 0
    asked = api_server.requests
    # the workers' LLM books draw on the run's budget, shared as a Ray actor: under it they ask, past it nothing
    assert main([*argv, "--out", str(tmp_path / "broke"), "--executor", "ray", "--max-cost-usd", "0.001"]) == 1
    assert api_server.requests == asked and "--max-cost-usd 0.001: the next gpt-4.1 call" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "ray"), "--executor", "ray", "--max-cost-usd", "1"]) == 0
    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "shard-cache"))  # asked afresh: a decision says if it was cached
    shards = [str(tmp_path / f"shard{i}") for i in (1, 2)]
    for i, out in enumerate(shards, 1):
        assert main([*argv, "--out", out, "--shard", f"{i}/2"]) == 0
        assert not (Path(out) / "leaderboard_portfolio.csv").exists()  # a shard records cells, not reports
    assert merge_main([*shards, "--out", str(tmp_path / "merged")]) == 0
    here = sorted(p.relative_to(tmp_path / "here") for p in (tmp_path / "here").rglob("*") if p.is_file())
    assert Path("portfolio/decisions/gpt-4.1__2024-05-01_2024-05-31.json") in here
    for other in ("ray", "merged"):
        for name in here:
            if name.name not in ("config.json", "leaderboard_portfolio.html"):  # the run id
                assert (tmp_path / other / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), (other, name)
    assert api_server.requests == 3 * asked  # in-process, the Ray workers (their own cache), the shards
    may = api_server.seen[-1]["body"]["messages"][1]["content"]
    assert "CASH" in may and api_server.seen[-1]["body"] == api_server.seen[asked - 1]["body"]
    saved = tmp_path / "ray" / "portfolio" / "decisions" / "gpt-4.1__2024-04-01_2024-04-30.json"
    kept = saved.stat().st_mtime_ns
    assert main([*argv, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0  # resumes from its saved windows
    assert api_server.requests == 3 * asked and saved.stat().st_mtime_ns == kept
    capsys.readouterr()
    assert merge_main([shards[1], "--out", str(tmp_path / "missing")]) == 2
    assert "missing from the shards" in capsys.readouterr().err and not (tmp_path / "missing").exists()


class Slow(Agent):
    """Holds; in a Ray worker, while ``$TR1_TEST_KILL_DIR/slow`` exists, it leaves its process id there and takes a
    tenth of a second per day of its second window."""

    name = "slow"

    def act(self, observations):
        folder = Path(os.environ.get(KILL_DIR, "."), "slow")
        late = f"{observations[0].date:%Y-%m-%d}" >= "2024-04-01"
        if late and folder.is_dir() and os.environ.get(f"{KILL_DIR}_PID") != str(os.getpid()):
            (folder / str(os.getpid())).touch()
            time.sleep(0.1)
        return [Decision(Action.HOLD) for _ in observations]


def test_ctrl_c_on_ray_cancels_the_tasks_and_leaves_a_folder_the_next_run_resumes(local_ray, tmp_path, monkeypatch,
                                                                                   capsys):
    """A real SIGINT to a run on the cluster (``--ray-address``), in its second window: exit 130 within seconds, the
    worker running its cell killed (the cluster's other workers live on), and the next run reloads the first window
    instead of asking again."""
    import subprocess
    import sys

    import ray

    root, pids = Path(__file__).parents[1], local_ray / "slow"
    pids.mkdir()
    argv = ["--agents", "buy_and_hold", "--agent", "test_distributed:Slow", *WALK, "--out", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests"),
                                                        os.environ.get("PYTHONPATH", "")])}
    address = ray.get_runtime_context().gcs_address
    child = subprocess.Popen([sys.executable, "benchmarks/run.py", *argv, "--executor", "ray", "--ray-address",
                              address], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not any(pids.iterdir()) and child.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert any(pids.iterdir()), child.communicate(timeout=60)[1] if child.poll() is not None else "no 2nd window"
        time.sleep(0.5)  # the second window's cell is running (6 s)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
        workers = [int(p.name) for p in pids.iterdir()]
    finally:
        child.kill()
        shutil.rmtree(pids, ignore_errors=True)  # the other tests' Slow agents do not sleep
    assert child.returncode == 130 and "interrupted; rerun the same command to resume" in err, err
    for _ in range(50):  # the worker running the cancelled cell is killed, not left to finish it
        if not any(_alive(pid) for pid in workers):
            break
        time.sleep(0.1)
    assert workers and not any(_alive(pid) for pid in workers)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["status"] == "running"
    first = tmp_path / "run" / "windows" / "2024-01-01_2024-03-31" / "decisions" / "Slow__MSFT.json"
    kept = first.stat().st_mtime_ns
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    assert main(argv) == 0  # the same folder, in-process here: the saved first window is reloaded
    assert first.stat().st_mtime_ns == kept
    capsys.readouterr()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
