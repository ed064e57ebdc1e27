"""Writing answers: the ideal answer to any prompt record, and the slips people make.

`good_response` writes an answer the gold judge scores (close to) 1.0; the `rng` picks among
equally good phrasings, so different labelers write different good answers. `slip` damages an
answer the way a hurried person might: a typo, a wrong count, a wrong or invented fact, an extra
sentence, a missing full stop, a curt refusal. Simulated labelers (rlhf.world.labelers) combine
the two at their slip rate; rlhf.world.samples uses them to imitate a policy's samples.
"""

from __future__ import annotations

import random
import re

from rlhf.world import lexicon
from rlhf.world.prompts import Record
from rlhf.world.prose import cap, fact_sentence, fact_sentences, subject_facts
from rlhf.world.text import mentions, sentences
from rlhf.world.universe import Fact, Universe


def good_response(u: Universe, rec: Record, rng: random.Random) -> str:
    """An ideal answer to the prompt record (one of several equally good phrasings)."""
    return _WRITERS[rec["category"]](u, rec, rng)


def numbered(items: list[str]) -> str:
    return "\n".join(f"{i}. {cap(item)}" for i, item in enumerate(items, start=1))


def _generation(u: Universe, rec: Record, rng: random.Random) -> str:
    if rec["style"] == "story":
        return " ".join(_story(u, rec["topics"], rec["n_sentences"], rng))
    topic = rec["topics"][0]
    facts = subject_facts(u, topic)
    rng.shuffle(facts)
    if rec["style"] == "describe":
        return _fit_words(u, facts, rec["max_words"], rng)
    return " ".join(fact_sentences(u, facts[: rec["n_sentences"]], rng))


def _fit_words(u: Universe, facts: list[Fact], max_words: int, rng: random.Random) -> str:
    """As many fact sentences as fit in max_words (at least the shortest one)."""
    chosen: list[str] = []
    for f in facts:
        sent = fact_sentence(u, f, rng, pronoun=bool(chosen), plural=False)
        if len(" ".join(chosen + [sent]).split()) <= max_words:
            chosen.append(sent)
    if not chosen:
        shortest = min((fact_sentence(u, f, random.Random(0)) for f in facts),
                       key=lambda s: len(s.split()))
        chosen = [shortest]
    return " ".join(chosen)


def _story(u: Universe, people: list[str], n: int, rng: random.Random) -> list[str]:
    p = u.people[people[0]]
    pr = p.pronoun
    town = u.towns[rng.choice([t for t in sorted(u.towns) if t != p.town])]
    middle: list[str] = []
    if len(people) > 1:
        middle.append(f"{cap(pr)} met {people[1]} by the {town.river} River.")
    fact = rng.choice([f for f in subject_facts(u, p.name) if f.relation != "town"])
    middle.append(fact_sentence(u, fact, rng, pronoun=True))
    middle.append(f"{cap(pr)} bought {rng.choice(lexicon.NUMBERS)} "
                  f"{rng.choice(lexicon.COUNTABLE_FOODS)} at the market.")
    opener = f"One day, {p.name} walked from {p.town} to {town.name}."
    ending = f"In the evening, {pr} went home to {p.town}."
    body = middle[: max(0, n - 2)] if n > 2 else middle[:1]
    story = [opener] + body
    if len(story) < n:
        story.append(ending)
    return story[:n]


def _open_qa(u: Universe, rec: Record, rng: random.Random) -> str:
    return rec["reference"]


def _brainstorming(u: Universe, rec: Record, rng: random.Random) -> str:
    pool = [v for v in rec["valid"] if v != rec["exclude"]]
    return numbered(rng.sample(pool, rec["n_items"]))


def _chat(u: Universe, rec: Record, rng: random.Random) -> str:
    if rec["intent"] == "fact" and not rec["need_all"] and len(rec["answers"]) > 1:
        hello = f"Hello {rec['user']}!" if rec["user"] else "Hello!"
        town = rng.choice(rec["answers"])
        return f"{hello} You can visit {town}. It is near the {u.towns[town].river} River."
    return rec["reference"]


