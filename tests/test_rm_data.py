"""Ranking records: formats, validation errors naming file/line/field, adapters, tokenisation."""

import gzip
import json
from pathlib import Path

import pytest
import torch

from rlhf.data.adapters import tldr_query
from rlhf.data.rankings import (collate_rankings, encode_pair, encode_rankings,
                                load_prompt_responses, load_rankings, scores_to_matrix)
from rlhf.errors import UserError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"prompt": "p", "responses": ["a", "b", "c", "d"], "ranking": [[2], [0, 3], [1]],
        "labeler_id": "L1"}


def test_load_rankings_and_pairwise(tmp_path):
    f = write_jsonl(tmp_path / "r.jsonl", [
        GOOD, "",
        {"prompt": "q", "chosen": "yes", "rejected": "no"},
        {"prompt": "s", "responses": ["x", "y", "z"], "ranking": [1, 2, 0], "labeler_id": 7},
    ])
    ex = load_rankings(f)
    assert [e.k for e in ex] == [4, 2, 3]
    assert ex[0].ranking == [[2], [0, 3], [1]] and ex[0].labeler_id == "L1"
    assert ex[1].responses == ["yes", "no"] and ex[1].ranking == [[0], [1]]
    assert ex[1].labeler_id is None
    assert ex[2].ranking == [[1], [2], [0]] and ex[2].labeler_id == "7"


BAD = [
    ({**GOOD, "ranking": [[2], [0, 4], [1]]}, "ranking", "out of range"),
    ({**GOOD, "ranking": [[2], [0, 3], [1, 2]]}, "ranking", "more than once"),
    ({**GOOD, "ranking": [[2], [0], [1]]}, "ranking", r"\[3\] are not ranked"),
    ({**GOOD, "ranking": [[2], [], [0, 1, 3]]}, "ranking", "non-empty"),
    ({**GOOD, "ranking": [["0"], [1, 2, 3]]}, "ranking", "integer"),
    ({**GOOD, "ranking": []}, "ranking", "non-empty"),
    ({**GOOD, "responses": ["a"], "ranking": [[0]]}, "responses", "at least 2"),
    ({**GOOD, "responses": [f"r{i}" for i in range(10)], "ranking": list(range(10))},
     "responses", "max_k=9"),
    ({**GOOD, "responses": ["a", "  ", "c", "d"]}, "responses[1]", "empty"),
    ({**GOOD, "responses": ["a", 3, "c", "d"]}, "responses[1]", "string"),
    ({**GOOD, "responses": "abcd"}, "responses", "list"),
    ({k: v for k, v in GOOD.items() if k != "ranking"}, "ranking", "missing"),
    ({**GOOD, "prompt": ""}, "prompt", "empty"),
    ({"prompt": "p", "chosen": "a", "rejected": ""}, "rejected", "empty"),
]


@pytest.mark.parametrize("record,field,msg", BAD)
def test_bad_records_name_file_line_field(tmp_path, record, field, msg):
    f = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, record])
    with pytest.raises(UserError, match=msg) as e:
        load_rankings(f)
    assert e.value.path == str(f) and e.value.line == 3 and e.value.field == field
    assert f"bad.jsonl:3 field '{field}'" in str(e.value)


def test_max_k_is_configurable_and_other_errors(tmp_path):
    f = write_jsonl(tmp_path / "r.jsonl", [GOOD])
    with pytest.raises(UserError, match="max_k=3"):
        load_rankings(f, max_k=3)
    with pytest.raises(UserError, match="malformed JSON") as e:
        load_rankings(write_jsonl(tmp_path / "m.jsonl", [GOOD, "{oops"]))
    assert e.value.line == 2
    with pytest.raises(UserError, match="unrecognised record"):
        load_rankings(write_jsonl(tmp_path / "u.jsonl", [{"text": "x"}]))
    with pytest.raises(UserError, match="file not found"):
        load_rankings(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match="no ranking records"):
        load_rankings(write_jsonl(tmp_path / "e.jsonl", [""]))
    # skip_invalid skips and counts
    f2 = write_jsonl(tmp_path / "s.jsonl", [GOOD, {**GOOD, "ranking": [[0]]}, GOOD])
    with pytest.warns(UserWarning, match="skipped 1 invalid"):
        assert len(load_rankings(f2, skip_invalid=True)) == 2


HH = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello.\n\nHuman: Tell me a fact\n\nAssistant: "
                "Water is wet.",
      "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello.\n\nHuman: Tell me a fact\n\nAssistant:"
                  " No."}


def test_hh_rlhf_adapter(tmp_path):
    f = write_jsonl(tmp_path / "hh.jsonl", [HH])
    (ex,) = load_rankings(f)                  # auto-detected
    assert ex.prompt == "Hi there\n\nAssistant: Hello.\n\nHuman: Tell me a fact"
    assert ex.responses == ["Water is wet.", "No."] and ex.ranking == [[0], [1]]
    bad = write_jsonl(tmp_path / "hh2.jsonl", [HH, {**HH, "rejected": "\n\nHuman: Other\n\n"
                                                                   "Assistant: x"}])
    with pytest.raises(UserError) as e:
        load_rankings(bad, data_format="hh_rlhf")
    assert e.value.line == 2 and e.value.field == "rejected"
    empty = write_jsonl(tmp_path / "hh3.jsonl", [{**HH, "chosen": HH["chosen"][:-13]}])
    with pytest.raises(UserError, match="empty") as e:
        load_rankings(empty)
    assert e.value.field == "chosen"


