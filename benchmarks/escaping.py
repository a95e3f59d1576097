"""Text that a user, a plug-in or a server controls (agent labels, model names, error messages), made inert
in each format the reports are written in.

Labels are kept as given and escaped where a writer puts them, one function per format, so every table and
column is covered: HTML by jinja2's autoescape (:func:`html_environment`; :func:`html.escape` for the title
that quantstats' template takes raw), Markdown by :func:`md_cell`, CSV by :func:`csv_safe` (OWASP's rule: a
text cell that a spreadsheet would run as a formula gets a leading single quote), matplotlib legends by
:func:`plot_label`.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

__all__ = ["Markdown", "csv_cell", "csv_safe", "html_environment", "md_cell", "md_frame", "plot_label"]

#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_MD_SPECIAL = re.compile(r"([\\`|\[\]])")  # code spans, table cells, links and images
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(values: pd.Series | pd.Index) -> bool:
    """Whether ``values`` may hold text: object columns (mixed too) and pandas' string dtypes."""
    return values.dtype == object or pd.api.types.is_string_dtype(values.dtype)


class Markdown(str):
    """Markdown the reports wrote themselves (a bold best figure, a CI): :func:`md_cell` keeps it as is."""


def md_cell(text: object) -> str:
    """``text`` as one inert line of Markdown: line breaks become spaces (a row cannot end early), HTML is
    entity-escaped, backslashes, backticks, pipes and brackets are backslash-escaped, a leading ``#`` too."""
    if isinstance(text, Markdown):
        return text
    line = " ".join(str(text).splitlines())
    line = _MD_SPECIAL.sub(r"\\\1", html.escape(line, quote=False))
    return re.sub(r"^(\s*)#", r"\1\\#", line)


def md_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with :func:`md_cell` applied to every text cell, for writers that format rows themselves."""
    out = frame.copy()
    for column in [c for c in out.columns if _text(out[c])]:
        out[column] = out[column].map(lambda v: md_cell(v) if isinstance(v, str) else v)
    return out


def csv_cell(value: object) -> object:
    """A text cell that starts like a formula, prefixed with ``'`` (numbers, negative ones too, are left as
    they are: they are numbers, not formulas)."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with :func:`csv_cell` applied to every text cell of its columns and index; the same object when
    no cell needs it (so an ordinary table is written byte for byte as before)."""
    def fix(values: pd.Index | pd.Series):
        if not _text(values) or not any(csv_cell(v) is not v for v in values):
            return None
        return values.map(csv_cell)

    columns = {c: fixed for c in frame.columns if (fixed := fix(frame[c])) is not None}
    index = fix(frame.index)
    if not columns and index is None:
        return frame
    out = frame.copy()
    for column, values in columns.items():
        out[column] = values
    if index is not None:
        out.index = index
    return out


def html_environment(folder: Path):
    """A jinja2 environment over ``folder`` that escapes every value in every template, whatever its file name
    (``select_autoescape`` keys on the extension and leaves ``.html.j2`` unescaped)."""
    from jinja2 import Environment, FileSystemLoader

    return Environment(loader=FileSystemLoader(folder), autoescape=True)


def plot_label(text: object) -> str:
    """``text`` as a literal matplotlib legend entry: ``$`` escaped (mathtext would parse ``$\\x$`` and fail
    the whole figure), control characters as spaces (no font has a glyph for them), and a leading ``_``
    behind a space (matplotlib leaves such labels out of the legend)."""
    label = _CONTROL.sub(" ", str(text)).replace("$", r"\$")
    return " " + label if label.startswith("_") else label
