"""How a prompt becomes the ids a model continues, with or without a chat template: one function
for SFT, the RM, PPO, evaluation and the labeling app's candidate generation.

When the tokenizer has a chat template (an instruct model's tokenizer_config.json), the prompt is
one user turn rendered with `apply_chat_template(..., add_generation_prompt=True)`: the model
continues right after the assistant header it was tuned on. Without one, the project's plain
template ("User: {prompt}\\nAssistant:", `rlhf.models.format`) is used, as before.

An SFT example under a chat template is the rendered prompt followed by the assistant's turn,
tokenised on its own (the format.py rule: prompt and response are never re-tokenised together,
so the loss-mask boundary is exactly where PPO starts sampling). The loss mask covers exactly
the assistant's tokens: the response and the token that ends the turn (the template's
end-of-turn token, which must be the tokenizer's EOS, since sampling stops at EOS), not the
newline some templates add after it. A template that emits no end-of-turn token gets EOS after
the response (trailing whitespace, the template's turn separator, dropped).

`check_chat_template` (call it once when a run starts) refuses a template that ignores
add_generation_prompt or does not append the generation prompt at the end, one that renders an
assistant turn differently from its own generation prompt, and one whose end-of-turn token is
not EOS.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf.models.format import DEFAULT_TEMPLATE, encode_prompt, encode_response, format_prompt
from rlhf.errors import UserError

_PROBE = "Name three colours."
_PROBE_REPLY = "Red, green and blue."


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def uses_chat_template(tokenizer, use_chat_template: bool | None = None, *,
                       field: str = "chat_template") -> bool:
    """Whether prompts are rendered with the chat template: `use_chat_template` None = when the
    tokenizer has one; True = required (UserError naming `field` without one); False = never."""
    if use_chat_template is None:
        return has_chat_template(tokenizer)
    if use_chat_template and not has_chat_template(tokenizer):
        raise UserError("a chat template was asked for, but this tokenizer has none "
                        "(tokenizer_config.json: chat_template)", field=field)
    return bool(use_chat_template)


def _user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _render(tokenizer, messages, add_generation_prompt: bool, field: str) -> str:
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                             tokenize=False)
    except Exception as e:  # noqa: BLE001 - a Jinja template can raise anything
        raise UserError(f"the chat template cannot render a user turn: {type(e).__name__}: {e}",
                        field=field) from None


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def render_prompt_text(tokenizer, prompt: str, template: str = DEFAULT_TEMPLATE, *,
                       use_chat_template: bool | None = None) -> str:
    """The text the model continues: the chat template's user turn + generation prompt, or the
    plain `template` with {prompt} filled in."""
    if uses_chat_template(tokenizer, use_chat_template):
        return _render(tokenizer, _user(prompt), True, "chat_template")
    return format_prompt(prompt, template)


def render_prompt_ids(tokenizer, prompt: str, template: str = DEFAULT_TEMPLATE, *,
                      use_chat_template: bool | None = None) -> list[int]:
    """The ids the model continues (see `render_prompt_text`): with a chat template,
    `apply_chat_template([user turn], add_generation_prompt=True, tokenize=True)` (special tokens
    come from the template only); else `encode_prompt(tokenizer, prompt, template)`."""
    if uses_chat_template(tokenizer, use_chat_template):
        try:
            ids = tokenizer.apply_chat_template(_user(prompt), add_generation_prompt=True,
                                                tokenize=True, return_dict=False)
        except Exception as e:  # noqa: BLE001
            raise UserError("the chat template cannot render a user turn: "
                            f"{type(e).__name__}: {e}", field="chat_template") from None
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):   # older/newer return types
            ids = ids["input_ids"]
        return [int(t) for t in ids]
    return encode_prompt(tokenizer, prompt, template)


def _turn_end(tokenizer, ids: list[int]) -> int | None:
    """Index of the first special token (EOS or any other: an end-of-turn marker) in `ids`."""
    special = set(tokenizer.all_special_ids) - {tokenizer.pad_token_id}
    special.add(tokenizer.eos_token_id)
    return next((i for i, t in enumerate(ids) if t in special), None)


def _assistant_ids(tokenizer, prompt: str, response: str, field: str) -> tuple[list[int],
                                                                               list[int]]:
    """(prompt ids, assistant-turn ids up to and including the end-of-turn token)."""
    prompt_text = _render(tokenizer, _user(prompt), True, field)
    full = _render(tokenizer, _user(prompt) + [{"role": "assistant", "content": response}],
                   False, field)
    if not full.startswith(prompt_text):
        raise UserError("the chat template renders an assistant turn differently from its "
                        "generation prompt (the conversation does not start with the rendered "
                        "prompt), so SFT would not train what PPO samples", field=field)
    rest = full[len(prompt_text):]
    turn = _tokens(tokenizer, rest)
    end = _turn_end(tokenizer, turn)
    if end is None:       # no end-of-turn token: the response (without the separator) + EOS
        turn = _tokens(tokenizer, rest.rstrip()) + [tokenizer.eos_token_id]
    else:
        turn = turn[:end + 1]
    return render_prompt_ids(tokenizer, prompt, use_chat_template=True), turn


def check_chat_template(tokenizer, *, field: str = "chat_template") -> None:
    """Refuse (UserError naming `field`, or `eos_token`) a chat template that cannot serve as a
    prompt format: it ignores add_generation_prompt, puts the generation prompt anywhere but at
    the end, renders an assistant turn unlike its generation prompt, or ends the assistant's
    turn with a token other than EOS (sampling would never stop). No-op without a template."""
    if not has_chat_template(tokenizer):
        return
    bare = _render(tokenizer, _user(_PROBE), False, field)
    gen = _render(tokenizer, _user(_PROBE), True, field)
    if gen == bare:
        raise UserError("the chat template ignores add_generation_prompt: a rendered prompt "
                        "must end with the assistant's header (e.g. '<|im_start|>assistant\\n') "
                        "for the model to answer; use a template that appends it when "
                        "add_generation_prompt is true", field=field)
    if not gen.startswith(bare):
        raise UserError("the chat template's generation prompt is not appended at the end of the "
                        f"conversation (without it: {bare[-40:]!r}, with it: {gen[-40:]!r})",
                        field=field)
    _, turn = _assistant_ids(tokenizer, _PROBE, _PROBE_REPLY, field)
    if turn[-1] != tokenizer.eos_token_id:
        marker = tokenizer.convert_ids_to_tokens(turn[-1])
        raise UserError(f"the chat template ends the assistant's turn with {marker!r}, but the "
                        f"tokenizer's EOS is {tokenizer.eos_token!r}, and sampling stops at EOS: "
                        f"set eos_token to {marker!r} (tokenizer_config.json)", field="eos_token")


@dataclass(frozen=True)
class SFTExample:
    input_ids: list[int]
    loss_mask: list[int]          # 1 on the assistant's tokens (response + end of turn)

    @property
    def prompt_length(self) -> int:
        return self.loss_mask.index(1) if 1 in self.loss_mask else len(self.loss_mask)


def render_sft_example(tokenizer, prompt: str, response: str, template: str = DEFAULT_TEMPLATE,
                       *, use_chat_template: bool | None = None) -> SFTExample:
    """A demonstration as ids + loss mask. The prompt part is exactly `render_prompt_ids` (where
    PPO starts sampling); the mask covers the assistant's tokens: with a chat template, the
    response and the end-of-turn token (see module doc); plain, " " + response + EOS."""
    if uses_chat_template(tokenizer, use_chat_template):
        prompt_ids, turn = _assistant_ids(tokenizer, prompt, response.strip(), "chat_template")
    else:
        prompt_ids = encode_prompt(tokenizer, prompt, template)
        turn = encode_response(tokenizer, response)
    return SFTExample(prompt_ids + turn, [0] * len(prompt_ids) + [1] * len(turn))
