"""Data for the front-ends: images (DICOM too), folders, tables, preprocessing, the demo data."""

from __future__ import annotations

from engine.app._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "demo_data_dir": "engine.demo.catalogue",
    "demo_name": "engine.demo.catalogue",
    "resolve_image_data": "engine.demo.catalogue",
    "resolve_table": "engine.demo.catalogue",
    "PHANTOM_CLASSES": "engine.demo.phantom:CLASSES",
    "PHANTOM_MAX_SIZE": "engine.demo.phantom:MAX_SIZE",
    "PHANTOM_MIN_SIZE": "engine.demo.phantom:MIN_SIZE",
    "write_imagefolder": "engine.demo.phantom",
    "InputItem": "engine.io.images",
    "load_input": "engine.io.images",
    "channel_note": "engine.io.images",
    "pick_in_turn": "engine.io.images",
    "read_image": "engine.io.images",
    "read_tensor": "engine.io.images",
    "scan_inputs": "engine.io.images",
    "Preprocess": "engine.io.preprocess",
    "display_from_tensor": "engine.io.preprocess",
    "save_figure": "engine.io.render",
    "save_overlay": "engine.io.render",
    "load_table": "engine.io.tables",
    "mask_for": "engine.metrics.study",
})
