"""How a prompt and a response become token ids: one set of functions for SFT, the RM, PPO,
evaluation and the labeling app's candidate generation.

The prompt is rendered and tokenised alone; the response is tokenised alone. The two id lists
are concatenated, never re-tokenised together, so the loss-mask boundary in SFT, the start of
generation in PPO and the RM's input agree exactly. Two renderings:

- plain (a tokenizer without a chat template, e.g. the embedded default): the prompt is
  `template` ("User: {prompt}\\nAssistant:") with {prompt} filled in; the response is
  " " + response followed by EOS.
- chat (a tokenizer with a chat template, e.g. an instruct model's tokenizer_config.json): the
  prompt is the conversation (earlier turns, then the user's prompt) rendered with
  `apply_chat_template(..., add_generation_prompt=True)`, so the model continues right after
  the assistant header it was tuned on; the response is exactly the tokens the template puts
  after that generation prompt for the assistant's turn: its content and the end-of-turn token,
  which must be EOS (sampling stops at EOS), not the newline some templates add after it. A
  template that emits no end-of-turn token gets EOS after the content (the turn separator
  dropped). `template` is then unused.

SFT's loss mask covers the response ids, so under a chat template exactly the assistant's
tokens. A chat template is checked (`check_chat_template`) the first time a tokenizer renders a
prompt: one that ignores add_generation_prompt, puts the generation prompt anywhere but at the
end, renders an assistant turn unlike its own generation prompt, or ends the turn with a token
other than EOS is refused with a UserError naming the setting.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Sequence

import torch

from rlhf.config import DEFAULT_TEMPLATE
from rlhf.errors import UserError

#: earlier (user, assistant) turns of a multi-turn demonstration
History = Sequence[tuple[str, str]]

_PROBE, _PROBE_REPLY = "Name three colours.", "Red, green and blue."
#: tokenizer -> the (chat template, EOS id) that passed `check_chat_template`
_CHECKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# ============================================================================ chat templates

def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _refuse(tokenizer, message: str, field: str = "chat_template") -> UserError:
    """A UserError naming the tokenizer's folder (when it has one) and its setting."""
    where = getattr(tokenizer, "name_or_path", "") or None
    return UserError(f"{message} (tokenizer_config.json: {field})", path=where, field=field)


def _messages(prompt: str, history: History = (), response: str | None = None) -> list[dict]:
    out = []
    for user, assistant in history:
        out += [{"role": "user", "content": user},
                {"role": "assistant", "content": assistant.strip()}]
    out.append({"role": "user", "content": prompt})
    if response is not None:
        out.append({"role": "assistant", "content": response})
    return out


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                             tokenize=False)
    except Exception as e:  # noqa: BLE001 - a Jinja template can raise anything
        raise _refuse(tokenizer, f"the chat template cannot render a conversation: "
                      f"{type(e).__name__}: {e}") from None


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _chat_turn(tokenizer, prompt: str, response: str, history: History = ()) -> list[int]:
    """The ids the template puts after the generation prompt for the assistant's `response`, up
    to and including the end-of-turn token (EOS appended when the template has none)."""
    head = _render(tokenizer, _messages(prompt, history), True)
    full = _render(tokenizer, _messages(prompt, history, response.strip()), False)
    if not full.startswith(head):
        raise _refuse(tokenizer, "the chat template renders an assistant turn differently from "
                      "its generation prompt (the conversation does not start with the rendered "
                      "prompt), so SFT would not train what PPO samples")
    rest = full[len(head):]
    turn = _tokens(tokenizer, rest)
    special = (set(tokenizer.all_special_ids) - {tokenizer.pad_token_id}) | \
        {tokenizer.eos_token_id}
    end = next((i for i, t in enumerate(turn) if t in special), None)
    if end is None:
        return _tokens(tokenizer, rest.rstrip()) + [tokenizer.eos_token_id]
    return turn[:end + 1]


def check_chat_template(tokenizer) -> None:
    """Refuse (UserError naming `chat_template`, or `eos_token`) a chat template that cannot
    serve as the prompt format: it ignores add_generation_prompt, puts the generation prompt
    anywhere but at the end, or ends the assistant's turn with a token other than EOS (sampling
    would never stop). A no-op without a template; each tokenizer is checked once (again only if
    its template or EOS changes)."""
    if not has_chat_template(tokenizer):
        return
    key = (tokenizer.chat_template, tokenizer.eos_token_id)
    if _CHECKED.get(tokenizer) == key:
        return
    bare = _render(tokenizer, _messages(_PROBE), False)
    gen = _render(tokenizer, _messages(_PROBE), True)
    if gen == bare:
        raise _refuse(tokenizer, "the chat template ignores add_generation_prompt: a rendered "
                      "prompt must end with the assistant's header (e.g. "
                      "'<|im_start|>assistant\\n') for the model to answer; use a template that "
                      "appends it when add_generation_prompt is true")
    if not gen.startswith(bare):
        raise _refuse(tokenizer, "the chat template's generation prompt is not appended at the "
                      f"end of the conversation (without it: {bare[-40:]!r}, with it: "
                      f"{gen[-40:]!r})")
    turn = _chat_turn(tokenizer, _PROBE, _PROBE_REPLY)
    if turn[-1] != tokenizer.eos_token_id:
        marker = tokenizer.convert_ids_to_tokens(turn[-1])
        raise _refuse(tokenizer, f"the chat template ends the assistant's turn with {marker!r}, "
                      f"but the tokenizer's EOS is {tokenizer.eos_token!r}, and sampling stops at "
                      f"EOS: set eos_token to {marker!r}", field="eos_token")
    _CHECKED[tokenizer] = key


