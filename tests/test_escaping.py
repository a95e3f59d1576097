"""Labels that a plug-in, a user or a server controls reach every report inert: no live HTML, no Markdown table
broken or extended, no CSV cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.escaping import FORMULA_START, Markdown, csv_safe, md_cell, plot_label
from benchmarks.run import RunConfig, main, run
from benchmarks.run_folder import write_csv
from tr1_env.core.actions import Action
from tr1_env.core.agents import Agent, Decision

#: Agent labels an adversary picks: markup, attribute breakouts, a Markdown row break, spreadsheet formulas.
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\"'><svg onload=alert(1)>",
           "x|y\n# injected heading", "=1+2*cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "\tTAB `rm` [a](javascript-x)",
           "_$\\nosuchcmd$ math"]  # matplotlib: a leading _ leaves the legend, $...$ is parsed as mathtext
MODEL = "<img src=y onerror=alert(2)>"  # an API model name, served by a local fake server


class Alternating(Agent):
    """A plug-in bound below under each hostile name (``test_escaping:<name>``)."""

    name = "alternating"

    def act(self, observations):
        return [Decision(Action.BUY if o.position <= 0 else Action.SELL) for o in observations]


for _label in HOSTILE:
    globals()[_label] = Alternating


class _Page(HTMLParser):
    """Every start tag with its attributes, and the text between tags."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.data: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.data.append(data)


def _shape(page: _Page) -> set[tuple[str, tuple[str, ...]]]:
    return {(tag, tuple(sorted(attrs))) for tag, attrs in page.tags}


def _assert_inert_html(path: Path, shown: list[str], reference: Path | None = None) -> None:
    """No script, no svg, no event handler, no image from elsewhere; with a ``reference`` page of the same
    template (benign labels), no tag or attribute it lacks. Each of ``shown`` is in the page's text."""
    page = _Page(path.read_text())
    if reference is not None:
        assert _shape(page) <= _shape(_Page(reference.read_text())), path.name
    else:
        for tag, attrs in page.tags:
            assert tag not in ("script", "svg"), (path.name, tag)
            assert not [a for a in attrs if a.startswith("on")], (path.name, tag, attrs)
            assert tag != "img" or attrs["src"].startswith("data:image/"), (path.name, attrs)
    text = "".join(page.data)
    for label in shown:
        assert label in text, (path.name, label)  # shown as text, not dropped


