"""Anonymized contexts: nothing a model could look the day up by survives, and nothing scale-free changes."""

import dataclasses
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import random_days

from tr1_env.contamination.audit import ATTACKS, AuditConfig, audit, date_tokens, mine_lexicon
from tr1_env.context.anonymize import Pseudonyms, Rebase, anonymize, anonymize_text, level_of, load_aliases
from tr1_env.context.entities import common, everyday
from tr1_env.context.reference import build_context
from tr1_env.data.schema import TICKERS

ISO = re.compile(r"\d{4}-\d{2}-\d{2}")
MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
          "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec")
MONTH_YEAR = re.compile(rf"\b(?:{MONTHS})\.?,?\s+(?:\d{{1,2}}(?:st|nd|rd|th)?,?\s+)?(?:19|20)\d{{2}}\b", re.IGNORECASE)
TWO_DECIMALS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})*\.\d{2}(?![\d%])")
PRICE_COLS = ("open", "high", "low", "close")
LEXICON_SPAN = ("2023-01-01", "2023-12-31")  # the audit's default mining span (AuditConfig.mine_start, mine_end)


def _word(name: str, flags=0) -> re.Pattern:
    """``name`` as a whole word; a short everyday word stays before a hyphenated lower-case word ("Meta-analysis"),
    as the anonymizer leaves it, but no other name does ("Nvidia-backed")."""
    tail = r"(?!-[a-z])" if len(name) <= 4 and everyday(name) else ""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9]){tail}", flags)


def _found(words: tuple[tuple[str, re.Pattern], ...], text: str) -> list[str]:
    """The patterns of ``words`` (name, case-sensitive pattern) that match ``text``. A name that is no substring of
    ``text`` cannot match its pattern: the cheap substring test first spares ~900 look-around scans per text."""
    return [pattern.pattern for name, pattern in words if name in text and pattern.search(text)]


@lru_cache(maxsize=1)
def lexicon(store) -> dict[str, str]:
    """The terms :func:`mine_lexicon` finds in the store's news of ``LEXICON_SPAN`` (~4 s: mined once a module)."""
    return mine_lexicon(store, *LEXICON_SPAN)


@lru_cache(maxsize=1)
def forbidden(store) -> tuple[tuple[str, re.Pattern], ...]:
    """Every name of the alias table (companies, funds, indices, products, people and their surnames but those that
    are everyday words, "Cook", "Gates", which a title-case headline may use as words) and every
    term of the lexicon mined from the store's news that holds a word no dictionary has (Kuiper, Xbox, MacBook):
    names a strict context may not show, matched case-sensitively (lower case, "apple" and "cook" are words)."""
    table = load_aliases()
    names = {a for a in table.loc[table["kind"] != "ticker", "alias"] if not a.isupper()}
    names |= {a.split()[-1] for a in table.loc[table["kind"] == "person", "alias"] if not everyday(a.split()[-1])}
    names |= {t for t in lexicon(store)
              if not t.startswith("$") and ":" not in t and any(not common(w) for w in re.findall(r"[A-Za-z]{3,}", t))}
    return tuple((n, _word(n)) for n in sorted(names))


def _table(section: str) -> pd.DataFrame:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.split("\n")
            if line.startswith("|") and not line.startswith("|---")]
    return pd.DataFrame(rows[1:], columns=rows[0])


