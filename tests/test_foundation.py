"""Step 1 foundation: loss masking, SFT overfitting, exact resume, HF round trip, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import tiny_lm, write_corpus, write_demos
from rlhf.config import load_config
from rlhf.data.sft import IGNORE, Demonstration, collate, encode_demonstration, load_demonstrations
from rlhf.errors import UserError
from rlhf.models import load_model, load_tokenizer
from rlhf.models.lm import token_nll_sum


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    return tiny_lm(tmp_path_factory.mktemp("lm"))


def test_loss_mask_covers_exactly_response_and_eos(lm):
    tok = load_tokenizer(lm)
    demo = Demonstration("Repeat: red cat", "red cat")
    ids, labels, truncated = encode_demonstration(tok, demo, max_length=64)
    prompt_ids = tok("User: Repeat: red cat\nAssistant:", add_special_tokens=False)["input_ids"]
    resp_ids = tok(" red cat", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ids == prompt_ids + resp_ids and not truncated
    assert labels == [IGNORE] * len(prompt_ids) + resp_ids
    ids2, labels2, _ = encode_demonstration(tok, demo, 64, loss_on_prompt=True)
    assert labels2 == ids2


def test_prompt_only_example_adds_no_loss_or_gradient(lm):
    tok = load_tokenizer(lm)
    model = load_model(lm)
    model.eval()
    a = encode_demonstration(tok, Demonstration("Repeat: red cat", "red cat"), 64)[:2]
    p_ids = tok("User: Repeat: blue dog\nAssistant:", add_special_tokens=False)["input_ids"]
    prompt_only = (p_ids, [IGNORE] * len(p_ids))

    def loss_and_grad(examples):
        model.zero_grad()
        s, n = token_nll_sum(model, collate(examples, tok.pad_token_id))
        (s / n).backward()
        return float(s.detach() / n), model.transformer.wte.weight.grad.clone()

    l1, g1 = loss_and_grad([a])
    l2, g2 = loss_and_grad([a, prompt_only])
    assert l1 == pytest.approx(l2, abs=1e-6)
    assert torch.allclose(g1, g2, atol=1e-6)


def _sft_cfg(lm, demos, **over):
    sets = [f"sft.model={lm}", f"sft.train_file={demos}", "sft.batch_size=8", "sft.lr=3e-3",
            "sft.residual_dropout=0.0", "sft.log_every=1"]
    sets += [f"sft.{k}={v}" for k, v in over.items()]
    return load_config(overrides=sets)


def test_sft_overfits_32_examples(lm, tmp_path):
    from rlhf.train.sft import sft
    demos = write_demos(tmp_path / "d.jsonl", 32)
    tiny = tiny_lm(tmp_path, n_layer=2, n_embd=64)
    cfg = _sft_cfg(tiny, demos, epochs=60, lr="5e-3", final_lr_fraction=0.1)
    summary = sft(cfg, tmp_path / "run")
    assert summary["final_train_loss"] < 0.05
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        assert (run / name).exists()
    assert list((run / "tb").glob("events.*"))
    assert len(summary["epoch_checkpoints"]) == 60


def test_resume_matches_uninterrupted_run(lm, tmp_path):
    from rlhf.train.sft import sft
    demos = write_demos(tmp_path / "d.jsonl", 32)
    cfg = _sft_cfg(lm, demos, epochs=3, residual_dropout=0.2, micro_batch_size=4)
    sft(cfg, tmp_path / "full")
    halted = sft(cfg, tmp_path / "part", halt_after=6)  # stops mid-epoch 2; last ckpt: epoch-01
    assert halted.get("halted")
    assert (tmp_path / "part/checkpoints/latest").read_text() == "epoch-01"
    sft(cfg, tmp_path / "part", resume=True)
    a = load_file(str(tmp_path / "full/final/model.safetensors"))
    b = load_file(str(tmp_path / "part/final/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_saved_model_loads_with_plain_transformers_and_generates(lm, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.train.sft import sft
    demos = write_demos(tmp_path / "d.jsonl", 16)
    summary = sft(_sft_cfg(lm, demos, epochs=1), tmp_path / "run")
    path = summary["model"]
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.pad_token_id != tok.eos_token_id
    enc = tok(["User: Repeat: red\nAssistant:"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_pretrain_writes_model_and_perplexity(tmp_path):
    from rlhf.train.pretrain import pretrain
    corpus = write_corpus(tmp_path / "c.txt", 200)
    cfg = load_config(overrides=[f"pretrain.train_files=[{corpus}]",
                                 f"pretrain.valid_files=[{corpus}]", "pretrain.model.vocab_size=300",
                                 "pretrain.model.n_layer=1", "pretrain.model.n_embd=32",
                                 "pretrain.batch_size=8", "pretrain.block_size=32"])
    s = pretrain(cfg, tmp_path / "pre")
    assert s["valid_ppl"] < 300 and Path(s["model"], "model.safetensors").exists()
    tok = load_tokenizer(s["model"])
    assert tok.pad_token_id != tok.eos_token_id


def test_pretrain_logs_a_callers_probe_at_each_evaluation(tmp_path):
    from rlhf.train.pretrain import pretrain
    corpus = write_corpus(tmp_path / "c.txt", 200)
    cfg = load_config(overrides=[f"pretrain.train_files=[{corpus}]", "pretrain.model.n_layer=1",
                                 "pretrain.model.vocab_size=300", "pretrain.model.n_embd=32",
                                 "pretrain.batch_size=8", "pretrain.block_size=32",
                                 "pretrain.eval_every=2", "pretrain.max_steps=5"])
    seen = []

    def probe(model, tokenizer):
        seen.append((model.training, torch.is_grad_enabled()))
        model.eval()                                   # the recipe restores the training mode
        return {"norm": float(sum(p.norm() for p in model.parameters()))}

    s = pretrain(cfg, tmp_path / "pre", probe=probe)
    rows = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["valid/norm"]) for r in rows if "valid/norm" in r]
    assert [st for st, _ in logged] == [2, 4, 5] and len({v for _, v in logged}) == 3
    assert s["valid_norm"] == logged[-1][1] and "valid_ppl" not in s   # no valid_files
    assert seen == [(True, False)] * 3                 # training mode back after each probe
    cfg = load_config(overrides=[f"pretrain.train_files=[{corpus}]", "pretrain.model.n_layer=1",
                                 f"pretrain.valid_files=[{corpus}]", "pretrain.max_steps=1",
                                 "pretrain.model.vocab_size=300", "pretrain.model.n_embd=32",
                                 "pretrain.batch_size=8", "pretrain.block_size=32"])
    with pytest.raises(UserError, match=r"valid/ppl.*collide"):
        pretrain(cfg, tmp_path / "pre2", probe=lambda m, t: {"ppl": 1.0})


def test_repeat_blocks_repeat_a_random_span_from_a_random_offset():
    from rlhf.data.text import repeat_blocks
    ids = torch.arange(100, 140)
    x = repeat_blocks(200, 20, ids, torch.Generator().manual_seed(0), span=(3, 8))
    assert x.shape == (200, 20) and bool(torch.isin(x, ids).all())
    found = set()
    for row in x.tolist():   # some (p, offset) explains the row: row[j] = row[(o + j - p) % p]
        fits = [(p, o) for p in range(3, 9) for o in range(p)
                if all(row[j] == row[(o + j - p) % p] for j in range(p, 20))]
        assert fits, row
        found.add(fits[0])
    assert len({p for p, _ in found}) == 6 and len({o for _, o in found}) >= 6  # no fixed shift
    with pytest.raises(UserError, match="span"):
        repeat_blocks(1, 8, ids, torch.Generator(), span=(4, 8))


def test_pretrain_copy_warmup_then_mixed_copy_blocks(tmp_path):
    from rlhf.train.pretrain import pretrain
    corpus = write_corpus(tmp_path / "c.txt", 200)
    cfg = load_config(overrides=[f"pretrain.train_files=[{corpus}]", "pretrain.model.n_layer=1",
                                 "pretrain.model.vocab_size=300", "pretrain.model.n_embd=32",
                                 "pretrain.batch_size=8", "pretrain.block_size=32",
                                 "pretrain.copy_warmup_steps=3", "pretrain.copy_fraction=0.5",
                                 "pretrain.max_steps=2"])
    s = pretrain(cfg, tmp_path / "pre", resume=True)
    warm = tmp_path / "pre" / "copy_warmup"
    rows = [json.loads(x) for x in (warm / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 3 and (warm / "final" / "config.json").exists()
    n_corpus = s["train_tokens"] // 32
    assert s["copy_blocks"] == n_corpus and s["copy_warmup_steps"] == 3   # half the blocks
    # a finished warm-up is loaded on resume, not trained again
    warmed = load_file(str(warm / "final" / "model.safetensors"))
    from rlhf.models import build_tiny_model
    from rlhf.train.pretrain import copy_warmup
    model = build_tiny_model(cfg.pretrain.model, load_tokenizer(s["model"]))
    copy_warmup(model, None, cfg.pretrain, torch.zeros(0, 32, dtype=torch.long), 0, warm,
                resume=True)
    assert all(torch.equal(v, warmed[k]) for k, v in model.state_dict().items() if k in warmed)
    assert len((warm / "metrics.jsonl").read_text().splitlines()) == len(rows)
    with pytest.raises(UserError, match="copy_fraction"):
        load_config(overrides=["pretrain.copy_fraction=1.0"])


@pytest.mark.parametrize("override,key", [("sft.lrr=1", "sft.lrr"),
                                          ("sft.epochs=many", "sft.epochs"),
                                          ("ppo.beta_kl=[1]", "ppo.beta_kl")])
def test_config_errors_name_the_key(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_config(overrides=[override])


def test_config_file_errors_name_file_and_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("sft:\n  lr: 1e-5\n  nonsense: 3\n")
    with pytest.raises(UserError, match=r"c\.yaml.*'sft\.nonsense': unknown key"):
        load_config(f)


@pytest.mark.parametrize("content,expect", [
    (b'{"prompt": "a", "response": "b"}\n{"prompt": "a",\n', r"d\.jsonl:2: malformed JSON"),
    (b'{"prompt": "a"}\n', r"d\.jsonl:1 field 'response': missing field"),
    (b'{"prompt": "a", "response": "   "}\n', r"d\.jsonl:1 field 'response': must not be empty"),
    (b'{"prompt": "a", "response": "b"}\n{"prompt": "\xff\xfe"}\n', r"d\.jsonl:2: not valid UTF-8"),
    (b'{"prompt": 3, "response": "b"}\n', r"d\.jsonl:1 field 'prompt': must be a string"),
])
def test_bad_demonstration_files_name_file_line_field(tmp_path, content, expect):
    f = tmp_path / "d.jsonl"
    f.write_bytes(content)
    with pytest.raises(UserError, match=expect):
        load_demonstrations(f)


def test_long_prompt_is_truncated_with_a_counted_warning(lm):
    from rlhf.data.sft import encode_all
    tok = load_tokenizer(lm)
    demos = [Demonstration("cat " * 200, "red dog"), Demonstration("hi", "ok")]
    with pytest.warns(UserWarning, match="1 of 2 examples"):
        out = encode_all(tok, demos, 32, "User: {prompt}\nAssistant:", False, source="x.jsonl")
    ids, labels = out[0]
    assert len(ids) == 32 and labels[-1] == tok.eos_token_id


def test_chat_messages_and_lima_formats(tmp_path):
    f = tmp_path / "chat.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "hello"},
                                          {"role": "user", "content": "bye"},
                                          {"role": "assistant", "content": "see you"}]}) + "\n")
    (d,) = load_demonstrations(f)
    assert d.prompt == "bye" and d.response == "see you" and d.history == [("hi", "hello")]
    lima = Path(__file__).resolve().parents[2] / "shared/data/lima/lima.json.gz"
    if lima.exists():
        demos = load_demonstrations(lima)
        assert len(demos) == 1029 and all(x.response for x in demos)
        assert sum(bool(x.history) for x in demos) == 29


def test_cli_user_error_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rlhf.cli", "sft", "--set",
                        f"sft.train_file={tmp_path}/missing.jsonl", "--set", "sft.model=nowhere",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "error:" in r.stderr
