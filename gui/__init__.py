"""Sensiscope's desktop application (PySide6 + pyqtgraph). Talks to the engine, never the reverse."""
