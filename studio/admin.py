"""The admin console: projects, imports, candidate replies, annotators, dashboard, snapshots.

The Snapshots tab can add KTO data to a snapshot (``kto.parquet``: the thumbs up/down given in
the chat, the prompt lab and the arena, optionally of some models and surfaces only, plus the
rankings converted; see :mod:`annotations.snapshot`), and shows how many thumbs each model got
on each surface (counts only: no admin screen lists who gave which thumb).

A project's settings include its queue order: 'uncertain first' (active learning) serves the
prompts a chosen reward model is least sure of first; "Score open prompts" computes those
figures in a background job (``studio.active_learning``).

Every handler checks the caller's role on the server (``require_admin``): an annotator who
calls these endpoints directly is refused. Run alone: ``python -m studio.admin``.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import pandas as pd

from annotations import accounts
from annotations.agreement import project_agreement
from annotations.feedback import SURFACES, feedback_counts
from annotations.importers import ImportFailed, import_file
from annotations.membership import members, set_members
from annotations.queue import QUEUE_ORDERS, QueueSettings, queue_settings, set_queue_order
from annotations.snapshot import create_snapshot, list_snapshots
from annotations.store import StoreError
from rlhf.generation import SamplingParams
from rlhf.modelfiles import ModelError
from rlhf.registry import DEFAULT_CHAT_MODEL
from studio import active_learning
from studio.candidates import jobs_frame
from studio.context import StudioContext
from studio.login_guard import recent_failures
from studio.permissions import MANAGE_ACCOUNTS, READ_RESULTS, TRAIN, WRITE_CONTENT, allowed, current_user, require
from studio.render import UserError, bar_chart, plain_text

SHAPES = ["auto", "prompt", "dolly", "alpaca", "preference", "hh-rlhf"]


def _fail(exc: Exception) -> gr.Error:
    return UserError(str(exc))


# -- projects -------------------------------------------------------------------------------------
def projects_frame(ctx: StudioContext) -> pd.DataFrame:
    rows = ctx.store.query(
        """
        SELECT pr.name, pr.k, pr.min_submitted, pr.mode,
               (SELECT count(*) FROM prompts p WHERE p.project_id = pr.id) AS prompts,
               (SELECT count(*) FROM (SELECT p.id FROM prompts p JOIN replies r ON r.prompt_id = p.id
                 WHERE p.project_id = pr.id GROUP BY p.id HAVING count(*) >= pr.k)) AS ready,
               (SELECT count(*) FROM (SELECT p.id FROM prompts p JOIN rankings r ON r.prompt_id = p.id
                 WHERE p.project_id = pr.id AND r.status = 'submitted' GROUP BY p.id HAVING count(*) >= pr.min_submitted)) AS complete
        FROM projects pr ORDER BY pr.id
        """
    )
    frame = pd.DataFrame(rows, columns=["project", "k", "min rankings", "mode", "prompts", "with k replies", "complete"])
    frame["complete %"] = (100 * frame["complete"] / frame["prompts"].where(frame["prompts"] > 0)).fillna(0).round(1)
    frame["ranked by"] = [", ".join(members(ctx.store, p.id)) or "everyone" for p in ctx.store.projects()]
    return frame


def create_project(ctx: StudioContext, name: str, k: float, min_submitted: float, guidelines: str, request: gr.Request | None) -> str:
    require(ctx.store, request, WRITE_CONTENT)
    try:
        ctx.store.create_project(name or "", guidelines=guidelines or "", k=int(k), min_submitted=int(min_submitted))
    except StoreError as exc:
        raise _fail(exc) from exc
    mode = "pairwise" if int(k) == 2 else "ranking"
    return f"Created project **{html.escape(name.strip())}** ({mode}, k={int(k)}, {int(min_submitted)} ranking(s) per prompt)."


def set_project_members(ctx: StudioContext, project: str | None, names: str, request: gr.Request | None) -> str:
    """Who may rank a project (names separated by commas; empty: every annotator)."""
    require(ctx.store, request, WRITE_CONTENT)
    if not project:
        raise UserError("Choose a project.")
    try:
        proj = ctx.store.project(project)
        listed = set_members(ctx.store, proj.id, (names or "").replace("\n", ",").split(","))
    except StoreError as exc:
        raise _fail(exc) from exc
    who = ", ".join(listed) if listed else "every annotator"
    return f"**{html.escape(proj.name)}** can now be ranked by {html.escape(who)} (and admins)."


# -- active learning: the queue order and the reward model's uncertainty -----------------------------
def _settings_html(ctx: StudioContext, project_id: int, settings: QueueSettings | None = None) -> str:
    """The project's queue order and uncertainty figures in one line (names escaped)."""
    line = active_learning.settings_line(settings or queue_settings(ctx.store, project_id))
    return f"<p>{plain_text(line)}</p>"


