"""Reading micro-English: words, sentences, lists, entity mentions and factual claims.

The judge never parses free text in general; it reads the small language of this world. Entities
are single known words (rivers: "<name> river"), lists are numbered lines or comma lists, and
factual claims are recognised by the same sentence shapes the corpus uses to state facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlhf.world import lexicon
from rlhf.world.universe import Fact, Universe

_WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+")
_SENT_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_LIST_LINE_RE = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*(.*)$")


def words(text: str) -> list[str]:
    """Lowercased word tokens (letters with an optional apostrophe part, or digits)."""
    return [w.lower() for w in _WORD_RE.findall(text)]


def base_word(word: str) -> str:
    """Strip a possessive: "anna's" -> "anna"."""
    return word[:-2] if word.endswith("'s") else word


def sentences(text: str) -> list[str]:
    """Non-empty sentences (split after . ! ? and at line breaks)."""
    return [s.strip() for s in _SENT_SPLIT_RE.split(text.strip()) if s.strip() and words(s)]


def ends_properly(text: str) -> bool:
    """True when the text ends like a finished sentence."""
    return text.rstrip().endswith((".", "!", "?"))


def parse_list(text: str) -> list[str]:
    """Items of a numbered/bulleted list (one per line) or of a comma list ("a, b and c.").

    Items come back lowercased, without articles or final punctuation. Plain prose that is not
    a list comes back as one item per sentence, so counting items still means something.
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    marked = [m.group(1) for ln in lines if (m := _LIST_LINE_RE.match(ln))]
    if marked and len(marked) == len(lines):
        raw = marked
    elif len(lines) == 1 and len(sentences(text)) <= 1:
        raw = re.split(r",\s*|\s+and\s+", lines[0].strip().rstrip(".!?"))
    else:
        raw = sentences(text)
    items = []
    for item in raw:
        toks = words(item)
        while toks and toks[0] in ("a", "an", "the", "some"):
            toks = toks[1:]
        if toks:
            items.append(" ".join(toks))
    return items


