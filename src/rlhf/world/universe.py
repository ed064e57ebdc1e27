"""The facts of one world: who lives where, which town is near which river, whose pet is which.

A `Universe` is a pure function of its seed. Species facts (legs, food, home) are fixed; the seed
assigns people to towns, jobs, pets and favourites, and towns to rivers, sizes and landmarks.
Facts are triples (subject, relation, value); `Universe.value(subject, relation)` is the truth.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlhf.world import lexicon

PET_COLOURS: tuple[str, ...] = ("white", "black", "brown", "grey")

# relation name -> entity type of its value (see rlhf.world.text.ENTITY_TYPES)
PERSON_RELATIONS: dict[str, str] = {
    "town": "town", "job": "job", "pet": "animal", "pet_colour": "colour", "colour": "colour",
    "food": "food",
}
TOWN_RELATIONS: dict[str, str] = {
    "river": "river", "size": "size", "landmark": "landmark", "market_day": "day",
}
SPECIES_RELATIONS: dict[str, str] = {"home": "home", "legs": "number", "eats": "food"}


@dataclass(frozen=True)
class Person:
    name: str
    gender: str  # "f" or "m"
    town: str
    job: str
    pet: str
    pet_colour: str
    colour: str
    food: str

    @property
    def pronoun(self) -> str:
        return "she" if self.gender == "f" else "he"

    @property
    def possessive(self) -> str:
        return "her" if self.gender == "f" else "his"


@dataclass(frozen=True)
class Town:
    name: str
    river: str
    size: str
    landmark: str
    market_day: str


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    value: str


class Universe:
    """All facts of a seeded world. Lookups are by the entity's canonical spelling."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        rng = random.Random(f"universe:{seed}")
        self.towns: dict[str, Town] = self._make_towns(rng)
        self.people: dict[str, Person] = self._make_people(rng)
        self.species: dict[str, lexicon.Species] = dict(lexicon.SPECIES_BY_NAME)
        self.river_towns: dict[str, tuple[str, ...]] = {
            r: tuple(t.name for t in self.towns.values() if t.river == r) for r in lexicon.RIVERS
        }

    # ----------------------------------------------------------------- construction
    @staticmethod
    def _make_towns(rng: random.Random) -> dict[str, Town]:
        names = list(lexicon.TOWNS)
        rng.shuffle(names)
        landmarks = list(lexicon.LANDMARKS)
        rng.shuffle(landmarks)
        sizes = ["big", "small"] * (len(names) // 2 + 1)
        rng.shuffle(sizes)
        towns = {}
        for i, name in enumerate(names):
            towns[name] = Town(name=name, river=lexicon.RIVERS[i % len(lexicon.RIVERS)],
                               size=sizes[i], landmark=landmarks[i % len(landmarks)],
                               market_day=rng.choice(lexicon.DAYS))
        return dict(sorted(towns.items()))

    def _make_people(self, rng: random.Random) -> dict[str, Person]:
        names = sorted(lexicon.PEOPLE)
        rng.shuffle(names)
        town_names = sorted(self.towns)
        people = {}
        for i, name in enumerate(names):
            people[name] = Person(
                name=name, gender=lexicon.PEOPLE[name], town=town_names[i % len(town_names)],
                job=rng.choice(lexicon.JOBS), pet=rng.choice(lexicon.PETS),
                pet_colour=rng.choice(PET_COLOURS), colour=rng.choice(lexicon.COLOURS),
                food=rng.choice(lexicon.FOODS))
        return dict(sorted(people.items()))

    # ----------------------------------------------------------------- queries
    def value(self, subject: str, relation: str) -> str:
        """The true value of a relation, e.g. value("Anna", "town") -> "Millbrook"."""
        if subject in self.people:
            return getattr(self.people[subject], relation)
        if subject in self.towns:
            return getattr(self.towns[subject], relation)
        if subject in self.species:
            return getattr(self.species[subject], relation)
        raise KeyError(subject)

    def facts_about(self, subject: str) -> list[Fact]:
        """Every fact whose subject is this person, town, species or river (fixed order)."""
        if subject in self.people:
            rels = PERSON_RELATIONS
        elif subject in self.towns:
            rels = TOWN_RELATIONS
        elif subject in self.species:
            rels = SPECIES_RELATIONS
        elif subject in self.river_towns:
            return [Fact(subject, "towns", t) for t in self.river_towns[subject]]
        else:
            raise KeyError(subject)
        return [Fact(subject, r, self.value(subject, r)) for r in rels]

    def people_in(self, town: str) -> list[str]:
        return [p.name for p in self.people.values() if p.town == town]

    def kind_of(self, subject: str) -> str:
        """"person", "town", "animal" or "river"."""
        if subject in self.people:
            return "person"
        if subject in self.towns:
            return "town"
        if subject in self.species:
            return "animal"
        if subject in self.river_towns:
            return "river"
        raise KeyError(subject)

    def to_dict(self) -> dict:
        """A JSON-friendly dump of every fact (written as universe.json for people to read)."""
        return {
            "people": {n: vars(p) for n, p in self.people.items()},
            "towns": {n: vars(t) for n, t in self.towns.items()},
            "rivers": {r: list(ts) for r, ts in self.river_towns.items()},
            "species": {n: vars(s) for n, s in self.species.items()},
        }
