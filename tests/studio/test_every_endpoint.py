"""Every event of the served studio, called by index with an annotator's login: refused unless allowed.

The attacker's view: a logged-in annotator (or a script with their cookie) can call any event of
the page over HTTP, whatever ``api_name`` says and whether or not the tab is shown. So each event
is called here with the annotator's session and empty inputs, and must be

- refused by the permission module (the message says "Not allowed" or "Only admins"), or
- one that annotators may use (chat, ranking, the app's own page load), or
- a page-load handler of a screen annotators do not get, which must hand them nothing.

A new screen or event is checked automatically: it fails here until it asks the permission module.
"""

from __future__ import annotations

import pytest

from studio.context import StudioContext
from tests.studio.conftest import fill
from tests.studio.live import LoginRefused, RawClient, error_of, serve

REFUSED = ("Not allowed", "Only admins")
# Events an annotator may use, by module (screen) or module:qualname; the permission table's
# "rank", "chat", "arena" and "thumbs up/down" rows.
ANNOTATOR_SCREENS = ("studio.ranking", "studio.chat", "studio.arena")
# Thumbs up/down on replies shown to them: the chat's like event and the arena's four buttons.
THUMB_EVENTS = {"studio.chat:build.<locals>.on_like", "studio.arena:build.<locals>.thumber.<locals>.on_thumb"}
ANNOTATOR_EVENTS = {"studio.app:build_app.<locals>.on_load", *THUMB_EVENTS}
# Thumbs on the prompt lab's outputs (only those who may use the lab see them), the admin's
# thumbs counts and snapshots with KTO data: refused to annotators.
ADMIN_THUMB_EVENTS = (
    "studio.prompt_lab:build.<locals>.thumber.<locals>.on_thumb",
    "studio.admin:build.<locals>.on_thumbs",
    "studio.admin:build.<locals>.on_snapshot",
)
# Events on those screens that only admins may use (they write into a project).
ADMIN_EVENTS = {"studio.chat:build.<locals>.on_send", "studio.arena:build.<locals>.on_save"}


def _identity(fn) -> tuple[str, str]:
    inner = getattr(fn, "__wrapped__", fn)
    return inner.__module__, inner.__qualname__


def _is_empty_update(value) -> bool:
    """None, or an update that changes nothing ({"__type__": "update"}, maybe with empty props)."""
    if value is None:
        return True
    if not isinstance(value, dict) or value.get("__type__") != "update":
        return False
    return set(value) <= {"__type__", "props"} and _is_empty_update(value.get("props"))


@pytest.fixture
def served(ctx: StudioContext):
    fill(ctx, "team", k=2, prompts=2)
    with serve(ctx) as served:
        yield served


def test_an_annotator_is_refused_by_every_event_they_may_not_use(ctx: StudioContext, served) -> None:
    client = RawClient(served.url, "ana", "ana-password")
    config = client.config()
    # What a browser would send: each input component's current (default) value.
    defaults = {c["id"]: (c.get("props") or {}).get("value") for c in config["components"]}
    checked, refused, allowed, silent = 0, [], [], []
    problems = []
    for dep in config["dependencies"]:
        if not dep.get("backend_fn"):
            continue
        index = dep["id"]
        fn = served.blocks.fns[index].fn
        module, qualname = _identity(fn)
        name = f"{module}:{qualname}"
        triggers = {t[1] for t in dep.get("targets", [])}
        result = client.call(index, [defaults.get(i) for i in dep["inputs"]])
        error = error_of(result)
        checked += 1
        if (module in ANNOTATOR_SCREENS or name in ANNOTATOR_EVENTS) and name not in ADMIN_EVENTS:
            if any(r in error for r in REFUSED):
                problems.append(f"{name} refuses annotators, who may use it: {error}")
            allowed.append(name)
        elif any(r in error for r in REFUSED):
            refused.append(name)
        elif "load" in triggers and not error:
            data = (result.get("output") or {}).get("data") or []
            if not all(_is_empty_update(v) for v in data):
                problems.append(f"{name} (page load) hands an annotator data: {str(data)[:200]}")
            silent.append(name)
        else:
            problems.append(f"{name} ({', '.join(sorted(triggers))}) is not refused for an annotator: {error or 'it ran'}")
    client.close()
    assert not problems, "\n".join(problems)
    # The screens for admins are all there and all refuse (a guard against calling nothing).
    assert checked > 40 and len(refused) > 25
    assert any(n.startswith("studio.admin:") for n in refused) and any(n.startswith("studio.prompt_lab:") for n in refused)
    # Active learning's events (a project's queue order, scoring its prompts with a reward model, the job's progress).
    for handler in ("on_queue_project", "on_queue_order", "on_score", "on_score_tick"):
        assert f"studio.admin:build.<locals>.{handler}" in refused, handler
    assert allowed.count("studio.arena:build.<locals>.thumber.<locals>.on_thumb") == 4 and THUMB_EVENTS <= set(allowed)
    assert refused.count(ADMIN_THUMB_EVENTS[0]) == 8 and all(name in refused for name in ADMIN_THUMB_EVENTS)


def test_without_a_login_nothing_runs(served) -> None:
    anonymous = RawClient(served.url)
    config_status = anonymous.http.get("/config").status_code
    result = anonymous.call(0, [])
    anonymous.close()
    assert config_status == 401 and result.get("status") == 401


def test_wrong_password_and_deactivated_accounts_cannot_log_in(ctx: StudioContext, served) -> None:
    with pytest.raises(LoginRefused):
        RawClient(served.url, "ana", "not-her-password")
    from annotations.accounts import set_active

    set_active(ctx.store, "ana", False)
    with pytest.raises(LoginRefused):
        RawClient(served.url, "ana", "ana-password")
