"""A multi-frame DICOM file in the data panel: one thumbnail per frame, each named for its frame, and
each a distinct input for the document (so the maps of frame 1 are never taken for frame 0's)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt

from engine.io.images import scan_inputs
from gui.jobs import JobManager
from gui.panels.dataset_panel import ThumbnailModel
from tests.engine.test_dicom import write_dicom


def test_each_frame_of_a_cine_loop_is_its_own_named_input(qtbot, tmp_path):
    frames = (np.arange(3 * 16 * 16).reshape(3, 16, 16) % 251).astype(np.uint8)
    write_dicom(tmp_path / "cine.dcm", frames, frames=3, WindowCenter=100, WindowWidth=80, PixelSpacing=[0.2, 0.3])
    scan = scan_inputs(tmp_path)
    assert [item.frame for item in scan.items] == [0, 1, 2]
    model = ThumbnailModel(JobManager())
    model.set_items(scan.items)
    captions = [model.data(model.index(row), Qt.ItemDataRole.DisplayRole) for row in range(3)]
    assert captions == ["cine#000", "cine#001", "cine#002"]
    assert len({item.source for item in scan.items}) == 3
    tooltip = model.data(model.index(2), Qt.ItemDataRole.ToolTipRole)
    lines = tooltip.splitlines()
    assert lines[0] == scan.items[2].name
    assert "DICOM frame 3 of 3" in lines
    assert "window/level: width 80, centre 100 (linear)" in lines
    assert "pixel spacing: 0.2 x 0.3 mm" in lines