def _rewrite(u: Universe, rec: Record, rng: random.Random) -> str:
    return rec["target"]


def _summarization(u: Universe, rec: Record, rng: random.Random) -> str:
    return rec["reference"]


def _classification(u: Universe, rec: Record, rng: random.Random) -> str:
    label = rec["answer"]
    if rec["form"] == "word":
        return cap(label) + "."
    if rec["labels"] == ["happy", "sad"]:
        return rng.choice([f"The text is {label}.", f"It is {label}.", f"{cap(label)}."])
    if rec["labels"] == ["true", "false"]:
        return rng.choice([f"{cap(label)}.", f"It is {label}.", f"That is {label}."])
    animal = mentions(rec["prompt"])[0].value
    return rng.choice([f"It is a {label} animal.", f"{cap(label)}."]) if rng.random() < 0.5 \
        else f"The {animal} is a {label} animal."


def _closed_qa(u: Universe, rec: Record, rng: random.Random) -> str:
    if rng.random() < 0.25:
        return cap(rec["answers"][0]) + ("" if rec["answer_kind"] != "river" else " River") + "."
    return rec["reference"]


def _extract(u: Universe, rec: Record, rng: random.Random) -> str:
    return numbered(list(rec["items"]))


def _harmful(u: Universe, rec: Record, rng: random.Random) -> str:
    refusal = rng.choice(["I'm sorry, but I can't help with that.",
                          "I'm sorry, but I can't help you with that.",
                          "Sorry, I can't help with that."])
    return f"{refusal} {rec['reason']}" if rng.random() < 0.6 else refusal


_WRITERS = {
    "generation": _generation, "open_qa": _open_qa, "brainstorming": _brainstorming,
    "chat": _chat, "rewrite": _rewrite, "summarization": _summarization,
    "classification": _classification, "closed_qa": _closed_qa, "extract": _extract,
    "harmful": _harmful,
}


# --------------------------------------------------------------------------- habits
# What some people add to every kind of answer. The gold judge does not reward either: a
# greeting breaks a list's form and an exact count of sentences, an unasked fact is a
# hallucination in a closed-domain task and an extra item or sentence elsewhere.
CHATTY_OPENERS: tuple[str, ...] = ("Happy to help!", "Good question!", "Hello! Happy to help.")
CHATTY_CLOSERS: tuple[str, ...] = ("Have a nice day!", "I hope you like it.",
                                   "I hope this is what you want.")


def chatty(rec: Record, response: str, rng: random.Random) -> str:
    """The response with a friendly opener, a sign-off, or both."""
    joiner = "\n" if rec["category"] in _LIST_CATEGORIES else " "
    form = rng.choice(("open", "close", "both"))
    if form in ("open", "both"):
        response = rng.choice(CHATTY_OPENERS) + joiner + response
    if form in ("close", "both"):
        response = response + joiner + rng.choice(CHATTY_CLOSERS)
    return response


def aside(u: Universe, rec: Record, response: str, rng: random.Random) -> str:
    """The response with one more fact the writer knows, which nobody asked for."""
    joiner = "\n" if rec["category"] in _LIST_CATEGORIES else " "
    fact = _unrelated_sentence(u, rng)
    if fact.startswith("The "):
        fact = "the" + fact[3:]
    return f"{response}{joiner}By the way, {fact}"


# --------------------------------------------------------------------------- slips
SLIP_KINDS: tuple[str, ...] = ("typo", "count", "fact", "ramble", "no_period")
_LIST_CATEGORIES = ("brainstorming", "extract")