def _uses_chat(tokenizer) -> bool:
    """Whether `tokenizer` renders with its chat template (checked once, see above)."""
    if not has_chat_template(tokenizer):
        return False
    check_chat_template(tokenizer)
    return True


# ============================================================================ prompt and response

def format_prompt(prompt: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The plain template with {prompt} filled in (no tokenizer involved)."""
    return template.replace("{prompt}", prompt)


def prompt_text(tokenizer, prompt: str, template: str = DEFAULT_TEMPLATE,
                history: History = ()) -> str:
    """The text the model continues: the chat template's conversation + generation prompt, or
    the plain `template` (earlier turns as "<prompt> <answer>\\n" before it)."""
    if _uses_chat(tokenizer):
        return _render(tokenizer, _messages(prompt, history), True)
    return "".join(format_prompt(u, template) + " " + a.strip() + "\n" for u, a in history) + \
        format_prompt(prompt, template)


def encode_prompt(tokenizer, prompt: str, template: str = DEFAULT_TEMPLATE,
                  history: History = ()) -> list[int]:
    """The ids the model continues (`prompt_text`, tokenised alone, special tokens only from the
    chat template). Every step's prompt ids come from here."""
    return _tokens(tokenizer, prompt_text(tokenizer, prompt, template, history))


def encode_response(tokenizer, response: str, prompt: str = "",
                    history: History = ()) -> list[int]:
    """The response's ids, ending with EOS: plain, " " + response; under a chat template, the
    assistant's turn after `prompt` (and `history`) as the template renders it (module doc)."""
    if _uses_chat(tokenizer):
        return _chat_turn(tokenizer, prompt, response, history)
    return _tokens(tokenizer, " " + response.strip()) + [tokenizer.eos_token_id]


def encode_example(tokenizer, prompt: str, response: str, template: str = DEFAULT_TEMPLATE,
                   history: History = ()) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids): a demonstration or a ranked response, untruncated."""
    return (encode_prompt(tokenizer, prompt, template, history),
            encode_response(tokenizer, response, prompt, history))


def decode_response(tokenizer, ids) -> str:
    """Text of response ids, stopping at the first EOS and dropping PAD."""
    out = []
    for t in ids:
        t = int(t)
        if t == tokenizer.eos_token_id:
            break
        if t != tokenizer.pad_token_id:
            out.append(t)
    return tokenizer.decode(out, skip_special_tokens=True).strip()


class TruncationCounter:
    def __init__(self):
        self.prompts = self.responses = self.total = 0

    def warn(self, source: str = "", max_length: int = 0) -> None:
        if self.prompts or self.responses:
            warnings.warn(f"{source}: of {self.total} sequences longer than max_length="
                          f"{max_length}: {self.prompts} prompts were cut from the left, "
                          f"{self.responses} responses were cut at the end (their EOS lost)",
                          stacklevel=3)


def encode_pair(tokenizer, prompt: str, response: str, max_length: int,
                template: str = DEFAULT_TEMPLATE, counter: TruncationCounter | None = None,
                prompt_ids: list[int] | None = None) -> list[int]:
    """Prompt ids + response ids (ending with EOS; see `encode_example`), at most max_length
    tokens: the RM's input, as PPO's episodes are. `prompt_ids`: the prompt's, already encoded.

    Too long: the prompt is cut from the left; a response that alone exceeds max_length is cut
    at the end (it loses its EOS). Both are counted in `counter`.
    """
    p = prompt_ids if prompt_ids is not None else encode_prompt(tokenizer, prompt, template)
    r = encode_response(tokenizer, response, prompt)
    if counter is not None:
        counter.total += 1
    if len(p) + len(r) > max_length:
        if len(r) > max_length:
            r = r[:max_length]
            if counter is not None:
                counter.responses += 1
        keep = max_length - len(r)
        if keep < len(p):
            p = p[len(p) - keep:] if keep > 0 else []
            if counter is not None:
                counter.prompts += 1
    return list(p) + list(r)


def pad_sequences(seqs: list[list[int]], pad_id: int, side: str = "right"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [N, T], attention_mask [N, T]) padded to the longest sequence."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not s:
            continue
        if side == "right":
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        else:
            ids[i, n - len(s):] = torch.tensor(s)
            mask[i, n - len(s):] = 1
    return ids, mask