def is_list_format(text: str) -> bool:
    """True when every non-blank line is a numbered or bulleted item."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return bool(lines) and all(_LIST_LINE_RE.match(ln) for ln in lines)


# --------------------------------------------------------------------------- entities
def _lower_map(items, kind: str) -> dict[str, tuple[str, str]]:
    return {str(i).lower(): (kind, str(i)) for i in items}


ENTITY_WORDS: dict[str, tuple[str, str]] = {
    **_lower_map(lexicon.OBJECTS, "object"),
    **_lower_map(lexicon.LANDMARKS, "landmark"),
    **_lower_map(lexicon.JOBS, "job"),
    **_lower_map(lexicon.NUMBERS, "number"),
    **_lower_map(lexicon.DAYS, "day"),
    **_lower_map(lexicon.COLOURS, "colour"),
    **_lower_map(lexicon.EATS, "food"),
    **_lower_map(lexicon.FOODS, "food"),
    **{form: ("animal", name) for form, name in lexicon.ANIMAL_FORMS.items()},
    **_lower_map(lexicon.TOWNS, "town"),
    **_lower_map(lexicon.PET_NAMES, "pet_name"),
    **_lower_map(lexicon.USER_NAMES, "user"),
    **_lower_map(lexicon.PEOPLE, "person"),
}
_RIVER_NAMES = {r.lower(): r for r in lexicon.RIVERS}


@dataclass(frozen=True)
class Mention:
    kind: str   # person, user, pet_name, town, river, animal, colour, food, object, day,
    #             number, job or landmark
    value: str  # canonical spelling ("Anna", "Swift", "fox")


def mentions(text: str) -> list[Mention]:
    """Entity mentions in order of appearance (rivers need the word "river" after the name)."""
    toks = [base_word(w) for w in words(text)]
    found = []
    for i, w in enumerate(toks):
        if w in _RIVER_NAMES and i + 1 < len(toks) and toks[i + 1] in ("river", "rivers"):
            found.append(Mention("river", _RIVER_NAMES[w]))
        elif w in ENTITY_WORDS:
            kind, value = ENTITY_WORDS[w]
            found.append(Mention(kind, value))
    return found


def mention_set(text: str, kinds: tuple[str, ...] | None = None) -> set[tuple[str, str]]:
    return {(m.kind, m.value) for m in mentions(text) if kinds is None or m.kind in kinds}


# --------------------------------------------------------------------------- claims
def _alt(items) -> str:
    return "(" + "|".join(sorted((re.escape(str(i).lower()) for i in items), key=len,
                                reverse=True)) + ")"


_P, _T, _R = _alt(lexicon.PEOPLE), _alt(lexicon.TOWNS), _alt(lexicon.RIVERS)
_A1 = _alt(lexicon.ANIMALS)
_AP = _alt(sorted({s.plural for s in lexicon.SPECIES}))
_C, _J = _alt(lexicon.COLOURS), _alt(lexicon.JOBS)
_L, _D = _alt(lexicon.LANDMARKS), _alt(lexicon.DAYS)
_F = _alt(sorted(set(lexicon.FOODS) | set(lexicon.EATS)))
_N = _alt(lexicon.NUMBERS)

# (pattern, kind): the groups hold subject then value, except where _facts_from_match says.
_CLAIM_PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"\b{_P} (?:lives|lived) in {_T}\b"), "town"),
    (re.compile(rf"\b{_P}'s home is in {_T}\b"), "town"),
    (re.compile(rf"\b{_P} and {_P} live in {_T}\b"), "town2"),
    (re.compile(rf"\b{_P} (?:is|was) an? {_J}\b"), "job"),
    (re.compile(rf"\b{_P} works as an? {_J}\b"), "job"),
    (re.compile(rf"\b{_P} (?:has|had|keeps|kept) an? {_A1}\b"), "pet"),
    (re.compile(rf"\b{_P} (?:has|had|keeps|kept) an? {_C} {_A1}\b"), "pet+colour"),
    (re.compile(rf"\b{_P}'s {_A1} is {_C}\b"), "pet+colour"),
    (re.compile(rf"\b{_P}'s favourite colour is {_C}\b"), "colour"),
    (re.compile(rf"\b{_P} loves the colour {_C}\b"), "colour"),
    (re.compile(rf"\b{_P}'s favourite food is {_F}\b"), "food"),
    (re.compile(rf"\b{_P} likes {_F} best\b"), "food"),
    (re.compile(rf"\b{_T} is (?:a (?:big |small )?town )?(?:near|by) the {_R} river\b"), "river"),
    (re.compile(rf"\bthe {_R} river flows past {_T} and {_T}\b"), "river2"),
    (re.compile(rf"\b{_T} and {_T} are (?:near|by) the {_R} river\b"), "river_pair"),
    (re.compile(rf"\bthe {_R} river flows past {_T}\b"), "river_rev"),
    (re.compile(rf"\b{_T} is a (big|small) town\b"), "size"),
    (re.compile(rf"\b{_T} is known for its old {_L}\b"), "landmark"),
    (re.compile(rf"\bthe old {_L} in {_T} is famous\b"), "landmark_rev"),
    (re.compile(rf"\bthe market in {_T} is open on {_D}\b"), "market_day"),
    (re.compile(rf"\b(?:a|an|the) {_A1} lives (?:on|in|by) the ([a-z]+)\b"), "home"),
    (re.compile(rf"\b{_AP} live (?:on|in|by) the ([a-z]+)\b"), "home_pl"),
    (re.compile(rf"\b(?:a|an|the) {_A1} has {_N} legs\b"), "legs"),
    (re.compile(rf"\b{_AP} have {_N} legs\b"), "legs_pl"),
    (re.compile(rf"\b(?:a|an|the) {_A1} eats {_F}\b"), "eats"),
    (re.compile(rf"\b{_AP} eat {_F}\b"), "eats_pl"),
]
_PLURAL_TO_SINGULAR = {s.plural: s.name for s in lexicon.SPECIES}
_CANON = {str(x).lower(): str(x)
          for x in (*lexicon.PEOPLE, *lexicon.TOWNS, *lexicon.RIVERS, *lexicon.DAYS)}


def _canon(word: str) -> str:
    return _CANON.get(word, word)


def _facts_from_match(kind: str, g: tuple[str, ...]) -> list[Fact]:
    c = _canon
    if kind == "pet+colour":
        return _pet_colour(g)
    if kind == "river2":
        return [Fact(c(g[1]), "river", c(g[0])), Fact(c(g[2]), "river", c(g[0]))]
    if kind == "town2":
        return [Fact(c(g[0]), "town", c(g[2])), Fact(c(g[1]), "town", c(g[2]))]
    if kind == "river_pair":
        return [Fact(c(g[0]), "river", c(g[2])), Fact(c(g[1]), "river", c(g[2]))]
    if kind == "river_rev":
        return [Fact(c(g[1]), "river", c(g[0]))]
    if kind == "landmark_rev":
        return [Fact(c(g[1]), "landmark", g[0])]
    if kind in ("home", "home_pl"):  # any place word: "lives in the tower" is a (false) claim
        return [Fact(_PLURAL_TO_SINGULAR.get(g[0], g[0]), "home", g[1])]
    if kind.endswith("_pl"):
        return [Fact(_PLURAL_TO_SINGULAR[g[0]], kind[:-3], g[1])]
    return [Fact(c(g[0]), kind, c(g[1]))]


def _pet_colour(g: tuple[str, ...]) -> list[Fact]:
    # two shapes: (person, colour, animal) from "has a grey cat"; (person, animal, colour) from
    # "anna's cat is grey"
    person = _canon(g[0])
    if g[1] in lexicon.COLOURS:
        colour, animal = g[1], g[2]
    else:
        animal, colour = g[1], g[2]
    return [Fact(person, "pet", animal), Fact(person, "pet_colour", colour)]


def _resolve_pronouns(sentence: str, last: dict[str, str]) -> str:
    """Replace a sentence-initial pronoun with the entity it most likely refers to."""
    toks = sentence.split(maxsplit=1)
    if not toks:
        return sentence
    head, rest = toks[0].lower().strip(","), (toks[1] if len(toks) > 1 else "")
    if head in ("she", "he") and head in last:
        return f"{last[head]} {rest}"
    if head in ("her", "his") and {"her": "she", "his": "he"}[head] in last:
        return f"{last[{'her': 'she', 'his': 'he'}[head]]}'s {rest}"
    if head == "it" and "it" in last:
        return f"{last['it']} {rest}"
    return sentence


def _update_referents(sentence: str, last: dict[str, str]) -> None:
    seen_gender: set[str] = set()
    seen_it = False
    for m in mentions(sentence):
        if m.kind == "person" and lexicon.PEOPLE[m.value] not in seen_gender:
            g = lexicon.PEOPLE[m.value]
            seen_gender.add(g)
            last["she" if g == "f" else "he"] = m.value
        elif m.kind in ("town", "animal") and not seen_it:
            seen_it = True
            last["it"] = m.value if m.kind == "town" else f"a {m.value}"


def extract_claims(text: str) -> list[Fact]:
    """Factual claims stated in the text, in the world's fact sentence shapes.

    Sentence-initial pronouns (she, he, her, his, it) are resolved to the most recent entity.
    Story events ("Anna went to Oakford") are not claims; only stable facts are.
    """
    last: dict[str, str] = {}
    claims: list[Fact] = []
    for sent in sentences(text):
        resolved = _resolve_pronouns(sent, last).lower()
        for pattern, kind in _CLAIM_PATTERNS:
            for m in pattern.finditer(resolved):
                claims.extend(_facts_from_match(kind, m.groups()))
        _update_referents(resolved, last)
    # dedupe, keep order
    out, seen = [], set()
    for f in claims:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def claim_is_true(universe: Universe, fact: Fact) -> bool:
    """Whether a claimed fact matches the universe (unknown subjects count as false)."""
    try:
        return universe.value(fact.subject, fact.relation) == fact.value
    except (KeyError, AttributeError):
        return False
