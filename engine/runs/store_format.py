"""The result store's file format: its names, its record schema and how a record file is read
(shared by engine.runs.store and the checker, engine.runs.store_check)."""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"
RECORDS = "records"
MAPS = "maps.zarr"
FORMAT = "sensiscope-store"
FORMAT_VERSION = 1
MAP_DTYPES = ("float32", "float16")
# stability: a stochastic method's own agreement between its runs (pertmap with repeats >= 2);
# stores written before it was kept read it as missing
METRIC_COLUMNS = ("pointing", "energy", "iou", "deletion_auc", "insertion_auc", "road_morf", "road_lerf", "stability", "time_s")


def _schema():
    import pyarrow as pa

    fields = [
        ("image_index", pa.int64()),
        ("image", pa.string()),
        ("label", pa.string()),
        ("method", pa.string()),
        ("target", pa.int64()),
        ("predicted", pa.string()),
        *[(name, pa.float64()) for name in METRIC_COLUMNS],
        ("deletion_curve", pa.list_(pa.float64())),
        ("insertion_curve", pa.list_(pa.float64())),
        # why a pair failed (an unreadable image, one the model cannot take); null when it did not
        ("error", pa.string()),
    ]
    return pa.schema(fields)


def _read_part(path: Path, schema):
    """A Parquet part read with the store's schema; parts written before a column existed read it as null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)
