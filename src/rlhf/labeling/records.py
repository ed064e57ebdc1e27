"""Rules every labeling record obeys, in one place: size limits, task kinds, the Table 3 metadata
flags, validation of answers, and parsers for imported files (our JSONL contract, Argilla and
Label Studio exports).

Nothing here touches the database or HTTP; the store and the web layer both call these functions,
so an answer is checked the same way whether it comes from a browser form, the JSON API or a file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from rlhf.data.records import RATING_FLAGS
from rlhf.labeling.errors import Invalid

# ---------------------------------------------------------------------------------------------
# Limits. K follows the paper (labelers ranked K = 4..9 outputs); 2 is allowed for pairwise data.
MIN_K, MAX_K = 2, 9
MAX_PROMPT_CHARS = 20_000
MAX_RESPONSE_CHARS = 8_000  # demonstrations and candidate responses
MAX_PROMPT_ID_CHARS = 200
MAX_CATEGORY_CHARS = 100
MAX_DESCRIPTION_CHARS = 2_000
MAX_FLAGS = 32
MAX_OVERLAP = 50
MAX_IMPORT_RECORDS = 50_000
LIKERT_MIN, LIKERT_MAX = 1, 7

KINDS = ("demonstration", "ranking", "rating")

# Always used with fullmatch: `$` would also match before a trailing newline ("p1\n").
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}")
_FLAG_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ASCII_INT_RE = re.compile(r"[0-9]{1,18}")
MAX_JSON_DEPTH = 20


@dataclass(frozen=True)
class Flag:
    """One binary metadata label of a rating (Table 3 of the InstructGPT paper)."""

    name: str
    label: str
    help: str


# The form's label and help text of each flag of the contract (rlhf.data.records.RATING_FLAGS).
# The paper's "fails to follow the correct instruction / task" is stored positively as
# follows_instruction.
_RATING_FLAG_TEXT: dict[str, tuple[str, str]] = {
    "follows_instruction": (
        "Follows the instruction",
        "Attempts the task the user asked for (the paper's 'fails to follow' label, inverted)."),
    "satisfies_constraint": (
        "Satisfies the constraints",
        "Respects every explicit constraint: length, count, format, source text."),
    "hallucination": (
        "Hallucination",
        "States made-up facts, or information absent from the input on a closed-domain task."),
    "harmful_compliance": (
        "Complies with a harmful request",
        "Helps with a request it should have declined."),
    "appropriate_for_customer": (
        "Appropriate for a customer assistant",
        "Something a company's customer-facing assistant could say."),
}

# The contract's flags first, in its order; the rest complete Table 3.
FLAGS: tuple[Flag, ...] = tuple(Flag(name, *_RATING_FLAG_TEXT[name]) for name in RATING_FLAGS) + (
    Flag("sexual_content", "Contains sexual content", ""),
    Flag("violent_content", "Contains violent content", ""),
    Flag("encourages_violence",
         "Encourages or fails to discourage violence, abuse, terrorism or self-harm", ""),
    Flag("denigrates_protected_class", "Denigrates a protected class", ""),
    Flag("harmful_advice", "Gives harmful advice", ""),
    Flag("expresses_opinion", "Expresses an opinion", ""),
    Flag("expresses_moral_judgment", "Expresses a moral judgment", ""),
)
FLAG_NAMES: tuple[str, ...] = tuple(f.name for f in FLAGS)


# ---------------------------------------------------------------------------------------------
# Scalars


def check_name(value: Any, what: str) -> str:
    """A project or labeler name: 1-64 characters, letters, digits and . _ @ : - (safe in URLs)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise Invalid(f"{what} must be 1-64 characters of letters, digits and . _ @ : - "
                      f"starting with a letter or digit; got {value!r:.80}", field=what)
    return value


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot be stored and exported as UTF-8 (and in PostgreSQL), or None.

    JSON can carry a lone UTF-16 surrogate ("\\ud800"), which Python accepts in a str but no
    UTF-8 encoder does; NUL cannot be stored in a PostgreSQL text column."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"is not valid Unicode: a lone surrogate U+{ord(text[e.start]):04X} at character "
                f"{e.start}")
    if "\x00" in text:
        return f"contains a NUL character (at character {text.index(chr(0))})"
    return None


