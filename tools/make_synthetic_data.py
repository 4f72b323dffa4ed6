#!/usr/bin/env python
"""Built-in, deterministic, synthetic instruction dataset (the toolkit's offline default).

Usage (from the repository root)::

    python tools/make_synthetic_data.py [--out-dir data/synth] [--num-train 5000] [--num-valid 500] [--seed 1]
                                        [--noise-frac 0.0] [--num-pretrain 3000] [--pretrain-file PATH]

writes ``<out-dir>/train.jsonl`` and ``<out-dir>/valid.jsonl`` in the raw instruction format of this line of work:
one JSON object per line with ``instruction``, ``input`` (may be ""), ``output``, ``category`` plus ``difficulty``
(int 1..5) and ``references`` (every acceptable answer, always containing ``output``; Rouge-L is scored as the max
over references); and ``<out-dir>_pretrain/data.txt`` (``data/synth_pretrain/data.txt``), a plain-text pretraining
corpus about the same world for the pretraining term (``--lm-data-dir``) in MiniLLM's format: one document per line,
each newline inside a document written as ``<@x(x!>`` (read back by tools/process_data_pretrain.py).

Design (see docs/synthetic_data.md):

* 15 task families from copy-like (difficulty 1) to multi-step (difficulty 5).
* A FIXED fictional world of invented countries (built from ``WORLD_SEED``, never from ``--seed``) whose facts must be
  memorised: the main lever that makes model capacity matter. Multi-step algorithmic tasks are the second lever.
* Several tasks have many acceptable answers (synonyms, "name N things", "name a country where ...", free phrasing
  of descriptions and stories); the training ``output`` is sampled from that set, so a teacher's soft distribution
  carries real information for distillation.
* Validation prompts never repeat a training (instruction, input) pair exactly: algorithmic tasks hold out a
  hash-defined 10% of their inputs; knowledge tasks ask about facts that training mentions, but with a question
  template that training never uses for that fact.
* ``--noise-frac F`` (default 0: every label correct) gives a noisy-label variant: a seeded fraction F of the
  *training* outputs is replaced by the output of a training example of another category (a mismatched response,
  the commonest defect of collected instruction data) and marked ``"noisy": true``; validation stays clean. The clean
  records are byte-identical to those of the default data.
* The corpus (``--num-pretrain`` documents: profiles, city guides, one language / currency / animal / flag colour
  across its countries, travel diaries, letters, comparisons, fables) states the world's facts in its own wording,
  never a validation answer of 3+ words verbatim (checked before anything is written); it has its own random stream,
  so the instruction splits do not depend on it.

Only the standard library is used; all randomness comes from ``random.Random`` instances (never the global RNG).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

# ----------------------------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------------------------

#: Seed of the fictional world. Deliberately independent of --seed: every split and every data seed must talk about
#: the same world, otherwise "facts seen in training" would not exist for the validation set.
WORLD_SEED = 20240917
NUM_COUNTRIES = 100
NUM_LANGUAGES = 20
NUM_CURRENCIES = 25
MAX_REFERENCES = 20
#: Fraction of each algorithmic task's input space reserved for validation (by a seeded hash of the input).
VALID_POOL_FRACTION = 0.10
FIELDS = ("instruction", "input", "output", "category", "difficulty", "references")

COLOURS = ("red", "blue", "green", "yellow", "white", "black", "orange", "purple", "brown", "grey")
WORLD_ANIMALS = (
    "owl", "eagle", "wolf", "bear", "fox", "deer", "lion", "tiger", "horse", "hare",
    "otter", "swan", "crane", "falcon", "lynx", "badger", "heron", "seal", "raven", "bison",
)
# Animals used by the list tasks (filter / count): a superset of the world animals, all common single words.
ANIMAL_WORDS = WORLD_ANIMALS + ("cat", "dog", "cow", "sheep", "goat", "pig", "mouse", "frog", "duck", "rabbit")
NON_ANIMAL_WORDS = (
    "stone", "chair", "cloud", "river", "lamp", "book", "cup", "door", "window", "bread", "candle", "table",
    "shoe", "hat", "spoon", "bottle", "clock", "bridge", "garden", "coin", "pencil", "mirror", "basket", "rope",
)
# Vocabulary of the copy-like tasks: common lowercase words (nouns, adjectives, verbs).
COMMON_WORDS = (
    "apple", "river", "stone", "green", "happy", "quick", "house", "music", "light", "paper", "water", "small",
    "bright", "garden", "window", "table", "dream", "cloud", "sleep", "dance", "train", "night", "morning", "sweet",
    "cold", "warm", "road", "tree", "bird", "fish", "door", "chair", "story", "friend", "smile", "sing", "write",
    "read", "open", "close", "blue", "red", "silver", "gold", "quiet", "loud", "soft", "hard", "early", "late",
    "summer", "winter", "ocean", "mountain", "field", "flower", "honey", "bread", "milk", "coffee", "letter",
    "candle", "mirror", "pocket", "ticket", "market", "village", "city", "forest", "island", "bridge", "tower",
    "rain", "snow", "wind", "fire", "moon", "star", "sun", "shadow",
)
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("happy", "glad", "joyful", "cheerful", "merry"),
    ("sad", "unhappy", "gloomy", "sorrowful", "downcast"),
    ("big", "large", "huge", "enormous", "vast"),
    ("small", "little", "tiny", "miniature"),
    ("fast", "quick", "rapid", "swift", "speedy"),
    ("smart", "clever", "bright", "intelligent"),
    ("angry", "mad", "furious", "cross", "annoyed"),
    ("tired", "sleepy", "weary", "exhausted", "drowsy"),
    ("begin", "start", "commence", "launch"),
    ("finish", "end", "complete", "conclude"),
    ("beautiful", "pretty", "lovely", "attractive", "gorgeous"),
    ("easy", "simple", "effortless"),
    ("difficult", "hard", "tough", "challenging"),
    ("rich", "wealthy", "affluent", "prosperous"),
    ("quiet", "silent", "calm", "hushed"),
    ("brave", "bold", "courageous", "fearless", "daring"),
    ("cold", "chilly", "icy", "frosty"),
    ("old", "ancient", "aged", "elderly"),
    ("funny", "amusing", "comical", "humorous", "hilarious"),
    ("strange", "odd", "weird", "peculiar", "unusual"),
    ("help", "assist", "aid", "support"),
    ("buy", "purchase", "acquire"),
    ("shout", "yell", "scream", "holler"),
    ("house", "home", "dwelling", "residence"),
)
# "Name N things" kinds: exactly six members each (C(6,3) = 20 = MAX_REFERENCES), alphabetical = canonical order.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fruits", ("apple", "banana", "cherry", "grape", "lemon", "pear")),
    ("farm animals", ("cow", "goat", "hen", "horse", "pig", "sheep")),
    ("sea animals", ("crab", "dolphin", "octopus", "seal", "shark", "whale")),
    ("vegetables", ("bean", "carrot", "leek", "onion", "pea", "potato")),
    ("musical instruments", ("drum", "flute", "guitar", "piano", "trumpet", "violin")),
    ("tools", ("chisel", "drill", "hammer", "saw", "spade", "wrench")),
    ("kinds of weather", ("fog", "hail", "rain", "snow", "thunder", "wind")),
    ("pieces of furniture", ("bed", "chair", "desk", "shelf", "sofa", "table")),
    ("drinks", ("cocoa", "coffee", "juice", "milk", "tea", "water")),
    ("birds", ("crow", "duck", "eagle", "owl", "robin", "swan")),
    ("sports", ("cricket", "football", "golf", "hockey", "rugby", "tennis")),
    ("vehicles", ("bicycle", "boat", "bus", "car", "plane", "train")),
)
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}

STORY_ANIMALS = ("fox", "rabbit", "mouse", "owl", "bear", "duck", "frog", "cat", "dog", "hedgehog", "squirrel", "goat")
STORY_NAMES = (
    "Tom", "Anna", "Ben", "Lily", "Max", "Rosa", "Sam", "Nora", "Leo", "Ivy",
    "Jack", "Mia", "Finn", "Ella", "Otto", "Ruby", "Hugo", "Lena", "Oscar", "Zoe",
)
STORY_OBJECTS = ("key", "lamp", "map", "coin", "bell", "feather", "ring", "book", "kite", "hat", "shell", "umbrella")
STORY_PLACES = ("forest", "river", "hill", "village", "meadow", "lake", "garden", "mountain", "farm", "beach")
STORY_DEEDS = (
    "give it to a friend", "keep it safe", "return it to its owner",
    "show it to everyone", "hide it under a tree", "share it with a neighbour",
)

# ----------------------------------------------------------------------------------------------------------------
# Templates. Several paraphrases per instruction, from a fixed small set, so the model must read the instruction.
# ----------------------------------------------------------------------------------------------------------------

T_COPY = (
    "Repeat the following words exactly.",
    "Copy these words.",
    "Write the words below again, unchanged.",
    "Say these words back to me.",
)
T_UPPER = (
    "Write these words in capital letters.",
    "Convert the following words to uppercase.",
    "Rewrite the words below using only capital letters.",
)
T_REVERSE = (
    "Reverse the order of these words.",
    "Write the following words in reverse order.",
    "List these words backwards, last word first.",
)
T_COUNT = (
    "How many items are in this list?",
    "Count the items in the list below.",
    "How many words does this list contain?",
    "Tell me how many things are listed here.",
)
T_SORT_ASC = (
    "Sort these numbers from smallest to largest.",
    "Put the following numbers in ascending order.",
    "Arrange these numbers in increasing order.",
)
T_SORT_DESC = (
    "Sort these numbers from largest to smallest.",
    "Put the following numbers in descending order.",
    "Arrange these numbers in decreasing order.",
)
T_FILTER = {
    "even": ("Keep only the even numbers from this list.", "Which of these numbers are even?",
             "List the even numbers below."),
    "odd": ("Keep only the odd numbers from this list.", "Which of these numbers are odd?",
            "List the odd numbers below."),
    "animals": ("Keep only the animals from this list.", "Which of these words are animals?",
                "List the animals below."),
    "gt50": ("Keep only the numbers greater than 50.", "Which of these numbers are bigger than 50?",
             "List the numbers above 50."),
}
T_ADD = ("What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}.", "What is the sum of {a} and {b}?")
T_COMPOSE = {
    "rev_upper": ("Reverse the order of these words and write them in capital letters.",
                  "Write these words backwards, last word first, using only capital letters."),
    "count_animals": ("How many of the following words are animals?", "Count the animals in this list."),
    "sum_two_largest": ("Add the two largest numbers in this list.",
                        "What is the sum of the two biggest numbers below?"),
    "even_reversed": ("Write the even numbers from this list in reverse order.",
                      "Take the even numbers below and list them from last to first."),
}
T_SYNONYM = (
    "Give a word that means {w}.",
    "What is a synonym of {w}?",
    "Name another word for {w}.",
    "Tell me a word with the same meaning as {w}.",
)
T_NAME_THINGS = ("Name {n} {kind}.", "List {n} {kind}.", "Give me {n} examples of {kind}.", "Can you name {n} {kind}?")
T_STORY = (
    "Write a short story about {a_animal} named {name} who finds {a_obj} near the {place} and decides to {deed}.",
    "Tell a short story: {name} the {animal} finds {a_obj} near the {place} and decides to {deed}.",
    "Write a few sentences about {a_animal} called {name}, who finds {a_obj} near the {place} and chooses to {deed}.",
)
STORY_OPENINGS = (
    "Once upon a time, a little {animal} named {name} lived near the {place}.",
    "There was once a young {animal} called {name} who lived by the {place}.",
    "Long ago, close to the {place}, there lived {a_animal} named {name}.",
)
STORY_MIDDLES = (
    "One sunny morning, {name} found {a_obj} lying in the grass.",
    "One day, while walking near the {place}, {name} saw {a_obj} on the ground.",
    "Early one morning, {name} discovered {a_obj} hidden under some leaves.",
)
STORY_ENDINGS = (
    "After thinking for a while, {name} decided to {deed}. Everyone agreed it was the right thing to do.",
    "In the end, {name} chose to {deed}, and that evening {name} went to sleep feeling happy.",
)

# Fact questions, keyed by attribute. "country" is the reverse lookup capital -> country.
T_FACT = {
    "capital": ("What is the capital of {c}?", "Name the capital city of {c}.",
                "Which city is the capital of {c}?", "Tell me the capital of {c}."),
    "language": ("What language do people speak in {c}?", "Which language is spoken in {c}?",
                 "What is the main language of {c}?", "Name the language of {c}."),
    "currency": ("What currency is used in {c}?", "Which money do people use in {c}?",
                 "What is the currency of {c}?", "Name the currency of {c}."),
    "animal": ("What is the national animal of {c}?", "Which animal is the symbol of {c}?",
               "Name the national animal of {c}.", "What animal represents {c}?"),
    "colour": ("What colour is the flag of {c}?", "Which colour is on the flag of {c}?",
               "Name the colour of the flag of {c}.", "What is the flag colour of {c}?"),
    "country": ("Which country has {cap} as its capital?", "{cap} is the capital of which country?",
                "In which country is the capital city {cap}?", "Name the country whose capital is {cap}."),
}
T_TWO_HOP = {
    "language": ("What language is spoken in the country whose capital is {cap}?",
                 "Which language do people speak in the country with the capital {cap}?",
                 "{cap} is a capital city. What language is spoken in its country?"),
    "currency": ("What currency is used in the country whose capital is {cap}?",
                 "Which money do people use in the country with the capital {cap}?",
                 "{cap} is a capital city. What currency does its country use?"),
    "animal": ("What is the national animal of the country whose capital is {cap}?",
               "Which animal represents the country with the capital {cap}?",
               "{cap} is a capital city. What is the national animal of its country?"),
    "colour": ("What colour is the flag of the country whose capital is {cap}?",
               "Which colour is the flag of the country with the capital {cap}?",
               "{cap} is a capital city. What colour is the flag of its country?"),
}
# The answer names the bridge country first, so the model can chain the two hops in its output.
A_TWO_HOP = {
    "language": "In {c}, people speak {language}.",
    "currency": "In {c}, people pay with the {currency}.",
    "animal": "In {c}, the national animal is the {animal}.",
    "colour": "In {c}, the flag is {colour}.",
}
T_DESCRIBE = ("Describe the country of {c}.", "Tell me about {c}.", "Write a short description of {c}.",
              "What do you know about {c}?")
DESCRIBE_S1 = ("{c} is a country whose capital city is {capital}.", "The country of {c} has {capital} as its capital.",
               "{capital} is the capital of {c}.")
DESCRIBE_S2 = ("People in {c} speak {language} and pay with the {currency}.",
               "The main language there is {language}, and the money is called the {currency}.")
DESCRIBE_S3 = ("Its national animal is the {animal}, and its flag is {colour}.",
               "The {animal} is the symbol of {c}, and the flag of {c} is {colour}.")
T_NAME_COUNTRY = {
    "language": ("Name a country where people speak {v}.", "In which country is {v} spoken?",
                 "Give an example of a country whose language is {v}."),
    "currency": ("Name a country that uses the {v}.", "In which country do people pay with the {v}?",
                 "Give an example of a country whose currency is the {v}."),
    "animal": ("Name a country whose national animal is the {v}.", "Which country has the {v} as its national animal?",
               "Give an example of a country with the {v} as its symbol."),
    "colour": ("Name a country with a {v} flag.", "Which country has a {v} flag?",
               "Give an example of a country whose flag is {v}."),
}

# ----------------------------------------------------------------------------------------------------------------
# The fixed fictional world
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Country:
    """One invented country and its five facts. ``capital`` is unique across the world; the others are shared."""

    name: str
    capital: str
    language: str
    currency: str
    animal: str
    colour: str

    def attr(self, key: str) -> str:
        """Value of fact ``key`` (one of capital, language, currency, animal, colour)."""
        return str(getattr(self, key))


_SIMPLE_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_CLUSTER_ONSETS = ("br", "dr", "gr", "kr", "tr", "st", "sh", "th")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")
_SOFT_CODAS = ("n", "r", "l", "s", "m")
_FINAL_CODAS = _SOFT_CODAS + ("k", "nd", "rt")
# Substrings an invented name must not contain (they would read as rude words).
_BANNED = ("ass", "cum", "dick", "fuk", "fuck", "nig", "piss", "porn", "sex", "shit", "tit", "cunt", "damn", "hell")


def _invented(rng: random.Random, syllables: int, final_coda: float, onset_first: float = 1.0) -> str:
    """A pronounceable lowercase name of consonant-vowel(-consonant) syllables.

    Consonant clusters only start a syllable that follows a vowel, and heavy codas only end the word, so names never
    pile up three or four consonants in a row.
    """
    out = ""
    for i in range(syllables):
        after_consonant = bool(out) and out[-1] not in "aeiou"
        if i == 0 and rng.random() >= onset_first:
            onset = ""
        elif not after_consonant and rng.random() < 0.25:
            onset = rng.choice(_CLUSTER_ONSETS)
        else:
            onset = rng.choice(_SIMPLE_ONSETS)
        last = i == syllables - 1
        coda = ""
        if rng.random() < (final_coda if last else 0.25):
            coda = rng.choice(_FINAL_CODAS if last else _SOFT_CODAS)
        out += onset + rng.choice(_VOWELS) + coda
    return out


def _unique_names(rng: random.Random, count: int, make: Callable[[random.Random], str], taken: set[str]) -> list[str]:
    """``count`` distinct names from ``make``, none already in ``taken`` (which is updated, case-insensitively)."""
    names: list[str] = []
    while len(names) < count:
        name = make(rng)
        if not 4 <= len(name) <= 10 or name.lower() in taken or any(b in name.lower() for b in _BANNED):
            continue
        taken.add(name.lower())
        names.append(name)
    return names


def _spread(rng: random.Random, values: Sequence[str], count: int) -> list[str]:
    """Assign ``values`` to ``count`` slots as evenly as possible (each value used floor/ceil(count/len) times)."""
    pool = [values[i % len(values)] for i in range(count)]
    rng.shuffle(pool)
    return pool


def build_world() -> tuple[Country, ...]:
    """The fixed fictional world: NUM_COUNTRIES countries built from WORLD_SEED only (never from the data seed)."""
    rng = random.Random(WORLD_SEED)
    # Real words the invented names must never collide with, so a name is never ambiguous.
    taken = {w.lower() for w in COMMON_WORDS + ANIMAL_WORDS + NON_ANIMAL_WORDS + COLOURS + STORY_NAMES}
    taken |= {w for group in SYNONYM_GROUPS for w in group} | {w for _, members in KINDS for w in members}
    taken |= {"bonus", "satan", "petrel", "salmon", "melon", "lemon", "robin", "demon", "baron", "siren", "venom"}
    countries = _unique_names(
        rng, NUM_COUNTRIES,
        lambda r: (_invented(r, 2, 0.0) + r.choice(("ria", "nia", "land", "mor", "dor", "via", "ra"))).capitalize(),
        taken)
    capitals = _unique_names(rng, NUM_COUNTRIES, lambda r: _invented(r, 2, 0.9).capitalize(), taken)
    languages = _unique_names(
        rng, NUM_LANGUAGES,
        lambda r: (_invented(r, 2, 1.0, onset_first=0.6) + r.choice(("i", "ish", "ese", "an", "ic"))).capitalize(),
        taken)
    currencies = _unique_names(rng, NUM_CURRENCIES, lambda r: _invented(r, 2, 1.0), taken)
    lang = _spread(rng, languages, NUM_COUNTRIES)
    cur = _spread(rng, currencies, NUM_COUNTRIES)
    ani = _spread(rng, WORLD_ANIMALS, NUM_COUNTRIES)
    col = _spread(rng, COLOURS, NUM_COUNTRIES)
    return tuple(Country(countries[i], capitals[i], lang[i], cur[i], ani[i], col[i]) for i in range(NUM_COUNTRIES))


# ----------------------------------------------------------------------------------------------------------------
# Generation machinery
# ----------------------------------------------------------------------------------------------------------------

FACT_ATTRS = ("capital", "language", "currency", "animal", "colour", "country")
HOP_ATTRS = ("language", "currency", "animal", "colour")


@dataclass(frozen=True)
class Sample:
    """One generated example plus the world facts it mentions (``(country name, attribute)`` pairs)."""

    instruction: str
    input: str
    output: str
    references: tuple[str, ...]
    difficulty: int
    facts: frozenset[tuple[str, str]] = frozenset()


class _Cycle:
    """Endless iterator over ``items`` in freshly shuffled passes, so training covers every fact before repeating."""

    def __init__(self, items: Sequence, rng: random.Random):
        if not items:
            raise ValueError("_Cycle needs at least one item")
        self._items = list(items)
        self._rng = rng
        self._queue: list = []

    def next(self):
        if not self._queue:
            self._queue = list(self._items)
            self._rng.shuffle(self._queue)
        return self._queue.pop()


@dataclass
class _Context:
    """State of one split's generation: its RNG, the world, and (for valid) the facts training mentioned."""

    split: str  # "train" or "valid"
    seed: int
    rng: random.Random
    world: tuple[Country, ...]
    seen_facts: frozenset[tuple[str, str]] | None = None  # None while generating train
    cycles: dict[str, _Cycle] = field(default_factory=dict)

    @property
    def is_valid(self) -> bool:
        return self.split == "valid"