def _assert_inert_markdown(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"<(script|img|svg)", text, re.I)
    assert [line for line in text.splitlines() if line.startswith("#") and "injected" in line] == []
    for table in re.findall(r"(?:^\|.*\n)+", text, re.M):  # every row has as many cells as its header
        cells = {len(re.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(cells) == 1, table


def _assert_no_formula(path: Path) -> None:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    for row in rows[1:]:
        for cell in row:
            if cell.startswith(FORMULA_START):
                float(cell)  # only a number may start like a formula


def _run(out: Path, labels: list[str], *extra: str) -> int:
    return main(["--agent", *[f"test_escaping:{label}" for label in labels], "--start", "2024-06-01",
                 "--end", "2024-06-21", "--tickers", "NVDA", "--bootstrap", "50", "--out", str(out), *extra])


def test_hostile_labels_reach_every_report_inert(api_server, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "run"
    assert _run(out, HOSTILE, "--agents", "buy_and_hold", "--model", MODEL, "--base-url", api_server.base_url,
                "--llm-decision-every", "7", "--no-tearsheets") == 0, capsys.readouterr().err
    capsys.readouterr()
    labels = [MODEL, *HOSTILE]
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(summary["agent"]) == ["buy_and_hold", *[f"'{x}" if x.startswith(FORMULA_START) else x
                                                        for x in labels]]  # OWASP: a quote before a formula
    assert set(pd.read_csv(out / "leaderboard.csv")["agent"]) == set(summary["agent"])
    _assert_inert_html(out / "leaderboard.html", labels)
    for name in ("summary.md", "leaderboard.md"):
        _assert_inert_markdown(out / name)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (out / name).read_text()
        assert "x\\|y # injected heading" in (out / name).read_text()
    assert "\\`rm\\` \\[a\\](javascript-x)" in (out / "summary.md").read_text()
    for path in out.rglob("*.csv"):
        _assert_no_formula(path)


def test_server_error_text_is_escaped_where_it_is_shown(api_server, tmp_path, monkeypatch, capsys):
    """A server's error message (it controls the text) reaches summary.md as one inert note, and the page's
    notes and the terminal carry no markup or control character from it."""
    monkeypatch.setenv("TR1_CACHE", str(tmp_path / "cache"))
    api_server.default, api_server.error = 400, "<script>alert(3)</script>\n# injected | [x](y) \x1b[2J"
    out = tmp_path / "run"
    assert main(["--agents", "buy_and_hold", "--model", "gpt-4.1", "--base-url", api_server.base_url, "--start",
                 "2024-06-01", "--end", "2024-06-21", "--tickers", "NVDA", "--bootstrap", "50", "--no-tearsheets",
                 "--max-retries", "0", "--out", str(out)]) == 1
    printed = capsys.readouterr()
    summary = (out / "summary.md").read_text()
    assert "&lt;script&gt;alert(3)&lt;/script&gt; # injected \\| \\[x\\](y)" in summary
    _assert_inert_markdown(out / "summary.md")
    _assert_inert_html(out / "leaderboard.html", [])
    for text in (printed.out, printed.err, summary):
        assert "\x1b" not in text


@pytest.mark.slow
def test_tearsheet_titles_are_escaped(tmp_path, monkeypatch):
    """quantstats pastes the title into its page as it is; three tearsheets (~10 s each on 2 busy cores)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    label = HOSTILE[2]
    run(RunConfig.of(agents=(), agent=(f"test_escaping:{label}",), tickers=("NVDA",), start="2024-06-01",
                     end="2024-06-21", bootstrap=50, out=str(tmp_path)))
    sheets = sorted((tmp_path / "tearsheets").glob("*.html"))
    assert [s.name for s in sheets] == ["buy_and_hold__portfolio.html", "svg_onload_alert_1__NVDA.html",
                                        "svg_onload_alert_1__portfolio.html"]
    for sheet in sheets[1:]:  # quantstats' own page has a body onload: compared with buy-and-hold's
        _assert_inert_html(sheet, [f"{label} on NVDA" if "NVDA" in sheet.name else f"{label} on portfolio"],
                           reference=sheets[0])


def test_md_cell_and_csv_safe():
    assert md_cell("a|b\r\n# c `d` <e> & \\ [f]") == "a\\|b # c \\`d\\` &lt;e&gt; &amp; \\\\ \\[f\\]"
    assert md_cell("# heading") == "\\# heading" and md_cell(Markdown("**1.00**")) == "**1.00**"
    frame = pd.DataFrame({"agent": ["=cmd", "-x", "+1", "@a", "\tb", "\rc", "ok"], "sharpe": [-1.5, -2, 0, 1, 2, 3, 4]})
    safe = csv_safe(frame)
    assert list(safe["agent"]) == ["'=cmd", "'-x", "'+1", "'@a", "'\tb", "'\rc", "ok"]
    assert safe["sharpe"].tolist() == frame["sharpe"].tolist()  # negative numbers stay numbers
    plain = pd.DataFrame({"agent": ["buy_and_hold", "gpt-4.1 #0"], "cr": [-0.0123, 0.5], "flag": [True, None]})
    assert csv_safe(plain) is plain  # an ordinary table is written exactly as before


def test_write_csv_neutralises_every_column_and_the_index(tmp_path):
    frame = pd.DataFrame({"a": ["=1+1"], "b": [-3.0]}, index=pd.Index(["@x"], name="agent"))
    write_csv(tmp_path / "t.csv", frame)
    assert (tmp_path / "t.csv").read_text() == "agent,a,b\n'@x,'=1+1,-3.0\n"


@pytest.mark.parametrize("quote", [False, True])
def test_leaderboard_template_escapes_whatever_its_name(quote):
    from benchmarks.leaderboard import _template

    label = "\"'><script>x</script>" if quote else "<b>bold</b>"
    page = _template().render(title=label, run_id="", header=[label], rows=[{"cells": [label], "verdict": label,
                                                                              "tearsheet": label}],
                              family=label, notes=[label], heat_agents=[label], heat_rows=[], equity_png="",
                              per_ticker=[])
    assert "<script>" not in page and "<b>" not in page and "&lt;" in page


@pytest.mark.parametrize("label", HOSTILE)
def test_plot_labels_are_drawn_literally(label):
    """Every hostile label gets its own legend entry and the figure draws (mathtext failed the whole figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], label=plot_label(label))
    ax.plot([1, 0], label="buy_and_hold")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")
    shown = [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    assert len(shown) == 2 and not re.search(r"[\x00-\x1f]", shown[0])
    assert shown[0].strip() == re.sub(r"[\x00-\x1f]", " ", label).replace("$", r"\$").strip()
