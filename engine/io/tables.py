"""Tables for the tabular workflow (CSV or Parquet): column types, a target column and missing values."""

from __future__ import annotations

import csv
import io
import itertools
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine.core.errors import UserError
from engine.core.files import regular_file
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.core.vocab import MAX_TABLE_COLUMNS

MISSING_MARKERS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?", "-"]
DELIMITERS = ",;\t"
# utf-8-sig: spreadsheet programs often start a UTF-8 CSV with a byte-order mark.
ENCODING = "utf-8-sig"
# A Parquet file starts (and ends) with these bytes, whatever it is called.
PARQUET_MAGIC = b"PAR1"
PARQUET_SUFFIXES = (".parquet", ".pq")
# The header line is read up to this many bytes to count the columns before the body is parsed.
HEADER_PROBE_BYTES = 16 * 2**20


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


def _too_wide(path: Path, columns: int) -> UserError:
    return UserError(
        f"{path}: has {columns:,} columns, more than the {MAX_TABLE_COLUMNS:,} Sensiscope reads from a table; "
        "keep the columns you mean to analyse (e.g. with pandas or a spreadsheet) and open that table"
    )


def _check_header_width(path: Path) -> None:
    """Refuse a CSV whose header has more than MAX_TABLE_COLUMNS fields, from its first line only:
    parsing the body of a table that wide takes minutes."""
    with path.open("rb") as handle:
        line = handle.readline(HEADER_PROBE_BYTES)
    lines = line.decode(ENCODING, errors="replace").splitlines()  # a file ending its lines with a lone \r is one "line" here
    text = lines[0] if lines else ""
    widest = 0
    for delimiter in DELIMITERS:
        try:
            widest = max(widest, len(next(csv.reader([text], delimiter=delimiter), [])))
        except csv.Error:  # a NUL byte: reported by the parser with the file's other problems
            widest = max(widest, text.count(delimiter) + 1)
    if widest > MAX_TABLE_COLUMNS:
        raise _too_wide(path, widest)


class _ReadProgress:
    """A binary file for pandas that reports the share of bytes read and honours a cancel token,
    so reading a large table shows progress and can be stopped."""

    def __init__(self, handle, total: int, progress: ProgressFn, cancel: CancelToken) -> None:
        self.handle, self.total, self.progress, self.cancel = handle, max(total, 1), progress, cancel
        self.done = 0

    def read(self, size: int = -1) -> bytes:
        self.cancel.check()
        data = self.handle.read(size)
        self.done += len(data)
        self.progress(min(self.done / self.total, 1.0), "reading the table")
        return data

    def __iter__(self):
        return iter(self.handle)


def _read_csv(path: Path, progress: ProgressFn, cancel: CancelToken) -> tuple[pd.DataFrame, list[str]]:
    """The frame and the raw header names of a comma, semicolon or tab separated table."""
    try:
        _check_header_width(path)
        sep, header = _sniff(path)
        # index_col=False: otherwise pandas silently makes the first column the index when the rows have
        # more fields than the header (a trailing delimiter); extra non-empty fields warn, made an error here.
        with warnings.catch_warnings(), path.open("rb") as handle:
            warnings.simplefilter("error", pd.errors.ParserWarning)
            source = _ReadProgress(handle, path.stat().st_size, progress, cancel)
            frame = pd.read_csv(source, sep=sep, encoding=ENCODING, na_values=MISSING_MARKERS, keep_default_na=True, skipinitialspace=True, index_col=False)
    except pd.errors.ParserWarning:
        raise UserError(f"{path}: some rows have more fields than the header") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file (cannot decode it as UTF-8); Sensiscope reads CSV and Parquet tables") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    except MemoryError:
        raise UserError(f"{path}: too large to read into memory") from None
    return frame, header