def _hash_unit(*parts: object) -> float:
    """Deterministic number in [0, 1) from ``parts`` (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _in_valid_pool(ctx: _Context, category: str, key: str) -> bool:
    """Whether an algorithmic input belongs to the held-out validation pool (VALID_POOL_FRACTION of inputs)."""
    return _hash_unit(ctx.seed, category, key) < VALID_POOL_FRACTION


def _reserved_template(ctx: _Context, category: str, key: str, n_templates: int) -> int:
    """Index of the one template reserved for validation for item ``key`` (training uses the others)."""
    return int(_hash_unit(ctx.seed, "template", category, key) * n_templates)


def _pick_template(ctx: _Context, category: str, key: str, templates: Sequence[str]) -> str:
    """Validation gets the item's reserved template; training gets a random other one."""
    reserved = _reserved_template(ctx, category, key, len(templates))
    if ctx.is_valid:
        return templates[reserved]
    return templates[ctx.rng.choice([i for i in range(len(templates)) if i != reserved])]


def _draw_held_out(ctx: _Context, category: str, draw: Callable[[random.Random], tuple[str, object]]) -> object:
    """Rejection-sample ``draw`` until its key falls in this split's side of the hash partition.

    ``draw(rng) -> (key, payload)``; returns the payload. The key must determine the prompt content so that train and
    valid never share an (instruction, input) pair.
    """
    while True:
        key, payload = draw(ctx.rng)
        if _in_valid_pool(ctx, category, key) == ctx.is_valid:
            return payload


