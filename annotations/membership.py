"""Who may rank which project: a project's members, or every annotator when it lists none.

Admins may rank everything. The ranking screen lists only the projects open to the annotator
and refuses the rest on the server, so a team can share one studio without seeing each other's
prompts.

    set_members(store, project_id, ["ana", "ben"])    # only ana and ben (and admins) from now on
    set_members(store, project_id, [])                 # open to every annotator again
    open_projects(store, annotator_id)                 # the projects this account may rank
"""

from __future__ import annotations

from annotations.store import Project, Store, StoreError


def members(store: Store, project_id: int) -> list[str]:
    """Names of the annotators listed on a project (empty: open to all)."""
    rows = store.read(
        "SELECT a.name FROM project_members m JOIN annotators a ON a.id = m.annotator_id WHERE m.project_id = ? ORDER BY a.name",
        [project_id],
    )
    return [name for (name,) in rows]


def set_members(store: Store, project_id: int, names: list[str]) -> list[str]:
    """Replace a project's members in one transaction; unknown names change nothing."""
    wanted = sorted({n.strip() for n in names if n and n.strip()})
    with store.transaction() as cur:
        if not cur.execute("SELECT 1 FROM projects WHERE id = ?", [project_id]).fetchone():
            raise StoreError(f"no project with id {project_id}")
        ids = []
        for name in wanted:
            row = cur.execute("SELECT id, role FROM annotators WHERE name = ?", [name]).fetchone()
            if not row or row[1] == "import":
                raise StoreError(f"no annotator {name!r}; add the account first (Admin > Annotators)")
            ids.append(row[0])
        cur.execute("DELETE FROM project_members WHERE project_id = ?", [project_id])
        for annotator_id in ids:
            cur.execute("INSERT INTO project_members VALUES (?, ?)", [project_id, annotator_id])
    return wanted


def may_rank(store: Store, project_id: int, annotator_id: int) -> bool:
    """True when the project lists no members, lists this annotator, or the account is an admin."""
    [(role,)] = store.read("SELECT role FROM annotators WHERE id = ?", [annotator_id]) or [("",)]
    if role == "admin":
        return True
    [(listed, mine)] = store.read(
        "SELECT count(*), count(*) FILTER (WHERE annotator_id = ?) FROM project_members WHERE project_id = ?", [annotator_id, project_id]
    )
    return listed == 0 or mine > 0


def open_projects(store: Store, annotator_id: int) -> list[Project]:
    """The projects this account may rank, in creation order."""
    return [p for p in store.projects() if may_rank(store, p.id, annotator_id)]