def is_parquet(path: str | Path) -> bool:
    """A Parquet file by its first bytes (whatever its name) or, when it cannot be read, its suffix."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return handle.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC
    except OSError:
        return path.suffix.lower() in PARQUET_SUFFIXES


def _parquet_columns(path: Path, schema) -> dict[str, object]:
    """How each Arrow column becomes a pandas one, as a CSV's would: numbers stay numbers
    (decimals become floats), dates and times become text, a column of nulls is an empty numeric
    one; binary and nested (list, struct, map) columns are refused, naming them."""
    import pyarrow as pa

    casts, refused = {}, []
    for column in schema:
        kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind) or pa.types.is_nested(kind):
            refused.append(f"{column.name} ({kind})")
        elif pa.types.is_decimal(kind) or pa.types.is_null(kind) or pa.types.is_float16(kind):
            casts[column.name] = pa.float64()
        elif pa.types.is_temporal(kind) or pa.types.is_dictionary(column.type):
            casts[column.name] = pa.string() if pa.types.is_temporal(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind) else kind
    if refused:
        raise UserError(f"{path}: column(s) {', '.join(refused[:5])}{' ...' if len(refused) > 5 else ''} hold binary or nested values, not numbers or categories; drop them and save the table again")
    return casts


def _text_to_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as a CSV reader sees them: the missing-value markers are missing, and a column
    whose every present value is a number is numeric."""
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        stripped = series.astype("string").str.strip()
        present = stripped.where(~stripped.isin(MISSING_MARKERS))
        numbers = pd.to_numeric(present, errors="coerce")
        if present.notna().any() and numbers.notna().sum() == present.notna().sum():
            frame[name] = numbers.astype(np.float64)
        else:
            frame[name] = series.where(present.notna())
    return frame


def _read_parquet(path: Path, progress: ProgressFn, cancel: CancelToken) -> tuple[pd.DataFrame, list[str]]:
    """The frame and the column names of a Parquet file, read one row group at a time."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        names = [str(name) for name in schema.names if not str(name).startswith("__index_level_")]
        if len(names) > MAX_TABLE_COLUMNS:
            raise _too_wide(path, len(names))
        _check_unique(path, names)
        casts = _parquet_columns(path, schema)
        groups = parquet.num_row_groups
        parts = []
        for index in range(groups):
            cancel.check()
            parts.append(parquet.read_row_group(index))
            progress((index + 1) / groups, "reading the table")
        table = pa.concat_tables(parts) if parts else parquet.read()
        for name, kind in casts.items():
            position = table.schema.get_field_index(name)
            table = table.set_column(position, name, pc.cast(table.column(position), kind))
        frame = table.to_pandas()
    except UserError:
        raise
    except MemoryError:
        raise UserError(f"{path}: too large to read into memory") from None
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        text = str(exc).strip().splitlines()
        raise UserError(f"{path}: not a readable Parquet table ({text[0] if text else type(exc).__name__})") from None
    # A pandas index saved with the table: a named one is a column (as a CSV would have it), the row numbers are not.
    frame = frame.reset_index(drop=all(name is None for name in frame.index.names))
    return _text_to_numbers(frame), [str(c) for c in frame.columns]


def _check_unique(path: Path, names: list[str], empty: bool = False) -> None:
    counts = Counter(names)
    duplicated = sorted(name for name, count in counts.items() if name and count > 1)
    if duplicated or empty or "" in counts:
        raise UserError(f"{path}: every column needs a unique name in the header ({', '.join(duplicated) or 'an empty header cell'})")


def load_table(path: str | Path, target: str | None = None, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Table:
    """Read a CSV (comma, semicolon or tab separated) or a Parquet file and describe its columns.

    Numeric columns are those whose every present value parses as a number; the rest are
    categorical. Missing values are counted per column and reported, not silently dropped. A table
    with more than MAX_TABLE_COLUMNS columns is refused from its header; ``progress`` hears the
    share read, and ``cancel`` stops the reading.
    """
    progress, cancel = resolve(progress, cancel)
    path = regular_file(path, "table")
    frame, header = _read_parquet(path, progress, cancel) if is_parquet(path) else _read_csv(path, progress, cancel)
    if frame.shape[1] < 2 or frame.empty:
        raise UserError(f"{path}: a table needs a header, at least two columns and one row (found {frame.shape[1]} column(s), {len(frame)} row(s))")
    if frame.shape[1] > MAX_TABLE_COLUMNS:  # a header split oddly by the probe: the parsed table decides
        raise _too_wide(path, frame.shape[1])
    frame.columns = [str(c).strip() for c in frame.columns]
    # pandas renames a repeated header name 'a' to 'a.1', so duplicates are looked for in the raw header.
    _check_unique(path, [name.strip() for name in header], empty=any(c.startswith("Unnamed:") or not c for c in frame.columns))
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