def _article(word: str) -> str:
    """``word`` with its indefinite article."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _cycle(ctx: _Context, name: str, items: Sequence) -> object:
    """Next item of the split's cycle ``name`` (created on first use)."""
    if name not in ctx.cycles:
        ctx.cycles[name] = _Cycle(items, ctx.rng)
    return ctx.cycles[name].next()


def _known(ctx: _Context, items: list, facts_of: Callable[[object], Iterable[tuple[str, str]]]) -> list:
    """For valid: keep the items whose facts training mentioned (falls back to all if none qualify)."""
    if not ctx.is_valid or ctx.seen_facts is None:
        return items
    kept = [it for it in items if all(f in ctx.seen_facts for f in facts_of(it))]
    return kept or items


# ----------------------------------------------------------------------------------------------------------------
# Task families. Each takes the split context and returns one Sample.
# ----------------------------------------------------------------------------------------------------------------


def _random_words(rng: random.Random, lo: int, hi: int) -> list[str]:
    """``lo``..``hi`` words drawn with replacement from COMMON_WORDS."""
    return [rng.choice(COMMON_WORDS) for _ in range(rng.randint(lo, hi))]


def _word_task(ctx: _Context, category: str, templates: Sequence[str], lo: int, hi: int,
               transform: Callable[[list[str]], list[str]], difficulty: int) -> Sample:
    def draw(r: random.Random) -> tuple[str, list[str]]:
        words = _random_words(r, lo, hi)
        return " ".join(words), words
    words: list[str] = _draw_held_out(ctx, category, draw)
    out = " ".join(transform(words))
    return Sample(ctx.rng.choice(templates), " ".join(words), out, (out,), difficulty)


def task_copy(ctx: _Context) -> Sample:
    """Repeat 3-8 words verbatim (difficulty 1)."""
    return _word_task(ctx, "copy", T_COPY, 3, 8, lambda w: w, 1)


def task_uppercase(ctx: _Context) -> Sample:
    """Rewrite 3-6 words in capital letters (difficulty 1)."""
    return _word_task(ctx, "uppercase", T_UPPER, 3, 6, lambda w: [x.upper() for x in w], 1)


def task_reverse_words(ctx: _Context) -> Sample:
    """Reverse the order of 3-7 words (difficulty 2)."""
    return _word_task(ctx, "reverse_words", T_REVERSE, 3, 7, lambda w: w[::-1], 2)