def queue_order_options(ctx: StudioContext, project: str | None, request: gr.Request | None) -> tuple[str, str | None, str]:
    """(queue order, reward model of its figures if still registered, settings line HTML) of a project."""
    require(ctx.store, request, READ_RESULTS)
    if not project:
        return QUEUE_ORDERS[0], None, ""
    try:
        proj = ctx.store.project(project)
        settings = queue_settings(ctx.store, proj.id)
    except StoreError as exc:
        return QUEUE_ORDERS[0], None, f"<p>{plain_text(exc)}</p>"
    model = settings.model if settings.model in active_learning.reward_models(ctx.registry) else None
    return settings.order, model, _settings_html(ctx, proj.id, settings)


def save_queue_order(ctx: StudioContext, project: str | None, order: str | None, request: gr.Request | None) -> str:
    """Set a project's queue order ('default' or 'uncertain first'); returns the settings line."""
    user = require(ctx.store, request, WRITE_CONTENT)
    if not project:
        raise UserError("Choose a project.")
    try:
        proj = ctx.store.project(project)
        set_queue_order(ctx.store, proj.id, order or "", by=user.id)
        return _settings_html(ctx, proj.id)
    except StoreError as exc:
        raise _fail(exc) from exc


def score_open_prompts(ctx: StudioContext, project: str | None, model: str | None, request: gr.Request | None) -> int:
    """Start scoring a project's open prompts with a reward model in the background; returns the job id."""
    user = require(ctx.store, request, TRAIN)
    if not project:
        raise UserError("Choose a project.")
    try:
        proj = ctx.store.project(project)
        return active_learning.start_scoring(ctx.store, ctx.registry, proj.id, model or "", user, device=ctx.scorers.device)
    except (StoreError, ModelError) as exc:
        raise _fail(exc) from exc


def scoring_status(ctx: StudioContext, job_id: int | None, project: str | None, request: gr.Request | None) -> tuple[str, bool, str]:
    """(progress bar HTML, still running, settings line HTML) while a scoring job runs."""
    require(ctx.store, request, TRAIN)
    bar, running = active_learning.job_html(ctx.store, job_id)
    try:
        line = _settings_html(ctx, ctx.store.project(project).id) if project else ""
    except StoreError:
        line = ""
    return bar, running, line


# -- import -------------------------------------------------------------------------------------------
def import_upload(ctx: StudioContext, project: str, file: str | None, shape: str, skip_invalid: bool, request: gr.Request | None) -> str:
    require(ctx.store, request, WRITE_CONTENT)
    if not project:
        raise UserError("Choose the project to import into.")
    if not file:
        raise UserError("Upload a file first (JSONL, JSON, CSV or parquet).")
    try:
        proj = ctx.store.project(project)
        report = import_file(ctx.store, proj.id, Path(file), shape=shape or "auto", skip_invalid=bool(skip_invalid))
    except ImportFailed as exc:
        # The hint in this screen's words (its checkbox), not the command line's flag.
        hint = exc.hint("tick 'Leave bad records out'")
        return f"**Import failed; nothing was written.**\n\n{html.escape(str(exc))}" + (f"\n\n{html.escape(hint)}" if hint else "")
    except StoreError as exc:
        # Shown on the page, not in a toast: the admin needs the line number while fixing the file.
        return f"**Import failed; nothing was written.**\n\n{html.escape(str(exc))}"
    shapes = ", ".join(f"{n} {k}" for k, n in report.shapes.items())
    text = f"Imported **{report.prompts}** prompts, {report.replies} replies, {report.rankings} rankings ({shapes})"
    text += f" into **{html.escape(proj.name)}**."
    if report.duplicates:
        text += f"\n\n{html.escape(report.duplicates_note())}"
    if report.skipped:
        text += "\n\nLeft out:\n" + "\n".join(f"- {html.escape(s)}" for s in report.skipped[:50])
    return text


