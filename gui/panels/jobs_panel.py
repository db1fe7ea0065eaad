"""Jobs dock: running and finished jobs with progress, elapsed time, the time left and a cancel button."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QProgressBar, QPushButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from ..jobs import Job, JobManager

KEEP_FINISHED = 200
STATE_TEXT = {"queued": "queued", "running": "running", "finished": "done", "failed": "failed", "cancelled": "cancelled"}


def time_text(job) -> str:
    """Elapsed seconds, and for a running job past its first seconds an estimate of the time left
    (elapsed x (1 - f) / f at progress f: the rate so far, assumed to hold)."""
    elapsed = job.elapsed()
    text = f"{elapsed:.1f} s"
    fraction = job.fraction
    if job.state == "running" and elapsed >= 2.0 and 0.02 <= fraction < 1.0:
        left = elapsed * (1.0 - fraction) / fraction
        text += f", ~{left:.0f} s left" if left < 120 else f", ~{left / 60:.0f} min left"
    return text


class JobsPanel(QWidget):
    def __init__(self, jobs: JobManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.rows: dict[int, tuple[Job, QTreeWidgetItem, QProgressBar]] = {}
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Job", "Lane", "State", "Progress", "Time", "Message"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a file name keeps its start and its end
        self.tree.setColumnWidth(0, 260)
        self.tree.setColumnWidth(1, 60)
        self.tree.setColumnWidth(2, 80)
        self.tree.setColumnWidth(3, 140)
        self.tree.setColumnWidth(4, 130)
        self.show_small = QCheckBox("show thumbnail jobs")
        self.cancel_button = QPushButton("Cancel selected")
        self.cancel_button.clicked.connect(self.cancel_selected)
        self.cancel_all_button = QPushButton("Cancel all")
        self.cancel_all_button.clicked.connect(lambda: jobs.cancel_all())
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.clicked.connect(self.clear_finished)
        buttons = QHBoxLayout()
        buttons.addWidget(self.show_small)
        buttons.addStretch(1)
        buttons.addWidget(self.clear_button)
        buttons.addWidget(self.cancel_all_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        jobs.job_added.connect(self._added)
        jobs.job_changed.connect(self._update)
        jobs.job_ended.connect(self._update)
        self.timer = QTimer(self)
        self.timer.setInterval(500)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _added(self, job: Job) -> None:
        if job.quiet and not self.show_small.isChecked():
            return
        item = QTreeWidgetItem([job.title, job.lane, STATE_TEXT[job.state], "", "", ""])
        item.setData(0, Qt.ItemDataRole.UserRole, job.id)
        item.setToolTip(0, job.title)  # the columns cut long texts with an ellipsis; the tooltip has them whole
        bar = QProgressBar()
        bar.setRange(0, 1000)
        bar.setMaximumHeight(16)
        self.tree.insertTopLevelItem(0, item)
        self.tree.setItemWidget(item, 3, bar)
        self.rows[job.id] = (job, item, bar)
        self._trim()

    def _update(self, job: Job) -> None:
        row = self.rows.get(job.id)
        if row is None:
            return
        _, item, bar = row
        item.setText(2, STATE_TEXT[job.state])
        bar.setValue(int(job.fraction * 1000))
        item.setText(4, time_text(job))
        text = job.error if job.state == "failed" else job.message
        item.setText(5, text)
        item.setToolTip(5, text)
        if job.state == "failed":
            item.setForeground(2, Qt.GlobalColor.red)

    def _tick(self) -> None:
        for job, item, _bar in self.rows.values():
            if job.state == "running":
                item.setText(4, time_text(job))

    def _trim(self) -> None:
        ended = [job_id for job_id, (job, _, _) in self.rows.items() if job.ended]
        for job_id in ended[: max(0, len(self.rows) - KEEP_FINISHED)]:
            self._remove(job_id)

    def _remove(self, job_id: int) -> None:
        _, item, _ = self.rows.pop(job_id)
        index = self.tree.indexOfTopLevelItem(item)
        if index >= 0:
            self.tree.takeTopLevelItem(index)

    def clear_finished(self) -> None:
        for job_id in [job_id for job_id, (job, _, _) in self.rows.items() if job.ended]:
            self._remove(job_id)

    def cancel_selected(self) -> None:
        for item in self.tree.selectedItems():
            row = self.rows.get(item.data(0, Qt.ItemDataRole.UserRole))
            if row is not None:
                self.jobs.cancel(row[0])