def task_count_items(ctx: _Context) -> Sample:
    """Count 2-9 comma-separated items; the answer is the bare number (difficulty 2)."""
    def draw(r: random.Random) -> tuple[str, list[str]]:
        items = r.sample(COMMON_WORDS, r.randint(2, 9))
        return ", ".join(items), items
    items: list[str] = _draw_held_out(ctx, "count_items", draw)
    out = str(len(items))
    return Sample(ctx.rng.choice(T_COUNT), ", ".join(items), out, (out,), 2)


def task_sort_numbers(ctx: _Context) -> Sample:
    """Sort 3-7 distinct numbers ascending or descending, as the instruction says (difficulty 3, 4 if >= 6)."""
    def draw(r: random.Random) -> tuple[str, tuple[list[int], bool]]:
        nums = r.sample(range(1, 100), r.randint(3, 7))
        desc = r.random() < 0.5
        return f"{desc}:{nums}", (nums, desc)
    nums, desc = _draw_held_out(ctx, "sort_numbers", draw)
    out = " ".join(map(str, sorted(nums, reverse=desc)))
    templates = T_SORT_DESC if desc else T_SORT_ASC
    return Sample(ctx.rng.choice(templates), " ".join(map(str, nums)), out, (out,), 4 if len(nums) >= 6 else 3)


def _filter_keep(kind: str, item: str) -> bool:
    """Whether ``item`` passes filter ``kind`` (even / odd / animals / gt50)."""
    if kind == "animals":
        return item in ANIMAL_WORDS
    n = int(item)
    return {"even": n % 2 == 0, "odd": n % 2 == 1, "gt50": n > 50}[kind]


def task_filter_list(ctx: _Context) -> Sample:
    """Keep the list items of one kind, in their original order (difficulty 3)."""
    def draw(r: random.Random) -> tuple[str, tuple[str, list[str]]]:
        kind = r.choice(sorted(T_FILTER))
        n = r.randint(4, 7)
        while True:
            if kind == "animals":
                items = r.sample(ANIMAL_WORDS + NON_ANIMAL_WORDS, n)
            else:
                items = [str(x) for x in r.sample([x for x in range(1, 100) if x != 50], n)]
            kept = [x for x in items if _filter_keep(kind, x)]
            if 0 < len(kept) < n:  # at least one item to keep and one to drop, so the filter matters
                return f"{kind}:{items}", (kind, items)
    kind, items = _draw_held_out(ctx, "filter_list", draw)
    sep = ", " if kind == "animals" else " "
    out = sep.join(x for x in items if _filter_keep(kind, x))
    return Sample(ctx.rng.choice(T_FILTER[kind]), sep.join(items), out, (out,), 3)


def task_addition(ctx: _Context) -> Sample:
    """Add two 2-digit numbers; the answer is the bare sum (difficulty 3, or 4 with a carry)."""
    def draw(r: random.Random) -> tuple[str, tuple[int, int]]:
        a, b = r.randint(10, 99), r.randint(10, 99)
        return f"{min(a, b)}+{max(a, b)}", (a, b)  # unordered: valid never asks b + a when train asked a + b
    a, b = _draw_held_out(ctx, "addition", draw)
    carry = (a % 10 + b % 10) >= 10
    out = str(a + b)
    return Sample(ctx.rng.choice(T_ADD).format(a=a, b=b), "", out, (out,), 4 if carry else 3)


def task_compose(ctx: _Context) -> Sample:
    """Two chained operations on a list (difficulty 4-5): the multi-step algorithmic lever."""
    def draw(r: random.Random) -> tuple[str, tuple[str, list[str]]]:
        op = r.choice(sorted(T_COMPOSE))
        if op == "rev_upper":
            items = _random_words(r, 3, 5)
        elif op == "count_animals":
            items = r.sample(ANIMAL_WORDS, r.randint(1, 4)) + r.sample(NON_ANIMAL_WORDS, r.randint(1, 4))
            r.shuffle(items)
        elif op == "sum_two_largest":
            items = [str(x) for x in r.sample(range(1, 50), r.randint(3, 5))]
        else:  # even_reversed
            while True:
                items = [str(x) for x in r.sample(range(1, 100), r.randint(4, 7))]
                if sum(int(x) % 2 == 0 for x in items) >= 2:  # at least two, so the order matters
                    break
        return f"{op}:{items}", (op, items)
    op, items = _draw_held_out(ctx, "compose", draw)
    if op == "rev_upper":
        inp, out, diff = " ".join(items), " ".join(w.upper() for w in items[::-1]), 4
    elif op == "count_animals":
        inp, out, diff = ", ".join(items), str(sum(w in ANIMAL_WORDS for w in items)), 4
    elif op == "sum_two_largest":
        top = sorted(map(int, items))[-2:]
        inp, out, diff = " ".join(items), str(sum(top)), 5
    else:
        inp, out, diff = " ".join(items), " ".join(x for x in items[::-1] if int(x) % 2 == 0), 4
    return Sample(ctx.rng.choice(T_COMPOSE[op]), inp, out, (out,), diff)


def task_synonyms(ctx: _Context) -> Sample:
    """Give a word meaning the query word; every other member of its group is acceptable (difficulty 2)."""
    group = ctx.rng.choice(SYNONYM_GROUPS)
    word = ctx.rng.choice(group)
    refs = tuple(w for w in group if w != word)
    instruction = _pick_template(ctx, "synonyms", word, T_SYNONYM).format(w=word)
    return Sample(instruction, "", ctx.rng.choice(refs), refs, 2)


def _combinations(items: Sequence[str], k: int) -> list[tuple[str, ...]]:
    """All k-subsets of ``items`` in lexicographic order (kept tiny; no itertools needed beyond this)."""
    if k == 0:
        return [()]
    return [(items[i],) + rest for i in range(len(items)) for rest in _combinations(items[i + 1:], k - 1)]


def task_name_things(ctx: _Context) -> Sample:
    """Name 2-4 members of a kind: any subset is acceptable, written in alphabetical order (difficulty 2)."""
    kind, members = ctx.rng.choice(KINDS)
    n = ctx.rng.choice(sorted(NUMBER_WORDS))
    refs = tuple(", ".join(c) for c in _combinations(members, n))
    instruction = _pick_template(ctx, "name_things", f"{kind}:{n}", T_NAME_THINGS).format(n=NUMBER_WORDS[n], kind=kind)
    return Sample(instruction, "", ctx.rng.choice(refs), refs, 2)


def _story_refs(slots: dict[str, str]) -> tuple[str, ...]:
    """All 3 x 3 x 2 phrasings of the story fixed by ``slots``."""
    return tuple(" ".join((o.format(**slots), m.format(**slots), e.format(**slots)))
                 for o in STORY_OPENINGS for m in STORY_MIDDLES for e in STORY_ENDINGS)


def task_story(ctx: _Context) -> Sample:
    """A 30-60 word story whose content is fixed by the prompt but whose phrasing varies (difficulty 3)."""
    def draw(r: random.Random) -> tuple[str, tuple[str, ...]]:
        s = (r.choice(STORY_ANIMALS), r.choice(STORY_NAMES), r.choice(STORY_OBJECTS), r.choice(STORY_PLACES),
             r.choice(STORY_DEEDS))
        return "|".join(s), s
    animal, name, obj, place, deed = _draw_held_out(ctx, "story", draw)
    slots = {"animal": animal, "a_animal": _article(animal), "name": name, "a_obj": _article(obj), "place": place,
             "deed": deed}
    refs = _story_refs(slots)
    return Sample(ctx.rng.choice(T_STORY).format(**slots), "", ctx.rng.choice(refs), refs, 3)


def _fact_answer(country: Country, attr: str) -> str:
    """Short answer to a one-hop fact question."""
    if attr == "country":
        return f"{country.name}."
    if attr in ("currency", "animal"):
        return f"The {country.attr(attr)}."
    return f"{country.attr(attr).capitalize()}."


def task_fact_lookup(ctx: _Context) -> Sample:
    """One fact about a world country, or the reverse capital -> country lookup (difficulty 3)."""
    items = [(i, a) for i in range(len(ctx.world)) for a in FACT_ATTRS]
    idx, attr = _cycle(ctx, "fact_lookup", _known(
        ctx, items, lambda it: [(ctx.world[it[0]].name, "capital" if it[1] == "country" else it[1])]))
    c = ctx.world[idx]
    tpl = _pick_template(ctx, "fact_lookup", f"{c.name}:{attr}", T_FACT[attr])
    out = _fact_answer(c, attr)
    fact = (c.name, "capital" if attr == "country" else attr)
    return Sample(tpl.format(c=c.name, cap=c.capital), "", out, (out,), 3, frozenset({fact}))


