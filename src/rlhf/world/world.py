"""`World`: one seeded Instruction World (facts, prompts, gold judge) and `build_world`, which
writes it to disk in the formats the trainers read.

Layout written by build_world(out_dir):

    pretrain/train.txt            prose for pretraining (documents separated by a blank line)
    pretrain/valid.txt            held-out prose (perplexity, alignment tax)
    prompts/{sft,sft_valid,rm,ppo,test}.jsonl   prompt records, disjoint by text
    demonstrations/sft.jsonl      {"prompt", "response", "labeler_id"} by training labelers
    demonstrations/sft_valid.jsonl
    fewshot.txt                   3 example turns "User: ...\\nAssistant: ...\\n\\n" (prompted base)
    universe.json                 every fact, for people to read
    world.json                    schema version, seed, sizes, labeler split, counts
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from rlhf.errors import UserError
from rlhf.io import atomic_path, read_jsonl, require_str
from rlhf.world.corpus import generate_corpus, write_corpus
from rlhf.world.judge import Judgement, judge
from rlhf.world.labelers import DEFAULT_NOISE, DEFAULT_SLIP_RATE, LabelerPool, default_heldout
from rlhf.world.prompts import CATEGORIES, SPLITS, Record, generate_splits
from rlhf.world.universe import Universe
from rlhf.world.writer import good_response

SCHEMA_VERSION = 1
FEWSHOT_TEMPLATE = "User: {prompt}\nAssistant: {response}\n\n"
FEWSHOT_CATEGORIES = ("open_qa", "brainstorming", "closed_qa")
_SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>")
_JUDGE_CACHE_LIMIT = 200_000


@dataclass(frozen=True)
class WorldSizes:
    """How much of everything to make. Tokens are whitespace-separated words."""

    n_pretrain_tokens: int = 2_200_000
    n_valid_tokens: int = 50_000
    n_sft: int = 2000
    n_sft_valid: int = 200
    n_rm: int = 2000
    n_ppo: int = 2000
    n_test: int = 400
    n_labelers: int = 40
    n_heldout: int | None = None  # default: a quarter of the labelers (10 of 40)
    noise: float = DEFAULT_NOISE
    slip_rate: float = DEFAULT_SLIP_RATE
    chatty_rate: float = 0.0      # demonstrators' mean rate of greetings / sign-offs (habits)
    aside_rate: float = 0.0       # demonstrators' mean rate of unasked facts (habits)

    def split_sizes(self) -> dict[str, int]:
        return {"sft": self.n_sft, "sft_valid": self.n_sft_valid, "rm": self.n_rm,
                "ppo": self.n_ppo, "test": self.n_test}

    @classmethod
    def from_options(cls, **options: Any) -> WorldSizes:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"unknown world size option(s): {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
        sizes = cls(**{k: v for k, v in options.items() if v is not None})
        for name, value in asdict(sizes).items():
            if value is not None and value < 0:
                raise UserError(f"world option {name} must not be negative, got {value}")
        if not 0 <= sizes.heldout < sizes.n_labelers:
            raise UserError(f"need 0 <= n_heldout < n_labelers, got {sizes.heldout} held out "
                            f"of {sizes.n_labelers}")
        return sizes

    @property
    def heldout(self) -> int:
        return default_heldout(self.n_labelers) if self.n_heldout is None else self.n_heldout


class World:
    """A seeded world: its universe of facts, its prompt splits and its gold judge.

    `World(seed, **sizes)` generates the prompts in memory (as build_world would write them);
    `World.load(dir)` reads a built world. Prompts may be passed to `record`, `judge` and
    `gold_reward` as records, ids, plain prompt texts, or texts wrapped in the chat template
    ("User: {prompt}\\nAssistant:"), with or without a few-shot prefix.
    """

    def __init__(self, seed: int = 0, sizes: WorldSizes | None = None, *,
                 splits: dict[str, list[Record]] | None = None, **size_options: Any):
        if sizes is not None and size_options:
            raise TypeError("give either sizes or size options, not both")
        self.seed = seed
        self.sizes = sizes or WorldSizes.from_options(**size_options)
        self.universe = Universe(seed)
        self._splits = splits if splits is not None else generate_splits(
            self.universe, seed, self.sizes.split_sizes())
        self._by_text: dict[str, Record] = {}
        self._by_id: dict[str, Record] = {}
        for records in self._splits.values():
            for rec in records:
                self._by_text[rec["prompt"]] = rec
                self._by_id[rec["id"]] = rec
        self._judgements: dict[tuple[str, str], Judgement] = {}
        self._pool: LabelerPool | None = None

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, directory: str | Path) -> World:
        """Read a world written by build_world (prompts come from its files)."""
        directory = Path(directory)
        meta_path = directory / "world.json"
        if not meta_path.exists():
            raise UserError("not a built world (world.json missing); run `rlhf world build`",
                            path=str(directory))
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"malformed JSON ({e.msg})", path=str(meta_path)) from None
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"world schema {meta.get('schema_version')!r} is not the supported "
                            f"{SCHEMA_VERSION}; rebuild the world", path=str(meta_path))
        sizes = WorldSizes.from_options(**meta["sizes"])
        splits = {split: _read_prompts(directory / "prompts" / f"{split}.jsonl")
                  for split in SPLITS}
        return cls(int(meta["seed"]), sizes, splits=splits)

    # ----------------------------------------------------------------- prompts
    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def prompts(self, split: str) -> list[Record]:
        if split not in self._splits:
            raise UserError(f"unknown split {split!r}; choose from {', '.join(self._splits)}")
        return list(self._splits[split])

    def record(self, prompt: str | dict) -> Record:
        """The prompt record for a record, id, prompt text or chat-formatted prompt."""
        if isinstance(prompt, dict):
            if "category" in prompt:
                return prompt
            prompt = str(prompt.get("prompt", ""))
        rec = self._by_text.get(prompt) or self._by_id.get(prompt)
        if rec is None:
            rec = self._by_text.get(_unwrap_template(prompt))
        if rec is None:
            raise UserError(f"prompt is not part of this world: {prompt[:80]!r}")
        return rec

    # ----------------------------------------------------------------- judging
    def judge(self, prompt: str | dict, response: str) -> Judgement:
        """The gold judgement of a response (see rlhf.world.judge for the rubric)."""
        rec = self.record(prompt)
        response = _clean_response(response)
        key = (rec["prompt"], response)
        cached = self._judgements.get(key)
        if cached is None:
            if len(self._judgements) >= _JUDGE_CACHE_LIMIT:
                self._judgements.clear()
            cached = self._judgements[key] = judge(self.universe, rec, response)
        return cached

    def gold_reward(self, prompts: Sequence[str | dict], responses: Sequence[str]) -> list[float]:
        """Gold scores in [0, 1]: a reward callable `(prompts, responses) -> scores` for PPO."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [self.judge(p, r).score for p, r in zip(prompts, responses)]

    def good_response(self, prompt: str | dict, seed: int = 0) -> str:
        """An ideal answer (the gold writer, no slips)."""
        rec = self.record(prompt)
        return good_response(self.universe, rec, random.Random(f"good:{seed}:{rec['prompt']}"))

    def labeler_pool(self) -> LabelerPool:
        """The world's simulated labelers (sizes.n_labelers, sizes.heldout of them held out); the
        same pool (same seed) that wrote the demonstrations."""
        if self._pool is None:
            self._pool = LabelerPool(self, n=self.sizes.n_labelers, n_heldout=self.sizes.heldout,
                                     seed=self.seed, noise=self.sizes.noise,
                                     slip_rate=self.sizes.slip_rate,
                                     chatty_rate=self.sizes.chatty_rate,
                                     aside_rate=self.sizes.aside_rate)
        return self._pool