# -- candidate replies ------------------------------------------------------------------------------
def start_generation(
    ctx: StudioContext,
    project: str,
    models: list[str],
    temperature: float,
    top_p: float,
    max_new_tokens: float,
    request: gr.Request | None,
) -> int:
    """Start filling the project's prompts up to k replies; returns the job id."""
    user = require(ctx.store, request, TRAIN)
    if not project:
        raise UserError("Choose a project.")
    try:
        params = SamplingParams(temperature=float(temperature), top_p=float(top_p), max_new_tokens=int(max_new_tokens))
        job = ctx.jobs.start(ctx.store.project(project).id, list(models or []), params, owner=user.name)
    except (ValueError, StoreError, ModelError) as exc:
        raise _fail(exc) from exc
    return job.id


def job_status(ctx: StudioContext, job_id: int | None) -> tuple[str, bool]:
    """(progress bar HTML, still running) for a job."""
    job = ctx.jobs.get(int(job_id)) if job_id else None
    if job is None:
        return "", False
    pct = round(100 * job.fraction)
    colour = "var(--error-text-color)" if job.state == "failed" else "var(--color-accent)"
    bar = (
        f'<div class="job-bar" style="background:var(--neutral-200);border-radius:6px;height:14px;width:100%">'
        f'<div style="width:{pct}%;background:{colour};height:14px;border-radius:6px"></div></div>'
        f'<p id="job-summary">{html.escape(job.summary())}</p>'
    )
    return bar, job.state in ("queued", "running")


# -- annotators --------------------------------------------------------------------------------------
def annotators_frame(ctx: StudioContext) -> pd.DataFrame:
    rows = ctx.store.query(
        """
        SELECT a.name, a.role, a.active,
               count(r.id) FILTER (WHERE r.status = 'submitted') AS submitted,
               count(r.id) FILTER (WHERE r.status = 'skipped') AS skipped,
               round(median(r.seconds_spent) FILTER (WHERE r.status = 'submitted'), 1) AS median_seconds,
               max(r.submitted) AS last_active
        FROM annotators a LEFT JOIN rankings r ON r.annotator_id = a.id
        WHERE a.role <> 'import' GROUP BY a.id, a.name, a.role, a.active ORDER BY a.id
        """
    )
    return pd.DataFrame(rows, columns=["name", "role", "active", "submitted", "skipped", "median s / ranking", "last active"])


def add_person(ctx: StudioContext, name: str, password: str, role: str, request: gr.Request | None) -> str:
    require(ctx.store, request, MANAGE_ACCOUNTS)
    try:
        accounts.add_annotator(ctx.store, name or "", password or "", role=role or "annotator")
    except StoreError as exc:
        raise _fail(exc) from exc
    return f"Added {role} **{html.escape(name.strip())}**."


def set_active(ctx: StudioContext, name: str, active: bool, request: gr.Request | None) -> str:
    admin = require(ctx.store, request, MANAGE_ACCOUNTS)
    if not name:
        raise UserError("Type the annotator's name.")
    if name == admin.name and not active:
        raise UserError("You cannot deactivate yourself.")
    try:
        accounts.set_active(ctx.store, name, active)
    except StoreError as exc:
        raise _fail(exc) from exc
    if active:
        return f"{html.escape(name)} is now active."
    ended = ctx.sessions.end(name)
    return f"{html.escape(name)} is now deactivated; {ended} open session(s) ended."


def reset_password(ctx: StudioContext, name: str, password: str, request: gr.Request | None) -> str:
    require(ctx.store, request, MANAGE_ACCOUNTS)
    try:
        accounts.reset_password(ctx.store, name or "", password or "")
    except StoreError as exc:
        raise _fail(exc) from exc
    # The old password may be known to someone else: every session logged in with it ends.
    ended = ctx.sessions.end(name)
    return f"New password set for {html.escape(name)}; {ended} open session(s) ended."


def failed_logins_frame(ctx: StudioContext) -> pd.DataFrame:
    """Failed logins of the last hour by account and address (lockouts show here)."""
    rows = [(n, a, c, str(t)[:19], round(ctx.logins.locked_for(n, a))) for n, a, c, t in recent_failures(ctx.store)]
    return pd.DataFrame(rows, columns=["name", "address", "failures (last hour)", "last attempt", "locked for s"])