def task_two_hop(ctx: _Context) -> Sample:
    """Capital -> country -> attribute; the answer names the bridge country first (difficulty 5)."""
    items = [(i, a) for i in range(len(ctx.world)) for a in HOP_ATTRS]
    idx, attr = _cycle(ctx, "two_hop", _known(
        ctx, items, lambda it: [(ctx.world[it[0]].name, "capital"), (ctx.world[it[0]].name, it[1])]))
    c = ctx.world[idx]
    tpl = _pick_template(ctx, "two_hop", f"{c.name}:{attr}", T_TWO_HOP[attr])
    out = A_TWO_HOP[attr].format(c=c.name, **{attr: c.attr(attr)})
    return Sample(tpl.format(cap=c.capital), "", out, (out,), 5, frozenset({(c.name, "capital"), (c.name, attr)}))


def _describe_refs(c: Country) -> tuple[str, ...]:
    """All 3 x 2 x 2 phrasings of a country's description (20-40 words each)."""
    slots = {"c": c.name, "capital": c.capital, "language": c.language, "currency": c.currency, "animal": c.animal,
             "colour": c.colour}
    return tuple(" ".join((a.format(**slots), b.format(**slots), d.format(**slots)))
                 for a in DESCRIBE_S1 for b in DESCRIBE_S2 for d in DESCRIBE_S3)


def task_describe_entity(ctx: _Context) -> Sample:
    """A 2-3 sentence description assembled from all five facts of a country (difficulty 4)."""
    attrs = ("capital", "language", "currency", "animal", "colour")
    idx = _cycle(ctx, "describe", _known(ctx, list(range(len(ctx.world))),
                                         lambda i: [(ctx.world[i].name, a) for a in attrs]))
    c = ctx.world[idx]
    refs = _describe_refs(c)
    tpl = _pick_template(ctx, "describe_entity", c.name, T_DESCRIBE)
    return Sample(tpl.format(c=c.name), "", ctx.rng.choice(refs), refs, 4, frozenset((c.name, a) for a in attrs))


def task_name_countries(ctx: _Context) -> Sample:
    """Reverse lookup "name a country where ...": every country with that fact is acceptable (difficulty 4)."""
    items = sorted({(a, c.attr(a)) for c in ctx.world for a in HOP_ATTRS})
    if ctx.is_valid and ctx.seen_facts is not None:
        # Ask only about values that training connected to at least one of their countries.
        known = [(a, v) for a, v in items
                 if any(c.attr(a) == v and (c.name, a) in ctx.seen_facts for c in ctx.world)]
        items = known or items
    attr, value = _cycle(ctx, "name_countries", items)
    refs = tuple(f"{c.name}." for c in ctx.world if c.attr(attr) == value)
    tpl = _pick_template(ctx, "name_countries", f"{attr}:{value}", T_NAME_COUNTRY[attr])
    out = ctx.rng.choice(refs)
    return Sample(tpl.format(v=value), "", out, refs, 4, frozenset({(out[:-1], attr)}))


#: category -> (generator, sampling weight). Knowledge tasks weigh a bit more: memorising the world is the main
#: capacity lever, and it needs exposures.
TASKS: dict[str, tuple[Callable[[_Context], Sample], float]] = {
    "copy": (task_copy, 1.0),
    "uppercase": (task_uppercase, 1.0),
    "reverse_words": (task_reverse_words, 1.0),
    "count_items": (task_count_items, 1.0),
    "sort_numbers": (task_sort_numbers, 1.0),
    "filter_list": (task_filter_list, 1.0),
    "addition": (task_addition, 1.0),
    "compose": (task_compose, 1.0),
    "synonyms": (task_synonyms, 1.0),
    "name_things": (task_name_things, 1.0),
    "story": (task_story, 1.0),
    "fact_lookup": (task_fact_lookup, 1.6),
    "two_hop": (task_two_hop, 1.3),
    "describe_entity": (task_describe_entity, 1.3),
    "name_countries": (task_name_countries, 1.1),
}
KNOWLEDGE_CATEGORIES = ("fact_lookup", "two_hop", "describe_entity", "name_countries")


def category_quotas(n: int) -> dict[str, int]:
    """Exact per-category counts for ``n`` examples by largest remainder, so both splits share the same mix."""
    total = sum(w for _, w in TASKS.values())
    raw = {cat: n * w / total for cat, (_, w) in TASKS.items()}
    quotas = {cat: int(x) for cat, x in raw.items()}
    order = sorted(TASKS, key=lambda cat: (-(raw[cat] - quotas[cat]), list(TASKS).index(cat)))
    for cat in order[: n - sum(quotas.values())]:
        quotas[cat] += 1
    return quotas


def _to_record(category: str, s: Sample) -> dict:
    """Public JSON record (field order fixed for byte-identical output)."""
    refs = list(dict.fromkeys(s.references))
    if s.output not in refs or len(refs) > MAX_REFERENCES:
        raise AssertionError(f"internal error in {category}: output not in references or > {MAX_REFERENCES} refs")
    return {"instruction": s.instruction, "input": s.input, "output": s.output, "category": category,
            "difficulty": s.difficulty, "references": refs}


def _generate_split(ctx: _Context, n: int) -> tuple[list[dict], set[tuple[str, str]]]:
    """``n`` records in shuffled category order, plus the set of world facts they mention."""
    cats = [cat for cat, q in category_quotas(n).items() for _ in range(q)]
    ctx.rng.shuffle(cats)
    records, facts = [], set()
    for cat in cats:
        sample = TASKS[cat][0](ctx)
        facts |= sample.facts
        records.append(_to_record(cat, sample))
    return records, facts


def _check_noise_frac(noise_frac: float) -> None:
    if isinstance(noise_frac, bool) or not isinstance(noise_frac, (int, float)) or not 0.0 <= noise_frac < 1.0:
        raise ValueError(f"noise_frac must be in [0, 1) (got {noise_frac!r}); pass e.g. noise_frac=0.2")


def add_label_noise(train: list[dict], noise_frac: float, seed: int) -> list[dict]:
    """A copy of ``train`` in which ``round(noise_frac * len(train))`` records (chosen by ``seed``) answer with the
    output of a record of another category, that output as their only reference, and ``"noisy": True``.

    A donor's output is never one of the record's own references (``"4"`` answers both a count and a sum), so every
    marked record is wrong. The donor outputs are read from the clean records, so a corrupted record never passes on
    another's corruption; the other records are returned unchanged, in order. Uses its own RNG stream, so the clean
    data do not depend on ``noise_frac``.
    """
    _check_noise_frac(noise_frac)
    k = round(noise_frac * len(train))
    if k == 0:
        return list(train)
    rng = random.Random(f"synthetic-noise-{seed}")
    out = list(train)
    for i in sorted(rng.sample(range(len(train)), k)):
        rec = train[i]
        donors = [r["output"] for r in train
                  if r["category"] != rec["category"] and r["output"] not in rec["references"]]
        if not donors:
            raise ValueError("label noise needs training records of at least two categories; pass more --num-train")
        wrong = rng.choice(donors)
        out[i] = {**rec, "output": wrong, "references": [wrong], "noisy": True}
    return out


def generate(num_train: int, num_valid: int, seed: int, noise_frac: float = 0.0) -> tuple[list[dict], list[dict]]:
    """Build (train, valid) record lists. Deterministic in (num_train, num_valid, seed, noise_frac); the world is
    fixed.

    Valid never repeats a training (instruction, input) pair; its knowledge questions are about facts that the
    training records mention. ``noise_frac`` > 0 corrupts that fraction of the training labels
    (:func:`add_label_noise`); valid is never corrupted.
    """
    for name, value in (("num_train", num_train), ("num_valid", num_valid)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r}); pass e.g. {name}=500")
    _check_noise_frac(noise_frac)
    world = build_world()
    train_ctx = _Context("train", seed, random.Random(f"synthetic-train-{seed}"), world)
    train, seen = _generate_split(train_ctx, num_train)
    valid_ctx = _Context("valid", seed, random.Random(f"synthetic-valid-{seed}"), world, frozenset(seen))
    valid, _ = _generate_split(valid_ctx, num_valid)
    train_keys = {(r["instruction"], r["input"]) for r in train}
    clash = next((r for r in valid if (r["instruction"], r["input"]) in train_keys), None)
    if clash is not None:  # guaranteed by construction; checked because the whole evaluation relies on it
        raise AssertionError(f"internal error: valid prompt also in train: {clash['instruction']!r}")
    return add_label_noise(train, noise_frac, seed), valid


