"""Judging stored results again from their kept evidence (grader.engine.rejudge), without kernels:
the report fixtures' class graded in Japanese, then judged again in English."""

from __future__ import annotations

import asyncio

import nbformat
import pytest

from grader.engine.pipeline import Submission
from grader.engine.rejudge import can_rejudge, execution_from, rejudge
from grader.results import INVALID

from report_fixtures import cases, fixture_data, japanese_in_grader_text, session_for


@pytest.fixture(scope="module")
def japanese_class(report_class):
    out, results = report_class
    folder = out.parent
    submitted = {}
    for case in cases():  # what each student handed in, as the pipeline would read it
        path = out / case.student / "submitted.ipynb"
        if case.notebook is None:
            path.write_text("{ not json", encoding="utf-8")
        else:
            nbformat.write(case.notebook, path)
        submitted[case.student] = Submission(case.student, path)
    return folder, results, submitted


def test_english_from_the_kept_evidence_gives_the_same_verdicts_in_english(japanese_class):
    folder, results, submitted = japanese_class
    session = session_for(folder, "en", fixture_data())
    for student, stored in results.items():
        assert can_rejudge(stored, session.out_dir / student)
        again = asyncio.run(rejudge(stored, submitted[student], session))
        assert again.lang == "en" and (again.status, again.score) == (stored.status, stored.score), student
        assert [(c.id, c.status, c.points, c.expected, c.actual) for c in again.checks] == \
            [(c.id, c.status, c.points, c.expected, c.actual) for c in stored.checks], student
        assert (again.execution, again.evaluation, again.graded_at) == (stored.execution, stored.evaluation,
                                                                        stored.graded_at)
        assert japanese_in_grader_text(again) == [], student
        assert japanese_in_grader_text(stored) or stored.status == INVALID or student == "s001_pass"


def test_a_folder_without_its_evidence_cannot_be_judged_again(japanese_class, tmp_path):
    _, results, _ = japanese_class
    assert not can_rejudge(results["s001_pass"], tmp_path / "s001_pass")
    assert can_rejudge(results["s006_invalid"], tmp_path / "s006_invalid")  # nothing was kept, nothing is needed


def test_the_execution_record_round_trips():
    stored = {"seconds": 9.1, "timed_out": True, "timeout_scope": "cell", "kernel_died": False, "start_failure": None,
              "truncated_cells": [2], "errors": [{"cell_index": 4, "execution_count": 4, "ename": "ValueError",
                                                  "evalue": "bad"}]}
    assert {k: v for k, v in execution_from(stored).to_dict().items() if k in stored} == stored
