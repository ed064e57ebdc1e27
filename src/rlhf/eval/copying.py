"""Can a model copy a detail from its context? The skill every closed-domain task needs.

A summary, an answer "using only the text" or a rewrite must repeat the source's towns,
numbers, foods, people and animals; a model that cannot copy writes plausible ones instead
(closed-domain hallucination), and a few-shot prompt cannot teach it anything. This probe
measures the skill directly: a short source text states each detail once, a continuation
restates the story up to a detail, and the model's greedy continuation must be that detail,
every token of it (teacher-forced: one forward pass per left-padded batch).

Two shapes, each with five details (town after "went to", number after "bought", food after
"bought <number>", the person met after "met", the animals after "saw <number>"):

- `prose`: plain text, the shape of a pretraining corpus ("..., bought four carrots at the
  market. ... Later, Tom told Kate that he went to Pinecrest, bought" -> "four");
- `chat`:  the same source as a summarisation prompt in the SFT template
  ("User: Summarize ...\\nText: ...\\nAssistant: Tom went to Pinecrest, bought" -> "four").

The source also names a second person and a second number, so a model that copies "the
number in the text" rather than the one after "bought" is not rewarded. A model can learn
to copy some of these slots and not others: which ones it copies says whether it learned
copying or only the phrases its training data repeats.

Chance is 1 / (number of values the detail can take). Cases come from one seeded stream.
"""

from __future__ import annotations

import random
from collections import defaultdict

import torch

from rlhf.models import load_model, load_tokenizer
from rlhf.models.format import DEFAULT_TEMPLATE, pad_sequences
from rlhf.models.lm import context_length, position_ids_from_mask
from rlhf.world import lexicon
from rlhf.world.universe import Universe

DETAILS: dict[str, tuple[str, ...]] = {
    "town": tuple(lexicon.TOWNS), "number": tuple(lexicon.NUMBERS),
    "food": tuple(lexicon.COUNTABLE_FOODS), "name": tuple(lexicon.PEOPLE),
    "animal": tuple(s.plural for s in lexicon.SPECIES)}
SHAPES: tuple[str, ...] = ("prose", "chat")


def copy_cases(u: Universe, n: int, seed: int = 0,
               template: str = DEFAULT_TEMPLATE) -> list[dict]:
    """n stories x 2 shapes x 5 details: {"shape", "detail", "prefix", "answer"}."""
    rng = random.Random(f"copy-probe:{seed}")
    cases = []
    for _ in range(n):
        p = u.people[rng.choice(sorted(u.people))]
        friend, met = rng.sample([q for q in sorted(u.people) if q != p.name], 2)
        town = u.towns[rng.choice([t for t in sorted(u.towns) if t != p.town])]
        num, many = rng.sample(lexicon.NUMBERS, 2)
        food, animals = rng.choice(lexicon.COUNTABLE_FOODS), rng.choice(lexicon.SPECIES).plural
        pr = p.pronoun
        source = (f"{p.name} went to {town.name}. {pr.capitalize()} bought {num} {food} at the "
                  f"market. {pr.capitalize()} met {met} by the {town.river} River. "
                  f"{pr.capitalize()} saw {many} {animals} near the old {town.landmark}.")
        heads = {
            "prose": f"One day, {source} Later, {p.name} told {friend} that {pr} ",
            "chat": template.format(prompt="Summarize the text in one sentence.\nText: On "
                                    f"{rng.choice(lexicon.DAYS)}, {source}") + f" {p.name} ",
        }
        for shape, head in heads.items():
            said = f"{head}went to"
            for detail, answer, then in (
                    ("town", town.name, ", bought"), ("number", num, ""), ("food", food, ", met"),
                    ("name", met, f" and saw {many}"), ("animal", animals, "")):
                cases.append({"shape": shape, "detail": detail, "prefix": said,
                              "answer": answer})
                said = f"{said} {answer}{then}"
    return cases


@torch.no_grad()
def copy_accuracy(model, tokenizer, cases: list[dict], batch_size: int = 64) -> dict:
    """Accuracy on the cases (a hit: greedy decoding after the prefix reproduces every token of
    the answer): overall, per shape and per shape/detail, with the chance level of each
    detail."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ctx = context_length(model) if hasattr(model, "config") else 1 << 30
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    hits: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for i in range(0, len(cases), batch_size):
        chunk = cases[i:i + batch_size]
        answers = [tokenizer(" " + c["answer"], add_special_tokens=False)["input_ids"]
                   for c in chunk]
        # prefix + answer, teacher-forced; the end of a text longer than the context matters
        ids, mask = pad_sequences([(tokenizer(c["prefix"], add_special_tokens=False)["input_ids"]
                                    + a)[-ctx:] for c, a in zip(chunk, answers)], pad, side="left")
        ids, mask = ids.to(device), mask.to(device)
        pred = model(input_ids=ids, attention_mask=mask,
                     position_ids=position_ids_from_mask(mask)).logits.argmax(-1)
        right = pred[:, :-1] == ids[:, 1:]                  # position j predicts token j + 1
        n_ans = torch.tensor([len(a) for a in answers], device=device)
        t = ids.shape[1] - 1
        in_answer = torch.arange(t, device=device)[None, :] >= (t - n_ans)[:, None]
        for c, hit in zip(chunk, (right | ~in_answer).all(-1).tolist()):
            hits[(c["shape"], c["detail"])].append(hit)
    model.train(was_training)

    def rate(groups: list[list[bool]]) -> float:
        sel = [h for g in groups for h in g]
        return round(sum(sel) / len(sel), 4) if sel else float("nan")

    out: dict = {"accuracy": rate(list(hits.values())), "n": len(cases)}
    for shape in SHAPES:
        out[shape] = {"accuracy": rate([hits[(shape, d)] for d in DETAILS])}
        out[shape].update({d: rate([hits[(shape, d)]]) for d in DETAILS})
    out["chance"] = {d: round(1 / len(v), 4) for d, v in DETAILS.items()}
    return out


def copy_probe(models: dict[str, str], u: Universe, n: int = 50, seed: int = 0,
               template: str = DEFAULT_TEMPLATE) -> dict:
    """Copy accuracy of HF models given as {name: path} (a path probed once):
    {"n_cases", "chance": {detail: p}, "models": {name: {"accuracy", "prose", "chat"}}}."""
    cases = copy_cases(u, n, seed=seed, template=template)
    done: dict[str, dict] = {}
    out: dict = {"n_cases": len(cases), "models": {}}
    for name, path in models.items():
        if path not in done:
            res = copy_accuracy(load_model(path), load_tokenizer(path), cases)
            out["chance"] = res.pop("chance")
            res.pop("n")
            done[path] = res
        out["models"][name] = done[path]
    return out
