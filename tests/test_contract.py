"""Every result type honours one contract: every format it claims is written, and read back where it loads.

The cases (a factory of a small real result, and a loader where the type loads back) live in
``contract_cases_core.py`` (capture and analysis results) and ``contract_cases_apps.py`` (attribution
and applications).
"""

from __future__ import annotations

import json

import pytest
from contract_cases_apps import APP_CASES
from contract_cases_core import CORE_CASES

from headmap.render.report import Format, Report

CASES = [*CORE_CASES, *APP_CASES]
EXPECTED_TYPES = {
    "AttentionResult", "HeadStats", "HeadReport", "HeadImportance", "Alignment",
    "Explanation", "GenerationReport", "FaithfulnessReport", "RagReport", "BiasReport", "PruneReport",
    "AuditRecord",
}  # fmt: skip
MAGIC = {Format.PNG: b"\x89PNG", Format.PDF: b"%PDF", Format.PARQUET: b"PAR1"}


def test_every_result_type_has_a_case():
    assert {case.name for case in CASES} == EXPECTED_TYPES


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.name)
def made(request, tmp_path_factory):
    case = request.param
    return case, case.make(tmp_path_factory.mktemp(case.name))


def test_is_a_report(made):
    case, report = made
    assert isinstance(report, Report)
    assert type(report).__name__ == case.name
    for method in ("to_dict", "figure", "page", "save", "show", "_repr_html_", "formats"):
        assert callable(getattr(report, method)), method


def test_every_claimed_format_is_written(made, tmp_path):
    case, report = made
    for fmt in report.formats():
        path = tmp_path / f"out{fmt.value}"
        assert report.save(path) == path
        assert path.exists(), fmt
        if fmt is Format.FOLDER:
            assert any(path.iterdir())
            continue
        data = path.read_bytes()
        assert data, fmt
        if fmt in MAGIC:
            assert data.startswith(MAGIC[fmt]), fmt
        elif fmt is Format.JSON:
            assert json.loads(data) == json.loads(json.dumps(report.to_dict(), allow_nan=False))
        elif fmt is Format.HTML:
            assert data.lstrip().lower().startswith(b"<!doctype html>")
        elif fmt is Format.SVG:
            assert b"<svg" in data[:2000]


def test_unclaimed_format_is_one_clear_error(made, tmp_path):
    from headmap.errors import HeadmapError

    _, report = made
    with pytest.raises(HeadmapError, match="cannot be saved as .xyz"):
        report.save(tmp_path / "out.xyz")


def test_notebook_display_is_the_page(made):
    _, report = made
    assert report._repr_html_() == report.page()
    assert "<script src=" not in report.page()  # self-contained: no script from elsewhere


def test_tables(made):
    case, report = made
    if Format.PARQUET in report.formats():
        frame = report.to_pandas()
        assert len(frame) > 0
    else:
        from headmap.errors import HeadmapError

        with pytest.raises(HeadmapError):
            report.to_pandas()


def test_loads_back(made, tmp_path):
    case, report = made
    if case.load is None:
        pytest.skip(f"{case.name} has no loader")
    for fmt in case.load_formats:
        path = report.save(tmp_path / f"back{fmt.value}")
        again = case.load(path)
        assert type(again) is type(report)
        assert again.to_dict() == report.to_dict(), fmt


def test_a_capture_of_some_heads_draws_by_default(tmp_path):
    """save(.png) with no options draws the first captured layer and head, not layer 0 head 0."""
    from dataclasses import replace

    from helpers import make_result, softmax_rows, tokens_from

    from headmap.result import LayerMap

    tokens = tokens_from("a b c", [(0, 1), (2, 3), (4, 5)])
    result = make_result(tokens, softmax_rows((1, 3, 3)), layer=2, num_layers=4)
    only = result.layers[0]
    part = replace(result, layers=(LayerMap(only.key, (3,), only.rows, only.weights),), num_heads=4)
    for ext in (".png", ".svg", ".html"):
        assert part.save(tmp_path / f"part{ext}").stat().st_size > 0
    assert part.figure().axes
    assert part.figure(2, None).axes  # head=None: the grid of the layer


def test_a_type_claiming_raw_formats_must_write_them():
    """Declaring a raw format without its writer fails when the class is made, not at the first save."""
    with pytest.raises(TypeError, match="without _save_raw"):

        class Broken(Report):  # defining it is the test
            raw_formats = (Format.FOLDER,)
