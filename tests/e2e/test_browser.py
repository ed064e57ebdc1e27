"""A real browser against a real server: the admin imports prompts, generates candidates from a
checkpoint and assigns tasks; a labeler writes a demonstration, ranks 4 outputs with one tie using
only the keyboard, and rates one output; the export then trains one SFT step and one RM step.

Runs headless Chromium (Debian's /usr/bin/chromium) through Playwright; skips when absent.
Set RLHF_E2E_SCREENSHOTS=DIR to keep a screenshot of the ranking page.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from e2e_support import live_server, tiny_checkpoint, train_one_rm_step, train_one_sft_step
from rlhf.labeling.cli import app as cli

ADMIN = "e2e-admin-token-0123"
PROMPTS = [{"id": "e1", "prompt": "Name a color.", "category": "open_qa"},
           {"id": "e2", "prompt": "Say hello in French.", "category": "generation"}]


def test_admin_and_labeler_in_a_browser(chromium, tmp_path):
    model = tiny_checkpoint(tmp_path / "tiny")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    with live_server(db, ADMIN, tmp_path / "server.log") as url:
        admin = chromium.new_context(base_url=url).new_page()
        admin.set_default_timeout(30_000)

        # -- admin: log in, create a project, import prompts, generate, add a labeler, assign
        admin.goto("/login")
        admin.fill("#token", ADMIN)
        admin.press("#token", "Enter")
        admin.wait_for_url("**/admin")
        admin.fill("input[name=name]", "e2e")
        admin.click("text=Create project")
        admin.wait_for_url("**/admin/projects/e2e")
        admin.set_input_files("#import-prompts input[name=file]", str(prompts))
        admin.click("#import-prompts button[type=submit]")
        assert "Imported 2 new prompts" in admin.inner_text(".alert.ok")
        admin.fill("#generate input[name=checkpoint]", str(model))
        admin.fill("#generate input[name=max_new_tokens]", "8")
        admin.click("#generate button[type=submit]")
        assert "Generated 8 candidates for 2 prompts (K = 4)" in admin.inner_text(".alert.ok")

        admin.goto("/admin/labelers")
        admin.fill("#new-labeler input[name=name]", "ann")
        admin.click("#new-labeler button[type=submit]")
        token = admin.inner_text("#new-token").strip()
        assert token.startswith("lbl_")

        admin.goto("/admin/projects/e2e")
        for kind in ("demonstration", "ranking", "rating"):
            admin.select_option("#assign select[name=kind]", kind)
            admin.click("#assign button[type=submit]")
            assert f"new {kind} tasks" in admin.inner_text(".alert.ok")

        # -- labeler: log in with the token, work through the three task pages
        page = chromium.new_context(base_url=url).new_page()
        page.set_default_timeout(30_000)
        page.goto("/login")
        page.fill("#token", token)
        page.press("#token", "Enter")
        page.wait_for_url("**/tasks")
        assert "0 of 12 tasks done" in page.inner_text("main")

        page.click("#start")  # the first task is a demonstration
        page.wait_for_selector("textarea#response")
        page.keyboard.type("Red, like a ripe tomato.")  # the textarea has focus already
        assert page.inner_text("#response-count") == "24"
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("text=Saved task")

        page.goto("/tasks")
        page.locator("tr", has=page.locator(".badge.ranking")).first.locator("a").click()
        page.wait_for_selector("form.ranking")
        assert page.locator("select[name^=rank_]").count() == 4
        assert page.evaluate("document.activeElement.id") == "rank_0"
        for key in ("2", "1", "3", "2"):  # each digit ranks the focused response, then moves on
            page.keyboard.press(key)
        summary = page.inner_text("#rank-summary")
        assert "B > A = D > C" in " ".join(summary.split())
        shots = Path(os.environ.get("RLHF_E2E_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(shots / "ranking_page.png"), full_page=True)
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("text=Saved task")

        page.goto("/tasks")
        page.locator("tr", has=page.locator(".badge.rating")).first.locator("a").click()
        page.wait_for_selector("form.rating")
        page.keyboard.press("6")  # digits pick the Likert score
        page.check("input[name=flags][value=follows_instruction]")
        page.check("input[name=flags][value=appropriate_for_customer]")
        page.click("form.rating button[type=submit]")
        page.wait_for_selector("text=Saved task")
        page.goto("/tasks")
        assert "3 of 12 tasks done" in page.inner_text("main")

        # a browser download of the export equals the CLI export below
        downloaded = admin.request.get(f"{url}/admin/projects/e2e/export/rankings").text()

    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", "--db", db, "--project", "e2e", "--out", str(out)])
    assert result.exit_code == 0, result.output
    [demo] = [json.loads(x) for x in (out / "demonstrations.jsonl").read_text().splitlines()]
    [rank] = [json.loads(x) for x in (out / "rankings.jsonl").read_text().splitlines()]
    [rate] = [json.loads(x) for x in (out / "ratings.jsonl").read_text().splitlines()]
    assert demo == {"prompt": "Name a color.", "response": "Red, like a ripe tomato.",
                    "labeler_id": "ann"}
    assert rank["ranking"] == [[1], [0, 3], [2]] and len(rank["responses"]) == 4
    assert all(r.strip() for r in rank["responses"]) and rank["labeler_id"] == "ann"
    assert (out / "rankings.jsonl").read_text() == downloaded
    assert rate["likert"] == 6 and rate["labeler_id"] == "ann"
    assert rate["flags"]["follows_instruction"] and rate["flags"]["appropriate_for_customer"]
    assert not rate["flags"]["hallucination"]

    # the export trains: one SFT step on the demonstration, one RM step on the ranking
    pytest.importorskip("rlhf.train.sft")
    pytest.importorskip("rlhf.train.reward")
    sft = train_one_sft_step(model, out / "demonstrations.jsonl", tmp_path / "sft")
    assert sft["steps"] == 1 and math.isfinite(sft["final_train_loss"])
    rm = train_one_rm_step(tmp_path / "sft" / "final", out / "rankings.jsonl", tmp_path / "rm")
    assert rm["steps"] == 1 and math.isfinite(rm["final_train_loss"])
