"""Labeling record rules: answer validation, import parsers (ours, Argilla, Label Studio) and
agreement statistics. Pure functions, no database."""

from __future__ import annotations

import json

import pytest

from rlhf.labeling import records as R
from rlhf.labeling.errors import Invalid
from rlhf.labeling.stats import agreement_report


# -- rankings --------------------------------------------------------------------------------

def test_ranking_tie_groups_are_checked_and_sorted():
    assert R.normalize_ranking([[2], [3, 0], [1]], 4) == [[2], [0, 3], [1]]
    assert R.normalize_ranking([2, 0, 3, 1], 4) == [[2], [0], [3], [1]]  # bare ints: strict order
    assert R.normalize_ranking([[3, 1, 0, 2]], 4) == [[0, 1, 2, 3]]  # all tied: valid, no pairs


@pytest.mark.parametrize("groups, message", [
    ([], "non-empty list"),
    ([[0], [1], [2]], "missing [3]"),
    ([[0], [0], [1], [2, 3]], "more than once"),
    ([[0], [1], [2], [4]], "out of range"),
    ([[0], [], [1, 2, 3]], "non-empty list of response indices"),
    ([[True], [0, 1, 2]], "out of range"),
    ("0,1,2,3", "non-empty list"),
])
def test_bad_rankings_are_refused(groups, message):
    with pytest.raises(Invalid, match=message.replace("[", r"\[").replace("]", r"\]")):
        R.normalize_ranking(groups, 4)


def test_ranks_to_groups_allows_ties_and_gaps():
    assert R.ranks_to_groups([2, 3, 1, 2], 4) == [[2], [0, 3], [1]]
    assert R.ranks_to_groups([1, 1, 3, 4], 4) == R.ranks_to_groups([1, 1, 2, 3], 4)
    assert R.groups_to_ranks([[2], [0, 3], [1]], 4) == [2, 3, 1, 2]
    with pytest.raises(Invalid, match="one rank per response"):
        R.ranks_to_groups([1, 2], 4)
    with pytest.raises(Invalid, match="whole numbers 1..4"):
        R.ranks_to_groups([1, 2, 3, 5], 4)


def test_rating_fills_unticked_flags_and_bounds_likert():
    out = R.normalize_rating(6, {"hallucination": True, "custom_label": False})
    assert out["likert"] == 6
    assert set(R.FLAG_NAMES) <= set(out["flags"]) and out["flags"]["hallucination"] is True
    assert out["flags"]["follows_instruction"] is False and "custom_label" in out["flags"]
    for bad in (0, 8, True, "5", 4.5):
        with pytest.raises(Invalid, match="likert"):
            R.normalize_rating(bad, {})
    with pytest.raises(Invalid, match="true or false"):
        R.normalize_rating(5, {"hallucination": "yes"})
    with pytest.raises(Invalid, match="lower_snake_case"):
        R.normalize_rating(5, {"Bad Name": True})


def test_contract_flag_names_come_first():
    assert R.FLAG_NAMES[:5] == ("follows_instruction", "satisfies_constraint", "hallucination",
                                "harmful_compliance", "appropriate_for_customer")
    assert len(R.FLAG_NAMES) == 12  # Table 3: eleven binary labels, "fails to follow" inverted


def test_answers_must_match_the_task_kind():
    assert R.normalize_answer("demonstration", {"response": " hi\r\nthere "}, 0) == \
        {"response": "hi\nthere"}
    assert R.normalize_answer("ranking", {"ranks": [1, 2]}, 2) == {"ranking": [[0], [1]]}
    with pytest.raises(Invalid, match="does not take 'likert'"):
        R.normalize_answer("ranking", {"likert": 3}, 4)
    with pytest.raises(Invalid, match="needs 'ranking'"):
        R.normalize_answer("ranking", {}, 4)
    with pytest.raises(Invalid, match="not both"):
        R.normalize_answer("ranking", {"ranking": [[0], [1]], "ranks": [1, 2]}, 2)
    with pytest.raises(Invalid, match="limit is 8000"):
        R.normalize_answer("demonstration", {"response": "x" * 8001}, 0)
    with pytest.raises(Invalid, match="must not be empty"):
        R.normalize_answer("demonstration", {"response": "   "}, 0)


def test_names_and_k_bounds():
    assert R.check_name("labeler-07", "name") == "labeler-07"
    assert R.check_name(7, "name") == "7"
    for bad in ("", "a b", "../x", "x" * 65, None):
        with pytest.raises(Invalid):
            R.check_name(bad, "name")
    assert R.check_k(9) == 9
    for bad in (1, 10, True):
        with pytest.raises(Invalid, match="2 to 9"):
            R.check_k(bad)


# -- imports ---------------------------------------------------------------------------------

