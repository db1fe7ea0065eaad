"""The document model (gui/document.py): Qt-free state whose results always belong to the request
they name; a stale job's result is dropped, a changed input or model never leaves an old map."""

from __future__ import annotations

from gui.document import CANCELLED, DONE, FAILED, PENDING, RUNNING, AnalysisRequest, Document, InputInfo, ModelInfo

DEMO = ModelInfo("demo:ultrasound", source="demo model demo:ultrasound (trained)")
RANDOM = ModelInfo("resnet18", source="resnet18, random initialisation (seed 0)", untrained=True)


def _document(events: list | None = None) -> Document:
    document = Document()
    if events is not None:
        document.subscribe(lambda event: events.append((event.kind, event.analysis.status if event.analysis else None)))
    document.set_model(DEMO)
    document.set_input(InputInfo("/data/a.png", "a.png"))
    return document


def _request(document: Document, method: str = "gradcam", **params) -> AnalysisRequest:
    return AnalysisRequest(method, dict(params), None, "predicted", document.input.name, {}, document.input.path, document.model)


def test_a_result_is_applied_only_to_the_analysis_it_was_started_for():
    events = []
    document = _document(events)
    analysis = document.add(_request(document))
    generation = document.start(analysis.id)
    assert analysis.status == RUNNING
    # The user picks another input while the job runs: the analysis is pending for it, with no map.
    changed = document.set_input(InputInfo("/data/b.png", "b.png"))
    assert changed == [analysis] and analysis.status == PENDING and analysis.result is None
    assert analysis.request.input_path == "/data/b.png" and analysis.request.input_name == "b.png"
    # The old job's result arrives late: dropped, nothing changes.
    assert not document.finish(analysis.id, generation, "map of a.png")
    assert analysis.result is None and analysis.status == PENDING
    assert not document.fail(analysis.id, generation, "late failure") and analysis.error == ""
    # The run for the new input lands.
    fresh = document.start(analysis.id)
    assert fresh == generation + 1
    assert document.finish(analysis.id, fresh, "map of b.png", target_label="benign (p 0.90)")
    assert analysis.status == DONE and analysis.result == "map of b.png" and analysis.request.target_label == "benign (p 0.90)"
    assert ("changed", PENDING) in events and events[-1] == ("changed", DONE) and document.modified


def test_a_new_model_makes_following_analyses_pending_and_names_itself():
    document = _document()
    analysis = document.add(_request(document))
    document.finish(analysis.id, document.start(analysis.id), "map")
    assert document.set_model(DEMO) == []  # the same model again: nothing to redo
    assert document.set_model(RANDOM) == [analysis]
    assert analysis.result is None and analysis.request.model.untrained and analysis.request.model.name() == "resnet18"
    assert ModelInfo("demo:x", weights="/w/net.safetensors").name() == "demo:x + net.safetensors"


def test_without_follow_maps_keep_their_own_input_and_failures_wait_for_the_user():
    document = _document()
    done, failed = document.add(_request(document)), document.add(_request(document, "local", window=8))
    document.finish(done.id, document.start(done.id), "map")
    document.fail(failed.id, document.start(failed.id), "out of memory")
    document.follow = False
    assert document.set_input(InputInfo("/data/b.png", "b.png")) == []
    assert done.result == "map" and done.request.input_path == "/data/a.png"
    document.follow = True
    # A failed analysis does not run (and fail) again on every new input: it waits for Run.
    assert document.set_input(InputInfo("/data/c.png", "c.png")) == [done]
    assert failed.status == FAILED and failed.request.input_path == "/data/a.png"
    document.rerun(failed.id)
    assert failed.status == PENDING and failed.request.input_path == "/data/c.png" and failed.error == ""


def test_cancel_remove_and_duplicates():
    document = _document()
    first = document.add(_request(document, window=8))
    assert document.find(_request(document, window=8)) is first and document.find(_request(document, window=16)) is None
    generation = document.start(first.id)
    assert document.cancelled(first.id, generation) and first.status == CANCELLED
    second = document.add(_request(document, "local"))
    generation = document.start(second.id)
    assert document.remove(second.id) is second
    assert not document.finish(second.id, generation, "map") and document.analyses == [first]
    third = document.add(_request(document, "saliency"))
    document.move(third.id, 0)
    assert [a.id for a in document.analyses] == [third.id, first.id]
    document.mark_saved()
    assert not document.modified
