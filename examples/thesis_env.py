"""Submit a handwritten thesis to the Trading-R1 environment and read its reward terms.

    python examples/thesis_env.py

The episode is pinned (NVDA at the close of 2024-06-03, every modality) so the thesis can quote
its context verbatim; a second submission swaps one quote for an invented one to show the
fabricated-quote check.
"""

import gymnasium as gym

import tr1_env  # noqa: F401 - registers tr1/Thesis-v0
from tr1_env.context.record import MODALITIES
from tr1_env.scoring.rewards import TERMS

THESIS = """\
<think>
Earnings beat, a new chip roadmap and an analyst target raise line up with strong momentum; rates are the headwind.
</think>
<fundamentals>
### Fundamentals
- The latest quarter shows **very high profitability**, with operating income at roughly two thirds of revenue, which leaves ample room to fund research and returns to shareholders. *Revenue 26.04B; Gross profit 20.41B; Operating income 16.91B* `fundamentals, quarterly income statement`
- Earnings came in well above what analysts expected, and a beat of this size tends to pull estimates and price targets higher over the following weeks. *EPS 6.00 vs estimate 5.20 (surprise 14.83%)* `fundamentals, earnings 2024-05-22`
- Cash generation covers buybacks several times over, so capital returns do not depend on new borrowing even with short-term rates above five percent. *Free cash flow 27.02B; Share buybacks -9.53B* `fundamentals, annual cash flow`
- Debt is modest relative to assets and equity, which keeps balance-sheet risk low for a company in a cyclical industry like semiconductors. *Total assets 65.73B; Total debt 11.06B* `fundamentals, annual balance sheet`
</fundamentals>
<technical>
### Technical picture
- The stock has rallied hard over three weeks, a **strong uptrend** that started with the earnings release and has not yet shown a reversal signal in the daily data. *5-day change +8.01%; 15-day change +27.95%* `market data`
- The price sits far above its long-term average, which confirms the trend but also means a pullback of several percent would not break the broader structure. *Last close 1,150.00* `market data`
- Trading volume jumped on the earnings reaction day to nearly three times the mid-May level, a sign of institutional participation rather than a thin retail move. *1,015.20 | 1,037.99 | 83,506,500* `market data 2024-05-23`
- Momentum is firm and the fifty-day average keeps rising, so the technical setup supports holding long exposure through the one-week horizon. *200-day SMA 642.92* `market data`
</technical>
<news>
### News flow
- A major bank raising its target right after the product announcement gives a **fresh catalyst** and signals that sell-side estimates are still moving up. *Bank of America hikes Nvidia stock price target to $1,500 from $1,350* `news 2024-06-03, Yahoo Finance`
- The new chip generation extends the product lead and commits the company to an annual release cadence, which supports demand visibility for data-center customers. *Nvidia Corp (NASDAQ:NVDA) is ramping up the competition with Advanced Micro Devices (AMD) and Intel (INTC)* `news 2024-06-03, Schaeffers Research`
- Competition is heating up as AMD launches its own accelerator, but the headlines frame it as a two-horse race in which the leader keeps its share for now. *Nvidia and AMD announce next generation AI chips as competition heats up* `news 2024-06-03`
- Coverage focuses on record highs and market-cap leadership, which keeps investor attention and flows concentrated on the stock in the short term. *As Nvidia stock takes aim at another record high and market-cap dominance* `news 2024-06-03, Investors Business Daily`
</news>
<macro>
### Macro backdrop
- Long yields remain high, a headwind for richly valued growth stocks, although they have not risen further over the past month of data in the context. *10-year Treasury yield (%): 4.51* `macro, FRED DGS10`
- Inflation is easing only slowly, so the central bank is unlikely to cut rates soon and policy will stay restrictive over the holding period. *Inflation has eased over the past year but remains elevated* `macro, FOMC statement 2024-05-01`
- Volatility expectations are low, which usually accompanies steady equity markets and favours staying invested in trend leaders over a one-week horizon. *VIX: 12.92 (as of 2024-05-31)* `macro, VIX`
- The labour market is still solid, reducing the near-term risk of a recession that would hit corporate spending on data-center equipment. *Unemployment rate (%): 3.90* `macro, FRED UNRATE`
</macro>
<risk_assessment>
### Risks
- After a gain of more than a quarter in three weeks the stock is **stretched**, so a sharp one-week pullback on profit taking is the main risk to a long position. *15-day change +27.95%* `market data`
- Rival accelerators could pressure pricing over time, although the effect is unlikely to show up within a one-week holding period. *AMD's MI325X accelerator* `news 2024-06-03`
- Restrictive policy rates raise the discount rate applied to long-dated growth, and any hawkish surprise would hit the most richly valued names first. *Effective fed funds rate (%): 5.33* `macro, FRED DFF`
- No insider or analyst sentiment data is available today, so one usual cross-check on positioning is missing from this assessment. *No insider and analyst sentiment data is available for NVDA* `sentiment`
</risk_assessment>
<conclusion>
### Conclusion
- Fundamentals, guidance and news flow all point upward, and the product announcement gives a **near-term catalyst** within the holding period. *Bank of America hikes Nvidia stock price target* `news 2024-06-03`
- The rally is extended, so the position should be a buy rather than a strong buy, sized for a possible pullback after such a fast three-week move. *5-day change +8.01%* `market data`
- Macro conditions are a headwind already priced into the multiple and unlikely to change within a week, given stable yields and low volatility expectations. *VIX: 12.92 (as of 2024-05-31)* `macro, VIX`
- On balance the evidence favours a moderately bullish one-week view, with the earnings beat as the strongest single piece of support for the call. *EPS 6.00 vs estimate 5.20* `fundamentals, earnings`
</conclusion>

[[[BUY]]]
"""

KEYS = (*(term.name for term in TERMS), "total", "decision_action", "label", "n_claims", "n_quotes", "n_fabricated")


def main() -> None:
    # A scoring demo on one held-out day, not training: the window takes that day and lifts the held-out guard.
    env = gym.make("tr1/Thesis-v0", tickers=["NVDA"], start="2024-01-01", end="2024-06-30", heldout=None)
    options = {"ticker": "NVDA", "date": "2024-06-03", "modalities": MODALITIES}
    fabricated = THESIS.replace("*VIX: 12.92 (as of 2024-05-31)*", "*VIX fell to a record low of 9.1*", 1)
    for name, completion in (("handwritten thesis", THESIS), ("one fabricated quote", fabricated)):
        prompt, info = env.reset(seed=0, options=options)
        _, reward, terminated, _, info = env.step(completion)
        print(f"{name}: reward {reward:+.3f} (prompt {len(prompt):,} chars, terminated={terminated})")
        for key in KEYS:
            value = info[key]
            print(f"  {key:<16} {value:.3f}" if isinstance(value, float) else f"  {key:<16} {value}")


if __name__ == "__main__":
    main()