# ----------------------------------------------------------------------------------------------------------------
# The pretraining corpus: plain-text documents about the same world
# ----------------------------------------------------------------------------------------------------------------

#: Newline marker of MiniLLM's one-document-per-line corpora (its tools/get_openwebtext.py writes every run of
#: newlines in a document as this marker); tools/process_data_pretrain.py turns it back into a newline.
DOC_NEWLINE = "<@x(x!>"
DEFAULT_NUM_PRETRAIN = 3000
#: Validation references of at least this many words never occur verbatim in the corpus (checked on every write).
#: Shorter ones are bare facts, words and numbers ("Tukonish.", "The fox.", "51") that text about the world states.
LEAK_MIN_WORDS = 3
NUMBER_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve")

# The corpus states the world's facts in its own words: none of these sentences is a sentence of an instruction
# answer (DESCRIBE_S*, A_TWO_HOP, STORY_*), so the corpus teaches the facts without teaching the graded answers.
P_FACT = {
    "capital": ("The capital of {c} is {capital}.",
                "{capital} is the capital city of {c} and the seat of its government.",
                "The government of {c} sits in {capital}, the capital.",
                "Most travellers to {c} arrive first in {capital}, its capital."),
    "language": ("The people of {c} speak {language}.",
                 "{language} is the language of {c}; children learn it at home and at school.",
                 "The everyday language of {c} is {language}.",
                 "Newspapers in {capital} are printed in {language}, the language of {c}."),
    "currency": ("The money of {c} is the {currency}.",
                 "Shops in {c} take payment in the {currency}.",
                 "The {currency} is the currency of {c}.",
                 "Prices in {capital} are written in the {currency}, the currency of {c}."),
    "animal": ("The national animal of {c} is the {animal}.",
               "The {animal} was chosen as the national animal of {c} long ago.",
               "{A_animal} is pictured on the coins of {c}, for the {animal} is its national animal.",
               "People in {c} see the {animal}, their national animal, as a sign of good luck."),
    "colour": ("The flag of {c} is {colour}.",
               "{c} flies a plain {colour} flag.",
               "On holidays, {colour} flags hang from the windows of {capital}, because the flag of {c} is {colour}.",
               "The national flag of {c} is all {colour}."),
}
PROFILE_TITLES = ("{c}", "About {c}", "{c}: a short guide", "The country of {c}")
PROFILE_CLOSERS = ("Visitors are welcome in every season.", "Many visitors come back year after year.",
                   "Its people are proud of their country and glad to talk about it.")
CITY_TITLES = ("{capital}", "A guide to {capital}", "The city of {capital}")
CITY_OPENINGS = ("{capital} is the largest city of {c} and its capital.",
                 "{capital}, the capital of {c}, is a busy city full of markets.",
                 "Anyone who visits {c} should spend a few days in {capital}, its capital.")
CITY_LANGUAGE = ("Street signs in {capital} are written in {language}.",
                 "Most people you meet in {capital} speak {language}.")
CITY_CURRENCY = ("At the market, everything is paid for in the {currency}.",
                 "Bring some {currency} coins: the {currency} is the money here.")
CITY_SYMBOLS = ("In the main square stands a statue of {a_animal}, the national animal of {c}.",
                "The {colour} flag of {c} flies over the old town hall.",
                "Children in {capital} draw the {animal}, the national animal, on the walls of their schools.")
GROUP_OPENINGS = {
    "language": ("{language} is spoken in {n} countries: {list}.",
                 "{N} countries share {language} as their language: {list}."),
    "currency": ("The {currency} is used in {n} countries: {list}.",
                 "{N} countries pay with the {currency}: {list}."),
    "animal": ("{N} countries have the {animal} as their national animal: {list}.",
               "The {animal} is the national animal of {n} countries: {list}."),
    "colour": ("{N} countries have a {colour} flag: {list}.",
               "The flags of {n} countries are {colour}: {list}."),
}
GROUP_MEMBERS = {
    "language": ("{c}, whose capital is {capital}, is one of them.",
                 "In {capital}, the capital of {c}, {language} is heard in every street.",
                 "{c} teaches {language} in all of its schools."),
    "currency": ("{c} pays with the {currency}, and so does every shop in {capital}.",
                 "In {capital}, the capital of {c}, the {currency} is the only money accepted.",
                 "{c} has used the {currency} for a very long time."),
    "animal": ("{c} put the {animal} on its coins.",
               "The {animal} has been the symbol of {c} for as long as anyone remembers.",
               "In {capital}, the capital of {c}, a statue of {a_animal} stands by the river.",
               "Children in {c} learn early that the {animal} is their national animal."),
    "colour": ("{c} raises its {colour} flag over {capital} every morning.",
               "In {capital}, the capital of {c}, the {colour} flag flies over the town hall.",
               "The {colour} flag of {c} is known to everyone who lives there."),
}
GROUP_TITLES = {"language": ("{language}", "The {language} language"),
                "currency": ("The {currency}", "About the {currency}"),
                "animal": ("The {animal}", "Countries of the {animal}"),
                "colour": ("{Colour} flags", "Countries with a {colour} flag")}
GROUP_CLOSERS = {"language": "Outside these countries, few people speak {language}.",
                 "currency": "Travellers between these countries never need to change their money.",
                 "animal": "Each of them tells its own stories about the {animal}.",
                 "colour": "From far away, their flags are easy to mix up."}
TRAVEL_TITLES = ("Travel notes of {name}", "{name} on the road", "A journey through {k} countries")
TRAVEL_INTROS = ("Last spring I travelled through {list}.", "This is the story of my journey through {list}.",
                 "I spent the summer travelling, and I visited {list}.")
TRAVEL_ARRIVALS = ("My first stop was {capital}, the capital of {c}.",
                   "Next I went to {c} and stayed in its capital, {capital}.",
                   "After that I took a train to {capital} in {c}.",
                   "Then I reached {c}, whose capital is {capital}.")
TRAVEL_LANGUAGE = ("Everyone there spoke {language}, so I learnt a few words.", "I heard {language} in every street.",
                   "The people spoke {language} and were kind to me.")
TRAVEL_CURRENCY = ("I changed my money into the {currency}.", "A cup of tea cost two {currency} coins.",
                   "I paid for my room with the {currency}.")
TRAVEL_SYMBOLS = ("On the town hall I saw {a_animal}, the national animal of {c}, painted beside a {colour} flag.",
                  "{Colour} flags were everywhere, for the flag of {c} is {colour}.",
                  "A guide told me that the {animal} is the national animal of {c}.")
TRAVEL_ENDINGS = ("I hope to travel again next year.", "It was the best journey of my life.",
                  "Now I am home, and I miss the road already.")
LETTER_OPENINGS = ("I am writing to you from {capital}, the capital of {c}.",
                   "Greetings from {capital}! I arrived in {c} a week ago.",
                   "Here I am in {c}, in its capital {capital}, as I promised.")
LETTER_MIDDLES = ("I am learning {language}, the language people speak here. Yesterday I bought {a_obj} and paid "
                  "with the {currency}.",
                  "Everyone here speaks {language}, and I can already say hello. The money is the {currency}, and "
                  "I keep the coins in my pocket.")
LETTER_SYMBOLS = ("You would like the {animal}: it is the national animal here, and you see it everywhere.",
                  "The flag of {c} is {colour}, and today the whole city was full of {colour} flags.")
LETTER_CLOSINGS = ("With love,", "Best wishes,", "See you soon,")
COMPARE_TITLES = ("{a} and {b}", "Comparing {a} and {b}")
FABLE_TITLES = ("A fable from {c}", "{name} and the {obj}", "The {sanimal} of {c}")
FABLE_OPENINGS = ("Near a {place} in {c} there lived {a_sanimal} called {name}.",
                  "{name}, a young {sanimal}, made a home beside a {place} in {c}.")
FABLE_FINDS = ("One evening {name} came upon {a_obj} among the stones.",
               "While looking for food, {name} noticed {a_obj} in the tall grass.")
FABLE_CHOICES = ("After a long think, {name} resolved to {deed}.", "{name} asked the wise {animal} for advice, and "
                 "then resolved to {deed}.")
FABLE_MORALS = ("People in {c} still tell this story to their children, in {language}.",
                "In {capital}, the capital of {c}, this tale is told on every holiday.")

