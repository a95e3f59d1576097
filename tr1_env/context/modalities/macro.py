"""Macro: each FRED series' latest value, CPI inflation and the latest FOMC statement (market-wide, the same for
every ticker), with rates, spread, inflation, unemployment and VIX as features. Strict anonymization shows the
statement's stance instead (``Context.macro_relative``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from tr1_env.context.config import ContextConfig
from tr1_env.context.modalities.base import Instant, Modality, Part, Section, fmt, ns, register, rows
from tr1_env.data.store import PointInTime, Store

MACRO_FEATURES: tuple[str, ...] = ("fedfunds", "dgs10", "term_spread", "cpi_yoy", "unrate", "vix")
MACRO_LABELS = {"FEDFUNDS": "Fed funds rate (monthly avg, %)", "DFF": "Effective fed funds rate (%)",
                "DGS3MO": "3-month Treasury yield (%)", "DGS2": "2-year Treasury yield (%)",
                "DGS10": "10-year Treasury yield (%)", "T10YIE": "10-year breakeven inflation (%)",
                "CPI": "CPI index", "CORE_CPI": "Core CPI index", "UNRATE": "Unemployment rate (%)",
                "PAYEMS": "Nonfarm payrolls (thousands)", "VIX": "VIX", "HY_OAS": "High-yield OAS (%)",
                "UMCSENT": "UMich consumer sentiment"}
_STANCE = {"raise": "raised", "increase": "raised", "lower": "lowered", "reduce": "lowered", "maintain": "held"}


def macro_features(latest: dict[str, float], cpi_yoy: float | None) -> dict[str, float]:
    """Rates, spread, unemployment and VIX from the latest FRED values (percent points scaled to ~1)."""
    get = lambda s: latest.get(s, np.nan)  # noqa: E731
    out = {"fedfunds": get("DFF") / 10, "dgs10": get("DGS10") / 10, "term_spread": get("DGS10") - get("DGS2"),
           "unrate": get("UNRATE") / 10, "vix": get("VIX") / 100}
    if cpi_yoy is not None:
        out["cpi_yoy"] = cpi_yoy / 10
    return out


def macro_lines(macro: pd.DataFrame) -> list[str]:
    return [f"- {MACRO_LABELS[s]}: {fmt(v)} (as of {d:%Y-%m-%d})"
            for s, d, v in zip(*(macro[c].tolist() for c in ("series", "date", "value")))]


def fomc_lines(fomc: pd.DataFrame) -> list[str]:
    out = []
    for meeting, body in zip(fomc["meeting_date"].tolist(), fomc["body"].tolist()):
        body = " ".join(body.split())
        out.append(f"- Latest FOMC statement ({meeting:%Y-%m-%d}): {body[:700]}{'...' if len(body) > 700 else ''}")
    return out


def macro_text(latest: list[str], cpi_yoy: float | None, statement: str | None) -> str | None:
    if not latest:
        return None
    lines = list(latest)
    if cpi_yoy is not None:
        lines.append(f"- CPI inflation, year over year: {cpi_yoy:.2f}%")
    if statement is not None:
        lines.append(statement)
    return "\n".join(lines)


def fomc_stance(body: str) -> str:
    """What an FOMC statement did to the federal funds target range, in one word (not its wording)."""
    m = re.search(r"decided to (raise|increase|lower|reduce|maintain)\b", body)
    return _STANCE[m.group(1)] if m else "did not state a change to"


def macro_relative_text(statement: str | None) -> str:
    """The macro section strict anonymization shows: the latest FOMC statement's stance, no series.

    Macro regimes persist for months, so any rendering of the series dates a context: matched against every
    session of 2024-02..2025-10, each series' 3-month direction and 5-year tercile put the day within a month on
    100 % of sessions, the direction alone of four series (fed funds, 10-year, CPI inflation, unemployment) on
    48 %, the stance alone on 17 % (a random session: 10 %)."""
    stance = ("no FOMC statement is available" if statement is None else
              f"the Committee {fomc_stance(statement)} the federal funds target range at its latest meeting")
    return (f"- Latest FOMC statement: {stance} (the statement's wording and date are withheld).\n"
            "- Macro series are withheld at the strict level: their levels and their recent paths date the context.")


class MacroPart(Part):
    """The market's macro series and FOMC statements, shared by every ticker; one state per (series rows, FOMC
    rows) visible, memoised."""

    def __init__(self, store: Store):
        macro = rows(store, "macro", "*")
        self.macro_at = ns(macro["available_at"])
        self.rendered = macro_lines(macro)
        series = macro["series"].to_numpy(object)
        self.values = macro["value"].to_numpy(float)
        self.positions = {s: np.flatnonzero(series == s) for s in dict.fromkeys(series)}
        self.cpi = self.positions.get("CPI", np.zeros(0, np.int64))
        fomc = rows(store, "fomc", "*")
        self.fomc_at = ns(fomc["available_at"])
        self.statements = np.flatnonzero(fomc["kind"].to_numpy(object) == "statement")
        self.statement_lines = fomc_lines(fomc.iloc[self.statements])
        self.statement_texts = list(fomc["body"].iloc[self.statements])
        self._memo: dict[tuple[int, int], tuple[str | None, dict[str, float]]] = {}

    def _state(self, t: int) -> tuple[int, int]:
        return int(self.macro_at.searchsorted(t, "right")), int(self.fomc_at.searchsorted(t, "right"))

    def relative(self, t: int) -> str:
        """The macro section as strict anonymization shows it at instant ``t`` (``Context.macro_relative``)."""
        s = int(self.statements.searchsorted(self._state(t)[1]))
        return macro_relative_text(self.statement_texts[s - 1] if s else None)

    def macro(self, t: int) -> tuple[str | None, dict[str, float]]:
        n, n_fomc = self._state(t)
        if (n, n_fomc) not in self._memo:
            last = sorted(int(p[k - 1]) for p in self.positions.values() if (k := p.searchsorted(n)))
            k = int(self.cpi.searchsorted(n))
            yoy = float(self.values[self.cpi[k - 1]] / self.values[self.cpi[k - 13]] - 1) * 100 if k >= 13 else None
            s = int(self.statements.searchsorted(n_fomc))
            text = macro_text([self.rendered[i] for i in last], yoy, self.statement_lines[s - 1] if s else None)
            latest = {series: self.values[p[k - 1]] for series, p in self.positions.items()
                      if (k := p.searchsorted(n))}
            self._memo[n, n_fomc] = text, macro_features(latest, yoy)
        return self._memo[n, n_fomc]

    def section(self, at: Instant, cfg: ContextConfig) -> Section:
        text, features = self.macro(at.t)
        return Section(text, features, {"macro_relative": lambda: self.relative(at.t)})

    def prepare(self, instants: Iterable[Instant], cfg: ContextConfig) -> None:
        for at in instants:
            self.macro(at.t)


class Macro(Modality):
    name, title, order = "macro", "Macro", 50
    tables = ("macro", "fomc")
    features = MACRO_FEATURES

    def reference(self, view: PointInTime, cfg: ContextConfig) -> Section:
        macro = view.macro
        last = macro.groupby("series").tail(1)  # each series' latest value, in order of arrival
        cpi = macro[macro["series"] == "CPI"]["value"]
        yoy = float(cpi.iloc[-1] / cpi.iloc[-13] - 1) * 100 if len(cpi) >= 13 else None
        statements = view.fomc[view.fomc["kind"] == "statement"]
        text = macro_text(macro_lines(last), yoy, fomc_lines(statements.iloc[-1:])[0] if len(statements) else None)
        latest = statements["body"].iloc[-1] if len(statements) else None
        return Section(text, macro_features(dict(zip(last["series"], last["value"])), yoy),
                       {"macro_relative": lambda: macro_relative_text(latest)})

    def market(self, store: Store) -> MacroPart:
        return MacroPart(store)

    def index(self, store: Store, ticker: str, market: Part | None) -> Part:
        return market


register(Macro())
