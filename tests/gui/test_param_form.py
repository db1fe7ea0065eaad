"""The parameter form builds for every registered method and gives values the engine accepts."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

import engine
from engine.core.params import build_params
from gui.widgets.param_form import ParamForm

EDITORS = {bool: QCheckBox, int: QSpinBox, float: QDoubleSpinBox, str: QLineEdit}


def test_the_form_builds_for_every_method_and_round_trips_the_defaults(qtbot):
    form = ParamForm()
    qtbot.addWidget(form)
    for spec in engine.available_methods():
        form.set_specs(spec.params())
        params = spec.params()
        assert list(form.editors) == [p.name for p in params]
        for p in params:
            editor = form.editors[p.name]
            assert isinstance(editor, QComboBox if p.choices else EDITORS[p.type]), p.name
            assert editor.toolTip() == p.help
        built = build_params(spec.params_cls, form.values())
        assert built == spec.params_cls(), spec.name


def test_bounds_and_changed_values_reach_the_engine(qtbot):
    form = ParamForm()
    qtbot.addWidget(form)
    spec = engine.get_method("local")
    form.set_specs(spec.params())
    window = form.editors["window"]
    assert window.minimum() == 1
    form.set_value("window", 16)
    form.set_value("stride", 8)
    form.set_value("baseline", "blur")
    form.set_value("central", True)
    built = build_params(spec.params_cls, form.values())
    assert (built.window, built.stride, built.baseline, built.central) == (16, 8, "blur", True)
    pertmap = engine.get_method("pertmap")
    form.set_specs(pertmap.params())
    form.set_value("lr", 1e-9)
    assert build_params(pertmap.params_cls, form.values()).lr == 1e-9
