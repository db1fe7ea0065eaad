"""The notification area: every error once, in the GUI's own words, instead of a dialog per failure.

The engine writes its messages for both front-ends and sometimes names a command-line flag; the
GUI shows them through :func:`gui_words`, which puts the flag's counterpart in the window instead.
A message that repeats the last one only raises its count.
"""

from __future__ import annotations

import re
import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

# Command-line wording -> what the window offers instead (first match wins; order matters).
CLI_WORDS = (
    (r"e\.g\. --model (\S+) --weights (\S+)", r"e.g. choose \1 under Model and open \2 with Open file..."),
    (r"\bpass --trust \(GUI: confirm the warning\)", "confirm the warning"),
    (r"\bpass --allow-download\b", "download it with the command line (main.py --allow-download)"),
    (r"`?main\.py info --model \.\.\.`? lists the layers", "the Model panel's layer tree lists the layers"),
    (r"`?main\.py info`? lists (them|the names)", "the Model list shows the names"),
    (r"name a layer with --layer", "choose a layer in the Model panel's layer tree"),
    (r"choose --missing drop or --missing impute", "choose to drop or impute missing values"),
    (r"\bwith --weights\b", "with Open file..."),
    (r"--weights cannot be combined with", "a separate weights file cannot be combined with"),
    (r"--weights goes with an architecture name", "a weights file goes with an architecture chosen under Model"),
    (r"\bor --weights\b", "or a weights file"),
    (r"\(choose another name, or pass --overwrite\)", "(choose another name or folder)"),
    # A model class of the user's code (Open Python class...) and its constructor arguments.
    (r"give it, e\.g\. --model-args '([^']*)'", r"give it under Arguments in Open Python class..., e.g. \1"),
    (r"with --model-args '\{\"name\": value\}' or in the sidecar's model_args", "under Arguments in Open Python class... or in the sidecar's model_args"),
    (r"constructor arguments \(--model-args\) go with a model class, e\.g\. --model net\.py:Net", "constructor arguments go with a model class (Open Python class...)"),
    (r"give --resize/--crop/--mean/--std or a sidecar JSON \(info --write-sidecar\)", "state its preprocessing in a sidecar JSON beside the weights (main.py info --write-sidecar writes one to edit)"),
    (r"set --resize and --crop to the size it was trained on", "state the size it was trained on in a sidecar JSON beside the weights"),
)
# An exception that is not a UserError is a bug; its own text means nothing to the user.
BUG_TEXT = re.compile(r"^(?!UserError)[A-Z][A-Za-z]*(Error|Exception): ")


def gui_words(message: str) -> str:
    """A message with command-line flags put in the window's terms, and no internal exception text."""
    for pattern, replacement in CLI_WORDS:
        message = re.sub(pattern, replacement, message)
    if BUG_TEXT.match(message):
        kind = message.split(":", 1)[0]
        return f"an internal error ({kind}); the log has the details. Please report it."
    return message


class MessagesPanel(QWidget):
    """A list of messages, newest first, each once (a repeat counts up)."""

    message_added = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        self.count_label = QLabel("No messages")
        self.count_label.setObjectName("hint")
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        top = QHBoxLayout()
        top.addWidget(self.count_label, 1)
        top.addWidget(clear)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.list, 1)
        self.entries: list[list] = []  # [title, message, count], newest first

    def add(self, title: str, message: str) -> bool:
        """Add a message; False when it repeats the newest one (only its count rises)."""
        if self.entries and self.entries[0][:2] == [title, message]:
            self.entries[0][2] += 1
            self.list.item(0).setText(self._text(*self.entries[0]))
            return False
        self.entries.insert(0, [title, message, 1])
        item = QListWidgetItem(self._text(title, message, 1))
        item.setToolTip(message)
        item.setData(Qt.ItemDataRole.UserRole, time.time())
        self.list.insertItem(0, item)
        self.count_label.setText(f"{len(self.entries)} message(s)")
        self.message_added.emit(title, message)
        return True

    @staticmethod
    def _text(title: str, message: str, count: int) -> str:
        return f"{time.strftime('%H:%M:%S')}  {title}: {message}" + (f"  (x{count})" if count > 1 else "")

    def clear(self) -> None:
        self.entries.clear()
        self.list.clear()
        self.count_label.setText("No messages")
