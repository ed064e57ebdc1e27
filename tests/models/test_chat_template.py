"""Prompts and responses with and without a chat template (rlhf.models.format): the plain path
as before, the SFT loss mask on exactly the assistant's tokens, the same prompt ids in every step
(SFT, RM, PPO, evaluation, candidate generation), and the templates that are refused (each
naming the setting, through the SFT command without a traceback)."""

from __future__ import annotations

import copy
import json
import sys

import pytest

import archs
from rlhf.data.rankings import encode_rankings
from rlhf.data.records import Demonstration, RankingExample
from rlhf.data.sft import IGNORE, encode_all, encode_demonstration
from rlhf.errors import UserError
from rlhf.models.format import (check_chat_template, encode_example, encode_pair, encode_prompt,
                                encode_response, has_chat_template, prompt_text)

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

PROMPT, RESPONSE = "Repeat: the cat sat", "the cat sat"


def chat_tokenizer(template: str = CHATML, eos: str | None = "<|im_end|>"):
    """The tests' tiny tokenizer with ChatML/Llama-3 special tokens and `template`."""
    tok = copy.deepcopy(archs.tokenizer())
    tok.add_special_tokens({"additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.chat_template = template
    if eos is not None:
        tok.eos_token = eos
    return tok


def _labelled(tok, labels) -> str:
    return tok.decode([t for t in labels if t != IGNORE])


# ---------------------------------------------------------------------------- plain template

def test_without_a_chat_template_the_plain_path_is_as_before():
    tok = archs.tokenizer()
    plain = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert not has_chat_template(tok)
    check_chat_template(tok)                                      # nothing to check
    assert encode_prompt(tok, PROMPT) == plain(f"User: {PROMPT}\nAssistant:")
    assert encode_prompt(tok, PROMPT, "Q: {prompt}\nA:") == plain(f"Q: {PROMPT}\nA:")
    assert encode_response(tok, f" {RESPONSE} ") == plain(f" {RESPONSE}") + [tok.eos_token_id]
    # SFT: earlier turns and the prompt tokenised together, the response alone
    demo = Demonstration(PROMPT, RESPONSE, history=[("hi", " hello ")])
    ids, labels, _ = encode_demonstration(tok, demo, 256)
    prompt_ids = plain(f"User: hi\nAssistant: hello\nUser: {PROMPT}\nAssistant:")
    assert prompt_text(tok, PROMPT, history=demo.history) == \
        f"User: hi\nAssistant: hello\nUser: {PROMPT}\nAssistant:"
    assert ids == prompt_ids + plain(f" {RESPONSE}") + [tok.eos_token_id]
    assert labels == [IGNORE] * len(prompt_ids) + ids[len(prompt_ids):]
    # the RM: the same concatenation, cut to max_length from the prompt's left
    assert encode_pair(tok, PROMPT, RESPONSE, 256) == sum(encode_example(tok, PROMPT, RESPONSE),
                                                          [])
    assert encode_pair(tok, PROMPT, RESPONSE, 5)[-1] == tok.eos_token_id


# ---------------------------------------------------------------------------- chat templates

def test_chat_prompt_is_the_templates_user_turn_and_generation_prompt():
    tok = chat_tokenizer()
    text = prompt_text(tok, PROMPT, "Q: {prompt}\nA:")            # the plain template is unused
    assert text == f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    ids = encode_prompt(tok, PROMPT)
    assert ids == tok.apply_chat_template([{"role": "user", "content": PROMPT}],
                                          add_generation_prompt=True, return_dict=False)
    assert tok.convert_ids_to_tokens(ids[:1]) == ["<|im_start|>"]


@pytest.mark.parametrize("template,eos,turn", [
    (CHATML, "<|im_end|>", "the cat sat<|im_end|>"),
    (LLAMA3, "<|eot_id|>", "the cat sat<|eot_id|>"),
    (ZEPHYR_LIKE, None, "the cat sat<|endoftext|>"),
    (BARE, None, "the cat sat<|endoftext|>"),           # no marker: EOS appended
])
def test_sft_labels_cover_exactly_the_assistant_tokens(template, eos, turn):
    tok = chat_tokenizer(template, eos)
    (ids, labels), = encode_all(tok, [Demonstration(PROMPT, f"  {RESPONSE} ")], 256,
                                "User: {prompt}\nAssistant:", loss_on_prompt=False)
    prompt_ids = encode_prompt(tok, PROMPT)
    assert ids[:len(prompt_ids)] == prompt_ids                # where PPO starts sampling
    assert labels == [IGNORE] * len(prompt_ids) + ids[len(prompt_ids):]
    assert _labelled(tok, labels) == turn                     # not the template's trailing "\n"
    assert ids[-1] == tok.eos_token_id


def test_multi_turn_demonstration_renders_history_and_trains_the_last_turn_only():
    tok = chat_tokenizer()
    demo = Demonstration(PROMPT, RESPONSE, history=[("hi", "hello")])
    ids, labels, _ = encode_demonstration(tok, demo, 256)
    assert tok.decode(ids) == ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello"
                               f"<|im_end|>\n<|im_start|>user\n{PROMPT}<|im_end|>\n"
                               f"<|im_start|>assistant\n{RESPONSE}<|im_end|>")
    assert _labelled(tok, labels) == f"{RESPONSE}<|im_end|>"


def test_llama3_style_bos_comes_from_the_template_once():
    tok = chat_tokenizer(LLAMA3, "<|eot_id|>")
    ids = encode_prompt(tok, PROMPT)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_every_step_gets_the_same_prompt_ids(monkeypatch):
    """SFT, the RM (training and scoring), PPO's prompts, generate_texts (the labeling app's
    candidates) and evaluation's sample_model all continue the same ids."""
    from rlhf.eval import samples
    from rlhf.models import generation
    from rlhf.models.reward import RewardModel, score_texts
    from rlhf.train.ppo.rollout import encode_prompts

    tok = chat_tokenizer()
    expected = tok(f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n",
                   add_special_tokens=False)["input_ids"]
    turn = tok(f"{RESPONSE}<|im_end|>", add_special_tokens=False)["input_ids"]
    seen = []

    def recording(real):
        def wrapper(model, tokenizer, ids, **kw):
            seen.extend(ids)
            return real(model, tokenizer, ids, **kw)
        return wrapper

    monkeypatch.setattr(generation, "generate", recording(generation.generate))
    monkeypatch.setattr(samples, "generate", recording(samples.generate))
    model = archs.build_model("llama", tok=tok)
    generation.generate_texts(model, tok, [PROMPT], 2, max_new_tokens=2)
    samples.sample_model(model, [PROMPT], max_new_tokens=2, tokenizer=tok)
    assert seen == [expected] * 3

    _, (ppo_ids,), _ = encode_prompts(tok, [PROMPT], "User: {prompt}\nAssistant:", 64)
    sft_ids, _, _ = encode_demonstration(tok, Demonstration(PROMPT, RESPONSE), 256)
    (ranked,) = encode_rankings(tok, [RankingExample(PROMPT, [RESPONSE, "a dog"], [[0], [1]])],
                                256)
    assert ppo_ids == expected
    assert sft_ids == ranked.sequences[0] == expected + turn   # the RM scores what SFT trains
    assert ranked.sequences[1][:len(expected)] == expected

    scored = []
    monkeypatch.setattr("rlhf.models.reward.score_sequences",
                        lambda rm, seqs, *a, **k: scored.extend(seqs) or [0.0] * len(seqs))
    score_texts(RewardModel.from_causal_lm(model), tok, [PROMPT], [RESPONSE])
    assert scored == [expected + turn]


def test_the_template_is_checked_once_per_tokenizer(monkeypatch):
    tok = chat_tokenizer()
    calls = []
    real = tok.apply_chat_template
    monkeypatch.setattr(tok, "apply_chat_template",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    encode_prompt(tok, PROMPT)
    first = len(calls)
    encode_prompt(tok, "Another prompt")
    assert first > 1 and len(calls) == first + 1            # the check is not repeated
    tok.chat_template = NO_GENERATION_PROMPT                 # a changed template is checked again
    with pytest.raises(UserError, match="ignores add_generation_prompt"):
        encode_prompt(tok, PROMPT)


# ---------------------------------------------------------------------------- refused templates

def test_template_without_a_generation_prompt_is_refused_by_sft_encoding():
    tok = chat_tokenizer(NO_GENERATION_PROMPT)
    with pytest.raises(UserError, match="ignores add_generation_prompt") as e:
        encode_all(tok, [Demonstration(PROMPT, RESPONSE)], 256, "User: {prompt}\nAssistant:",
                   loss_on_prompt=False)
    assert e.value.field == "chat_template"


def test_generation_prompt_not_at_the_end_is_refused():
    with pytest.raises(UserError, match="not appended at the end") as e:
        encode_prompt(chat_tokenizer(GENERATION_PROMPT_FIRST), PROMPT)
    assert e.value.field == "chat_template"


def test_end_of_turn_that_is_not_eos_is_refused():
    tok = chat_tokenizer(CHATML, eos=None)                   # EOS stays <|endoftext|>
    with pytest.raises(UserError, match="set eos_token to '<|im_end|>'") as e:
        check_chat_template(tok)
    assert e.value.field == "eos_token"


def test_broken_template_is_a_user_error():
    tok = chat_tokenizer("{{ messages[0]['content'] | no_such_filter }}")
    with pytest.raises(UserError) as e:
        encode_prompt(tok, PROMPT)
    assert e.value.field == "chat_template"


def test_sft_command_refuses_the_template_without_a_traceback(tmp_path, monkeypatch, capsys):
    from rlhf.cli import main

    tok = chat_tokenizer(NO_GENERATION_PROMPT)
    model_dir = tmp_path / "chat-model"
    archs.build_model("gpt2", tok=tok).save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"prompt": PROMPT, "response": RESPONSE}) + "\n")
    monkeypatch.setattr(sys, "argv", ["rlhf", "sft", "--set", f"sft.model={model_dir}",
                                      "--set", f"sft.train_file={demos}",
                                      "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {model_dir} field 'chat_template': the chat template ignores "
                          "add_generation_prompt")
