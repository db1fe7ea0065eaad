"""pick_in_turn: the --n selection of batch and evaluate (and the GUI's batch run)."""

from types import SimpleNamespace

from engine.io.images import pick_in_turn


def test_classes_take_turns_and_a_short_class_runs_out():
    items = [SimpleNamespace(label=label, k=k) for label, count in (("a", 3), ("b", 1), ("c", 2)) for k in range(count)]
    picked = pick_in_turn(items, 5)
    assert [(i.label, i.k) for i in picked] == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("c", 1)]
    assert len(pick_in_turn(items, 100)) == 6 and pick_in_turn(items, 0) == []