# -- dashboard -------------------------------------------------------------------------------------------
def agreement_summary(ctx: StudioContext, project: str | None) -> tuple[str, pd.DataFrame]:
    if not project:
        return "Choose a project to see agreement.", pd.DataFrame(columns=["annotator", "agreement with majority", "pairs"])
    proj = ctx.store.project(project)
    report = project_agreement(ctx.store, proj.id)

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    text = (
        f"**{html.escape(proj.name)}**: mean Kendall's tau-b **{fmt(report.mean_tau_b)}** over {report.prompts_with_overlap} "
        f"prompts ranked by 2+ annotators · Krippendorff's alpha (pairwise) **{fmt(report.alpha)}**"
    )
    rel = pd.DataFrame(
        [(who, rate if rate is not None else float("nan"), n) for who, (rate, n) in report.reliability.items()],
        columns=["annotator", "agreement with majority", "pairs"],
    )
    return text, rel


def recent_activity(ctx: StudioContext, limit: int = 20) -> pd.DataFrame:
    rows = ctx.store.query(
        """
        SELECT strftime(r.updated, '%Y-%m-%d %H:%M:%S'), a.name, pr.name, r.status, left(p.text, 80), r.skip_reason
        FROM rankings r JOIN annotators a ON a.id = r.annotator_id JOIN prompts p ON p.id = r.prompt_id
        JOIN projects pr ON pr.id = p.project_id
        WHERE r.status <> 'draft' ORDER BY r.updated DESC LIMIT ?
        """,
        [limit],
    )
    return pd.DataFrame(rows, columns=["when", "annotator", "project", "status", "prompt", "skip reason"])


def dashboard(ctx: StudioContext, project: str | None, request: gr.Request | None) -> tuple:
    """(completion chart, projects table, rankings-per-annotator chart, agreement text,
    reliability chart, recent activity) for the admin dashboard."""
    require(ctx.store, request, READ_RESULTS)
    project = project or next((p.name for p in ctx.store.projects()), None)
    projects = projects_frame(ctx)
    people = annotators_frame(ctx)
    text, rel = agreement_summary(ctx, project)
    completion = bar_chart(
        "Completion per project",
        [(r.project, float(r["complete %"]), f"{r.complete}/{r.prompts} prompts ({r['complete %']}%)") for _, r in projects.iterrows()],
        maximum=100,
    )
    per_person = bar_chart(
        "Rankings per annotator",
        [(r["name"], float(r.submitted), f"{r.submitted} submitted, {r.skipped} skipped") for _, r in people.iterrows()],
    )
    reliability = bar_chart(
        f"Agreement with the other annotators' majority ({project or 'no project'})",
        [
            (
                r.annotator,
                None if pd.isna(r["agreement with majority"]) else float(r["agreement with majority"]),
                "n/a" if pd.isna(r["agreement with majority"]) else f"{r['agreement with majority']:.0%} of {r.pairs} pairs",
            )
            for _, r in rel.iterrows()
        ],
        maximum=1,
    )
    return completion, projects, per_person, text, reliability, recent_activity(ctx)


# -- snapshots -----------------------------------------------------------------------------------------
def snapshots_frame(ctx: StudioContext) -> pd.DataFrame:
    rows = [
        (
            s["id"],
            str(s["created"])[:19],
            s["filter"].get("project") or ("arena votes" if s["pair_strategy"] == "arena" else "all"),
            s["pair_strategy"],
            s["counts"]["pairs"],
            s["counts"].get("kto_desirable", 0) + s["counts"].get("kto_undesirable", 0),
            s["folder"],
        )
        for s in list_snapshots(ctx.store)
    ]
    return pd.DataFrame(rows, columns=["id", "created", "project", "strategy", "pairs", "KTO rows", "folder"])


def _thumbs_frame(ctx: StudioContext) -> pd.DataFrame:
    rows = [(c.model, c.surface, c.up, c.down) for c in feedback_counts(ctx.store)]
    return pd.DataFrame(rows, columns=["model", "surface", "thumbs up", "thumbs down"])


