"""Examples that run in seconds run here as written, so one that drifts from the data it quotes fails."""

from __future__ import annotations

import re


def test_thesis_example_quotes_its_context_and_catches_the_invented_quote(capsys):
    from examples import thesis_env

    thesis_env.main()
    out = capsys.readouterr().out
    assert [int(n) for n in re.findall(r"n_fabricated\s+(\d+)", out)] == [0, 1]
    rewards = [float(r) for r in re.findall(r"reward ([+-][\d.]+)", out)]
    assert rewards[0] > rewards[1]
