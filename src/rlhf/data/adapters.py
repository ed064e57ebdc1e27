"""Adapters from public comparison formats to `RankingExample` (K = 2, ranking [[winner], [loser]]).

HH-RLHF (Anthropic, `chosen`/`rejected` full transcripts "\\n\\nHuman: ...\\n\\nAssistant: ..."):
the dialogue before the final "\\n\\nAssistant:" is shared by both and becomes the prompt (its
leading "Human: " removed, so the default template reads "User: <first turn> ..."); the two final
Assistant turns are the responses.

summarize-from-feedback (Stiennon et al. 2020; `info`, `summaries` [2] of {text, policy},
`choice`, `worker`): the prompt is the post in the paper's query format
"SUBREDDIT: r/...\\nTITLE: ...\\nPOST: ...\\n\\nTL;DR:" (CNN/DM: "ARTICLE: ...\\n\\nTL;DR:"), the
two summaries are the responses, `choice` is the winner and `worker` the labeler id.

`rlhf.data.rankings.load_rankings` reads both (JSONL, optionally gzipped), recognising them by
their keys or by `data_format="hh_rlhf"` / `"tldr"`; the public files hold a few invalid records
(e.g. an empty reply), which `skip_invalid=True` skips and counts.
"""

from __future__ import annotations


from rlhf.data.records import RankingExample
from rlhf.errors import UserError
from rlhf.io import require_str

_ASSISTANT = "\n\nAssistant:"
_HUMAN = "Human:"


def split_hh_transcript(text: str, path: str, line: int, field: str) -> tuple[str, str]:
    """(dialogue before the final Assistant turn, that turn's text)."""
    i = text.rfind(_ASSISTANT)
    if i < 0:
        raise UserError("no '\\n\\nAssistant:' turn in the transcript", path=path, line=line,
                        field=field)
    prefix, reply = text[:i], text[i + len(_ASSISTANT):].strip()
    if not reply:
        raise UserError("the final Assistant turn is empty", path=path, line=line, field=field)
    return prefix, reply


def parse_hh_rlhf_record(obj: dict, path: str, line: int, max_k: int = 9) -> RankingExample:
    chosen = require_str(obj, "chosen", path, line)
    rejected = require_str(obj, "rejected", path, line)
    p_c, r_c = split_hh_transcript(chosen, path, line, "chosen")
    p_r, r_r = split_hh_transcript(rejected, path, line, "rejected")
    if p_c.strip() != p_r.strip():
        raise UserError("'chosen' and 'rejected' must share the dialogue before the final "
                        "Assistant turn", path=path, line=line, field="rejected")
    prompt = p_c.strip()
    if prompt.startswith(_HUMAN):
        prompt = prompt[len(_HUMAN):].strip()
    if not prompt:
        raise UserError("empty dialogue before the final Assistant turn", path=path, line=line,
                        field="chosen")
    lab = obj.get("labeler_id")
    return RankingExample(prompt, [r_c, r_r], [[0], [1]], None if lab is None else str(lab))


def tldr_query(info: dict) -> str:
    """The [SFF] query text of a post (Reddit TL;DR) or an article (CNN/DM)."""
    if info.get("post") is not None:
        sub = str(info.get("subreddit") or "").strip()
        if sub and not sub.startswith("r/"):
            sub = "r/" + sub
        return (f"SUBREDDIT: {sub}\nTITLE: {str(info.get('title') or '').strip()}\n"
                f"POST: {str(info['post']).strip()}\n\nTL;DR:")
    return f"ARTICLE: {str(info.get('article') or '').strip()}\n\nTL;DR:"


def parse_tldr_record(obj: dict, path: str, line: int, max_k: int = 9) -> RankingExample:
    info = obj.get("info")
    if not isinstance(info, dict):
        raise UserError("missing or not an object", path=path, line=line, field="info")
    if not any(isinstance(info.get(k), str) and info[k].strip() for k in ("post", "article")):
        raise UserError("needs a non-empty 'post' or 'article'", path=path, line=line,
                        field="info")
    summaries = obj.get("summaries")
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise UserError("must be a list of 2 summaries", path=path, line=line, field="summaries")
    texts = []
    for i, s in enumerate(summaries):
        if not isinstance(s, dict):
            raise UserError("must be an object with 'text'", path=path, line=line,
                            field=f"summaries[{i}]")
        text = s.get("text")
        if not isinstance(text, str) or not text.strip():
            raise UserError("missing or empty summary text", path=path, line=line,
                            field=f"summaries[{i}].text")
        texts.append(text.strip())
    choice = obj.get("choice")
    if not isinstance(choice, int) or isinstance(choice, bool) or choice not in (0, 1):
        raise UserError(f"must be 0 or 1, got {choice!r}", path=path, line=line, field="choice")
    worker = obj.get("worker", obj.get("labeler_id"))
    return RankingExample(tldr_query(info), texts, [[choice], [1 - choice]],
                          None if worker is None else str(worker))