TLDR = {"info": {"id": "t3_x", "post": "My post text.", "title": "A title",
                 "subreddit": "relationships"}, "split": "valid1",
        "summaries": [{"text": " first", "policy": "a"}, {"text": " second", "policy": "b"}],
        "choice": 1, "worker": "w9", "batch": "b", "extra": {"confidence": 5}}


def test_tldr_adapter(tmp_path):
    f = tmp_path / "t.jsonl.gz"
    with gzip.open(f, "wt") as g:
        g.write(json.dumps(TLDR) + "\n")
        g.write(json.dumps({**TLDR, "info": {"article": "Some news.", "site": "cnn"},
                            "choice": 0}) + "\n")
    a, b = load_rankings(f, 2, "tldr", skip_invalid=True)
    assert a.prompt == "SUBREDDIT: r/relationships\nTITLE: A title\nPOST: My post text.\n\nTL;DR:"
    assert a.responses == ["first", "second"] and a.ranking == [[1], [0]] and a.labeler_id == "w9"
    assert b.prompt == tldr_query({"article": "Some news."}) and b.ranking == [[0], [1]]
    bad = write_jsonl(tmp_path / "t2.jsonl", [{**TLDR, "choice": 2}])
    with pytest.raises(UserError, match="0 or 1") as e:
        load_rankings(bad)
    assert e.value.field == "choice" and e.value.line == 1


@pytest.mark.skipif(not (SHARED / "hh_rlhf").exists(), reason="shared data not present")
def test_public_files_load():
    with pytest.warns(UserWarning, match="skipped"):
        hh = load_rankings(SHARED / "hh_rlhf" / "harmless-base-test.jsonl.gz", 2, "hh_rlhf",
                           skip_invalid=True)
    assert len(hh) > 2000 and all(e.k == 2 for e in hh)
    tl = load_rankings(SHARED / "summarize_from_feedback" / "batch18.jsonl.gz", 2, "tldr",
                       skip_invalid=True)
    assert len(tl) == 674 and all(e.labeler_id for e in tl)
    with pytest.raises(UserError) as e:                       # strict mode names the line
        load_rankings(SHARED / "hh_rlhf" / "harmless-base-test.jsonl.gz")
    assert e.value.line is not None and e.value.field in ("chosen", "rejected")


class FakeTok:
    """Character-level stand-in: one id per character; EOS 0, PAD 1."""
    eos_token_id, pad_token_id = 0, 1

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_encode_pair_and_truncation():
    tok = FakeTok()
    ids = encode_pair(tok, "hi", "yo", 100, template="U:{prompt}|")
    assert ids == [ord(c) for c in "U:hi|"] + [ord(c) for c in " yo"] + [0]
    # too long: prompt is cut from the left, the response kept
    ids = encode_pair(tok, "abcdefgh", "yo", 6, template="{prompt}")
    assert ids == [ord("g"), ord("h"), ord(" "), ord("y"), ord("o"), 0]
    # a response alone over the limit is cut at the end (loses EOS)
    ids = encode_pair(tok, "ab", "xyzxyz", 4, template="{prompt}")
    assert ids == [ord(c) for c in " xyz"]


def test_encode_rankings_warns_on_truncation():
    from rlhf.data.rankings import RankingExample
    ex = [RankingExample("a" * 20, ["b", "c"], [[0], [1]])]
    with pytest.warns(UserWarning, match="2 prompts were cut"):
        enc = encode_rankings(FakeTok(), ex, 8, template="{prompt}", source="x")
    assert all(len(s) == 8 for s in enc[0].sequences)


def test_collate_rankings_and_scatter():
    from rlhf.data.rankings import EncodedRanking
    batch = [EncodedRanking([[5, 6, 0], [7, 0]], [[1], [0]]),
             EncodedRanking([[8, 0], [9, 9, 9, 0], [4, 0]], [[2], [0, 1]])]
    b = collate_rankings(batch, pad_id=1)
    assert b["input_ids"].shape == (5, 4)           # ΣK sequences: one forward pass each
    assert b["attention_mask"].sum(1).tolist() == [3, 2, 2, 4, 2]
    assert b["input_ids"][1].tolist() == [7, 0, 1, 1]
    assert b["slot"].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [1, 2]]
    assert b["pref"].shape == (2, 3, 3)
    assert b["pref"][0, 1, 0] == 1 and b["pref"][0].sum() == 1
    assert b["pref"][1, 2, 0] == 1 and b["pref"][1, 2, 1] == 1 and b["pref"][1].sum() == 2
    s = torch.arange(5.0, requires_grad=True)
    m = scores_to_matrix(s, b["slot"], 2, 3)
    assert m.tolist() == [[0, 1, 0], [2, 3, 4]]
    m.sum().backward()
    assert s.grad.tolist() == [1.0] * 5


def test_load_prompt_responses(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "p", "response": "r"},
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}])
    assert load_prompt_responses(f) == [("p", "r"), ("u", "a")]
    with pytest.raises(UserError) as e:
        load_prompt_responses(write_jsonl(tmp_path / "x.jsonl", [{"prompt": "p"}]))
    assert e.value.field == "response" and e.value.line == 1