def _unwrap_template(text: str) -> str:
    """"...User: {prompt}\\nAssistant:" -> "{prompt}" (the last user turn of a formatted prompt)."""
    body = text.rsplit("User: ", 1)[-1]
    body = body.rstrip()
    if body.endswith("Assistant:"):
        body = body[: -len("Assistant:")]
    return body.rstrip("\n").strip()


def _clean_response(response: str) -> str:
    for tok in _SPECIAL_TOKENS:
        response = response.replace(tok, " ")
    return response.strip()


def _read_prompts(path: Path) -> list[Record]:
    records = []
    for line, obj in read_jsonl(path):
        for key in ("id", "prompt", "category"):
            require_str(obj, key, str(path), line)
        if obj["category"] not in CATEGORIES:
            raise UserError(f"unknown category {obj['category']!r}", path=str(path), line=line,
                            field="category")
        records.append(obj)
    return records


# --------------------------------------------------------------------------- building
def build_world(out_dir: str | Path, seed: int = 0, **size_options: Any) -> dict[str, Any]:
    """Write a complete world to out_dir (atomically: built beside it, then renamed into place).

    Size options are the fields of WorldSizes (n_pretrain_tokens, n_valid_tokens, n_sft,
    n_sft_valid, n_rm, n_ppo, n_test, n_labelers, n_heldout, noise, slip_rate). Returns a summary
    dict (the content of world.json plus the output path).
    """
    sizes = WorldSizes.from_options(**size_options)
    world = World(seed, sizes)
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        Path(tmp).chmod(0o755)  # mkdtemp makes it private; a world is meant to be shared
        meta = _write_world(world, Path(tmp))
    return {"out": str(out_dir), **meta}