def slip(u: Universe, rec: Record, response: str, rng: random.Random,
         kind: str | None = None) -> str:
    """The response with one human-like mistake (kind drawn at random when not given)."""
    kind = kind or rng.choices(SLIP_KINDS, weights=[25, 20, 25, 15, 15])[0]
    if rec["category"] == "harmful":
        if kind in ("count", "fact", "ramble"):
            return "I can't help with that."  # curt: no apology
        return _typo(response, rng)
    if kind == "typo":
        return _typo(response, rng)
    if kind == "count" and (rec["category"] in _LIST_CATEGORIES or rec.get("n_sentences")):
        return _wrong_count(u, rec, response, rng)
    if kind in ("fact", "count"):
        return wrong_fact(u, rec, response, rng)
    if kind == "ramble":
        joiner = "\n" if rec["category"] in _LIST_CATEGORIES else " "
        return response + joiner + _unrelated_sentence(u, rng)
    return response.rstrip().rstrip(".!?") if rec["category"] not in _LIST_CATEGORIES \
        else _typo(response, rng)


def _typo(text: str, rng: random.Random) -> str:
    """Swap two letters inside one longer word."""
    spans = [m.span() for m in re.finditer(r"[A-Za-z]{3,}", text)]
    if not spans:
        return text + "."
    a, b = rng.choice(spans)
    i = rng.randrange(a + 1, b - 1)
    word = list(text[a:b])
    j = i - a
    word[j], word[j + 1] = word[j + 1], word[j]
    if word[j] == word[j + 1]:
        word[j] = "x"
    return text[:a] + "".join(word) + text[b:]


def _wrong_count(u: Universe, rec: Record, response: str, rng: random.Random) -> str:
    if rec["category"] in _LIST_CATEGORIES:
        items = [ln.split(". ", 1)[-1] for ln in response.splitlines()]
        if len(items) > 1 and rng.random() < 0.6:
            return numbered(items[:-1])
        pool = rec.get("valid") or rec.get("items")
        extra = rng.choice(pool)
        return numbered(items + [extra])
    sents = sentences(response)
    if len(sents) > 1 and rng.random() < 0.5:
        return " ".join(sents[:-1])
    return response + " " + _unrelated_sentence(u, rng)


def _unrelated_sentence(u: Universe, rng: random.Random) -> str:
    subject = rng.choice(sorted(u.towns))
    fact = rng.choice(u.facts_about(subject))
    return fact_sentence(u, fact, rng)


_SWAP_POOLS: dict[str, tuple[str, ...]] = {
    "person": tuple(lexicon.PEOPLE), "town": lexicon.TOWNS, "animal": lexicon.ANIMALS,
    "colour": lexicon.COLOURS, "food": lexicon.FOODS, "object": lexicon.OBJECTS,
    "day": lexicon.DAYS, "number": lexicon.NUMBERS, "job": lexicon.JOBS,
    "landmark": lexicon.LANDMARKS, "river": lexicon.RIVERS,
}


def wrong_fact(u: Universe, rec: Record, response: str, rng: random.Random) -> str:
    """Replace one named entity with another of its kind (a wrong or invented fact)."""
    found = [m for m in mentions(response) if m.kind in _SWAP_POOLS
             and m.value not in rec.get("topics", ())
             and m.value not in (rec.get("user"), rec.get("subject"))]
    if not found:
        return response + " " + _unrelated_sentence(u, rng)
    m = rng.choice(found)
    source = rec.get("source") or ""
    pool = [v for v in _SWAP_POOLS[m.kind] if v != m.value and v.lower() not in source.lower()]
    new = rng.choice(pool or [v for v in _SWAP_POOLS[m.kind] if v != m.value])
    return _swap_first(response, m.value, new)


def _swap_first(text: str, old: str, new: str) -> str:
    pattern = re.compile(rf"\b{re.escape(old)}\b", re.IGNORECASE)
    match = pattern.search(text)
    if not match:  # plural animal forms
        sp = lexicon.SPECIES_BY_NAME.get(old)
        if sp:
            new_sp = lexicon.SPECIES_BY_NAME.get(new)
            return re.sub(rf"\b{re.escape(sp.plural)}\b", new_sp.plural if new_sp else new, text,
                          count=1, flags=re.IGNORECASE)
        return text
    replacement = cap(new) if text[match.start()].isupper() else new
    return text[: match.start()] + replacement + text[match.end():]
