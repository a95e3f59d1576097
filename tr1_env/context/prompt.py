"""The Trading-R1 instruction prompt: what a thesis must look like for the rewards to read it."""

from __future__ import annotations

SYSTEM_PROMPT = (
    "You are a disciplined equity analyst. You only use the market context you are given, "
    "you quote it verbatim, and you never invent facts."
)

# The ticker and date come after the fixed instructions, so every prompt of a run starts with the same
# ~300 tokens: local models encode that prefix once and reuse its key/value cache (tr1_agent.llm_agents).
INSTRUCTIONS = """Write an investment thesis on the stock named below, as of the close of the date named below, for a holding period of about one week.

Format (follow exactly):
- Organise the thesis into 5 to 7 XML-tagged sections chosen from: <fundamentals>, <balance_sheet>, <technical>, <news>, <valuation>, <risk_assessment>, <analyst_coverage>, <macro>; finish with a mandatory <conclusion> section. You may think first inside <think>...</think>.
- Each section starts with a markdown header (### ...), contains 4 to 7 bullet points, uses **bold** for key figures, and may include a small markdown table.
- Each bullet is one claim: 15 to 90 words of opinion, then a verbatim quote from the context in *italics*, then its source in `backticks` (for example `news {example_date}` or `market data`).
- Quote only text that appears in the context below. Invented quotes are penalised.
- End with exactly one decision on the last line, one of: [[[STRONG_SELL]]], [[[SELL]]], [[[HOLD]]], [[[BUY]]], [[[STRONG_BUY]]].

Stock: {ticker}
Date: {date}

Context:
{context}
"""


def render_prompt(ticker: str, date: str, context: str, example_date: str = "2024-06-10") -> str:
    """The user message: instructions followed by the ticker-day context (``example_date``: the date in the
    sample source, relative in anonymized prompts)."""
    return INSTRUCTIONS.format(ticker=ticker, date=date, context=context, example_date=example_date)