def test_prompt_record_keeps_metadata_and_makes_stable_ids():
    rec = R.parse_prompt_record({"prompt": "Write a haiku", "category": "generation",
                                 "constraints": {"lines": 3}})
    assert rec.key == R.prompt_key("Write a haiku") and rec.meta == {"constraints": {"lines": 3}}
    rec = R.parse_prompt_record({"id": 12, "prompt": "p", "responses": ["a", "b"]})
    assert rec.key == "12" and rec.responses == ["a", "b"]
    with pytest.raises(Invalid, match="2 to 9"):
        R.parse_prompt_record({"prompt": "p", "responses": ["a"] * 10})
    with pytest.raises(Invalid, match="prompt"):
        R.parse_prompt_record({"text": "p"})


def test_contract_and_pairwise_ranking_records():
    [rec] = R.parse_ranking_records({"prompt": "p", "responses": ["a", "b", "c"],
                                     "ranking": [[1], [0, 2]], "labeler_id": "L1"})
    assert (rec.ranking, rec.labeler) == ([[1], [0, 2]], "L1")
    [rec] = R.parse_ranking_records({"prompt": "p", "chosen": "good", "rejected": "bad"})
    assert rec.responses == ["good", "bad"] and rec.ranking == [[0], [1]]
    assert rec.labeler == "imported"


def test_argilla_v1_and_v2_records():
    v1 = {"fields": {"prompt": "Say hi", "reply-1": "hi", "reply-2": "yo", "reply-3": "hey"},
          "responses": [{"user_id": "u1", "status": "submitted", "values": {"ranking": {"value": [
              {"value": "reply-2", "rank": 1}, {"value": "reply-1", "rank": 2},
              {"value": "reply-3", "rank": 2}]}}},
              {"user_id": "u2", "status": "discarded", "values": {}}]}
    [rec] = R.parse_ranking_records(v1)
    assert rec.responses == ["yo", "hi", "hey"] and rec.ranking == [[0], [1, 2]]
    assert rec.labeler == "u1"
    v2 = {"id": "r7", "fields": {"instruction": "Say hi", "a": "hi", "b": "yo"},
          "responses": {"rank": [{"user_id": "u9", "value": ["b", "a"]}]}}
    [rec] = R.parse_ranking_records(v2, "argilla")
    assert rec.responses == ["yo", "hi"] and rec.ranking == [[0], [1]] and rec.key == "r7"
    flat = {"prompt": "Say hi", "r1": "hi", "r2": "yo",
            "ranking": [{"user_id": "u3", "value": {"value": ["r1", "r2"], "rank": [2, 1]},
                         "status": "submitted"}]}
    [rec] = R.parse_ranking_records(flat)
    assert rec.responses == ["hi", "yo"] and rec.ranking == [[1], [0]]


def test_label_studio_ranker_and_buckets():
    task = {"id": 3, "data": {"prompt": "Say hi", "items": [
        {"id": "x", "text": "hi"}, {"id": "y", "text": "yo"}, {"id": "z", "text": "hey"}]},
        "annotations": [
            {"completed_by": 5, "result": [{"type": "ranker",
                                            "value": {"ranker": {"rank": ["y", "x", "z"]}}}]},
            {"completed_by": 6, "result": [{"type": "ranker", "value": {"ranker": {
                "best": ["z", "x"], "worst": ["y"]}}}]},
            {"completed_by": 7, "was_cancelled": True, "result": []}]}
    a, b = R.parse_ranking_records(task)
    assert a.responses == ["hi", "yo", "hey"] and a.ranking == [[1], [0], [2]] and a.labeler == "5"
    assert b.ranking == [[0, 2], [1]] and b.labeler == "6"
    with pytest.raises(Invalid, match="not in the task's items"):
        R.parse_ranking_records({"data": task["data"], "annotations": [{"result": [
            {"type": "ranker", "value": {"ranker": {"rank": ["q", "x", "y"]}}}]}]})


def test_records_text_reads_jsonl_and_arrays_with_line_numbers():
    assert R.parse_records_text('{"a": 1}\n\n{"a": 2}\n') == [{"a": 1}, {"a": 2}]
    assert R.parse_records_text(json.dumps([{"a": 1}])) == [{"a": 1}]
    with pytest.raises(Invalid, match="line 2: malformed JSON"):
        R.parse_records_text('{"a": 1}\n{"a": \n')
    with pytest.raises(Invalid, match="empty"):
        R.parse_records_text("  \n")


# -- agreement -------------------------------------------------------------------------------

def test_agreement_report_counts_only_overlapping_tasks():
    subs = [(1, "ranking", "a", {"ranking": [[0], [1], [2]]}),
            (1, "ranking", "b", {"ranking": [[0], [2], [1]]}),
            (2, "ranking", "a", {"ranking": [[0], [1]]}),  # single labeler: ignored
            (3, "rating", "a", {"likert": 5, "flags": {"hallucination": True}}),
            (3, "rating", "b", {"likert": 6, "flags": {"hallucination": False}})]
    rep = agreement_report(subs)
    assert rep["ranking"]["tasks_with_overlap"] == 1
    assert rep["ranking"]["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert rep["ranking"]["by_labeler"]["a"]["comparisons"] == 3
    assert rep["rating"]["likert_exact"] == 0.0 and rep["rating"]["likert_within_1"] == 1.0
    assert rep["rating"]["flags"]["hallucination"] == 0.0
    assert agreement_report([])["ranking"]["agreement"] is None