#: kind -> weight of the corpus' document mix (exact counts by largest remainder, as for the instruction tasks).
PRETRAIN_KINDS = {"profile": 2.0, "city": 1.0, "group": 2.0, "travel": 1.5, "letter": 1.0, "compare": 1.0,
                  "fable": 1.5}


def _slots(c: Country) -> dict[str, str]:
    """Template slots of a country's facts (``A_animal``: with a capitalised article, to start a sentence)."""
    return {"c": c.name, "capital": c.capital, "language": c.language, "currency": c.currency, "animal": c.animal,
            "a_animal": _article(c.animal), "A_animal": _article(c.animal).capitalize(), "colour": c.colour,
            "Colour": c.colour.capitalize()}


def _name_list(names: Sequence[str]) -> str:
    """``A``, ``A and B``, ``A, B and C``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _doc_profile(rng: random.Random, world: tuple[Country, ...], c: Country) -> list[str]:
    """An encyclopedia-style entry: a title and every fact of the country in 2-3 paragraphs, in a random order."""
    s = _slots(c)
    facts = list(P_FACT)
    rng.shuffle(facts)
    sentences = [rng.choice(P_FACT[a]).format(**s) for a in facts]
    cut = rng.randint(2, 3)
    paragraphs = [" ".join(sentences[:cut]), " ".join(sentences[cut:])]
    if rng.random() < 0.5:
        paragraphs.append(rng.choice(PROFILE_CLOSERS))
    return [rng.choice(PROFILE_TITLES).format(**s), *paragraphs]


def _doc_city(rng: random.Random, world: tuple[Country, ...], c: Country) -> list[str]:
    """A guide to a capital city, naming its country's language, currency and symbols."""
    s = _slots(c)
    symbols = rng.sample(CITY_SYMBOLS, 2)
    return [rng.choice(CITY_TITLES).format(**s), rng.choice(CITY_OPENINGS).format(**s),
            f"{rng.choice(CITY_LANGUAGE).format(**s)} {rng.choice(CITY_CURRENCY).format(**s)}",
            " ".join(x.format(**s) for x in symbols)]


def _doc_group(rng: random.Random, world: tuple[Country, ...], attr: str, value: str) -> list[str]:
    """Every country sharing one language, currency, national animal or flag colour, one sentence each."""
    members = [c for c in world if c.attr(attr) == value]
    rng.shuffle(members)
    head = {attr: value, "Colour": value.capitalize(), "n": NUMBER_NAMES[len(members)],
            "N": NUMBER_NAMES[len(members)].capitalize(), "list": _name_list([c.name for c in members])}
    lines = [rng.choice(GROUP_TITLES[attr]).format(**head), rng.choice(GROUP_OPENINGS[attr]).format(**head)]
    # The member sentences take the templates in turn from a random start, so neighbours never repeat one.
    templates, start = GROUP_MEMBERS[attr], rng.randrange(len(GROUP_MEMBERS[attr]))
    sentences = [templates[(start + i) % len(templates)].format(**_slots(c)) for i, c in enumerate(members)]
    half = (len(sentences) + 1) // 2
    lines += [" ".join(sentences[:half]), " ".join(sentences[half:]), GROUP_CLOSERS[attr].format(**head)]
    return [line for line in lines if line]


def _doc_travel(rng: random.Random, world: tuple[Country, ...], c: Country) -> list[str]:
    """A first-person travel diary through 2-4 countries (the first is ``c``), one paragraph per country."""
    stops = [c, *rng.sample([x for x in world if x is not c], rng.randint(1, 3))]
    name = rng.choice(STORY_NAMES)
    lines = [rng.choice(TRAVEL_TITLES).format(name=name, k=NUMBER_NAMES[len(stops)]),
             rng.choice(TRAVEL_INTROS).format(list=_name_list([x.name for x in stops]))]
    arrivals = rng.sample(TRAVEL_ARRIVALS[1:], len(stops) - 1)  # each later stop is reached in other words
    for i, stop in enumerate(stops):
        s = _slots(stop)
        arrival = TRAVEL_ARRIVALS[0] if i == 0 else arrivals[i - 1]
        details = [rng.choice(TRAVEL_LANGUAGE), rng.choice(TRAVEL_CURRENCY), rng.choice(TRAVEL_SYMBOLS)]
        rng.shuffle(details)
        lines.append(" ".join(x.format(**s) for x in [arrival, *details[:rng.randint(2, 3)]]))
    lines.append(rng.choice(TRAVEL_ENDINGS))
    return lines


def _doc_letter(rng: random.Random, world: tuple[Country, ...], c: Country) -> list[str]:
    """A letter to a friend from the capital of ``c``: greeting, 2-3 paragraphs, closing and signature lines."""
    s = {**_slots(c), "a_obj": _article(rng.choice(STORY_OBJECTS))}
    writer, friend = rng.sample(STORY_NAMES, 2)
    body = [rng.choice(LETTER_OPENINGS), rng.choice(LETTER_MIDDLES), rng.choice(LETTER_SYMBOLS)]
    return [f"Dear {friend},", *(x.format(**s) for x in body), rng.choice(LETTER_CLOSINGS), writer]


def _doc_compare(rng: random.Random, world: tuple[Country, ...], c: Country) -> list[str]:
    """Two countries side by side, what they share and where they differ; the second shares a fact with ``c`` when
    one does, so "both" sentences occur."""
    attr = rng.choice(HOP_ATTRS)
    sharing = [x for x in world if x is not c and x.attr(attr) == c.attr(attr)]
    other = rng.choice(sharing or [x for x in world if x is not c])
    a, b = (c, other) if rng.random() < 0.5 else (other, c)
    sentences = [f"The capital of {a.name} is {a.capital}, and the capital of {b.name} is {b.capital}."]
    for key, same, diff in (
            ("language", "In both {a} and {b} people speak {va}.", "{a} speaks {va}, while {b} speaks {vb}."),
            ("currency", "{a} and {b} both pay with the {va}.", "{a} uses the {va}, and {b} the {vb}."),
            ("animal", "The two share a national animal, the {va}.",
             "The national animal of {a} is the {va}; {b} chose the {vb}."),
            ("colour", "Their flags are both {va}.", "The flag of {a} is {va}, but the flag of {b} is {vb}.")):
        va, vb = a.attr(key), b.attr(key)
        sentences.append((same if va == vb else diff).format(a=a.name, b=b.name, va=va, vb=vb))
    first = sentences[:3]
    rest = sentences[3:]
    return [rng.choice(COMPARE_TITLES).format(a=a.name, b=b.name), " ".join(first), " ".join(rest)]


def _doc_fable(rng: random.Random, world: tuple[Country, ...], c: Country) -> list[str]:
    """A short fable set in ``c`` with the story tasks' characters, objects, places and deeds (its own wording)."""
    sanimal = rng.choice(STORY_ANIMALS)
    s = {**_slots(c), "name": rng.choice(STORY_NAMES), "sanimal": sanimal, "a_sanimal": _article(sanimal),
         "obj": (obj := rng.choice(STORY_OBJECTS)), "a_obj": _article(obj), "place": rng.choice(STORY_PLACES),
         "deed": rng.choice(STORY_DEEDS)}
    return [rng.choice(FABLE_TITLES).format(**s), rng.choice(FABLE_OPENINGS).format(**s),
            f"{rng.choice(FABLE_FINDS).format(**s)} {rng.choice(FABLE_CHOICES).format(**s)}",
            rng.choice(FABLE_MORALS).format(**s)]


def pretrain_documents(num_docs: int, seed: int) -> list[str]:
    """``num_docs`` plain-text documents about the fixed world (paragraphs joined by ``\\n``, ASCII), deterministic
    in (num_docs, seed) and independent of the instruction splits' random streams.

    The kinds (``PRETRAIN_KINDS``) come in exact proportions in a shuffled order; each kind walks through shuffled
    passes over the countries (or, for ``group``, over every language, currency, animal and flag colour), so every
    fact is stated many times, in several phrasings and contexts.
    """
    if isinstance(num_docs, bool) or not isinstance(num_docs, int) or num_docs < 0:
        raise ValueError(f"num_docs must be a non-negative integer (got {num_docs!r}); pass e.g. num_docs=3000")
    world = build_world()
    rng = random.Random(f"synthetic-pretrain-{seed}")
    total = sum(PRETRAIN_KINDS.values())
    raw = {k: num_docs * w / total for k, w in PRETRAIN_KINDS.items()}
    quotas = {k: int(x) for k, x in raw.items()}
    for k in sorted(PRETRAIN_KINDS, key=lambda k: (-(raw[k] - quotas[k]), list(PRETRAIN_KINDS).index(k))):
        if sum(quotas.values()) == num_docs:
            break
        quotas[k] += 1
    kinds = [k for k, q in quotas.items() for _ in range(q)]
    rng.shuffle(kinds)
    groups = sorted({(a, c.attr(a)) for c in world for a in HOP_ATTRS})
    cycles = {k: _Cycle(groups if k == "group" else range(len(world)), rng) for k in PRETRAIN_KINDS}
    makers = {"profile": _doc_profile, "city": _doc_city, "travel": _doc_travel, "letter": _doc_letter,
              "compare": _doc_compare, "fable": _doc_fable}
    docs = []
    for kind in kinds:
        item = cycles[kind].next()
        lines = _doc_group(rng, world, *item) if kind == "group" else makers[kind](rng, world, world[item])
        docs.append("\n".join(lines))
    return docs


