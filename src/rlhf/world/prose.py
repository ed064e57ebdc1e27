"""Sentences, documents and short passages in micro-English.

Three users of this module:
- the pretraining corpus (`corpus_document`): profiles, stories, habits and greetings that state
  the world's facts many times in varied shapes, and never an instruction or a question;
- the prompt sources (`make_passage`): short stories of invented events that always open with
  "On <Day>," -- an opener the corpus never uses, so no prompt source can occur in the corpus;
- the writers of good answers (`fact_sentence`), which reuse the corpus's fact shapes so that the
  judge's claim reader (rlhf.world.text.extract_claims) understands them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rlhf.world import lexicon
from rlhf.world.universe import Fact, Universe

VERBS: dict[str, dict[str, str]] = {
    "past": {"go": "went", "buy": "bought", "see": "saw", "meet": "met", "give": "gave",
             "be": "was", "walk": "walked", "find": "found", "lose": "lost", "get": "got",
             "win": "won", "break": "broke", "miss": "missed", "take": "took"},
    "present": {"go": "goes", "buy": "buys", "see": "sees", "meet": "meets", "give": "gives",
                "be": "is", "walk": "walks", "find": "finds", "lose": "loses", "get": "gets",
                "win": "wins", "break": "breaks", "miss": "misses", "take": "takes"},
}
# Present-tense verb forms that a past-tense rewrite must not keep.
PRESENT_FORMS: frozenset[str] = frozenset(VERBS["present"].values()) - {"is"}
PAST_FORMS: frozenset[str] = frozenset(VERBS["past"].values())


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


# --------------------------------------------------------------------------- facts
_PERSON_TEMPLATES: dict[str, tuple[str, ...]] = {
    "town": ("{S} lives in {v}.", "{Ss} home is in {v}."),
    "job": ("{S} is a {v}.", "{S} works as a {v}."),
    "pet": ("{S} has a {pc} {v}.", "{S} keeps a {pc} {v}."),
    "pet_colour": ("{Ss} {pet} is {v}.",),
    "colour": ("{Ss} favourite colour is {v}.", "{S} loves the colour {v}."),
    "food": ("{Ss} favourite food is {v}.", "{S} likes {v} best."),
}
_TOWN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "river": ("{S} is near the {v} River.", "{S} is a town by the {v} River.",
              "The {v} River flows past {S}."),
    "size": ("{S} is a {v} town.",),
    "landmark": ("{S} is known for its old {v}.", "The old {v} in {S} is famous."),
    "market_day": ("The market in {S} is open on {v}.",),
}
_SPECIES_TEMPLATES: dict[str, tuple[str, ...]] = {
    "home": ("{A} lives {home}.", "{Pl} live {home}."),
    "legs": ("{A} has {v} legs.", "{Pl} have {v} legs."),
    "eats": ("{A} eats {v}.", "{Pl} eat {v}."),
}


def fact_sentence(u: Universe, fact: Fact, rng: random.Random, *, pronoun: bool = False,
                  plural: bool | None = None) -> str:
    """One sentence stating `fact`; with pronoun=True the subject may become she/he/it.
    For animals, `plural` picks "Foxes eat mice" over "A fox eats mice" (None: either)."""
    s, rel, v = fact.subject, fact.relation, fact.value
    kind = u.kind_of(s)
    if kind == "person":
        p = u.people[s]
        subj = p.pronoun if pronoun else s
        poss = p.possessive if pronoun else f"{s}'s"
        tpl = rng.choice(_PERSON_TEMPLATES[rel])
        return cap(tpl.format(S=subj, Ss=poss, v=v, pc=p.pet_colour, pet=p.pet))
    if kind == "town":
        options = _TOWN_TEMPLATES[rel]
        if pronoun:
            options = tuple(t for t in options if t.startswith("{S}")) or options
        tpl = rng.choice(options)
        subj = "it" if pronoun and tpl.startswith("{S}") else s
        return cap(tpl.format(S=subj, v=v))
    if kind == "animal":
        sp = u.species[s]
        a = "it" if pronoun else f"{article(s)} {s}"
        singular, plural_tpl = _SPECIES_TEMPLATES[rel]
        if pronoun or plural is False:
            tpl = singular
        elif plural:
            tpl = plural_tpl
        else:
            tpl = rng.choice((singular, plural_tpl))
        return cap(tpl.format(A=a, Pl=sp.plural, v=v, home=lexicon.HOMES[sp.home]))
    # river
    towns = u.river_towns[s]
    if rng.random() < 0.5:
        return f"The {s} River flows past {towns[0]} and {towns[1]}."
    return f"{towns[0]} and {towns[1]} are near the {s} River."


def fact_sentences(u: Universe, facts: list[Fact], rng: random.Random,
                   pronoun_rate: float = 0.6) -> list[str]:
    """Sentences for several facts about one subject: the first names it, later ones may not.
    Animals are either all plural ("Foxes eat mice.") or singular with "it" ("A fox ... It")."""
    plural = bool(facts) and u.kind_of(facts[0].subject) == "animal" and rng.random() < 0.5
    out = []
    for i, f in enumerate(facts):
        pronoun = not plural and i > 0 and rng.random() < pronoun_rate
        out.append(fact_sentence(u, f, rng, pronoun=pronoun, plural=plural))
    return out


def subject_facts(u: Universe, subject: str) -> list[Fact]:
    """Facts worth stating about a subject (a pet and its colour are stated together; a river's
    towns in one sentence)."""
    facts = [f for f in u.facts_about(subject) if f.relation != "pet_colour"]
    return facts[:1] if u.kind_of(subject) == "river" else facts


# --------------------------------------------------------------------------- corpus documents
_STORY_OPENERS = ("One day,", "One morning,", "Last spring,", "Early in the morning,",
                  "One sunny day,", "Last week,", "One evening,")
_HAPPY_EVENTS = ("found a {c} {o} in the park", "won a prize at the fair",
                 "got a {c} {o} from {Q}", "saw a {c} {a} by the river")
_SAD_EVENTS = ("lost {poss} {c} {o}", "broke {poss} {c} {o}", "missed the bus to {T}",
               "could not find {poss} {pet}")


def _person_profile(u: Universe, rng: random.Random) -> list[str]:
    name = rng.choice(sorted(u.people))
    facts = subject_facts(u, name)
    rng.shuffle(facts)
    sents = fact_sentences(u, facts[: rng.randint(3, len(facts))], rng)
    p = u.people[name]
    if rng.random() < 0.5:
        sents.append(fact_sentence(u, Fact(p.town, "river", u.value(p.town, "river")), rng))
    if rng.random() < 0.3:
        friend = rng.choice([q for q in sorted(u.people) if q != name])
        sents.append(f"{name} and {friend} are good friends.")
    return sents


def _town_profile(u: Universe, rng: random.Random) -> list[str]:
    town = rng.choice(sorted(u.towns))
    facts = u.facts_about(town)
    rng.shuffle(facts)
    sents = fact_sentences(u, facts[: rng.randint(2, len(facts))], rng)
    people = u.people_in(town)
    if len(people) >= 2 and rng.random() < 0.7:
        a, b = rng.sample(people, 2)
        sents.append(f"{a} and {b} live in {town}.")
    elif people:
        sents.append(f"{rng.choice(people)} lives in {town}.")
    return sents


def _species_profile(u: Universe, rng: random.Random) -> list[str]:
    name = rng.choice(sorted(u.species))
    facts = u.facts_about(name)
    rng.shuffle(facts)
    sents = fact_sentences(u, facts[: rng.randint(2, 3)], rng, pronoun_rate=0.5)
    owners = [p for p in u.people.values() if p.pet == name]
    if owners and rng.random() < 0.5:
        p = rng.choice(owners)
        sents.append(f"{p.name} has a {p.pet_colour} {name}.")
    return sents


def _river_profile(u: Universe, rng: random.Random) -> list[str]:
    river = rng.choice(sorted(u.river_towns))
    sents = [fact_sentence(u, Fact(river, "towns", ""), rng)]
    for town in u.river_towns[river]:
        sents.append(fact_sentence(u, Fact(town, "size", u.value(town, "size")), rng))
    return sents


def _story(u: Universe, rng: random.Random) -> list[str]:
    p = u.people[rng.choice(sorted(u.people))]
    town = u.towns[rng.choice([t for t in sorted(u.towns) if t != p.town])]
    pr, poss, obj = p.pronoun, p.possessive, ("her" if p.gender == "f" else "him")
    sents = [f"{rng.choice(_STORY_OPENERS)} {p.name} walked from {p.town} to {town.name}"
             + (f" with {poss} {p.pet_colour} {p.pet}." if rng.random() < 0.4 else ".")]
    friend = rng.choice([q for q in sorted(u.people) if q != p.name])
    meeting = f"{cap(pr)} met {friend} by the {town.river} River."
    if rng.random() < 0.5:
        meeting += (f" {friend} gave {obj} a {rng.choice(lexicon.COLOURS)} "
                    f"{rng.choice(lexicon.OBJECTS)}.")
    events = [
        f"{cap(pr)} bought {rng.choice(lexicon.NUMBERS)} {rng.choice(lexicon.COUNTABLE_FOODS)} "
        "at the market.",
        f"{cap(pr)} saw a {rng.choice(lexicon.COLOURS)} {rng.choice(lexicon.ANIMALS)} near the old "
        f"{town.landmark}.",
        meeting,
        f"{cap(pr)} ate some {rng.choice(lexicon.FOODS)} by the {town.landmark}.",
    ]
    rng.shuffle(events)
    sents += events[: rng.randint(2, len(events))]
    if rng.random() < 0.4:
        sents.append(fact_sentence(u, Fact(town.name, "river", town.river), rng))
    mood, pool = ("happy", _HAPPY_EVENTS) if rng.random() < 0.5 else ("sad", _SAD_EVENTS)
    elsewhere = rng.choice([t for t in sorted(u.towns) if t not in (town.name, p.town)])
    event = rng.choice(pool).format(c=rng.choice(lexicon.COLOURS), o=rng.choice(lexicon.OBJECTS),
                                    Q=friend, a=rng.choice(lexicon.ANIMALS), poss=poss,
                                    T=elsewhere, pet=p.pet)
    sents.append(f"Then {pr} {event}, and {pr} was {mood}.")
    sents.append(f"In the evening, {pr} went home to {p.town}.")
    return sents


def _habit(u: Universe, rng: random.Random) -> list[str]:
    p = u.people[rng.choice(sorted(u.people))]
    town = u.towns[p.town]
    pr = cap(p.pronoun)
    sents = [f"Every {town.market_day}, {p.name} walks to the market in {town.name}.",
             f"{pr} buys {rng.choice(lexicon.COUNTABLE_FOODS)} and {p.food} there.",
             f"{pr} sees {rng.choice(sorted(u.people))} by the {town.river} River.",
             f"Then {p.pronoun} goes home with {p.possessive} {p.pet}."]
    return sents[: rng.randint(2, 4)]


def _greeting(u: Universe, rng: random.Random) -> list[str]:
    a, b = rng.sample(sorted(u.people), 2)
    town = u.towns[u.people[a].town]
    food = rng.choice(lexicon.COUNTABLE_FOODS)
    lines = [f"{a} met {b} near the old {town.landmark} in {town.name}.",
             f"\"Hello, {b},\" said {a}. \"It is a nice day.\"",
             f"\"Hello, {a},\" said {b}. \"I am going to the market to buy {food}.\""]
    if rng.random() < 0.5:
        lines.append(f"\"I am sorry, I can not come with you,\" said {a}. \"I must go home.\"")
    lines.append(f"\"Thank you, and goodbye,\" said {b}, and {u.people[b].pronoun} walked away.")
    return lines


_DOCUMENT_KINDS = (
    (_person_profile, 22), (_town_profile, 10), (_species_profile, 10), (_river_profile, 3),
    (_story, 35), (_habit, 10), (_greeting, 10),
)


def corpus_document(u: Universe, rng: random.Random) -> str:
    """One pretraining document: a paragraph of plain prose (no questions, no instructions)."""
    makers, weights = zip(*_DOCUMENT_KINDS)
    maker = rng.choices(makers, weights=weights)[0]
    return " ".join(maker(u, rng))


# --------------------------------------------------------------------------- passages
@dataclass
class QA:
    question: str
    answer: str        # canonical answer value (one word, or a river name)
    kind: str          # entity kind of the answer (see rlhf.world.text.mentions)
    sentence: str      # a full-sentence answer


@dataclass
class Passage:
    """A short invented story used as the source text of a closed-domain prompt."""

    person: str
    town: str
    day: str
    sentences: dict[str, list[str]]    # tense -> sentences
    qas: list[QA] = field(default_factory=list)
    summary_phrases: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def text(self, tense: str = "past") -> str:
        return " ".join(self.sentences[tense])

    def summary(self, max_phrases: int = 2) -> str:
        """One sentence naming the person, the town and the main events."""
        phrases = [f"went to {self.town}"] + self.summary_phrases[:max_phrases]
        if len(phrases) == 1:
            body = phrases[0]
        else:
            body = ", ".join(phrases[:-1]) + " and " + phrases[-1]
        return f"{self.person} {body}."


def _render(template: str, tense: str, **fields: str) -> str:
    return cap(template.format(**VERBS[tense], **fields))


def make_passage(u: Universe, rng: random.Random, *, events: tuple[str, ...] | None = None,
                 with_pet: bool | None = None, n_events: int | None = None) -> Passage:
    """A 2-5 sentence story opening "On <Day>," with questions and a summary about it.

    `events` picks the event kinds (from buy, see, see_many, meet, gift, home) in order; by
    default 2-3 are drawn at random.
    """
    p = u.people[rng.choice(sorted(u.people))]
    town = u.towns[rng.choice([t for t in sorted(u.towns) if t != p.town])]
    day = rng.choice(lexicon.DAYS)
    if with_pet is None:
        with_pet = rng.random() < 0.3
    if events is None:
        pool = ["buy", "see", "see_many", "meet", "home"]
        rng.shuffle(pool)
        events = tuple(pool[: n_events or rng.randint(2, 3)])
        if "see" in events and "see_many" in events:
            events = tuple(e for e in events if e != "see_many")
        if "meet" in events and rng.random() < 0.5:
            i = events.index("meet")
            events = events[: i + 1] + ("gift",) + events[i + 1:]
        if "home" in events:
            events = tuple(e for e in events if e != "home") + ("home",)
    pr, poss, obj = p.pronoun, p.possessive, ("her" if p.gender == "f" else "him")
    pet = f" with {poss} {p.pet_colour} {p.pet}" if with_pet else ""
    first = "On {day}, {name} {go} to {town}{pet}."
    passage = Passage(person=p.name, town=town.name, day=day, sentences={"past": [], "present": []})
    fields = dict(day=day, name=p.name, town=town.name, pet=pet)
    for tense in ("past", "present"):
        passage.sentences[tense].append(_render(first, tense, **fields))
    passage.qas += [
        QA(f"Where did {p.name} go on {day}?", town.name, "town", f"{p.name} went to {town.name}."),
        QA(f"On which day did {p.name} go to {town.name}?", day, "day",
           f"{p.name} went to {town.name} on {day}."),
    ]
    passage.keys += [p.name, town.name]
    friend = rng.choice([q for q in sorted(u.people) if q not in (p.name,)])
    for ev in events:
        _add_event(u, rng, passage, ev, p=p, town=town, pr=pr, obj=obj, friend=friend)
    return passage


def _add_event(u: Universe, rng: random.Random, passage: Passage, ev: str, *, p, town, pr: str,
               obj: str, friend: str) -> None:
    name = p.name
    if ev == "buy":
        n, food = rng.choice(lexicon.NUMBERS), rng.choice(lexicon.COUNTABLE_FOODS)
        tpl, f = "{pr} {buy} {n} {food} at the market.", dict(pr=pr, n=n, food=food)
        passage.qas += [QA(f"How many {food} did {name} buy?", n, "number",
                           f"{name} bought {n} {food}."),
                        QA(f"What did {name} buy at the market?", food, "food",
                           f"{name} bought {n} {food}.")]
        passage.summary_phrases.append(f"bought {n} {food}")
        passage.keys.append(food)
    elif ev == "see":
        colour, animal = rng.choice(lexicon.COLOURS), rng.choice(lexicon.ANIMALS)
        tpl = "{pr} {see} {art} {colour} {animal} near the old {landmark}."
        f = dict(pr=pr, art=article(colour), colour=colour, animal=animal, landmark=town.landmark)
        passage.qas += [QA(f"What animal did {name} see?", animal, "animal",
                           f"{name} saw {article(colour)} {colour} {animal}."),
                        QA(f"What colour was the {animal}?", colour, "colour",
                           f"The {animal} was {colour}.")]
        passage.summary_phrases.append(f"saw {article(colour)} {colour} {animal}")
        passage.keys.append(animal)
    elif ev == "see_many":
        m, sp = rng.choice(lexicon.NUMBERS), u.species[rng.choice(lexicon.ANIMALS)]
        tpl = "{pr} {see} {m} {animals} by the {river} River."
        f = dict(pr=pr, m=m, animals=sp.plural, river=town.river)
        passage.qas += [QA(f"How many {sp.plural} did {name} see?", m, "number",
                           f"{name} saw {m} {sp.plural}.")]
        passage.summary_phrases.append(f"saw {m} {sp.plural}")
        passage.keys.append(sp.name)
    elif ev == "meet":
        tpl, f = "{pr} {meet} {friend} by the {river} River.", dict(pr=pr, friend=friend,
                                                                    river=town.river)
        passage.qas += [QA(f"Who did {name} meet?", friend, "person", f"{name} met {friend}."),
                        QA(f"Where did {name} meet {friend}?", town.river, "river",
                           f"{name} met {friend} by the {town.river} River.")]
        passage.summary_phrases.append(f"met {friend}")
        passage.keys.append(friend)
    elif ev == "gift":
        colour, thing = rng.choice(lexicon.COLOURS), rng.choice(lexicon.OBJECTS)
        tpl = "{friend} {give} {obj} {art} {colour} {thing}."
        f = dict(friend=friend, obj=obj, art=article(colour), colour=colour, thing=thing)
        passage.qas += [QA(f"What did {friend} give {name}?", thing, "object",
                           f"{friend} gave {name} {article(colour)} {colour} {thing}.")]
        passage.summary_phrases.append(f"got {article(colour)} {colour} {thing} from {friend}")
        passage.keys.append(thing)
    elif ev == "home":
        tpl, f = "In the evening, {pr} {go} home to {home}.", dict(pr=pr, home=p.town)
        passage.qas += [QA(f"Where did {name} go in the evening?", p.town, "town",
                           f"{name} went home to {p.town}.")]
    else:
        raise ValueError(f"unknown event {ev!r}")
    for tense in ("past", "present"):
        passage.sentences[tense].append(_render(tpl, tense, **f))


def sentiment_passage(u: Universe, rng: random.Random, mood: str) -> tuple[str, str]:
    """A one-sentence "On <Day>, ..." event that is clearly happy or sad; returns (text, mood)."""
    p = u.people[rng.choice(sorted(u.people))]
    friend = rng.choice([q for q in sorted(u.people) if q != p.name])
    town = rng.choice([t for t in sorted(u.towns) if t != p.town])
    pool = _HAPPY_EVENTS if mood == "happy" else _SAD_EVENTS
    event = rng.choice(pool).format(c=rng.choice(lexicon.COLOURS), o=rng.choice(lexicon.OBJECTS),
                                    Q=friend, a=rng.choice(lexicon.ANIMALS), poss=p.possessive,
                                    T=town, pet=p.pet)
    return f"On {rng.choice(lexicon.DAYS)}, {p.name} {event}.", mood
