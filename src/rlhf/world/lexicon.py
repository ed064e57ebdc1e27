"""The fixed word lists of the Instruction World.

Everything a model of this world can say is built from these lists plus a few hundred template
words. The lists are constants; a seed only decides how they are combined (who lives where, whose
pet is which colour). Keep every entry a single lowercase-able word so entity detection can work
word by word (rivers are the one two-word entity: "the Swift River").
"""

from __future__ import annotations

from dataclasses import dataclass

# People of the world: name -> "f" / "m" (picks the pronoun in prose).
PEOPLE: dict[str, str] = {
    "Anna": "f", "Ben": "m", "Clara": "f", "Dan": "m", "Emma": "f", "Finn": "m",
    "Grace": "f", "Hugo": "m", "Ivy": "f", "Jack": "m", "Kate": "f", "Leo": "m",
    "Mia": "f", "Ned": "m", "Olive": "f", "Paul": "m", "Rose": "f", "Tom": "m",
    "Una": "f", "Victor": "m", "Wendy": "f", "Will": "m", "Zoe": "f", "Adam": "m",
    "Eva": "f", "Felix": "m", "Hannah": "f", "Luke": "m", "Nora": "f", "Oscar": "m",
}

# Names that users give themselves in chat prompts (never people of the world).
USER_NAMES: tuple[str, ...] = ("Sam", "Alex", "Kim", "Jo", "Pat", "Lou", "Robin", "Charlie")

# Names a labeler may suggest for a new pet (brainstorming).
PET_NAMES: tuple[str, ...] = ("Bella", "Coco", "Pip", "Rex", "Daisy", "Sunny", "Toby", "Lucky",
                              "Misty", "Bobo", "Fluffy", "Patch")

TOWNS: tuple[str, ...] = ("Millbrook", "Oakford", "Ashby", "Elmstead", "Fernley", "Hollowell",
                          "Kingsford", "Larkfield", "Pinecrest", "Thornbury", "Westwick",
                          "Brackley")

# River names; in text always "the <Name> River".
RIVERS: tuple[str, ...] = ("Swift", "Willow", "Stony", "Quiet", "Long", "Bright")

LANDMARKS: tuple[str, ...] = ("bridge", "mill", "castle", "tower", "library", "garden", "school",
                              "fountain", "museum", "park", "theatre", "zoo")

JOBS: tuple[str, ...] = ("baker", "farmer", "teacher", "doctor", "fisher", "painter", "builder",
                         "nurse", "singer", "cook")

COLOURS: tuple[str, ...] = ("red", "blue", "green", "yellow", "white", "black", "brown", "grey")

# Favourite foods (as said after "likes"): all plural or mass nouns.
FOODS: tuple[str, ...] = ("apples", "bread", "cheese", "soup", "cake", "carrots", "pears", "honey",
                          "rice", "plums", "eggs", "buns")

# Foods that can be counted ("three pears"): bought at markets in stories.
COUNTABLE_FOODS: tuple[str, ...] = ("apples", "carrots", "pears", "plums", "eggs", "buns")

OBJECTS: tuple[str, ...] = ("hat", "ball", "box", "book", "cup", "kite", "scarf", "bag", "lamp",
                            "key")

DAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
                         "Sunday")

# Counting words used for quantities (never "one": it is too common a word to count as a fact).
NUMBERS: tuple[str, ...] = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
NUMBER_VALUE: dict[str, int] = {w: i for i, w in enumerate(NUMBERS, start=2)}
NUMBER_WORD: dict[int, str] = {i: w for w, i in NUMBER_VALUE.items()}

# Where animals live, as the phrase used in prose and the one-word label used in questions.
HOMES: dict[str, str] = {
    "farm": "on the farm", "forest": "in the forest", "river": "by the river",
    "house": "in the house", "garden": "in the garden",
}


@dataclass(frozen=True)
class Species:
    """Fixed facts about an animal species (the same in every seed: a spider has eight legs)."""

    name: str
    plural: str
    home: str  # a key of HOMES
    legs: str  # a NUMBERS word
    eats: str  # a word of EATS


SPECIES: tuple[Species, ...] = (
    Species("cat", "cats", "house", "four", "mice"),
    Species("dog", "dogs", "house", "four", "bones"),
    Species("rabbit", "rabbits", "house", "four", "carrots"),
    Species("cow", "cows", "farm", "four", "grass"),
    Species("sheep", "sheep", "farm", "four", "grass"),
    Species("goat", "goats", "farm", "four", "leaves"),
    Species("horse", "horses", "farm", "four", "hay"),
    Species("pig", "pigs", "farm", "four", "apples"),
    Species("hen", "hens", "farm", "two", "seeds"),
    Species("fox", "foxes", "forest", "four", "mice"),
    Species("owl", "owls", "forest", "two", "mice"),
    Species("deer", "deer", "forest", "four", "leaves"),
    Species("bear", "bears", "forest", "four", "honey"),
    Species("squirrel", "squirrels", "forest", "four", "nuts"),
    Species("wolf", "wolves", "forest", "four", "meat"),
    Species("frog", "frogs", "river", "four", "flies"),
    Species("duck", "ducks", "river", "two", "weeds"),
    Species("otter", "otters", "river", "four", "fish"),
    Species("swan", "swans", "river", "two", "weeds"),
    Species("bee", "bees", "garden", "six", "nectar"),
    Species("spider", "spiders", "garden", "eight", "flies"),
    Species("butterfly", "butterflies", "garden", "six", "nectar"),
)
SPECIES_BY_NAME: dict[str, Species] = {s.name: s for s in SPECIES}
ANIMALS: tuple[str, ...] = tuple(s.name for s in SPECIES)
# Plural -> singular (and singular -> itself), for reading animal words back.
ANIMAL_FORMS: dict[str, str] = {**{s.plural: s.name for s in SPECIES},
                                **{s.name: s.name for s in SPECIES}}

# Animals people keep as pets.
PETS: tuple[str, ...] = ("cat", "dog", "rabbit", "horse", "goat", "duck", "hen")

EATS: tuple[str, ...] = tuple(sorted({s.eats for s in SPECIES}))

SIZES: tuple[str, ...] = ("big", "small")

# Words a rude or unfit assistant might use; the judge marks responses containing them impolite.
RUDE_PHRASES: tuple[str, ...] = ("stupid", "idiot", "dumb", "shut up", "go away", "i hate you",
                                 "silly question", "who cares", "boring question")
