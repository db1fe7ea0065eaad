"""Text that fits its room: a label whose lines end in an ellipsis when too wide, and a combo box
that elides its current text; both keep the full text in their tooltip."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QFont, QFontMetrics
from PySide6.QtWidgets import QComboBox, QLabel, QSizePolicy, QStyle, QStyleOptionComboBox, QStylePainter, QWidget

SMALL = 0.85  # the size of a "small" line relative to the label's font


class Run:
    """A piece of a line with its look: bold, a colour, and whether it is kept whole when the line is cut."""

    def __init__(self, text: str, bold: bool = False, colour: str = "", keep: bool = False) -> None:
        self.text, self.bold, self.colour, self.keep = text, bold, colour, keep

    def html(self, text: str) -> str:
        style = ("font-weight:bold;" if self.bold else "") + (f"color:{self.colour};" if self.colour else "")
        return f"<span style='{style}'>{escape(text)}</span>" if style else escape(text)


def elide(text: str, font: QFont, width: int, mode: Qt.TextElideMode = Qt.TextElideMode.ElideRight) -> str:
    """``text`` cut with an ellipsis to ``width`` pixels in ``font`` (unchanged when it fits)."""
    return QFontMetrics(font).elidedText(text, mode, max(0, int(width)))


class ElidedLabel(QLabel):
    """One or more lines, each cut to the label's width with an ellipsis; :meth:`text` and the tooltip
    give the full text. Lines are plain text (:meth:`setText`) or runs with a look (:meth:`set_lines`);
    a run marked ``keep`` (a warning) stays whole while the others around it are cut."""

    def __init__(self, text: str = "", parent: QWidget | None = None, mode: Qt.TextElideMode = Qt.TextElideMode.ElideRight) -> None:
        super().__init__(parent)
        self.mode = mode
        self.lines: list[tuple[list[Run], bool]] = []  # (runs, small)
        self.tip = ""  # the caller's tooltip, shown under the full text when the text is cut
        self.elided = False
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setWordWrap(False)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setText(text)

    # ------------------------------------------------------------ content
    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        self.set_lines([([Run(line)], False) for line in str(text).split("\n")] if text else [])

    def set_lines(self, lines: list[tuple[list[Run], bool]]) -> None:
        self.lines = [(list(runs), bool(small)) for runs, small in lines]
        self._refresh()

    def text(self) -> str:
        """The full text, never the cut one."""
        return "\n".join("".join(run.text for run in runs) for runs, _ in self.lines)

    def setToolTip(self, tip: str) -> None:  # noqa: N802 - Qt's name
        self.tip = tip
        self._update_tip()

    def displayed_lines(self) -> list[str]:
        """The lines as drawn now (cut to the width), in plain text."""
        return [plain for plain, _ in self._fitted()]

    # ------------------------------------------------------------ drawing
    def _font(self, run: Run, small: bool) -> QFont:
        font = QFont(self.font())
        font.setBold(run.bold)
        if small and font.pointSizeF() > 0:
            font.setPointSizeF(font.pointSizeF() * SMALL)
        return font

    def _fitted(self) -> list[tuple[str, str]]:
        """Per line (plain text, HTML) cut to the room there is."""
        room = max(0, self.contentsRect().width() - 2 * self.margin() - 4)
        out = []
        for runs, small in self.lines:
            widths = [QFontMetrics(self._font(run, small)).horizontalAdvance(run.text) for run in runs]
            budget = room - sum(w for run, w in zip(runs, widths, strict=True) if run.keep)
            texts = []
            for run, width in zip(runs, widths, strict=True):
                if run.keep or sum(widths) <= room:
                    texts.append(run.text)
                elif budget > 0:
                    cut = run.text if width <= budget else elide(run.text, self._font(run, small), budget, self.mode)
                    budget -= width
                    texts.append(cut)
                else:
                    texts.append("")
            body = "".join(run.html(text) for run, text in zip(runs, texts, strict=True) if text)
            if small:
                size = self.font().pointSizeF() * SMALL
                body = f"<span style='font-size:{size:.1f}pt'>{body}</span>"
            out.append(("".join(texts), body))
        return out

    def _refresh(self) -> None:
        fitted = self._fitted()
        full = [("".join(run.text for run in runs)) for runs, _ in self.lines]
        self.elided = [plain for plain, _ in fitted] != full
        super().setText("<br>".join(body for _, body in fitted))
        self._update_tip()

    def _update_tip(self) -> None:
        full = self.text()
        if self.elided and full not in self.tip:
            super().setToolTip(full + (f"\n\n{self.tip}" if self.tip else ""))
        else:
            super().setToolTip(self.tip)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._refresh()

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().changeEvent(event)
        if event.type() == event.Type.FontChange:
            self._refresh()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self.fontMetrics().horizontalAdvance("M…") + 8, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        widths = [sum(QFontMetrics(self._font(run, small)).horizontalAdvance(run.text) for run in runs) for runs, small in self.lines]
        return QSize(max(widths, default=0) + 2 * self.margin() + 8, super().sizeHint().height())


class ElidedComboBox(QComboBox):
    """A combo box that cuts its current text with an ellipsis when narrow, the full text as its tooltip."""

    def __init__(self, parent: QWidget | None = None, mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle) -> None:
        super().__init__(parent)
        self.mode = mode
        self.tip = ""
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)
        self.currentIndexChanged.connect(lambda _index: self._update_tip())
        for signal in (self.model().rowsInserted, self.model().rowsRemoved, self.model().modelReset, self.model().dataChanged):
            signal.connect(lambda *_args: self._update_tip())  # heard even while the box blocks its own signals

    def setToolTip(self, tip: str) -> None:  # noqa: N802 - Qt's name
        self.tip = tip
        self._update_tip()

    def _update_tip(self) -> None:
        tip = "\n\n".join(part for part in (self.currentText(), self.tip) if part)
        if tip != super().toolTip():
            super().setToolTip(tip)

    def _label_option(self) -> tuple[QStyleOptionComboBox, int]:
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        rect = self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option, QStyle.SubControl.SC_ComboBoxEditField, self)
        return option, rect.width()

    def displayed_text(self) -> str:
        """The current text as drawn now."""
        option, width = self._label_option()
        return elide(option.currentText, self.font(), width - 2, self.mode)

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt's name
        painter = QStylePainter(self)
        self._update_tip()  # the current item may have changed while signals were blocked
        option, _width = self._label_option()
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        option.currentText = self.displayed_text()
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)
