"""docs/configuration.md is generated from the config models and must match them."""

from pathlib import Path

from operators.config_reference import REGENERATE, render_reference
from ray_jobs.pipeline import STAGE_NAMES

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_doc_matches_the_config_models():
    rendered = render_reference()
    current = DOC.read_text() if DOC.is_file() else ""
    assert current == rendered, (
        f"docs/configuration.md is out of date with the config models; regenerate it with\n"
        f"    {REGENERATE}\nand commit the result.")


def test_reference_documents_every_key_and_stage():
    text = render_reference()
    for key in ("input.<i>.path", "output", "frames.every_s", "clip.model", "dedup.threshold",
                "stages.<name>.concurrency", "stages.<name>.num_gpus"):
        assert f"`{key}`" in text, key
    for kind in ("folder", "manifest", "panda70m", "ego4d", "bdd100k", "webdataset"):
        assert f"with `kind: {kind}`" in text, kind
    for stage in STAGE_NAMES:
        assert f"| `{stage}` |" in text, stage
