"""Data-set runs: every (image, method) pair explained and scored into a result store (Parquet
records, Zarr maps, a JSON manifest), resumable, on the local backend or on Ray."""