@pytest.mark.parametrize("chunk", range(5))
def test_no_name_date_or_price_level_survives(store, chunk):
    """The property over 200 random ticker-days (40 per chunk) with random modality subsets, at the default level
    (strict): no ticker, no name of the alias table or of the mined lexicon, no date token, no real price level."""
    names = forbidden(store)
    symbols = tuple((t, _word(t)) for t in TICKERS)
    for ticker, day, seed in random_days(store, 40, 100 + chunk):
        plain = build_context(store, ticker, day, seed=seed)
        anon = anonymize(plain, Pseudonyms(ticker, seed=seed))
        where = f"{ticker} {day:%Y-%m-%d} seed {seed}"
        for text in (anon.text, anon.prompt):
            assert not _found(symbols, text), where
            assert not _found(names, text), where
            assert not ISO.search(text), f"{where}: {ISO.search(text).group(0)}"
            assert not MONTH_YEAR.search(text), f"{where}: {MONTH_YEAR.search(text).group(0)}"
            assert not date_tokens(text), f"{where}: {date_tokens(text)}"
        # price levels: the first session shown closes at 100; every real level is gone, rebased ones explained
        hist = pd.DataFrame(plain.history)
        market = "market" in plain.sections and plain.sections["market"].startswith("Last close")
        first = pd.Timestamp(_table(plain.sections["market"])["date"].iloc[0]) if market else day
        factor = 100 / hist.loc[hist["date"] == first, "close"].iloc[0]
        shown = hist[(hist["date"] >= first) & (hist["date"] <= day)]
        real_values = [v for c in PRICE_COLS for v in shown[c]]
        real_values += [float(p.replace(",", "")) for p in re.findall(r"shares at ([\d,.]+\d)", plain.text)]
        real = {f"{v:,.2f}" for v in real_values}
        rebased = {f"{v * factor:,.2f}" for v in real_values}
        if market:  # every rebased cell of the market table is explained: price columns and volume
            table = _table(plain.sections["market"]).drop(columns=["date", "rsi_14"])
            numbers = table.apply(lambda col: col.str.replace(",", "").astype(float))
            volume = numbers.pop("volume")
            header = re.findall(r"(?:Last close|200-day SMA) ([\d,.]+\d)", plain.sections["market"])
            rebased |= {f"{float(v.replace(',', '')) * factor:,.2f}" for v in header}
            rebased |= {f"{v * factor:,.2f}" for v in numbers.to_numpy().ravel()}
            rebased |= {f"{v * 100 / volume.iloc[0]:,.2f}" for v in volume}
        leaked = set(TWO_DECIMALS.findall(anon.text)) - rebased
        assert not leaked & real, f"{where}: real price levels {sorted(leaked & real)}"
        np.testing.assert_array_equal(anon.features, plain.features)
        if market:  # returns unchanged: the rebased closes move as the real ones
            a, p = _table(anon.sections["market"]), _table(plain.sections["market"])
            closes = [t["close"].str.replace(",", "").astype(float) for t in (a, p)]
            np.testing.assert_allclose(closes[0].pct_change()[1:], closes[1].pct_change()[1:], atol=3e-4)
            assert abs(closes[0].iloc[0] - 100) < 1e-9
            assert re.findall(r"change ([-+\d.]+%)", anon.text) == re.findall(r"change ([-+\d.]+%)", plain.text)


def test_hand_checked_day(store):
    """AAPL at the 2024-09-10 close, names level: every number below is worked out by hand from the plain context."""
    plain = build_context(store, "AAPL", "2024-09-10")
    pseudonyms = Pseudonyms("AAPL", seed=3)
    anon = anonymize(plain, pseudonyms, "names")
    assert "| 2024-08-20 | 225.77 | 227.17 | 225.45 | 226.51 |" in plain.text  # first session shown
    assert "| D-21 | 99.67 | 100.29 | 99.53 | 100.00 |" in anon.text  # 225.77 / 226.51 * 100 = 99.67
    assert "Last close 97.17;" in anon.text  # 220.11 / 226.51 * 100
    assert "5-day change -1.19%; 15-day change -2.56%" in anon.text
    # statements: first amount (quarterly revenue 85.78B) = 100; EPS with the prices (6.13 * 100 / 226.51)
    assert "Revenue 100.00; Gross profit 46.26;" in anon.text  # 39.68 / 85.78
    assert "Diluted EPS 2.71." in anon.text
    assert "EPS 0.62 vs estimate 0.59 (surprise 4.30%)" in anon.text  # 1.40 and 1.34 rebased
    assert "2 sales (1.36M USD)" in anon.text  # 3.08M * 100 / 226.51
    assert "D-22 Insider 1 (Principal Accounting Officer): code S, 8,706 shares at 99.33" in anon.text
    assert "CPI index: [level withheld] (as of D-71)" in anon.text
    assert "Company A (TKR-A): Technology / Consumer Electronics." in anon.text
    assert "iPhone" not in anon.text and "Product A1 16" not in anon.text  # a model number would date the text
    assert "according to CEO Executive A1" in anon.text  # Tim Cook
    assert "Stock: TKR-A\nDate: D\n" in anon.prompt
    assert "`news D-3`" in anon.prompt and "2024-06-10" not in anon.prompt
    assert pseudonyms.mapping["Apple"] == "Company A" and pseudonyms.mapping["AAPL"] == "TKR-A"
    assert pseudonyms.mapping["KONDO CHRIS"] == "Insider 1"
    assert anon.date == plain.date and anon.ticker == "TKR-A"
    # the agent-facing frames carry no date, URL or price level either
    assert anon.history["date"].iloc[-1] == 0 and anon.history["close"].iloc[-1] == pytest.approx(97.1745, abs=1e-3)
    assert "url" not in anon.news and not any(pd.api.types.is_datetime64_any_dtype(anon.news[c]) for c in anon.news)


