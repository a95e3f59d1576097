"""Build a TR1 store from the raw vendor files (reproducibly: same inputs, same Parquet bytes)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from tr1_env.data import importers
from tr1_env.data.clock import decision_time
from tr1_env.data.schema import SCHEMA, TABLES


@dataclass
class BuildConfig:
    raw: str = field(metadata={"help": "folder of raw vendor files (the layout of tests/data/raw_mini)"})
    out: str = field(metadata={"help": "output store folder (one Parquet file per table)"})
    until: str | None = field(default=None, metadata={
        "help": "drop every row not available by this day's 16:00 ET close (YYYY-MM-DD)"})
    prices_since: str = field(default="2015-01-01", metadata={
        "help": "first day of prices, macro and other numeric tables"})
    news_since: str = field(default="2023-01-01", metadata={
        "help": "first day of news and FOMC texts (the bulky tables)"})
    force: bool = field(default=False, metadata={
        "help": "write into --out even when it is a non-empty folder that is not a store (its files may be replaced)"})


def is_store(folder: Path) -> bool:
    """A folder this builder wrote: its manifest.json names the store's tables."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("tables"), dict) and "rows" in manifest


def check_out(out: Path, force: bool) -> None:
    """Refuse to write a store over someone's folder: a file, or a non-empty folder that is not a store."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_store(out) and not force:
        raise ValueError(f"--out {out} is a non-empty folder that is not a tr1 store (no store manifest.json); "
                              "choose an empty or new folder, or pass --force to write into it anyway")


def _cut(df: pd.DataFrame, col: str, since: str) -> pd.DataFrame:
    return df[df[col] >= pd.Timestamp(since, tz="UTC" if getattr(df[col].dtype, "tz", None) else None)]


def import_all(raw: Path, prices_since: str, news_since: str) -> dict[str, pd.DataFrame]:
    """Every table of the schema, by its importer, cut to the configured history."""
    if not raw.is_dir():
        raise FileNotFoundError(f"raw data folder {raw} does not exist")
    tables: dict[str, pd.DataFrame] = {}
    for names, importer in importers.IMPORTERS.items():
        out = importer(raw, tables)
        tables.update(zip(names, out if isinstance(out, tuple) else (out,)))
    since = {"prices": prices_since, "news": news_since}
    return {name: tables[name] if table.cut is None else _cut(tables[name], table.cut, since[table.since])
            for name, table in SCHEMA.items()}


def build_store(cfg: BuildConfig) -> dict[str, int]:
    """Write the store and its manifest; returns rows per table."""
    check_out(Path(cfg.out), cfg.force)
    tables = import_all(Path(cfg.raw), cfg.prices_since, cfg.news_since)
    if cfg.until:
        limit = decision_time(cfg.until)
        tables = {name: df[df["available_at"] <= limit] for name, df in tables.items()}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = write_tables(out, tables)
    sums = Path(cfg.raw) / "SHA256SUMS"
    manifest = {
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("raw", "out", "force")},
        "rows": counts,
        "tables": TABLES,
        "raw_sha256sums": hashlib.sha256(sums.read_bytes()).hexdigest() if sums.exists() else None,
        "notes": ["FRED values are the latest vintage (revisions applied); lagged by release delay only.",
                  "Fundamentals are latest-restated vendor numbers, stamped at filing or period end + lag."],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return counts


def write_tables(folder: Path, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    """One zstd Parquet file per schema table, in schema order; returns rows per table."""
    counts = {}
    for name in TABLES:
        df = tables[name].reset_index(drop=True)
        df.to_parquet(folder / f"{name}.parquet", index=False, compression="zstd")
        counts[name] = len(df)
    return counts


def _written(store: Path) -> set[str]:
    """The files a store's manifest says this package wrote there (its tables, the manifest, a universe file)."""
    manifest = json.loads((store / "manifest.json").read_text()) if is_store(store) else {}
    return {"manifest.json", *(f"{t}.parquet" for t in TABLES), *([manifest["universe"]] if "universe" in manifest
                                                                   else [])}


def publish_store(out: Path, tables: dict[str, pd.DataFrame], manifest: dict,
                  extra: dict[str, Path] | None = None) -> dict[str, int]:
    """Write a whole store at once: into a hidden sibling folder, then renamed onto ``out``, so a failure or a kill
    leaves the previous ``out`` (or none), never half a store. ``out`` may be new, an empty folder or a store (the
    old store is replaced); anything else is refused untouched. ``manifest`` gets ``rows`` and ``tables``; ``extra``
    names files copied in beside the tables (a universe file)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not is_store(out))):
        raise ValueError(f"--out {out} is a file or a non-empty folder that is not a tr1 store; "
                         "choose a new or empty folder (nothing was written)")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _written(out)) if out.is_dir() else []
    if foreign:  # replacing the store would delete them: a store holds only what this function writes
        raise ValueError(f"--out {out} is a tr1 store that also holds {foreign[0]!r}, which tr1 did not write; move "
                         "it out or choose another folder (nothing was written)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    try:
        tmp.mkdir()
        counts = write_tables(tmp, tables)
        for name, source in (extra or {}).items():
            shutil.copyfile(source, tmp / name)
        (tmp / "manifest.json").write_text(json.dumps({**manifest, "rows": counts, "tables": TABLES}, indent=2,
                                                      default=str) + "\n")
        replacing = out.is_dir() and any(out.iterdir())
        if replacing:
            os.rename(out, old)  # a store this package wrote: set aside, dropped once the new one is in place
        try:
            os.rename(tmp, out)  # onto a new name or an empty folder: atomic
        except OSError:
            if replacing:
                os.rename(old, out)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return counts


def empty_table(name: str) -> pd.DataFrame:
    """Table ``name`` with no rows and the embedded store's columns and types: what a store without that source
    holds, so every reader finds the columns it expects."""
    import pyarrow.parquet as pq

    from tr1_env.data.store import DEFAULT_STORE

    return pq.read_schema(DEFAULT_STORE / f"{name}.parquet").empty_table().to_pandas()