def thumbs_counts(ctx: StudioContext, request: gr.Request | None) -> pd.DataFrame:
    """Thumbs up and down per model and surface (admins: counts only, never who gave which)."""
    require(ctx.store, request, READ_RESULTS)
    return _thumbs_frame(ctx)


def _thumbed_models(ctx: StudioContext) -> list[str]:
    return sorted({c.model for c in feedback_counts(ctx.store)})


def make_snapshot(
    ctx: StudioContext,
    project: str | None,
    strategy: str,
    aggregate: str,
    include_ties: bool,
    margin: bool,
    request: gr.Request | None,
    kto: bool = False,
    kto_models: list[str] | None = None,
    kto_surfaces: list[str] | None = None,
) -> dict:
    """Freeze a snapshot (admins); with ``kto`` it also holds KTO data, thumbs of ``kto_models`` / ``kto_surfaces`` only if given."""
    require(ctx.store, request, WRITE_CONTENT)
    if kto_models is not None and not isinstance(kto_models, list | tuple):
        raise UserError("The model filter is a list of model names.")
    if kto_surfaces is not None and not isinstance(kto_surfaces, list | tuple):
        raise UserError(f"The surfaces are a list of: {', '.join(SURFACES)}.")
    try:
        info = create_snapshot(
            ctx.store,
            ctx.snapshot_root,
            project=project or None,
            strategy=strategy,
            aggregate_by=aggregate,
            include_ties=bool(include_ties),
            margin=bool(margin),
            kto=bool(kto),
            kto_models=[str(m) for m in kto_models or []] or None,
            kto_surfaces=[str(m) for m in kto_surfaces or []] or None,
        )
    except StoreError as exc:
        raise _fail(exc) from exc
    return {**info.manifest, "folder": str(info.folder), "reused": info.reused}


