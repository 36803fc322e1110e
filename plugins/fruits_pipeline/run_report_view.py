"""The "Run report" tab on each pipeline run's page in the Airflow UI (Airflow 3's plugin interface).

An external view with ``destination: "dag_run"`` puts the tab on every run's page; the UI loads its
``href``, with ``{DAG_ID}`` and ``{RUN_ID}`` filled in (URL-encoded), in a same-origin frame. The
FastAPI app below, which the plugin mounts in the api-server, serves that page and the run's picture.

A FastAPI app of a plugin is not behind Airflow's authentication: each route here depends on
``requires_access_dag("GET", RUN)``, the api-server's own check (the session cookie or a bearer
token, then the auth manager's verdict on reading this DAG's runs): 401 without a signed-in user,
403 for a user who may not read the DAG's runs.

Which lake: the one the DAG writes its outputs to, as it declared it when it was parsed (the
``report`` task's outlet asset ``<lake>/features``, kept by Airflow in its database). A DAG without
it is not the pipeline's: 404. The report's place is the lake layout's (``lake.report``) for the
run's key (``lake.run_key_for`` of the run's type, id and data interval end, read from Airflow).
"""

import html
import logging
import os
import re
from urllib.parse import quote, urlencode, urlparse

from fruits_contract.lake import Lake, run_key_for
from fruits_pipeline.routes import ROUTE_TITLES

log = logging.getLogger(__name__)

URL_PREFIX = "/fruits-run-report"
REPORT_TASK_ID = "report"
# Run and DAG ids that could lead a path anywhere else are refused before any lookup. Airflow's own
# default run id pattern (^[A-Za-z0-9_.~:+-]+$) never needs these.
_UNSAFE_ID = re.compile(r"[/\\%\x00-\x1f\x7f]|\.\.")
_MAX_ID_LENGTH = 250
NO_REPORT_SENTENCE = ("This run has written no report yet: it is still running, or it stopped before its "
                      "report task (see the report task's log).")


class UnsafeId(ValueError):
    """A DAG or run id that could lead outside reports/; the message names it."""


def check_id(value: str, what: str) -> str:
    if not value or len(value) > _MAX_ID_LENGTH or _UNSAFE_ID.search(value):
        raise UnsafeId(f"{what} {value!r} is refused: slashes, backslashes, '..', '%' and control characters "
                       f"are not allowed in it")
    return value


def lake_of_outlets(outlet_uris: list[str]) -> Lake | None:
    """The lake whose features root is one of the report task's outlets, or None."""
    for uri in outlet_uris:
        base = uri.removesuffix("/features")
        if base != uri and urlparse(base).scheme in ("s3", "file"):
            lake = Lake(base)
            if lake.features_root() == uri:
                return lake
    return None


def report_uris(lake: Lake, run_type: str, run_id: str, data_interval_end) -> tuple[str, str]:
    """(report JSON, picture) URIs of a run, both directly under reports/."""
    run_key = run_key_for(run_type, run_id, data_interval_end)
    uris = lake.report(run_key), lake.report_picture(run_key)
    reports = lake.uri("reports") + "/"
    if not run_key or any(not u.startswith(reports) or "/" in u[len(reports):] for u in uris):
        raise UnsafeId(f"run id {run_id!r} gives the run key {run_key!r}, outside {reports}")
    return uris


# --- rendering ------------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _field(name: str, value, text: str | None = None) -> str:
    """A value the page shows, marked with the report field it comes from (the UI tests read them)."""
    shown = text if text is not None else value
    return f'<span data-field="{_e(name)}">{_e(shown)}</span>'


def _percent(value) -> str | None:
    return f"{value:.1%}" if isinstance(value, (int, float)) else None


def _row(label: str, *cells: str) -> str:
    return f"<tr><th>{_e(label)}</th>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_e(title)}</h2>{body}</section>"


