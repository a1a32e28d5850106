"""docs/configuration.md is generated from the config models and must match them."""

from pathlib import Path

from operators.config_reference import REGENERATE
from operators.config_reference import render_reference as render
from ray_jobs.config import PipelineConfig
from ray_jobs.pipeline import STAGE_NAMES, STAGES, stage_docs

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def render_reference() -> str:
    return render(PipelineConfig, stage_docs())


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


def test_every_stage_has_one_name_and_its_section_exists():
    sections = set(PipelineConfig.model_fields)
    steps = set(PipelineConfig.model_fields["steps"].annotation.model_fields)
    assert len(set(STAGE_NAMES)) == len(STAGE_NAMES)
    for stage in STAGES:
        assert stage.section is None or stage.section in sections, stage
        assert stage.step is None or stage.step in steps, stage
