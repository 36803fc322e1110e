"""The "Run report" tab as a person sees it (plugins/fruits_run_report_plugin.py), and its access rules
checked against the suite's real api-server."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from selenium.webdriver.common.by import By

TAB_ROUTE = "fruits-run-report"  # the external view's url_route
PAGE = "/fruits-run-report/run"
PICTURE = "/fruits-run-report/picture"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def open_tab(browser, dag_id: str, run_id: str, screenshot=None) -> dict:
    """Open the run's page, click the tab; return {"fields": {data-field: text}, "picture_width": px or None}."""
    browser.open(f"/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}")
    browser.element(f"a[href$='/plugin/{TAB_ROUTE}']").click()
    frame = browser.element("iframe[title='Run report']")
    browser.driver.switch_to.frame(frame)
    try:
        try:
            browser.element("[data-field=status], [data-field=no_report]")
        except AssertionError as error:  # say what the frame shows instead
            raise AssertionError(f"{error}; the tab's frame shows: {browser.body_text()[:2000]!r}") from None
        pictures = browser.elements("img.picture")
        width = None
        if pictures:
            browser.wait(lambda: browser.driver.execute_script("return arguments[0].complete", pictures[0]),
                         "the picture to load")
            width = browser.driver.execute_script("return arguments[0].naturalWidth", pictures[0])
        fields = {e.get_attribute("data-field"): e.get_attribute("textContent").strip()
                  for e in browser.driver.find_elements(By.CSS_SELECTOR, "[data-field]")}
    finally:
        browser.driver.switch_to.default_content()
    if screenshot:
        browser.screenshot(screenshot, height=1250, width=1900)  # wide enough for the picture beside the numbers
    return {"fields": fields, "picture_width": width}


def assert_shows_the_report(shown: dict, report: dict) -> None:
    """The numbers on the tab are the report's."""
    counts, pca = report["counts"], report["pca"]
    assert shown["status"] == report["status"]
    for name in ("listed", "valid", "rejected", "already_featurized", "previously_rejected", "reduced"):
        assert shown[f"counts.{name}"] == str(counts[name]), name
    for reason, n in counts["rejected_by_reason"].items():
        assert shown[f"counts.rejected_by_reason.{reason}"] == str(n), reason
        assert shown[f"counts.rejected_examples.{reason}"].splitlines() == counts["rejected_examples"][reason], reason
    if counts.get("featurized") is not None:
        assert shown["counts.featurized"] == str(counts["featurized"])
    assert shown["pca.k"] == str(pca["k"]) and shown["pca.variance_kept"] == f"{pca['variance_kept']:.1%}"
    for step in report["steps"]:
        assert shown[f"steps.{step['name']}.state"] == step["state"]
        assert shown[f"steps.{step['name']}.seconds"] == f"{step['seconds']:.1f} s"
    assert shown.get("cluster_id") == report.get("cluster_id")
    if report.get("estimated_cost"):
        assert shown["estimated_cost.amount"] == str(report["estimated_cost"]["amount"])
    assert shown["orphan_clusters_terminated"] == str(len(report["orphan_clusters_terminated"]))


def get(base_url: str, path: str, query: dict | str, token: str | None = None) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET, with a bearer token or none at all (no cookie either)."""
    suffix = query if isinstance(query, str) else urllib.parse.urlencode(query)
    request = urllib.request.Request(f"{base_url}{path}?{suffix}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def token_for(base_url: str, username: str, password: str) -> str:
    request = urllib.request.Request(f"{base_url}/auth/token", method="POST",
                                     data=json.dumps({"username": username, "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]