def _table(rows: list[str], header: list[str] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    return f"<table>{head}{''.join(rows)}</table>"


def lake_link(uri: str | None) -> str:
    """An S3 URI as a link to the S3 console (the bucket's objects are not public); other URIs as text."""
    if not uri:
        return ""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        target = (f"https://s3.console.aws.amazon.com/s3/buckets/{quote(parsed.netloc)}?"
                  + urlencode({"prefix": parsed.path.lstrip("/")}))
        return f'<a href="{_e(target)}" target="_blank" rel="noopener noreferrer"><code>{_e(uri)}</code></a>'
    return f"<code>{_e(uri)}</code>"


def _rejected_by_reason(prefix: str, by_reason: dict, examples: dict, counted: str, show_example) -> str:
    """The "Rejected, by reason" table of ``<prefix>.rejected_by_reason`` with a few of each reason's
    ``<prefix>.rejected_examples``, each drawn by ``show_example``."""
    reason_rows = [
        f"<tr><td><code>{_e(reason)}</code></td><td>{_field(f'{prefix}.rejected_by_reason.{reason}', n)}</td>"
        f"<td data-field=\"{prefix}.rejected_examples.{_e(reason)}\">"
        f"{'<br>'.join(show_example(example) + chr(10) for example in examples.get(reason) or [])}</td></tr>"
        for reason, n in by_reason.items()]
    return "<h3>Rejected, by reason</h3>" + _table(reason_rows, ["reason", counted, "for example"])


def _uploads(counts: dict) -> str:
    rows = [
        _row("selected for this run", _field("counts.listed", counts.get("listed"))),
        _row("valid", _field("counts.valid", counts.get("valid"))),
        _row("rejected", _field("counts.rejected", counts.get("rejected"))),
        _row("already featurized (not selected)", _field("counts.already_featurized", counts.get("already_featurized"))),
        _row("rejected by an earlier run (not selected)",
             _field("counts.previously_rejected", counts.get("previously_rejected"))),
    ]
    if counts.get("duplicates") is not None:
        rows.append(_row("duplicates", _field("counts.duplicates", counts["duplicates"])))
    body = _table(rows)
    by_reason = counts.get("rejected_by_reason") or {}
    if by_reason:
        body += _rejected_by_reason("counts", by_reason, counts.get("rejected_examples") or {}, "uploads",
                                    lambda path: f"<code>{_e(path)}</code>")
    return _section("Uploads", body)


def _features_and_pca(report: dict) -> str:
    counts, pca = report.get("counts") or {}, report.get("pca") or {}
    rows = []
    if counts.get("featurized") is not None:
        rows.append(_row("images featurized", _field("counts.featurized", counts["featurized"])))
        rows.append(_row("rejected by the feature job", _field("counts.rejected_by_job", counts.get("rejected_by_job") or 0)))
    if pca.get("k") is not None:
        rows.append(_row("images reduced by the PCA", _field("counts.reduced", counts.get("reduced"))))
        rows.append(_row("PCA components (k)", _field("pca.k", pca["k"])))
        rows.append(_row("variance kept", _field("pca.variance_kept", pca.get("variance_kept"),
                                                 _percent(pca.get("variance_kept")))))
        basis = pca.get("basis") or {}
        if basis.get("reprojected"):
            rows.append(_row("rows projected", _field("pca.basis.reprojected", basis["reprojected"]), _e(basis.get("why"))))
    if report.get("pca_target"):
        target = ", ".join(f"{k} {v}" for k, v in report["pca_target"].items())
        rows.append(_row("PCA target asked for", _e(target)))
    return _section("Features and PCA", _table(rows)) if rows else ""


def _classifier(classifier: dict | None) -> str:
    if not classifier:
        return ""
    rows = [_row("accuracy on held-out images", _field("classifier.accuracy", classifier.get("accuracy"),
                                                       _percent(classifier.get("accuracy")))),
            _row("macro F1", _field("classifier.macro_f1", classifier.get("macro_f1"),
                                    _number(classifier.get("macro_f1")))),
            _row("images trained on / held out", _field("classifier.n_train", classifier.get("n_train")) + " / "
                 + _field("classifier.n_test", classifier.get("n_test"))),
            _row("model", lake_link(classifier.get("uri")))]
    if classifier.get("labelled_uploads") is not None:
        rows.append(_row("uploads trained on under a user's confirmed label",
                         _field("classifier.labelled_uploads", classifier["labelled_uploads"])))
    if classifier.get("excluded_labels"):
        rows.append(_row("labels left out (too few images)",
                         _e(", ".join(str(label) for label in classifier["excluded_labels"]))))
    body = _table(rows)
    per_label = classifier.get("per_label") or {}
    if per_label:
        body += "<h3>Per label</h3>" + _table(
            [f"<tr><td>{_e(label)}</td><td>{_field(f'classifier.per_label.{label}.precision', m.get('precision'), _number(m.get('precision')))}</td>"
             f"<td>{_field(f'classifier.per_label.{label}.recall', m.get('recall'), _number(m.get('recall')))}</td>"
             f"<td>{_field(f'classifier.per_label.{label}.support', m.get('support'))}</td></tr>"
             for label, m in per_label.items()], ["label", "precision", "recall", "held-out images"])
    matrix = classifier.get("confusion_matrix") or {}
    if matrix.get("labels") and matrix.get("matrix"):
        labels = matrix["labels"]
        rows = [f"<tr><th>{_e(truth)}</th>" + "".join(f"<td>{_e(n)}</td>" for n in line) + "</tr>"
                for truth, line in zip(labels, matrix["matrix"])]
        body += ("<h3>Confusion matrix (rows: true label, columns: predicted)</h3>"
                 + _table(rows, ["", *labels]).replace("<table>", '<table data-field="classifier.confusion_matrix">', 1))
    by_k = classifier.get("accuracy_by_k") or {}
    if by_k:
        items = by_k.items() if isinstance(by_k, dict) else ((row.get("k"), row.get("accuracy")) for row in by_k)
        body += "<h3>Accuracy by number of PCA components</h3>" + _table(
            [f"<tr><td>{_e(k)}</td><td>{_field(f'classifier.accuracy_by_k.{k}', acc, _percent(acc))}</td></tr>"
             for k, acc in items], ["k", "accuracy"])
    body += _not_sure(classifier.get("unsure")) + _publication(classifier.get("publication"))
    return _section("Classifier", body)


def _not_sure(unsure: dict | None) -> str:
    """How the classifier says "not sure", measured on held-out fruit and on photos of no fruit."""
    if not unsure:
        return ""

    def share(key: str) -> str:
        return _field(f"classifier.unsure.{key}", unsure.get(key), _percent(unsure.get(key)))
    rows = [_row("method", _field("classifier.unsure.method", unsure.get("method"))),
            _row("held-out images", _field("classifier.unsure.held_out", unsure.get("held_out"))),
            _row("held-out images: sure and right", share("held_out_sure_and_right")),
            _row("held-out images: unsure", share("held_out_unsure")),
            _row("held-out images: sure and wrong", share("held_out_sure_and_wrong")),
            _row("photos of no fruit: unsure", share("not_fruit_unsure") + " of "
                 + _field("classifier.unsure.not_fruit_photos", unsure.get("not_fruit_photos")))]
    return "<h3>Not sure</h3>" + _table(rows)


def _publication(publication: dict | None) -> str:
    """Whether this run's classifier became the published one (the one the app and the next runs use), and why."""
    if not publication:
        return ""
    published = publication.get("published")
    rows = [_row("published", _field("classifier.publication.published", published,
                                     "yes" if published else "no")),
            _row("why", _field("classifier.publication.why", publication.get("why")))]
    if publication.get("compared_with"):
        rows.append(_row("compared with the published classifier",
                         _field("classifier.publication.compared_with", publication["compared_with"])
                         + " on " + _field("classifier.publication.shared_held_out", publication.get("shared_held_out"))
                         + " held-out images both were tested on: this one right on "
                         + _field("classifier.publication.new_right", publication.get("new_right"))
                         + ", the published one on "
                         + _field("classifier.publication.current_right", publication.get("current_right"))))
    return "<h3>Publication</h3>" + _table(rows)


def _predictions(predictions: dict | None) -> str:
    """The day's answers to the app's photos: by which classifier, how many, how many unsure, by label."""
    if not predictions:
        return ""
    if not predictions.get("model"):
        return _section("Predictions", "<p>No prediction: "
                        + _field("predictions.reason", predictions.get("reason") or "no classifier answered") + "</p>")
    rows = [_row("classifier (the run that trained it)", _field("predictions.model", predictions["model"])),
            _row("uploads answered", _field("predictions.predicted", predictions.get("predicted"))),
            _row("unsure", _field("predictions.unsure", predictions.get("unsure")))]
    if predictions.get("uri"):
        rows.append(_row("answers", lake_link(predictions["uri"])))
    body = _table(rows)
    by_label = predictions.get("by_label") or {}
    means = predictions.get("mean_probability_by_label") or {}
    if by_label:
        body += "<h3>Sure answers, by label</h3>" + _table(
            [f"<tr><td>{_e(label)}</td><td>{_field(f'predictions.by_label.{label}', n)}</td>"
             f"<td>{_field(f'predictions.mean_probability_by_label.{label}', means.get(label), _number(means.get(label)))}</td></tr>"
             for label, n in by_label.items()], ["label", "uploads", "mean probability"])
    return _section("Predictions", body)


def _labels(labels: dict | None) -> str:
    """The users' confirmed labels (labels/): rows accepted, rejected and why, files that could not be read."""
    if not labels:
        return ""
    rows = [_row("label files", _field("labels.files", labels.get("files"))),
            _row("rows", _field("labels.rows", labels.get("rows"))),
            _row("accepted", _field("labels.accepted", labels.get("accepted"))),
            _row("rejected", _field("labels.rejected", labels.get("rejected")))]
    if labels.get("digest"):
        rows.append(_row("digest", f'<code data-field="labels.digest">{_e(labels["digest"])}</code>'))
    body = _table(rows)
    by_reason = labels.get("rejected_by_reason") or {}
    if by_reason:
        body += _rejected_by_reason("labels", by_reason, labels.get("rejected_examples") or {}, "rows",
                                    _label_example)
    problems = labels.get("file_problems") or []
    if problems:
        body += (f"<h3>Files not read (<span data-field=\"labels.file_problems\">{len(problems)}</span>)</h3>"
                 + _table([f"<tr><td><code>{_e(p.get('file'))}</code></td><td><code>{_e(p.get('reason'))}</code></td>"
                           f"<td>{_e(p.get('detail'))}</td></tr>" for p in problems], ["file", "reason", "detail"]))
    return _section("Confirmed labels", body)


def _label_example(example) -> str:
    if not isinstance(example, dict):
        return f"<code>{_e(example)}</code>"
    text = (f"<code>{_e(example.get('file'))}</code> row {_e(example.get('row'))}: "
            f"<code>{_e(example.get('path'))}</code> labelled <q>{_e(example.get('label'))}</q>")
    return text + (f" ({_e(example['detail'])})" if example.get("detail") else "")


def _number(value) -> str | None:
    return f"{value:.3f}" if isinstance(value, (int, float)) else None


def _steps(steps: list[dict]) -> str:
    if not steps:
        return ""
    rows = []
    for step in steps:
        name = step.get("name")
        rows.append(f"<tr><td>{_e(name)}</td><td>{_field(f'steps.{name}.state', step.get('state'))}</td>"
                    f"<td>{_field(f'steps.{name}.seconds', step.get('seconds'), _seconds(step.get('seconds')))}</td></tr>")
    return _section("Steps", _table(rows, ["step", "state", "time"]))


def _seconds(value) -> str | None:
    return f"{value:.1f} s" if isinstance(value, (int, float)) else None


def _cluster(report: dict) -> str:
    rows = []
    if report.get("cluster_id"):
        rows.append(_row("cluster", _field("cluster_id", report["cluster_id"])))
    cost = report.get("estimated_cost")
    if cost:
        table = cost.get("price_table") or {}
        rows.append(_row("estimated cost",
                         _field("estimated_cost.amount", cost.get("amount")) + f" {_e(cost.get('currency'))} for "
                         + _field("estimated_cost.instance_hours", cost.get("instance_hours"))
                         + f" instance-hours (prices {_e(table.get('region'))} as of {_e(table.get('as_of'))})"))
    orphans = report.get("orphan_clusters_terminated") or []
    rows.append(_row("clusters left by earlier runs, terminated", _field("orphan_clusters_terminated", len(orphans))
                     + "".join(f"<br><code>{_e(o.get('cluster_id'))}</code> (run {_e(o.get('run_key'))}, "
                               f"{_e(o.get('state'))}, {_e(o.get('age_seconds'))} s old)" for o in orphans)))
    return _section("Cluster and cost", _table(rows))


def _faults(faults: list[dict] | None) -> str:
    if not faults:
        return ""
    rows = [f"<tr><td>{_field('faults.kind', f.get('kind'))}</td><td>{_e(f.get('detail'))}</td></tr>" for f in faults]
    return _section("Faults met (and recovered from, or reported)", _table(rows, ["kind", "detail"]))


def _links(uris: dict) -> str:
    rows = [_row(name.replace("_", " "), lake_link(uri)) for name, uri in uris.items() if uri]
    return _section("In the lake", _table(rows)) if rows else ""


STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 16px; color: #1a202c; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 20px 0 6px; } h3 { font-size: 14px; }
table { border-collapse: collapse; } th, td { text-align: left; padding: 3px 10px 3px 0; vertical-align: top; }
th { font-weight: 600; } code { font-size: 12px; }
.status-success { color: #2f855a; } .status-failed { color: #c53030; }
.columns { display: flex; flex-wrap: wrap; gap: 32px; } .numbers { flex: 0 1 auto; } .figure { flex: 1 1 480px; }
img.picture { max-width: 100%; border: 1px solid #e2e8f0; }
.problem { color: #c53030; }
"""


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def render_no_report(dag_id: str, run_id: str, run_state: str | None) -> str:
    return _page(f"Run report: {run_id}",
                 f"<h1>Run {_e(run_id)}</h1><p>Airflow state: {_field('run_state', run_state)}</p>"
                 f'<p data-field="no_report">{_e(NO_REPORT_SENTENCE)}</p>')


def render_report(report: dict, *, run_id: str, run_state: str | None, picture_url: str | None) -> str:
    """The report as one page: what a person asks first (status, route) on top, the picture beside the numbers."""
    status = report.get("status")
    route = report.get("route")
    head = (f"<h1>Run {_e(run_id)}: <span class=\"status-{_e(status)}\">{_field('status', status)}</span></h1>"
            f"<p>Airflow state: {_field('run_state', run_state)}; compute {_field('compute', report.get('compute'))}; "
            f"run key <code>{_e(report.get('run_key'))}</code></p>")
    if report.get("message"):
        head += f"<p>{_field('message', report['message'])}</p>"
    if route:
        head += (f"<p>Route: <b>{_field('route', route, ROUTE_TITLES.get(route, route))}</b>"
                 + (f": {_field('route_reason', report.get('route_reason'))}" if report.get("route_reason") else "")
                 + "</p>")
    head += "".join(f'<p class="problem">Counts do not reconcile: {_e(p)}</p>' for p in report.get("reconciliation") or [])
    numbers = (_uploads(report.get("counts") or {}) + _features_and_pca(report) + _steps(report.get("steps") or [])
               + _cluster(report))
    picture = (f'<section><h2>Picture</h2><img class="picture" src="{_e(picture_url)}" '
               f'alt="variance by PCA component and the images on the first two components"></section>'
               if picture_url else "")
    body = (head + f'<div class="columns"><div class="numbers">{numbers}</div><div class="figure">{picture}</div></div>'
            + _labels(report.get("labels")) + _classifier(report.get("classifier"))
            + _predictions(report.get("predictions")) + _faults(report.get("faults")) + _links(report.get("uris") or {}))
    return _page(f"Run report: {run_id}", body)


# --- the api-server side ----------------------------------------------------------------------------

def _conn_id() -> str:
    from fruits_pipeline.settings import Settings

    # the DAG's connection setting (the api-server gets the same environment as the DAG's tasks)
    return os.environ.get("AWS_CONN_ID", Settings.aws_conn_id)


def create_app():
    from typing import Annotated

    from fastapi import Depends, FastAPI, HTTPException, Query
    from fastapi.responses import HTMLResponse, Response
    from sqlalchemy import select

    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from airflow.models.asset import AssetModel, TaskOutletAssetReference
    from airflow.models.dagrun import DagRun

    from fruits_pipeline import storage

    app = FastAPI(title="fruits_pipeline run report", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    def refusal_as_a_sentence(request, error: HTTPException) -> HTMLResponse:
        # the tab is on every DAG's run pages (Airflow has no per-DAG view): say why there is nothing
        return HTMLResponse(_page("Run report", f'<p data-field="refused">{_e(error.detail)}</p>'),
                            status_code=error.status_code, headers=error.headers)
    can_read_runs = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]
    DagId = Annotated[str, Query(description="the DAG id")]
    RunId = Annotated[str, Query(description="the run id")]

    def locate(session, dag_id: str, run_id: str) -> tuple[DagRun, str, str]:
        try:
            check_id(dag_id, "DAG id")
            check_id(run_id, "run id")
        except UnsafeId as error:
            raise HTTPException(400, str(error)) from None
        outlets = session.scalars(
            select(AssetModel.uri).join(TaskOutletAssetReference, TaskOutletAssetReference.asset_id == AssetModel.id)
            .where(TaskOutletAssetReference.dag_id == dag_id, TaskOutletAssetReference.task_id == REPORT_TASK_ID))
        lake = lake_of_outlets(list(outlets))
        if lake is None:
            raise HTTPException(404, f"DAG {dag_id!r} is not a fruits_pipeline DAG: it has no run report")
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None:
            raise HTTPException(404, f"DAG {dag_id!r} has no run {run_id!r}")
        run_type = getattr(run.run_type, "value", run.run_type)
        try:
            json_uri, picture_uri = report_uris(lake, str(run_type), run.run_id, run.data_interval_end)
        except UnsafeId as error:
            raise HTTPException(400, str(error)) from None
        return run, json_uri, picture_uri

    @app.get("/run", response_class=HTMLResponse, dependencies=can_read_runs)
    def run_page(dag_id: DagId, run_id: RunId, session: SessionDep) -> HTMLResponse:
        run, json_uri, _ = locate(session, dag_id, run_id)
        state = getattr(run.state, "value", run.state)
        report = storage.read_json(json_uri, _conn_id())
        if report is None:
            return HTMLResponse(render_no_report(dag_id, run_id, state))
        picture = (f"{URL_PREFIX}/picture?" + urlencode({"dag_id": dag_id, "run_id": run_id})
                   if (report.get("uris") or {}).get("picture") else None)
        return HTMLResponse(render_report(report, run_id=run_id, run_state=state, picture_url=picture))

    @app.get("/picture", dependencies=can_read_runs)
    def run_picture(dag_id: DagId, run_id: RunId, session: SessionDep) -> Response:
        _, _, picture_uri = locate(session, dag_id, run_id)
        if not storage.exists(picture_uri, _conn_id()):
            raise HTTPException(404, f"run {run_id!r} has no picture")
        return Response(storage.read_bytes(picture_uri, _conn_id()), media_type="image/png",
                        headers={"Cache-Control": "private, no-store"})

    return app


class AppBuiltOnFirstRequest:
    """An ASGI app that builds ``factory()`` when the first request comes: every Airflow process loads the
    plugins folder (each task process too, for macros), and only the api-server serves this app."""

    def __init__(self, factory):
        self.factory, self.app = factory, None

    async def __call__(self, scope, receive, send):
        if self.app is None:
            self.app = self.factory()
        await self.app(scope, receive, send)


EXTERNAL_VIEW = {
    "name": "Run report",
    "href": f"{URL_PREFIX}/run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
    "destination": "dag_run",
    "url_route": "fruits-run-report",
}
