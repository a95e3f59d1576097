"""Figures of the reports, drawn off-screen: pyplot on a file-only backend, and the leaderboard's equity curves.

The tables stay in :mod:`benchmarks.report` and :mod:`benchmarks.leaderboard`; the pictures are here.
"""

from __future__ import annotations

import base64
import io
import logging

import pandas as pd

from benchmarks.escaping import plot_label

__all__ = ["equity_png", "pyplot"]


def pyplot():
    """pyplot on the file-only backend: reports are written on servers with no display."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # quantstats asks for fonts we lack
    import matplotlib.pyplot as plt

    return plt


def equity_png(returns: pd.DataFrame, benchmark: str, title: str = "Equal-weight portfolio per agent, net of costs"
               ) -> str:
    """The equity curve of each column of ``returns`` (daily net returns; ``benchmark`` dashed), a base64 PNG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(12, 5))
    for agent in returns.columns:
        eq = (1 + returns[agent]).cumprod()
        ax.plot(eq.index, eq.to_numpy(), **({"color": "k", "ls": "--", "lw": 1.8, "label": f"{agent} (benchmark)"}
                                           if agent == benchmark else {"lw": 1.1, "label": plot_label(agent)}))
    ax.set(ylabel="equity (start = 1)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=3)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()