# -- the screen --------------------------------------------------------------------------------------------
def build(ctx: StudioContext) -> gr.Blocks:
    def names() -> list[str]:
        return [p.name for p in ctx.store.projects()]

    with gr.Blocks(title="Admin") as screen:
        with gr.Tabs():
            with gr.Tab("Dashboard", id="admin-dashboard"):
                with gr.Row():
                    dash_project = gr.Dropdown(
                        choices=names(), allow_custom_value=True, label="Agreement for project", elem_id="dash-project"
                    )
                    refresh = gr.Button("Refresh", elem_id="dash-refresh", scale=0)
                completion_plot = gr.HTML(elem_id="dash-completion")
                completion = gr.Dataframe(label="Projects", interactive=False, elem_id="dash-projects")
                with gr.Row():
                    per_annotator = gr.HTML(elem_id="dash-per-annotator")
                    reliability = gr.HTML(elem_id="dash-reliability")
                agreement = gr.Markdown(elem_id="dash-agreement")
                activity = gr.Dataframe(label="Recent activity", interactive=False, elem_id="dash-activity")
                dash_outputs = [completion_plot, completion, per_annotator, agreement, reliability, activity]

                def on_dash(project, request: gr.Request):
                    return dashboard(ctx, project, request)

                refresh.click(on_dash, dash_project, dash_outputs, api_name="dashboard")
                dash_project.change(on_dash, dash_project, dash_outputs, api_name=False)

            with gr.Tab("Projects", id="admin-projects"):
                with gr.Row():
                    with gr.Column():
                        new_name = gr.Textbox(label="Project name", elem_id="new-project-name")
                        new_k = gr.Number(
                            value=2,
                            precision=0,
                            minimum=2,
                            maximum=8,
                            label="Replies per prompt (k; 2 = pairwise)",
                            elem_id="new-project-k",
                        )
                        new_min = gr.Number(value=1, precision=0, minimum=1, label="Rankings needed per prompt", elem_id="new-project-min")
                    new_guidelines = gr.Textbox(label="Guidelines (Markdown)", lines=8, elem_id="new-project-guidelines")
                create_btn = gr.Button("Create project", variant="primary", elem_id="create-project")
                with gr.Row():
                    members_project = gr.Dropdown(choices=names(), allow_custom_value=True, label="Project", elem_id="members-project")
                    members_box = gr.Textbox(
                        label="Who may rank it (names, separated by commas; empty = every annotator)", elem_id="members-names", scale=2
                    )
                    members_btn = gr.Button("Save who may rank", elem_id="members-save", scale=0)
                project_status = gr.Markdown(elem_id="project-status")
                project_table = gr.Dataframe(label="Projects", interactive=False)
                gr.Markdown(
                    "### Active learning\n"
                    "*uncertain first*: after an annotator's own draft, the queue serves the prompts the reward model "
                    "is least sure of (the highest scored uncertainty), then the unscored ones in the default order "
                    "(nearest completion, then the oldest)."
                )
                with gr.Row():
                    al_project = gr.Dropdown(choices=names(), allow_custom_value=True, label="Project", elem_id="al-project")
                    al_order = gr.Radio(list(QUEUE_ORDERS), value=QUEUE_ORDERS[0], label="Queue order", elem_id="al-order")
                    al_save = gr.Button("Save queue order", elem_id="al-save", scale=0)
                with gr.Row():
                    al_model = gr.Dropdown(choices=active_learning.reward_models(ctx.registry), label="Reward model", elem_id="al-model")
                    al_score = gr.Button("Score open prompts", elem_id="al-score", scale=0)
                al_bar = gr.HTML(elem_id="al-progress")
                al_line = gr.HTML(elem_id="al-summary")
                al_job = gr.State(None)
                al_timer = gr.Timer(1.0, active=False)

            with gr.Tab("Import", id="admin-import"):
                with gr.Row():
                    import_project = gr.Dropdown(choices=names(), allow_custom_value=True, label="Project", elem_id="import-project")
                    import_shape = gr.Dropdown(choices=SHAPES, value="auto", label="Shape")
                    import_skip = gr.Checkbox(label="Leave bad records out instead of stopping")
                import_file_box = gr.File(
                    label="JSONL, JSON, CSV or parquet",
                    file_types=[".jsonl", ".json", ".csv", ".parquet"],
                    type="filepath",
                    elem_id="import-file",
                )
                import_btn = gr.Button("Import", variant="primary", elem_id="import-button")
                import_status = gr.Markdown(elem_id="import-status")

            with gr.Tab("Candidates", id="admin-candidates"):
                gr.Markdown("Fill every prompt of a project up to its k replies. With several models the replies alternate between them.")
                with gr.Row():
                    gen_project = gr.Dropdown(choices=names(), allow_custom_value=True, label="Project", elem_id="gen-project")
                    gen_models = gr.Dropdown(
                        choices=ctx.registry.names("causal-lm"),
                        value=[DEFAULT_CHAT_MODEL],
                        multiselect=True,
                        label="Models",
                        elem_id="gen-models",
                    )
                with gr.Row():
                    gen_temp = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature")
                    gen_top_p = gr.Slider(0.05, 1, value=0.95, step=0.05, label="Top-p")
                    gen_max = gr.Slider(16, 512, value=128, step=16, label="Max new tokens")
                gen_btn = gr.Button("Generate candidate replies", variant="primary", elem_id="gen-start")
                gen_bar = gr.HTML(elem_id="gen-progress")
                # Every job's record, this studio's and earlier ones': failed and lost jobs keep their reason.
                gen_jobs = gr.Dataframe(label="Recent jobs (state and reason)", interactive=False, wrap=True, elem_id="gen-jobs")
                job_id = gr.State(None)
                timer = gr.Timer(1.0, active=False)

            with gr.Tab("Annotators", id="admin-annotators"):
                people_table = gr.Dataframe(label="People", interactive=False, elem_id="people-table")
                with gr.Row():
                    person = gr.Textbox(label="Name", elem_id="person-name")
                    password = gr.Textbox(label="Password (8+ characters)", type="password", elem_id="person-password")
                    role = gr.Radio(["annotator", "admin"], value="annotator", label="Role", elem_id="person-role")
                with gr.Row():
                    add_btn = gr.Button("Add", variant="primary", elem_id="person-add")
                    reset_btn = gr.Button("Reset password", elem_id="person-reset")
                    deactivate_btn = gr.Button("Deactivate", variant="stop", elem_id="person-deactivate")
                    activate_btn = gr.Button("Activate", elem_id="person-activate")
                people_status = gr.Markdown(elem_id="people-status")
                failed_logins = gr.Dataframe(label="Failed logins (last hour)", interactive=False, elem_id="failed-logins")

            with gr.Tab("Snapshots", id="admin-snapshots"):
                with gr.Row():
                    snap_project = gr.Dropdown(choices=names(), allow_custom_value=True, label="Project", elem_id="snap-project")
                    snap_strategy = gr.Radio(["all_pairs", "best_vs_rest", "adjacent"], value="all_pairs", label="Pair strategy")
                    snap_aggregate = gr.Radio(["majority", "per_annotator"], value="majority", label="Across annotators")
                with gr.Row():
                    snap_ties = gr.Checkbox(label="Keep ties (margin 0)")
                    snap_margin = gr.Checkbox(label="Margin column")
                with gr.Row():
                    snap_kto = gr.Checkbox(
                        label="Include KTO data (thumbs, and rankings: best = desirable, worst = undesirable)",
                        info="the project, time and annotator filters apply to the rankings; thumbs are chosen by model and screen only",
                    )
                    snap_kto_models = gr.Dropdown(
                        choices=[],
                        multiselect=True,
                        allow_custom_value=True,
                        label="Thumbs of these models only (empty = all)",
                        elem_id="snap-kto-models",
                    )
                    snap_kto_surfaces = gr.CheckboxGroup(list(SURFACES), label="Thumbs from (none = all)", elem_id="snap-kto-surfaces")
                snap_btn = gr.Button("Freeze a snapshot", variant="primary", elem_id="snap-create")
                manifest = gr.JSON(label="Manifest", elem_id="snap-manifest")
                snap_table = gr.Dataframe(label="Snapshots", interactive=False)
                with gr.Row():
                    thumbs_table = gr.Dataframe(label="Thumbs per model and surface", interactive=False, elem_id="snap-thumbs")
                    thumbs_refresh = gr.Button("Refresh", elem_id="snap-thumbs-refresh", scale=0)

        # -- wiring ---------------------------------------------------------------------------------
        project_pickers = [dash_project, import_project, gen_project, snap_project, members_project, al_project]

        def lists_for(current: list) -> list:
            # Keep each picker's choice; fall back to the first project so that what the
            # page shows and the value the server gets are the same.
            choices = names()
            first = choices[0] if choices else None
            chosen = [c if c in choices else first for c in current]
            return [gr.Dropdown(choices=choices, value=v) for v in chosen] + [
                projects_frame(ctx),
                annotators_frame(ctx),
                snapshots_frame(ctx),
                gr.update(choices=ctx.registry.names("causal-lm")),
                failed_logins_frame(ctx),
                gr.update(choices=active_learning.reward_models(ctx.registry)),
                _thumbs_frame(ctx),
                gr.update(choices=_thumbed_models(ctx)),
            ]

        def refresh_lists(dash, imp, gen, snap, memb, al, request: gr.Request):
            require(ctx.store, request, READ_RESULTS)
            return lists_for([dash, imp, gen, snap, memb, al])

        lists = [
            *project_pickers,
            project_table,
            people_table,
            snap_table,
            gen_models,
            failed_logins,
            al_model,
            thumbs_table,
            snap_kto_models,
        ]

        def on_create(name, k, mn, guide, request: gr.Request):
            return create_project(ctx, name, k, mn, guide, request)

        create_btn.click(on_create, [new_name, new_k, new_min, new_guidelines], project_status, api_name="create_project").success(
            refresh_lists, project_pickers, lists, api_name=False
        )

        def on_members(project, who, request: gr.Request):
            return set_project_members(ctx, project, who, request)

        def on_members_project(project, request: gr.Request):
            require(ctx.store, request, READ_RESULTS)
            try:
                return ", ".join(members(ctx.store, ctx.store.project(project).id)) if project else ""
            except StoreError:
                return ""

        members_btn.click(on_members, [members_project, members_box], project_status, api_name="set_project_members").success(
            refresh_lists, project_pickers, lists, api_name=False
        )
        members_project.input(on_members_project, members_project, members_box, api_name=False)

        def on_queue_project(project, request: gr.Request):
            order, model, line = queue_order_options(ctx, project, request)
            return order, gr.update(value=model), line

        def on_queue_order(project, order, request: gr.Request):
            return save_queue_order(ctx, project, order, request)

        def on_score(project, model, request: gr.Request):
            jid = score_open_prompts(ctx, project, model, request)
            bar, _ = active_learning.job_html(ctx.store, jid)
            return jid, bar, gr.Timer(active=True)

        def on_score_tick(jid, project, request: gr.Request):
            bar, running, line = scoring_status(ctx, jid, project, request)
            return bar, gr.Timer(active=running), line

        # .change, not .input: the page load and refresh_lists pick a project too, and the
        # controls must show that project's settings (annotators' page load picks none).
        al_project.change(on_queue_project, al_project, [al_order, al_model, al_line], api_name=False)
        al_save.click(on_queue_order, [al_project, al_order], al_line, api_name="set_queue_order")
        al_score.click(on_score, [al_project, al_model], [al_job, al_bar, al_timer], api_name="score_open_prompts")
        al_timer.tick(on_score_tick, [al_job, al_project], [al_bar, al_timer, al_line], api_name=False, show_progress="hidden")

        def on_import(project, file, shape, skip_bad, request: gr.Request):
            return import_upload(ctx, project, file, shape, skip_bad, request)

        import_btn.click(
            on_import, [import_project, import_file_box, import_shape, import_skip], import_status, api_name="import_file"
        ).success(refresh_lists, project_pickers, lists, api_name=False)

        def on_generate(project, models, temp, top_p, max_new, request: gr.Request):
            jid = start_generation(ctx, project, models, temp, top_p, max_new, request)
            bar, _ = job_status(ctx, jid)
            return jid, bar, gr.Timer(active=True)

        def on_tick(jid, request: gr.Request):
            require(ctx.store, request, TRAIN)
            bar, running = job_status(ctx, jid)
            return bar, gr.Timer(active=running), jobs_frame(ctx.jobs)

        def on_jobs(request: gr.Request):
            if not allowed(current_user(ctx.store, request), TRAIN):  # annotators load the page too; no toast for them
                return gr.skip()
            return jobs_frame(ctx.jobs)

        gen_btn.click(
            on_generate, [gen_project, gen_models, gen_temp, gen_top_p, gen_max], [job_id, gen_bar, timer], api_name="generate_candidates"
        )
        timer.tick(on_tick, job_id, [gen_bar, timer, gen_jobs], api_name=False, show_progress="hidden")
        screen.load(on_jobs, None, gen_jobs, api_name=False)

        def on_add(name, pw, r, request: gr.Request):
            return add_person(ctx, name, pw, r, request), ""

        def on_reset(name, pw, request: gr.Request):
            return reset_password(ctx, name, pw, request), ""

        def on_active(active: bool):
            def handler(name, request: gr.Request):
                return set_active(ctx, name, active, request)

            return handler

        add_btn.click(on_add, [person, password, role], [people_status, password], api_name="add_annotator").success(
            refresh_lists, project_pickers, lists, api_name=False
        )
        reset_btn.click(on_reset, [person, password], [people_status, password], api_name="reset_password")
        deactivate_btn.click(on_active(False), person, people_status, api_name="deactivate_annotator").success(
            refresh_lists, project_pickers, lists, api_name=False
        )
        activate_btn.click(on_active(True), person, people_status, api_name="activate_annotator").success(
            refresh_lists, project_pickers, lists, api_name=False
        )

        def on_snapshot(project, strategy, aggregate, ties, margin, kto, models, surfaces, request: gr.Request):
            info = make_snapshot(
                ctx, project, strategy, aggregate, ties, margin, request, kto=kto, kto_models=models, kto_surfaces=surfaces
            )
            return info, snapshots_frame(ctx)

        snap_btn.click(
            on_snapshot,
            [snap_project, snap_strategy, snap_aggregate, snap_ties, snap_margin, snap_kto, snap_kto_models, snap_kto_surfaces],
            [manifest, snap_table],
            api_name="create_snapshot",
        )

        def on_thumbs(request: gr.Request):
            return thumbs_counts(ctx, request), gr.update(choices=_thumbed_models(ctx))

        thumbs_refresh.click(on_thumbs, None, [thumbs_table, snap_kto_models], api_name="thumbs_counts")

        def on_load(request: gr.Request):
            user = current_user(ctx.store, request)
            if not user.is_admin:  # annotators load the page too; they get nothing from here
                return [gr.update() for _ in lists + dash_outputs]
            return lists_for([None] * len(project_pickers)) + list(dashboard(ctx, None, request))

        screen.load(on_load, None, lists + dash_outputs, api_name=False)
    return screen


if __name__ == "__main__":
    from studio.app import standalone

    standalone(build)
