"""Prompt rendering with and without a chat template, the SFT loss mask under a template, and the
templates that are refused (each naming the setting)."""

from __future__ import annotations

import copy

import pytest

import archs
from rlhf.data.chat import (check_chat_template, has_chat_template, render_prompt_ids,
                            render_prompt_text, render_sft_example, uses_chat_template)
from rlhf.models.format import encode_prompt, encode_response
from rlhf.errors import UserError

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
#: Llama-3 style: BOS from the template, headers, <|eot_id|> ends every turn
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
          "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
          "{% endif %}")
#: plain-text markers; the assistant's turn ends with EOS
ZEPHYR_LIKE = ("{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}"
               "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
               "{% if add_generation_prompt %}### assistant:\n{% endif %}")
NO_GENERATION_PROMPT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                        "<|im_end|>\n{% endfor %}")
GENERATION_PROMPT_FIRST = ("{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
                           "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                           "{{ m['content'] }}<|im_end|>\n{% endfor %}")
#: no end-of-turn token at all
BARE = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}")


def chat_tokenizer(template: str = CHATML, eos: str | None = "<|im_end|>"):
    tok = copy.deepcopy(archs.tokenizer())
    tok.add_special_tokens({"additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.chat_template = template
    if eos is not None:
        tok.eos_token = eos
    return tok


PROMPT, RESPONSE = "Repeat: the cat sat", "the cat sat"


def _masked_text(tok, ex) -> str:
    return tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask) if m])


# ---------------------------------------------------------------------------- plain template

def test_without_a_chat_template_the_plain_template_is_used():
    tok = archs.tokenizer()
    assert not has_chat_template(tok) and not uses_chat_template(tok)
    assert render_prompt_ids(tok, PROMPT) == encode_prompt(tok, PROMPT)
    assert render_prompt_text(tok, PROMPT, "Q: {prompt}\nA:") == f"Q: {PROMPT}\nA:"
    ex = render_sft_example(tok, PROMPT, RESPONSE)
    prompt_ids, resp_ids = encode_prompt(tok, PROMPT), encode_response(tok, RESPONSE)
    assert ex.input_ids == prompt_ids + resp_ids
    assert ex.loss_mask == [0] * len(prompt_ids) + [1] * len(resp_ids)
    assert ex.prompt_length == len(prompt_ids) and ex.input_ids[-1] == tok.eos_token_id
    check_chat_template(tok)                                      # nothing to check


def test_asking_for_a_chat_template_the_tokenizer_lacks_names_the_setting():
    with pytest.raises(UserError) as e:
        render_prompt_ids(archs.tokenizer(), PROMPT, use_chat_template=True)
    assert e.value.field == "chat_template"


# ---------------------------------------------------------------------------- chat templates

def test_chat_prompt_is_the_templates_user_turn_and_generation_prompt():
    tok = chat_tokenizer()
    check_chat_template(tok)
    text = render_prompt_text(tok, PROMPT)
    assert text == f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    ids = render_prompt_ids(tok, PROMPT)
    assert ids == tok.apply_chat_template([{"role": "user", "content": PROMPT}],
                                          add_generation_prompt=True, return_dict=False)
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids[:1]) == ["<|im_start|>"]
    # the plain template can still be chosen for a tokenizer that has one
    assert render_prompt_ids(tok, PROMPT, use_chat_template=False) == encode_prompt(tok, PROMPT)


@pytest.mark.parametrize("template,eos,turn", [
    (CHATML, "<|im_end|>", "the cat sat<|im_end|>"),
    (LLAMA3, "<|eot_id|>", "the cat sat<|eot_id|>"),
    (ZEPHYR_LIKE, None, "the cat sat<|endoftext|>"),
    (BARE, None, "the cat sat<|endoftext|>"),           # no marker: EOS appended
])
def test_sft_mask_covers_exactly_the_assistant_tokens(template, eos, turn):
    tok = chat_tokenizer(template, eos)
    check_chat_template(tok)
    ex = render_sft_example(tok, PROMPT, f"  {RESPONSE} ")
    prompt_ids = render_prompt_ids(tok, PROMPT)
    assert ex.input_ids[:len(prompt_ids)] == prompt_ids      # where PPO starts sampling
    assert ex.prompt_length == len(prompt_ids)
    assert ex.loss_mask == [0] * len(prompt_ids) + [1] * (len(ex.input_ids) - len(prompt_ids))
    assert _masked_text(tok, ex) == turn                      # not the template's trailing "\n"
    assert ex.input_ids[-1] == tok.eos_token_id


def test_llama3_style_bos_comes_from_the_template_once():
    tok = chat_tokenizer(LLAMA3, "<|eot_id|>")
    ids = render_prompt_ids(tok, PROMPT)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_template_that_ignores_the_generation_prompt_is_refused():
    with pytest.raises(UserError, match="ignores add_generation_prompt") as e:
        check_chat_template(chat_tokenizer(NO_GENERATION_PROMPT), field="sft.chat_template")
    assert e.value.field == "sft.chat_template"


def test_generation_prompt_not_at_the_end_is_refused():
    with pytest.raises(UserError, match="not appended at the end") as e:
        check_chat_template(chat_tokenizer(GENERATION_PROMPT_FIRST))
    assert e.value.field == "chat_template"


def test_end_of_turn_that_is_not_eos_is_refused():
    tok = chat_tokenizer(CHATML, eos=None)                   # EOS stays <|endoftext|>
    with pytest.raises(UserError, match="set eos_token to '<|im_end|>'") as e:
        check_chat_template(tok)
    assert e.value.field == "eos_token"


def test_broken_template_is_a_user_error():
    tok = chat_tokenizer("{{ messages[0]['content'] | no_such_filter }}")
    with pytest.raises(UserError) as e:
        render_prompt_text(tok, PROMPT)
    assert e.value.field == "chat_template"
