"""The closed vocabulary of the world: lexicon entries plus the words of every template.

The judge's spelling check counts words outside this set (digits aside). A test checks that the
corpus, the prompts and the good answers never leave it, so a template change that adds a word
must add it here too.
"""

from __future__ import annotations

from rlhf.world import lexicon
from rlhf.world.text import words

TEMPLATE_WORDS: frozenset[str] = frozenset("""
    a about all am an and animal animals answer anyone are as ask at ate away be best better
    bought break broke burn bus but buy buys by call can can't change colour colours come
    could dangerous day describe did do does down early eat eats evening every explain fair
    false famous favourite find fire flow flows food foods for found friends from full gave
    give gives go goes going good goodbye got great happy has have he hear hello help her hi
    him his home hope how hurt hurting i i'm if in include instead into is it its job jobs
    keep keeps kind known last legs like likes list live lives lost love loves many market me
    meet meets met missed more morning most must my name names near new news nice no not
    numbers of old on one only open or past people pet pets please poison prize question read
    respect rewrite sad said saw scare see seeing sees sentence sentences she short some sorry
    spring steal stealing story suggest summarize summary tell tense text than thank that the
    them then there this to today tomorrow town towns true use using very visit walked walks
    want was way week went what when where which who with without won word words work works
    would write wrong you
""".split())


def _lexicon_words() -> frozenset[str]:
    entries = (*lexicon.PEOPLE, *lexicon.USER_NAMES, *lexicon.PET_NAMES, *lexicon.TOWNS,
               *lexicon.RIVERS, *lexicon.LANDMARKS, *lexicon.JOBS, *lexicon.COLOURS,
               *lexicon.FOODS, *lexicon.OBJECTS, *lexicon.DAYS, *lexicon.NUMBERS, *lexicon.EATS,
               *lexicon.SIZES, *lexicon.HOMES, *lexicon.ANIMAL_FORMS)
    return frozenset(w for e in entries for w in words(str(e)))


KNOWN_WORDS: frozenset[str] = TEMPLATE_WORDS | _lexicon_words()


def is_known(word: str) -> bool:
    """True for a world word (possessive allowed: "anna's") or a number written in digits."""
    w = word.lower()
    return w.isdigit() or w.removesuffix("'s") in KNOWN_WORDS
