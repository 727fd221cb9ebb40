"""Project members: a listed project is open to its members and admins only."""

from __future__ import annotations

import pytest

from annotations.accounts import add_annotator
from annotations.membership import may_rank, members, open_projects, set_members
from annotations.store import Store, StoreError


def test_members_limit_who_may_rank(store: Store) -> None:
    ana = add_annotator(store, "ana", "password-1")
    ben = add_annotator(store, "ben", "password-2")
    boss = add_annotator(store, "boss", "password-3", role="admin")
    open_one = store.create_project("open")
    closed = store.create_project("closed")
    assert set_members(store, closed, ["ana", " ana "]) == ["ana"] and members(store, closed) == ["ana"]
    assert may_rank(store, closed, ana) and not may_rank(store, closed, ben) and may_rank(store, closed, boss)
    assert [p.name for p in open_projects(store, ben)] == ["open"]
    assert [p.name for p in open_projects(store, ana)] == ["open", "closed"]
    assert may_rank(store, open_one, ben)
    with pytest.raises(StoreError, match="no annotator 'ghost'"):
        set_members(store, closed, ["ben", "ghost"])
    assert members(store, closed) == ["ana"]  # the failed change left nothing behind
    set_members(store, closed, [])
    assert may_rank(store, closed, ben)