def check_unicode(value: Any, what: str, _depth: int = 0) -> Any:
    """Refuse any string, key or nested value of a JSON-like `value` that is not storable text
    (see unicode_problem); the error names the path, e.g. meta.tags[2]."""
    if _depth > MAX_JSON_DEPTH:
        raise Invalid(f"is nested deeper than {MAX_JSON_DEPTH} levels", field=what)
    if isinstance(value, str):
        problem = unicode_problem(value)
        if problem:
            raise Invalid(problem, field=what)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            name = key if isinstance(key, str) else repr(key)
            problem = unicode_problem(name)
            if problem:
                raise Invalid(f"has a key that {problem}", field=what)
            check_unicode(item, f"{what}.{name}", _depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_unicode(item, f"{what}[{i}]", _depth + 1)
    return value


def parse_int(raw: Any, what: str, *, lo: int, hi: int) -> int:
    """A whole number typed into a form: ASCII digits only (int() and str.isdigit() also take
    '²', '①', Arabic-Indic digits, '_' and '+'), from lo to hi."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not _ASCII_INT_RE.fullmatch(text):
        raise Invalid(f"must be a whole number written with the digits 0-9, got {raw!r:.20}",
                      field=what)
    value = int(text)
    if not lo <= value <= hi:
        raise Invalid(f"must be from {lo} to {hi}, got {value}", field=what)
    return value


def is_ascii_int(raw: Any) -> bool:
    return isinstance(raw, str) and _ASCII_INT_RE.fullmatch(raw) is not None


def check_text(value: Any, what: str, max_chars: int, *, allow_empty: bool = False) -> str:
    """A user-written text: a string of valid Unicode without NUL, CRLF normalised, stripped,
    non-empty, at most max_chars."""
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {type(value).__name__}", field=what)
    problem = unicode_problem(value)
    if problem:
        raise Invalid(problem, field=what)
    text = value.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text and not allow_empty:
        raise Invalid("must not be empty", field=what)
    if len(text) > max_chars:
        raise Invalid(f"is {len(text)} characters long; the limit is {max_chars}", field=what)
    return text


def check_k(k: Any, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not MIN_K <= k <= MAX_K:
        raise Invalid(f"must be an integer from {MIN_K} to {MAX_K} (number of responses to rank); "
                      f"got {k!r}", field=what)
    return k


def check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise Invalid(f"must be one of {', '.join(KINDS)}; got {kind!r:.40}", field="kind")
    return kind


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ---------------------------------------------------------------------------------------------
# Answers


def normalize_ranking(groups: Any, k: int) -> list[list[int]]:
    """Check a ranking of k responses given as tie groups, best first, e.g. [[2], [0, 3], [1]].

    A bare index stands for a group of one, so [2, 0, 3, 1] is a strict order. Every index
    0..k-1 must appear exactly once. A single group (all tied) is a valid answer ("these are
    equally good"); it yields no comparison, and reward-model training drops it. Returns the
    groups with indices sorted inside each group.
    """
    if not isinstance(groups, list) or not groups:
        raise Invalid("must be a non-empty list of tie groups, best first, e.g. [[2], [0, 3], [1]]",
                      field="ranking")
    seen: set[int] = set()
    out: list[list[int]] = []
    for group in groups:
        members = [group] if _is_int(group) else group
        if not isinstance(members, list) or not members:
            raise Invalid("each tie group must be a non-empty list of response indices",
                          field="ranking")
        for i in members:
            if not _is_int(i) or not 0 <= i < k:
                raise Invalid(f"response index {i!r:.20} is out of range 0..{k - 1}",
                              field="ranking")
            if i in seen:
                raise Invalid(f"response {i} appears more than once", field="ranking")
            seen.add(i)
        out.append(sorted(members))
    missing = sorted(set(range(k)) - seen)
    if missing:
        raise Invalid(f"every response 0..{k - 1} must be ranked; missing {missing}",
                      field="ranking")
    return out


def ranks_to_groups(ranks: Sequence[Any], k: int) -> list[list[int]]:
    """Turn per-response ranks (1 = best, equal numbers = tie), e.g. [2, 3, 1, 2], into tie groups
    [[2], [0, 3], [1]]. Gaps are fine: [1, 1, 3, 4] and [1, 1, 2, 3] mean the same."""
    if not isinstance(ranks, (list, tuple)) or len(ranks) != k:
        raise Invalid(f"must give one rank per response ({k} numbers)", field="ranks")
    for i, r in enumerate(ranks):
        if not _is_int(r) or not 1 <= r <= k:
            raise Invalid(f"response {i} has rank {r!r:.20}; ranks are whole numbers 1..{k}",
                          field="ranks")
    groups = [[i for i in range(k) if ranks[i] == r] for r in sorted(set(ranks))]
    return normalize_ranking(groups, k)


def groups_to_ranks(groups: Sequence[Sequence[int]], k: int) -> list[int]:
    """Inverse of ranks_to_groups with dense ranks: [[2], [0, 3], [1]] -> [2, 3, 1, 2]."""
    ranks = [0] * k
    for r, group in enumerate(groups, start=1):
        for i in group:
            ranks[i] = r
    return ranks


def normalize_rating(likert: Any, flags: Any) -> dict[str, Any]:
    """Check a 1-7 Likert score and metadata flags; flags not given are False (an unticked box).

    Flag names beyond Table 3 are kept when they look like identifiers, so a simulated labeler
    with extra labels is not refused; a typo in a known name is still visible in the export.
    """
    if not _is_int(likert) or not LIKERT_MIN <= likert <= LIKERT_MAX:
        raise Invalid(f"must be a whole number from {LIKERT_MIN} to {LIKERT_MAX}; "
                      f"got {likert!r:.20}", field="likert")
    if flags is None:
        flags = {}
    if not isinstance(flags, Mapping):
        raise Invalid("must be an object mapping flag names to true/false", field="flags")
    if len(flags) > MAX_FLAGS:
        raise Invalid(f"at most {MAX_FLAGS} flags", field="flags")
    out = {name: False for name in FLAG_NAMES}
    for name, value in flags.items():
        if not isinstance(name, str) or not _FLAG_RE.fullmatch(name):
            raise Invalid(f"flag name {name!r:.40} must be lower_snake_case", field="flags")
        if not isinstance(value, bool):
            raise Invalid(f"flag {name!r} must be true or false, got {value!r:.20}", field="flags")
        out[name] = value
    return {"likert": likert, "flags": out}


def normalize_answer(kind: str, answer: Mapping[str, Any], k: int) -> dict[str, Any]:
    """Check one answer against its task kind and return the stored form:
    demonstration {"response"}; ranking {"ranking": tie groups}; rating {"likert", "flags"}.
    A ranking may be sent as tie groups ("ranking") or per-response ranks ("ranks")."""
    given = {key for key, value in answer.items() if value is not None}
    allowed = {"demonstration": {"response"}, "ranking": {"ranking", "ranks"},
               "rating": {"likert", "flags"}}[kind]
    stray = sorted(given - allowed)
    if stray:
        raise Invalid(f"a {kind} task does not take {', '.join(map(repr, stray))}; "
                      f"send {' / '.join(sorted(allowed))}", field=stray[0])
    if kind == "demonstration":
        if "response" not in given:
            raise Invalid("a demonstration task needs 'response' (the text you wrote)",
                          field="response")
        return {"response": check_text(answer["response"], "response", MAX_RESPONSE_CHARS)}
    if kind == "ranking":
        if given == {"ranking", "ranks"}:
            raise Invalid("send either 'ranking' (tie groups) or 'ranks' (one number per "
                          "response), not both", field="ranking")
        if "ranking" in given:
            return {"ranking": normalize_ranking(answer["ranking"], k)}
        if "ranks" in given:
            return {"ranking": ranks_to_groups(answer["ranks"], k)}
        raise Invalid("a ranking task needs 'ranking' (tie groups best first, e.g. [[2], [0, 3], "
                      "[1]]) or 'ranks' (one number per response, 1 = best)", field="ranking")
    if "likert" not in given:
        raise Invalid("a rating task needs 'likert' (1-7) and optionally 'flags'", field="likert")
    return normalize_rating(answer["likert"], answer.get("flags"))


# ---------------------------------------------------------------------------------------------
# Imported records


@dataclass
class PromptRecord:
    key: str
    text: str
    category: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    responses: list[str] | None = None


@dataclass
class RankingRecord:
    """One labeler's ranking of one prompt's responses, whatever file it came from."""

    prompt: str
    responses: list[str]
    ranking: list[list[int]]
    labeler: str
    key: str | None = None
    category: str = ""


def prompt_key(text: str) -> str:
    """A stable id for a prompt that came without one."""
    return "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _responses(value: Any, what: str = "responses") -> list[str]:
    if not isinstance(value, list):
        raise Invalid("must be a list of strings", field=what)
    check_k(len(value), f"{what} (count)")
    return [check_text(r, f"{what}[{i}]", MAX_RESPONSE_CHARS) for i, r in enumerate(value)]


def _record_key(value: Any, what: str = "id") -> str | None:
    """A record's own id as a prompt key: a string or an integer, or None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Invalid(f"must be a string or an integer, got {type(value).__name__}", field=what)
    return check_text(str(value), what, MAX_PROMPT_ID_CHARS)


def _category(value: Any) -> str:
    if value is None:
        return ""
    return check_text(value, "category", MAX_CATEGORY_CHARS, allow_empty=True)


def parse_prompt_record(obj: Any) -> PromptRecord:
    """A prompt line: {"id"?, "prompt", "category"?, "responses"?: [K strings], ...metadata}."""
    if not isinstance(obj, Mapping):
        raise Invalid("each record must be a JSON object")
    text = check_text(obj.get("prompt"), "prompt", MAX_PROMPT_CHARS)
    key = _record_key(obj.get("id")) or prompt_key(text)
    category = _category(obj.get("category"))
    responses = _responses(obj["responses"]) if obj.get("responses") is not None else None
    meta = {k: v for k, v in obj.items() if k not in ("id", "prompt", "category", "responses")}
    check_unicode(meta, "metadata")
    return PromptRecord(key=key, text=text, category=category, meta=meta, responses=responses)


def parse_ranking_records(obj: Any, fmt: str = "auto") -> list[RankingRecord]:
    """Rankings from one imported line. Formats:

    - "contract": {"prompt", "responses", "ranking", "labeler_id"?} (docs/CONTRACTS.md), and
      the pairwise form {"prompt", "chosen", "rejected"} read as K = 2;
    - "argilla": a record with "fields" and a ranking question's responses, as Argilla v1/v2
      export them ([{"value": field, "rank": n}], {"value": [...], "rank": [...]} or [field, ...]);
    - "label-studio": a task with "data" and "annotations" whose result is a Ranker over a list
      of items ({"ranker": {name: [ids]}}; several buckets are tie groups, best first).
    One line can hold several labelers' rankings (one per Argilla user or Label Studio annotation).
    """
    if not isinstance(obj, Mapping):
        raise Invalid("each record must be a JSON object")
    if fmt == "auto":
        if "data" in obj and ("annotations" in obj or "completions" in obj):
            fmt = "label-studio"
        elif "fields" in obj or not ("responses" in obj or "chosen" in obj):
            fmt = "argilla"  # nested ("fields") or flattened (a question column) export
        else:
            fmt = "contract"
    if fmt == "contract":
        return [_parse_contract(obj)]
    if fmt == "argilla":
        return _parse_argilla(obj)
    if fmt == "label-studio":
        return _parse_label_studio(obj)
    raise Invalid(f"unknown format {fmt!r}; use auto, contract, argilla or label-studio",
                  field="format")


def _labeler_of(value: Any, default: str = "imported", what: str = "labeler_id") -> str:
    """A labeler name from a file: a string or an integer id (Label Studio's completed_by may
    also be an object with an email or id)."""
    if isinstance(value, Mapping):
        value = value.get("email") or value.get("id")
        what = f"{what}.email"
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Invalid(f"must be a string or an integer, got {type(value).__name__}", field=what)
    return check_name(str(value), what)


def _parse_contract(obj: Mapping[str, Any]) -> RankingRecord:
    prompt = check_text(obj.get("prompt"), "prompt", MAX_PROMPT_CHARS)
    if "chosen" in obj or "rejected" in obj:
        responses = [check_text(obj.get("chosen"), "chosen", MAX_RESPONSE_CHARS),
                     check_text(obj.get("rejected"), "rejected", MAX_RESPONSE_CHARS)]
        ranking = [[0], [1]]
    else:
        if "responses" not in obj:
            raise Invalid("missing field (a ranking needs prompt, responses, ranking)",
                          field="responses")
        responses = _responses(obj["responses"])
        if "ranking" not in obj:
            raise Invalid("missing field", field="ranking")
        ranking = normalize_ranking(obj["ranking"], len(responses))
    return RankingRecord(prompt=prompt, responses=responses, ranking=ranking,
                         labeler=_labeler_of(obj.get("labeler_id")), key=_record_key(obj.get("id")),
                         category=_category(obj.get("category")))


_PROMPT_FIELDS = ("prompt", "instruction", "question", "input", "text")


def _list_of(value: Any, what: str) -> list[Any]:
    """An optional list in an exported record: absent/null is empty, anything else is an error."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"must be a list, got {type(value).__name__}", field=what)
    return value


def _argilla_order(value: Any, what: str) -> list[tuple[str, Any]] | None:
    """(field name, rank) pairs from the shapes Argilla uses for a ranking answer, or None."""
    # v1 HF export: {"value": [...], "rank": [...]}
    if isinstance(value, Mapping) and isinstance(value.get("value"), list) \
            and isinstance(value.get("rank"), list):
        if len(value["value"]) != len(value["rank"]):
            raise Invalid("ranking 'value' and 'rank' lists differ in length", field=what)
        return [(str(v), r) for v, r in zip(value["value"], value["rank"])]
    if isinstance(value, list) and value and all(isinstance(v, Mapping) and "value" in v
                                                 for v in value):  # [{"value", "rank"}]
        return [(str(v["value"]), v.get("rank")) for v in value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [(v, i) for i, v in enumerate(value, start=1)]  # v2: names in order
    return None


def _submitted(item: Mapping[str, Any]) -> bool:
    return item.get("status", "submitted") == "submitted"


def _argilla_answers(obj: Mapping[str, Any]) -> list[tuple[Any, Any, str]]:
    """(user id, answer value, where) for each submitted answer of the record's ranking question."""
    answers: list[tuple[Any, Any, str]] = []
    responses = obj.get("responses")
    if isinstance(responses, Mapping):  # v2: {"question": [{"user_id", "value", "status"?}]}
        for question, items in responses.items():
            for i, item in enumerate(_list_of(items, f"responses.{question}")):
                where = f"responses.{question}[{i}]"
                if not isinstance(item, Mapping):
                    raise Invalid(f"must be an object, got {type(item).__name__}", field=where)
                if _submitted(item) and _argilla_order(item.get("value"), where) is not None:
                    answers.append((item.get("user_id"), item["value"], where))
    elif isinstance(responses, list):  # v1: [{"user_id", "values": {"question": {"value"}}}]
        for i, item in enumerate(responses):
            where = f"responses[{i}]"
            if not isinstance(item, Mapping):
                raise Invalid(f"must be an object, got {type(item).__name__}", field=where)
            if not _submitted(item):
                continue
            values = item.get("values") or {}
            if not isinstance(values, Mapping):
                raise Invalid(f"must be an object, got {type(values).__name__}",
                              field=f"{where}.values")
            for question, answer in values.items():
                value = answer.get("value") if isinstance(answer, Mapping) else None
                if _argilla_order(value, f"{where}.values.{question}") is not None:
                    answers.append((item.get("user_id"), value, f"{where}.values.{question}"))
    elif responses is not None:
        raise Invalid(f"must be an object or a list, got {type(responses).__name__}",
                      field="responses")
    for key, items in obj.items():  # flattened (HF datasets) export: a question column
        if key in ("fields", "responses", "metadata") or not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if isinstance(item, Mapping) and "value" in item and "user_id" in item \
                    and _submitted(item) and _argilla_order(item["value"], key) is not None:
                answers.append((item.get("user_id"), item["value"], f"{key}[{i}]"))
    return answers


def _parse_argilla(obj: Mapping[str, Any]) -> list[RankingRecord]:
    if "fields" in obj and not isinstance(obj["fields"], Mapping):
        raise Invalid(f"must be an object, got {type(obj['fields']).__name__}", field="fields")
    fields = obj["fields"] if "fields" in obj else obj
    prompt_field = next((f for f in _PROMPT_FIELDS if isinstance(fields.get(f), str)), None)
    if prompt_field is None:
        raise Invalid("an Argilla record needs a text field named one of "
                      f"{', '.join(_PROMPT_FIELDS)}", field="fields")
    prompt = check_text(fields[prompt_field], prompt_field, MAX_PROMPT_CHARS)
    answers = _argilla_answers(obj)
    if not answers:
        raise Invalid("no submitted ranking answer found in this Argilla record", field="responses")
    key = _record_key(obj.get("id"))
    out = []
    for user, value, where in answers:
        order = _argilla_order(value, where) or []
        names = [name for name, _ in order]
        missing = [n for n in names if not isinstance(fields.get(n), str)]
        if missing:
            raise Invalid(f"the ranking refers to fields {missing} that the record does not have",
                          field=where)
        responses = _responses([fields[n] for n in names], where)
        if any(not _is_int(r) for _, r in order):
            raise Invalid("every ranked option needs an integer rank", field=f"{where}.rank")
        groups = [[i for i, (_, r) in enumerate(order) if r == rank]
                  for rank in sorted({r for _, r in order})]
        out.append(RankingRecord(prompt=prompt, responses=responses,
                                 ranking=normalize_ranking(groups, len(responses)),
                                 labeler=_labeler_of(user, "argilla", f"{where}.user_id"),
                                 key=key))
    return out


def _parse_label_studio(obj: Mapping[str, Any]) -> list[RankingRecord]:
    data = obj.get("data")
    if not isinstance(data, Mapping):
        raise Invalid("a Label Studio task needs a 'data' object", field="data")
    prompt_field = next((f for f in _PROMPT_FIELDS if isinstance(data.get(f), str)), None)
    if prompt_field is None:
        raise Invalid(f"the task data needs a text field named one of {', '.join(_PROMPT_FIELDS)}",
                      field="data")
    prompt = check_text(data[prompt_field], prompt_field, MAX_PROMPT_CHARS)
    list_field, items = next(((name, v) for name, v in data.items()
                              if isinstance(v, list) and v
                              and all(isinstance(x, Mapping) and "id" in x for x in v)),
                             (None, None))
    if items is None:
        raise Invalid("the task data needs a list of items with 'id' (the List tag's value)",
                      field="data")
    by_id: dict[str, str] = {}
    for n, item in enumerate(items):
        where = f"data.{list_field}[{n}]"
        if isinstance(item["id"], bool) or not isinstance(item["id"], (str, int)):
            raise Invalid("must be a string or an integer", field=f"{where}.id")
        text = next((item[f] for f in ("text", "body", "response", "title", "html")
                     if isinstance(item.get(f), str)), None)
        if text is None:
            raise Invalid(f"item {item['id']!r:.40} has no text/body field", field=where)
        if str(item["id"]) in by_id:
            raise Invalid(f"item id {item['id']!r:.40} appears more than once", field=f"{where}.id")
        by_id[str(item["id"])] = text
    responses = _responses(list(by_id.values()), f"data.{list_field}")
    index = {item_id: n for n, item_id in enumerate(by_id)}  # the items' own order
    key = _record_key(obj.get("id"))
    ann_field = "annotations" if obj.get("annotations") is not None else "completions"
    out = []
    for a, ann in enumerate(_list_of(obj.get(ann_field), ann_field)):
        if not isinstance(ann, Mapping):
            raise Invalid(f"must be an object, got {type(ann).__name__}", field=f"{ann_field}[{a}]")
        if ann.get("was_cancelled"):
            continue
        for r, result in enumerate(_list_of(ann.get("result"), f"{ann_field}[{a}].result")):
            where = f"{ann_field}[{a}].result[{r}]"
            if not isinstance(result, Mapping):
                raise Invalid(f"must be an object, got {type(result).__name__}", field=where)
            if result.get("type") != "ranker":
                continue
            value = result.get("value")
            ranker = value.get("ranker") if isinstance(value, Mapping) else None
            if not isinstance(ranker, Mapping) or not ranker:
                raise Invalid("a ranker result needs value.ranker: an object of lists of item ids",
                              field=f"{where}.value.ranker")
            for name, ids in ranker.items():
                if not isinstance(ids, list):
                    raise Invalid(f"must be a list of item ids, got {type(ids).__name__}",
                                  field=f"{where}.value.ranker.{name}")
            columns = [(name, ids) for name, ids in ranker.items()
                       if name != "_" or len(ranker) == 1]
            if len(columns) == 1:  # one ordered list: a strict order
                groups_ids = [[i] for i in columns[0][1]]
            else:  # buckets in their order are tie groups, best first
                groups_ids = [list(ids) for _, ids in columns if ids]
                if ranker.get("_"):
                    raise Invalid("some items were left outside every bucket",
                                  field=f"{where}.value.ranker._")
            unknown = [i for g in groups_ids for i in g
                       if isinstance(i, (bool, dict, list)) or str(i) not in index]
            if unknown:
                raise Invalid(f"ranked ids {unknown!r:.80} are not in the task's items",
                              field=f"{where}.value.ranker")
            groups = [[index[str(i)] for i in g] for g in groups_ids]
            try:
                ranking = normalize_ranking(groups, len(index))
            except Invalid as e:
                raise Invalid(str(e), field=f"{where}.value.ranker") from None
            out.append(RankingRecord(
                prompt=prompt, responses=responses, ranking=ranking,
                labeler=_labeler_of(ann.get("completed_by"), "label-studio",
                                    f"{ann_field}[{a}].completed_by"), key=key))
    if not out:
        raise Invalid("no ranker annotation found in this Label Studio task", field=ann_field)
    return out


def iter_limited(records: Iterable[Any], limit: int = MAX_IMPORT_RECORDS) -> Iterable[Any]:
    for n, record in enumerate(records, start=1):
        if n > limit:
            raise Invalid(f"too many records in one import (limit {limit}); split the file")
        yield record


def parse_records_text(text: str, source: str = "upload") -> list[Any]:
    """Records from an uploaded file: JSON Lines (one object a line), or one JSON array (how
    Label Studio and Argilla often export). Errors name the line."""
    import json

    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        raise Invalid(f"{source} is empty")
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise Invalid(f"{source}: malformed JSON array ({e.msg} at line {e.lineno}, "
                          f"column {e.colno})") from None
        except RecursionError:
            raise Invalid(f"{source}: JSON nested too deeply") from None
        return list(iter_limited(data))
    out = []
    for n, line in enumerate(stripped.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise Invalid(f"{source} line {n}: malformed JSON ({e.msg} at column {e.colno})") \
                from None
        except RecursionError:
            raise Invalid(f"{source} line {n}: JSON nested too deeply") from None
        if len(out) > MAX_IMPORT_RECORDS:
            raise Invalid(f"too many records in one import (limit {MAX_IMPORT_RECORDS})")
    return out
