"""CSV tables for the tabular workflow: column types, a target column and missing values."""

from __future__ import annotations

import csv
import io
import itertools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.core.errors import UserError
from engine.core.files import regular_file

MISSING_MARKERS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?", "-"]
DELIMITERS = ",;\t"
# utf-8-sig: spreadsheet programs often start a UTF-8 CSV with a byte-order mark.
ENCODING = "utf-8-sig"


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    kind: str  # "numeric" or "categorical"
    missing: int
    categories: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None


@dataclass
class Table:
    path: Path
    frame: pd.DataFrame
    columns: list[ColumnInfo]
    target: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return len(self.frame)

    @property
    def features(self) -> list[str]:
        return [c.name for c in self.columns if c.name != self.target]

    def column(self, name: str) -> ColumnInfo:
        for info in self.columns:
            if info.name == name:
                return info
        raise UserError(f"no column '{name}'; the table has: {', '.join(c.name for c in self.columns)}")

    @property
    def missing_counts(self) -> dict[str, int]:
        return {c.name: c.missing for c in self.columns if c.missing}


def _describe(name: str, series: pd.Series) -> ColumnInfo:
    missing = int(series.isna().sum())
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        categories = tuple(sorted(str(v) for v in series.dropna().unique()))
        return ColumnInfo(name, "categorical", missing, categories)
    values = series.dropna().to_numpy(dtype=np.float64)
    if not values.size:
        return ColumnInfo(name, "numeric", missing)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and 1e308 are reported when the column is used, not here
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        return ColumnInfo(name, "numeric", missing, (), float(values.min()), float(values.max()), float(values.mean()), std)


def _sniff(path: Path) -> tuple[str, list[str]]:
    """The delimiter (comma, semicolon or tab; comma if none fits) and the stripped header names."""
    with path.open(encoding=ENCODING, newline="") as handle:
        sample = "".join(itertools.islice(handle, 50))
    try:
        sep = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        sep = ","
    try:
        header = next(csv.reader(io.StringIO(sample), delimiter=sep, skipinitialspace=True), [])
    except csv.Error as exc:  # a NUL byte or a lone carriage return inside a field
        raise UserError(f"{path}: not a readable CSV table ({exc})") from None
    return sep, [name.strip() for name in header]


_DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+$")


def _decimal_comma_columns(frame: pd.DataFrame) -> list[str]:
    """Text columns whose values are nearly all numbers with a decimal comma: read as categories
    with hundreds of levels otherwise, and the analysis would be nonsense."""
    found = []
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_numeric_dtype(series):
            continue
        present = series.dropna().astype(str).str.strip()
        if len(present) and present.str.match(_DECIMAL_COMMA).mean() >= 0.8:
            found.append(str(name))
    return found


def load_table(path: str | Path, target: str | None = None) -> Table:
    """Read a CSV (comma, semicolon or tab separated) and describe its columns.

    Numeric columns are those whose every present value parses as a number; the rest are
    categorical. Missing values are counted per column and reported, not silently dropped.
    """
    path = regular_file(path, "table")
    try:
        sep, header = _sniff(path)
        # index_col=False: otherwise pandas silently makes the first column the index when the rows have
        # more fields than the header (a trailing delimiter); extra non-empty fields warn, made an error here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, sep=sep, encoding=ENCODING, na_values=MISSING_MARKERS, keep_default_na=True, skipinitialspace=True, index_col=False)
    except pd.errors.ParserWarning:
        raise UserError(f"{path}: some rows have more fields than the header") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file (cannot decode it as UTF-8)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    if frame.shape[1] < 2 or frame.empty:
        raise UserError(f"{path}: a table needs a header, at least two columns and one row (found {frame.shape[1]} column(s), {len(frame)} row(s))")
    frame.columns = [str(c).strip() for c in frame.columns]
    # pandas renames a repeated header name 'a' to 'a.1', so duplicates are looked for in the raw header.
    duplicated = sorted({c for c in header if c and header.count(c) > 1})
    if duplicated or any(c.startswith("Unnamed:") for c in frame.columns):
        raise UserError(f"{path}: every column needs a unique name in the header ({', '.join(duplicated) or 'an empty header cell'})")
    decimal_commas = _decimal_comma_columns(frame)
    if decimal_commas:
        raise UserError(
            f"{path}: the column(s) {', '.join(decimal_commas)} hold numbers written with a decimal comma (such as 3,5); "
            "save the table with decimal points (or with ';' between fields and '.' for decimals) and open it again"
        )
    columns = [_describe(name, frame[name]) for name in frame.columns]
    table = Table(path=path, frame=frame, columns=columns)
    if target is not None:
        if target not in frame.columns:
            raise UserError(f"{path}: no target column '{target}'; the columns are: {', '.join(frame.columns)}")
        table.target = target
    for info in columns:
        if info.missing:
            table.warnings.append(f"column '{info.name}' has {info.missing} missing value(s) of {len(frame)}")
    return table