def test_headline_numbers_dates_and_index_levels():
    rebase = Rebase(pd.Timestamp("2024-09-10"), price=0.5, volume=1.0, amounts=1.0, last_close=200.0,
                    levels=(201.25,))
    text = ("- [2024-09-06] S&P 500 closes at 5,432.10 as Dow jumps 40,000; Nvidia shares hit $201.25 on "
            "Sept. 6, 2024, "
            "sales to grow in 2024 and FY2025; $14.4 billion fine; 250 points; March 2023 low of 201.25; "
            "Russell 2000 flat")
    out = anonymize_text(text, Pseudonyms("AAPL", seed=0), rebase, "names")
    assert out.startswith("- [D-4] Index ")
    assert "closes at [level] as Dow jumps [level];" in out
    assert "shares hit $100.62 on [date]," in out  # a share price: rebased (201.25 * 0.5)
    assert "to grow in [year] and FY[year];" in out
    assert "$14.4 billion fine; 250 points; [date] low of 100.62; Russell 2000 flat" in out
    assert "Nvidia" not in out and re.search(r"Company [B-Z] shares", out)


def test_pseudonyms_are_consistent_within_an_episode_and_drawn_per_episode(store):
    a, b = Pseudonyms("MSFT", seed=1), Pseudonyms("MSFT", seed=2)
    assert a.letters["MSFT"] == b.letters["MSFT"] == "A"
    assert a.letters != b.letters  # another episode, another lettering of the other companies
    first = anonymize(build_context(store, "MSFT", "2024-07-01"), a)
    second = anonymize(build_context(store, "MSFT", "2024-07-02"), a)
    nvda = f"Company {a.letters['NVDA']}"
    assert first.ticker == second.ticker == "TKR-A" and a.mapping.get("Nvidia", nvda) == nvda
    assert Pseudonyms("MSFT", seed=1).letters == a.letters