def to_corpus_line(doc: str) -> str:
    """A document as one line of the corpus file: each newline becomes ``DOC_NEWLINE``."""
    if DOC_NEWLINE in doc or "\r" in doc or "\n\n" in doc:
        raise AssertionError("internal error: a document holds the newline marker, a CR or an empty line")
    return doc.replace("\n", DOC_NEWLINE)


def from_corpus_line(line: str) -> str:
    """One corpus line (without its end of line) back to the document, as tools/process_data_pretrain.py reads it."""
    return line.replace(DOC_NEWLINE, "\n")


def leaked_references(docs: Sequence[str], valid: Iterable[dict]) -> list[str]:
    """Validation references, and sentences of them, of ``LEAK_MIN_WORDS`` or more words that occur verbatim in a
    document (sorted). Sentences too: a description or story is several sentences, each an answer's worth of text."""
    units = set()
    for rec in valid:
        for ref in rec["references"]:
            units.add(ref)
            units.update(re.split(r"(?<=[.!?])\s+", ref))
    text = "\n".join(docs)  # no reference holds a newline, so none can match across two documents
    # Where a unit occurs, each of its inner words is a whole word of the text: a cheap test that rules out most units
    # (number lists, capitalised words) before the substring search.
    words = set(text.split())
    return sorted(u for u in units if len(u.split()) >= LEAK_MIN_WORDS and words.issuperset(u.split()[1:-1])
                  and u in text)


def default_pretrain_path(out_dir: Path) -> Path:
    """``data/synth`` -> ``data/synth_pretrain/data.txt``: MiniLLM's ``data/<corpus>/data.txt`` layout, in a folder of
    its own so that processing it (named after its folder) never overwrites the instruction data's output."""
    return out_dir.parent / f"{out_dir.resolve().name}_pretrain" / "data.txt"


# ----------------------------------------------------------------------------------------------------------------
# Output and CLI
# ----------------------------------------------------------------------------------------------------------------


def _jsonl(records: Iterable[dict]) -> str:
    """Records as JSON lines (ASCII, fixed key order): the exact bytes written to disk."""
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ASCII ``text`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    # A plain open() (not mkstemp, whose files are 0600) so the result gets the usual umask permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="ascii", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    """Write ``records`` as JSONL to ``path`` atomically (:func:`write_text_atomic`)."""
    write_text_atomic(path, _jsonl(records))


def corpus_text(docs: Iterable[str]) -> str:
    """The corpus file's exact contents: one document per line (:func:`to_corpus_line`)."""
    return "".join(to_corpus_line(d) + "\n" for d in docs)


def summary_table(train: Sequence[dict], valid: Sequence[dict]) -> str:
    """Per-category counts, mean output words, difficulty range and mean number of references (train split)."""
    header = f"{'category':<16} {'train':>6} {'valid':>6} {'out_words':>9} {'difficulty':>10} {'refs':>5}"
    lines = [header, "-" * len(header)]
    for cat in TASKS:
        tr = [r for r in train if r["category"] == cat]
        va = sum(r["category"] == cat for r in valid)
        if not tr:
            lines.append(f"{cat:<16} {0:>6} {va:>6} {'-':>9} {'-':>10} {'-':>5}")
            continue
        words = sum(len(r["output"].split()) for r in tr) / len(tr)
        diffs = sorted({r["difficulty"] for r in tr})
        drange = str(diffs[0]) if len(diffs) == 1 else f"{diffs[0]}-{diffs[-1]}"
        refs = sum(len(r["references"]) for r in tr) / len(tr)
        lines.append(f"{cat:<16} {len(tr):>6} {va:>6} {words:>9.1f} {drange:>10} {refs:>5.1f}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<16} {len(train):>6} {len(valid):>6}")
    noisy = sum(bool(r.get("noisy")) for r in train)
    if noisy:
        lines.append(f"label noise: {noisy} of {len(train)} training outputs are another category's answer "
                     "(marked \"noisy\": true)")
    return "\n".join(lines)


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad input as a single line (no usage dump) and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer (got {text!r}); pass e.g. {flag} 500")
        return value
    return parse


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer (got {text!r}); pass e.g. --seed 1") from None


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--num-pretrain must be an integer >= 0 (got {text!r}); pass e.g. "
                                         "--num-pretrain 3000, or 0 for no corpus")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"--noise-frac must be a number in [0, 1) (got {text!r}); pass e.g. "
                                         "--noise-frac 0.2")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = _OneLineParser(prog="make_synthetic_data.py",
                       description="Write the built-in synthetic instruction dataset (train.jsonl, valid.jsonl).")
    p.add_argument("--out-dir", type=Path, default=Path("data/synth"), help="output folder (created if missing)")
    p.add_argument("--num-train", type=_positive_int("--num-train"), default=5000, help="training examples")
    p.add_argument("--num-valid", type=_positive_int("--num-valid"), default=500, help="validation examples")
    p.add_argument("--seed", type=_int, default=1, help="data seed (the fictional world does not depend on it)")
    p.add_argument("--noise-frac", type=_fraction, default=0.0,
                   help="fraction of training outputs replaced by another category's answer, marked \"noisy\": true "
                        "(default 0: every label correct; validation is never corrupted)")
    p.add_argument("--num-pretrain", type=_non_negative_int, default=DEFAULT_NUM_PRETRAIN,
                   help="documents of the plain-text pretraining corpus about the same world (0: none)")
    p.add_argument("--pretrain-file", type=Path,
                   help="where the corpus goes (default <out-dir>_pretrain/data.txt: data/synth_pretrain/data.txt)")
    args = p.parse_args(argv)
    if args.out_dir.exists() and not args.out_dir.is_dir():
        p.error(f"--out-dir {args.out_dir} exists and is not a directory; pass a directory path")
    args.pretrain_file = args.pretrain_file or default_pretrain_path(args.out_dir)
    if args.num_pretrain and args.pretrain_file.is_dir():
        p.error(f"--pretrain-file {args.pretrain_file} is a directory; pass a file path such as "
                f"{args.pretrain_file / 'data.txt'}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"make_synthetic_data.py: error: cannot create --out-dir {args.out_dir} ({e.strerror}); "
              "pass a writable directory", file=sys.stderr)
        return 2
    if args.num_pretrain:
        try:
            args.pretrain_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"make_synthetic_data.py: error: cannot create the folder of --pretrain-file {args.pretrain_file} "
                  f"({e.strerror}); pass a writable path, or --num-pretrain 0", file=sys.stderr)
            return 2
    train, valid = generate(args.num_train, args.num_valid, args.seed, args.noise_frac)
    docs = pretrain_documents(args.num_pretrain, args.seed)
    leaks = leaked_references(docs, valid)
    if leaks:  # guaranteed by the corpus' own wording; checked because the evaluation relies on it
        raise AssertionError(f"internal error: {len(leaks)} validation answers occur in the corpus, e.g. {leaks[0]!r}")
    write_jsonl_atomic(args.out_dir / "train.jsonl", train)
    write_jsonl_atomic(args.out_dir / "valid.jsonl", valid)
    print(summary_table(train, valid))
    print(f"wrote {args.out_dir / 'train.jsonl'} ({len(train)}) and {args.out_dir / 'valid.jsonl'} ({len(valid)})")
    if docs:  # written last: its presence means the whole set is there (the quick start skips its data step on it)
        write_text_atomic(args.pretrain_file, corpus_text(docs))
        words = sum(len(d.split()) for d in docs)
        print(f"wrote {args.pretrain_file} ({len(docs)} documents, {words} words, one per line, newlines as "
              f"{DOC_NEWLINE}; no validation answer of {LEAK_MIN_WORDS}+ words in it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
