"""pipeline/hf_models.py: a model actor's load error is found again behind Ray's error, on the
cause chain or, for an actor that died in its constructor, in the remote traceback's text."""

from __future__ import annotations

from pipeline.caption.captioner import CaptionerLoadError
from pipeline.hf_models import load_error_in
from pipeline.transcribe.asr import AsrLoadError


def test_the_load_error_on_the_cause_chain_is_found_by_its_type():
    try:
        try:
            raise AsrLoadError("cannot load ASR model 'x': no config.json\nsecond line said last")
        except AsrLoadError as inner:
            raise RuntimeError("Ray Data execution failed") from inner
    except RuntimeError as outer:
        assert load_error_in(outer, AsrLoadError, r"cannot load ASR model .*") == "second line said last"
        assert load_error_in(outer, CaptionerLoadError, r"cannot load captioner .*") is None


def test_a_remote_traceback_text_is_searched_for_the_error_name_and_message():
    died = RuntimeError("ActorDiedError: The actor died ...\nTraceback (most recent call last):\n  ...\n"
                        "pipeline.caption.captioner.CaptionerLoadError: cannot load captioner 'blip': bad weights")
    assert load_error_in(died, CaptionerLoadError, r"cannot load captioner .*") == "cannot load captioner 'blip': bad weights"
    assert load_error_in(died, AsrLoadError, r"cannot load ASR model .*") is None
    assert load_error_in(RuntimeError("the node was lost"), CaptionerLoadError, r"cannot load captioner .*") is None