def test_every_package_module_letters_an_episode_through_for_episode():
    """One seed rule: a generator's episode draws its seed, a fixed seed is used as it is, none is 0; and no package
    module builds Pseudonyms another way or spells the anonymized agents' label suffix itself."""
    rng, again = np.random.default_rng(7), np.random.default_rng(7)
    assert Pseudonyms.for_episode("MSFT", rng).letters == Pseudonyms("MSFT", seed=int(again.integers(1 << 31))).letters
    assert Pseudonyms.for_episode("MSFT", 5).letters == Pseudonyms("MSFT", seed=5).letters
    assert Pseudonyms.for_episode("MSFT").letters == Pseudonyms("MSFT", seed=0).letters
    root = Path(__file__).resolve().parents[1]
    found = [f"{path.relative_to(root)}:{n}: {line.strip()}"
             for package in ("tr1_env", "tr1_agent", "baselines", "benchmarks")
             for path in sorted((root / package).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if "Pseudonyms(" in line or ('"+anon"' in line and "LABEL_SUFFIX =" not in line)]
    assert found == []


def test_alias_table_is_checked(tmp_path):
    table = load_aliases()
    assert set(table["ticker"]) == set(TICKERS) and set(table.loc[table["kind"] == "ticker", "alias"]) >= set(TICKERS)
    bad = tmp_path / "aliases.csv"
    bad.write_text("ticker,alias,kind\nAAPL,Apple,company\nMSFT,apple,company\n")
    with pytest.raises(ValueError, match="aliases naming two tickers"):
        load_aliases(bad)
    bad.write_text("ticker,alias,kind\nAAPL,Apple,brand\n")
    with pytest.raises(ValueError, match=r"row 2 \(AAPL,Apple,brand\)"):
        load_aliases(bad)


def test_strict_day_keeps_no_profile_macro_level_or_fomc_wording(store):
    """AAPL at the 2024-09-10 close, strict (the default): the names level's numbers, and what strict adds."""
    plain = build_context(store, "AAPL", "2024-09-10")
    anon = anonymize(plain, Pseudonyms("AAPL", seed=3))
    assert anon.text.startswith("Anonymized context (strict)")
    assert "| D-21 | 99.67 | 100.29 | 99.53 | 100.00 |" in anon.text and "Diluted EPS 2.71." in anon.text
    assert "Company A (TKR-A): sector and industry withheld." in anon.text and "Consumer Electronics" not in anon.text
    macro = anon.sections["macro"]
    assert not re.search(r"\d", macro) and "Macro series are withheld" in macro  # no level, no path
    assert re.search(r"- Latest FOMC statement: the Committee (held|raised|lowered) the federal funds target range",
                     macro) and "[level withheld]" not in macro
    assert plain.sections["macro"][-200:] not in anon.text  # no verbatim FOMC text


def test_strict_masks_what_the_old_pass_left():
    """The leftovers the audit of the names pass found in real headlines: names outside the alias table, name
    variants, date forms and money amounts; and nothing more ("meta-analysis", "robotaxis" stay words)."""
    rebase = Rebase(pd.Timestamp("2024-06-14"), price=0.5, volume=1.0, amounts=1.0, last_close=190.0)
    names = Pseudonyms("AAPL", seed=0)
    lines = [
        "- [2024-06-12] OpenAI and ChatGPT: how Bard and Bing compete with Epic Games in Guyana. (Reuters)",
        "- [2024-06-12] The collapse of First Republic hit regional banks, and Call of Duty sales fell. (CNBC)",
        "- [2024-06-12] Warren E. Buffett said the iPhone16 and $aapl gain; Jensen spoke at J.P.Morgan. (CNBC)",
        "- [2024-06-12] Johnson&Johnson, SP500 and QQQM rose; Project Kuiper launched (ETR:APC). (Barron's)",
        "- [2024-06-12] Sales rose in 2Q24 and Q3'24 after 1H24; '24 guidance on 6/10/24, 10 June, 10/06/2024 and "
        "over 2023-2024. (Zacks)",
        "- [2024-06-12] Shares closed at 190.5 with a PT 250, a market cap of $2.95 trillion and 15.3 billion shares "
        "outstanding, up 12% over 50-day highs. (MarketWatch)",
        "- [2024-06-12] A meta-analysis of Waymo's robotaxis: Tim Cook and Cook's team cook dinner. (Nature)",
    ]
    out = "\n".join(anonymize_text(line, names, rebase) for line in lines)
    for leak in ("OpenAI", "ChatGPT", "Bard", "Bing", "Epic", "Guyana", "First Republic", "Call of Duty", "Warren",
                 "Buffett", "iPhone", "aapl", "Jensen", "J.P.Morgan", "Johnson", "SP500", "QQQM", "Kuiper", "APC",
                 "Waymo", "Cook", "2024", "24", "2023", "June", "190.5", "250", "2.95", "15.3"):
        assert not re.search(rf"(?<![\w.]){re.escape(leak)}(?![\w])", out), (leak, out)
    assert not date_tokens(out)
    labels = re.findall(r"Entity ([A-Z]{4})\b", out)  # one label per name, none of them masked as a number
    assert "Entity [" not in out and len(set(labels)) >= 12 and names.mapping["OpenAI"] == f"Entity {labels[0]}"
    # no "Company D-analysis", "Product L9s"
    assert re.search(r"A meta-analysis of Product [A-Z]+\d+'s robotaxis: Executive A1 and ", out)
    assert "team cook dinner" in out and "up 12% over 50-day highs" in out  # words, ratios and spans stay


def test_levels():
    """True and a bare --anonymize mean strict, in the API and in every CLI that takes the flag."""
    from benchmarks.run import build_parser
    from tr1_env.cli import build_parser as tr1_parser

    assert level_of(True) == "strict" and level_of("names") == "names" and level_of(False) is None
    with pytest.raises(ValueError, match="anonymize must be one of"):
        level_of("loose")
    run = build_parser()
    assert run.parse_args(["--anonymize"]).anonymize == "strict" and run.parse_args([]).anonymize is None
    assert run.parse_args(["--anonymize", "names"]).anonymize == "names"
    train = ["train", "grpo", "--output-dir", "x", "--data-anonymize"]
    assert tr1_parser().parse_args(train).data_anonymize == "strict"
    with pytest.raises(SystemExit):
        run.parse_args(["--anonymize", "loose"])


@pytest.mark.slow
def test_audit_sees_a_planted_leak_and_strict_passes_it(store, monkeypatch):
    """The shipped audit over 40 ticker-days: strict leaves no date token, sector line or FOMC wording; the same
    contexts with the company's name, a date and the FOMC text planted back are caught by each attack."""
    from tr1_env.contamination import audit as audit_module

    cfg = AuditConfig(days=40, seed=1)
    # both audits (and forbidden()) mine the same store's news of the same dates: once for the module, not thrice
    monkeypatch.setattr(audit_module, "mine_lexicon", lambda s, start, end: dict(lexicon(s)) if s is store and (
        start, end) == (cfg.mine_start, cfg.mine_end) == LEXICON_SPAN else mine_lexicon(s, start, end))
    strict = audit(cfg, store)
    assert tuple(strict) == ATTACKS and all(r.n == 40 for r in strict.values())
    assert strict["dates"].hits == strict["sector"].hits == strict["fomc"].hits == 0
    profiles = store.table("profiles").drop_duplicates("ticker", keep="last").set_index("ticker")
    fomc = store.table("fomc").query("kind == 'statement'")["body"].iloc[-1]

    def leaky(ctx, seed):
        anon = anonymize(ctx, Pseudonyms(ctx.ticker, seed=seed))
        news = ctx.sections.get("news", "")  # the plain headlines: the names the lexicon knows
        sector = f"Company A (TKR-A): {profiles.loc[ctx.ticker, 'sector']} / {profiles.loc[ctx.ticker, 'industry']}."
        planted = f"{news}\n{profiles.loc[ctx.ticker, 'name']} on June 10, 2024. {fomc}"
        sections = {**anon.sections, "fundamentals": sector}
        return dataclasses.replace(anon, prompt=anon.prompt + planted, sections=sections)

    caught = audit(cfg, store, leaky)
    assert caught["dates"].rate == caught["fomc"].rate == 1.0
    assert caught["sector"].rate > 0.3 and caught["entity"].interval[0] > strict["entity"].interval[1]


@pytest.mark.slow
def test_envs_serve_strict_prompts(store):
    """The envs' anonymize=True is strict, through the same pass: 40 Thesis resets and a quarter of Trading text
    observations for the tickers whose prompts leaked under the names pass (TSLA, MSFT, AAPL) show no name."""
    from tr1_env.envs.thesis_env import ThesisEnv
    from tr1_env.envs.trading_env import TradingEnv

    names = forbidden(store) + tuple((t, _word(t)) for t in TICKERS)
    env = ThesisEnv(store, start="2024-01-01", end="2024-05-24", anonymize=True)
    for seed in range(40):
        prompt, info = env.reset(seed=seed)
        assert "Anonymized context (strict)" in prompt
        assert not _found(names, prompt), (info["ticker"], info["date"])
        assert info["pseudonyms"][info["ticker"]] == "TKR-A"
    for ticker in ("TSLA", "MSFT", "AAPL"):
        trading = TradingEnv(store, ticker, "2024-04-01", "2024-06-28", obs_mode="text", anonymize=True)
        obs, _ = trading.reset(seed=0)
        for _ in range(0, 60, 5):
            assert not _found(names, obs) and not date_tokens(obs), ticker
            for _ in range(5):
                obs, *_ = trading.step(2)
