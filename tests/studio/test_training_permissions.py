"""The training screens check the role on the server, for every event, and confine typed paths.

Gradio lets anyone who can reach the server call any event by its fn_index, ``api_name=False``
or not, so every registered handler of every training screen is called here as an annotator.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import gradio as gr
import pytest

from studio import admin, dpo_tab, ppo_tab, reward_tab, sft_tab
from studio.context import StudioContext
from studio.training_screen import launch, preview
from tests.studio.conftest import as_user
from tests.studio.test_ppo_tab import rewards
from tests.studio.test_reward_tab import data_folder

BOSS, ANA, NOBODY = as_user("boss"), as_user("ana"), as_user(None)
SCREENS = {"reward": reward_tab.build, "ppo": ppo_tab.build, "sft": sft_tab.build, "dpo": dpo_tab.build}


def _call(fn, request):
    """Call a registered handler as Gradio would, with empty inputs and the given request."""
    params = inspect.signature(fn).parameters
    return fn(**{name: (request if name == "request" else None) for name in params})


def _handlers(blocks: gr.Blocks) -> list:
    return list(blocks.fns.values())


@pytest.mark.parametrize("screen", sorted(SCREENS))
def test_every_handler_refuses_an_annotator(ctx: StudioContext, screen: str) -> None:
    blocks = SCREENS[screen](ctx)
    handlers = _handlers(blocks)
    assert len(handlers) >= 8  # previews, launch, focus refreshes, the monitor's timer, change, cancel, load
    loads = 0
    for handler in handlers:
        assert "request" in inspect.signature(handler.fn).parameters, f"{handler.name} does not see who calls it"
        if any(event == "load" for _, event in handler.targets):
            # Annotators load the page too: they get nothing, and no error toast.
            out = _call(handler.fn, ANA)
            assert all(item == gr.skip() for item in out), f"{handler.name} gave an annotator {out!r}"
            loads += 1
            continue
        for who, message in ((ANA, "Not allowed: only admins may"), (NOBODY, "Log in first")):
            with pytest.raises(gr.Error, match=message):
                _call(handler.fn, who)
    assert loads == 1
    assert not ctx.launcher.root.exists()  # nothing was started


def test_the_admin_jobs_table_is_not_for_annotators(ctx: StudioContext) -> None:
    blocks = admin.build(ctx)
    [jobs] = [h for h in _handlers(blocks) if h.name == "on_jobs"]
    assert _call(jobs.fn, ANA) == gr.skip()
    assert list(_call(jobs.fn, BOSS).columns)[:2] == ["job", "state"]
    [tick] = [h for h in _handlers(blocks) if h.name == "on_tick"]
    with pytest.raises(gr.Error, match="Not allowed"):
        _call(tick.fn, ANA)


OUTSIDE = ["/etc/passwd", "../../x", "../runs/../../etc/passwd"]


@pytest.mark.parametrize("path", OUTSIDE)
def test_paths_outside_the_data_folders_are_refused_and_make_no_run(ctx: StudioContext, tiny_encoder_dir: Path, path: str) -> None:
    ctx.registry.add(tiny_encoder_dir, name="tiny-enc")
    data = data_folder(ctx)
    (data / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n' * 8)
    (data / "prompts.txt").write_text("hello\nworld\n")
    good = str(data / "pairs.jsonl")
    attempts = [
        lambda: reward_tab.launch(ctx, path, "tiny-enc", {}, BOSS),
        lambda: reward_tab.launch(ctx, good, "tiny-enc", {"eval_data": path}, BOSS),
        lambda: ppo_tab.launch(ctx, path, "tiny", rewards(), {}, BOSS),
        lambda: ppo_tab.launch(ctx, str(data / "prompts.txt"), "tiny", rewards(), {"eval_prompts": path}, BOSS),
        lambda: launch(ctx, sft_tab.SPEC, path, "tiny", {}, BOSS),
        lambda: launch(ctx, sft_tab.SPEC, good, "tiny", {"eval_data": path}, BOSS),
        lambda: launch(ctx, dpo_tab.SPEC, path, "tiny", {}, BOSS),
        lambda: launch(ctx, dpo_tab.SPEC, good, "tiny", {"eval_data": path}, BOSS),
    ]
    for attempt in attempts:
        with pytest.raises(gr.Error) as refused:
            attempt()
        text = refused.value.message
        assert "outside the data folders" in text and all(str(root) in text for root in ctx.data_roots), text
    # The previews say the same, and name nothing that exists.
    yaml_text, _ = reward_tab.preview(ctx, path, "tiny-enc", {})
    assert yaml_text.startswith("# not ready:") and "outside the data folders" in yaml_text
    yaml_text, _ = preview(ctx, sft_tab.SPEC, path, "tiny", {})
    assert "outside the data folders" in yaml_text
    yaml_text, _ = ppo_tab.preview(ctx, path, "tiny", rewards(), {})
    assert "outside the data folders" in yaml_text
    assert ctx.launcher.runs() == [] and not ctx.launcher.root.exists()


def test_a_link_out_of_the_data_folders_is_refused(ctx: StudioContext, tiny_encoder_dir: Path, tmp_path: Path) -> None:
    ctx.registry.add(tiny_encoder_dir, name="tiny-enc")
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    (data_folder(ctx) / "innocent.jsonl").symlink_to(secret)
    with pytest.raises(gr.Error, match="outside the data folders"):
        reward_tab.launch(ctx, "innocent.jsonl", "tiny-enc", {}, BOSS)
    assert not ctx.launcher.root.exists()
