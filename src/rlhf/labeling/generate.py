"""Sample K candidate responses per prompt from a checkpoint, for labelers to rank or rate.

The policy (usually the SFT model) is loaded from a Hugging Face folder, prompts are formatted
as in every other step (`rlhf.models.format.encode_prompt`: the tokenizer's chat template, else
the shared "User: {prompt}\\nAssistant:"), and `rlhf.models.generation.generate_texts`
samples K answers each (left padding, KV cache, cut at EOS). Sampling runs before the database
transaction, so a long generation never holds a lock; the candidates are then stored in one
transaction as a new batch per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlhf.labeling.errors import Invalid
from rlhf.labeling.records import MAX_RESPONSE_CHARS, check_k
from rlhf.labeling.store import Store

MAX_NEW_TOKENS = 1024
EMPTY_RETRIES = 3


@dataclass
class GenerateReport:
    prompts: int
    candidates: int
    k: int
    skipped: int = 0  # prompts whose samples stayed empty after EMPTY_RETRIES resamplings

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def generate_candidates(store: Store, project: str, checkpoint_path: str | Path, *, k: int = 4,
                        max_new_tokens: int = 64, temperature: float = 1.0, top_p: float = 1.0,
                        seed: int = 0, batch_size: int = 16,
                        regenerate: bool = False) -> GenerateReport:
    """Give every prompt of `project` without candidates (all prompts with `regenerate`) a new
    batch of `k` sampled responses from the causal LM at `checkpoint_path`."""
    check_k(k)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise Invalid(f"must be a whole number from 1 to {MAX_NEW_TOKENS}", field="max_new_tokens")
    if not 0.0 < temperature <= 5.0:
        raise Invalid("must be in (0, 5]", field="temperature")
    if not 0.0 < top_p <= 1.0:
        raise Invalid("must be in (0, 1]", field="top_p")
    path = Path(checkpoint_path)
    if not (path / "config.json").is_file():
        raise Invalid(f"no Hugging Face model folder at {str(path)!r} (config.json missing)",
                      field="checkpoint")
    prompts = store.prompts_for_generation(project, regenerate=regenerate)
    if not prompts:
        return GenerateReport(prompts=0, candidates=0, k=k)

    from rlhf.models.generation import generate_texts  # torch and transformers load only when needed
    from rlhf.models import load_model, load_tokenizer

    try:
        tokenizer = load_tokenizer(path)
        model = load_model(path)
    except (OSError, ValueError) as e:
        raise Invalid(f"could not load the checkpoint at {str(path)!r}: {e}",
                      field="checkpoint") from None
    texts = [text for _, text in prompts]
    samples = generate_texts(model, tokenizer, texts, k, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, seed=seed,
                             batch_size=batch_size)
    samples = [[t.strip()[:MAX_RESPONSE_CHARS] for t in row] for row in samples]
    # An empty answer (EOS first) cannot be ranked or trained on: resample those slots.
    for attempt in range(1, EMPTY_RETRIES + 1):
        todo = [i for i, row in enumerate(samples) if any(not t for t in row)]
        if not todo:
            break
        redo = generate_texts(model, tokenizer, [texts[i] for i in todo], k,
                              max_new_tokens=max_new_tokens, temperature=temperature,
                              top_p=top_p, seed=seed + 7919 * attempt, batch_size=batch_size)
        for i, fresh in zip(todo, redo):
            spare = iter(t.strip()[:MAX_RESPONSE_CHARS] for t in fresh if t.strip())
            samples[i] = [t or next(spare, "") for t in samples[i]]
    by_key = {key: row for (key, _), row in zip(prompts, samples) if all(row)}
    skipped = len(prompts) - len(by_key)
    report = store.add_candidates(project, by_key, source=f"checkpoint:{path}") if by_key else None
    return GenerateReport(prompts=len(by_key), candidates=report.candidates_added if report else 0,
                          k=k, skipped=skipped)
