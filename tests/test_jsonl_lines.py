"""Run files hold model text as written (ensure_ascii=False): rows are split at "\\n" only, so a completion
with U+2028, U+0085 or a control separator in it survives a resume's truncation, an evaluation's resume and the
demo's scoring."""

from __future__ import annotations

import json

from vgrpo.data import jsonl_lines
from vgrpo.evaluate import _done
from vgrpo.run_dir import truncate_jsonl

ODD = "a\u2028b\u2029c\x85d\x1ce\x1df\x1eg\x0bh\x0ci"


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_rows_with_unicode_line_separators_are_one_row_each(tmp_path):
    rows = [{"step": 1, "completion": ODD}, {"step": 2, "completion": "plain"}]
    path = tmp_path / "completions.jsonl"
    _write(path, rows)
    assert len(path.read_text(encoding="utf-8").splitlines()) > 2  # what str.splitlines would have cut
    assert [json.loads(x) for x in jsonl_lines(path.read_text(encoding="utf-8"))] == rows


def test_truncating_completions_for_a_resume_keeps_a_row_with_odd_separators(tmp_path):
    path = tmp_path / "completions.jsonl"
    _write(
        path, [{"step": 1, "completion": ODD}, {"step": 2, "completion": ODD}, {"step": 3, "completion": "x"}]
    )
    truncate_jsonl(path, 2)
    assert [json.loads(x) for x in jsonl_lines(path.read_text(encoding="utf-8"))] == [
        {"step": 1, "completion": ODD},
        {"step": 2, "completion": ODD},
    ]


def test_an_evaluation_resumes_from_a_prediction_with_odd_separators(tmp_path):
    path = tmp_path / "predictions.jsonl"
    row = {"task": "count", "id": "r1", "sample": 0, "sampling": None, "max_new_tokens": 8, "completion": ODD}
    _write(path, [row])
    (done,) = _done(path).values()
    assert done["completion"] == ODD
