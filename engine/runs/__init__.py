"""Data-set runs: many images times many methods, written to a result store as they finish and
resumable; the top layer of the engine (it uses methods, models, metrics)."""