def _write_world(world: World, root: Path) -> dict[str, Any]:
    u, sizes, seed = world.universe, world.sizes, world.seed
    tokens = {
        "train": write_corpus(root / "pretrain" / "train.txt",
                              generate_corpus(u, seed, sizes.n_pretrain_tokens, "train")),
        "valid": write_corpus(root / "pretrain" / "valid.txt",
                              generate_corpus(u, seed, sizes.n_valid_tokens, "valid")),
    }
    for split in SPLITS:
        _write_jsonl(root / "prompts" / f"{split}.jsonl", world.prompts(split))
    pool = world.labeler_pool()
    n_demos = {}
    for split in ("sft", "sft_valid"):
        demos = write_demonstrations(world, pool, split, random.Random(f"demos:{split}:{seed}"))
        _write_jsonl(root / "demonstrations" / f"{split}.jsonl", demos)
        n_demos[split] = len(demos)
    (root / "fewshot.txt").write_text(fewshot_prefix(world), encoding="utf-8")
    (root / "universe.json").write_text(json.dumps(u.to_dict(), indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
    meta = {
        "schema_version": SCHEMA_VERSION,
        "seed": seed,
        "sizes": asdict(sizes),
        "token_unit": "whitespace-separated words",
        "pretrain_tokens": tokens,
        "prompts": {split: len(world.prompts(split)) for split in SPLITS},
        "demonstrations": n_demos,
        "labelers": {"train": [lab.id for lab in pool.train_labelers],
                     "heldout": [lab.id for lab in pool.heldout_labelers]},
    }
    (root / "world.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n",
                                     encoding="utf-8")
    return meta


def write_demonstrations(world: World, pool: LabelerPool, split: str,
                         rng: random.Random) -> list[dict[str, str]]:
    """One demonstration per prompt of the split, each by a random training labeler."""
    labelers = pool.train_labelers
    rows = []
    for rec in world.prompts(split):
        lab = labelers[rng.randrange(len(labelers))]
        rows.append({"prompt": rec["prompt"], "response": lab.demonstrate(rec),
                     "labeler_id": lab.id})
    return rows


def fewshot_prefix(world: World) -> str:
    """Three ideal example turns (open QA, brainstorming, closed QA) from the SFT prompts."""
    turns = []
    for category in FEWSHOT_CATEGORIES:
        candidates = [r for r in world.prompts("sft") if r["category"] == category]
        if not candidates:
            candidates = [r for split in world.splits for r in world.prompts(split)
                          if r["category"] == category]
        if candidates:
            rec = candidates[0]
            turns.append(FEWSHOT_TEMPLATE.format(prompt=rec["prompt"],
                                                 response=world.good_response(rec)))
    return "".join(turns)


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
