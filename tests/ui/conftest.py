"""One real Airflow for the whole UI suite, a moto server for its EMR DAG, and one headless chromium:
package-scoped, so all three stop when the last test of tests/ui has run.

Airflow runs as separate processes (ui_airflow.py) with an environment built from scratch, so
nothing from this test process or the other test folders' Airflow configuration reaches it.
Screenshots go to a temporary folder, or to $FRUITS_UI_SCREENSHOTS (`make screenshots` points it
at tests/ui/screenshots, the copies the README shows).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import boto3
import pytest

from moto_emr import REGION, free_port, moto_server, write_fake_wheelhouse

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ui_airflow, ui_browser

from ui_airflow import Airflow, ADMIN, airflow_environment, prepare_home  # noqa: E402
from ui_browser import Browser, find_chromium  # noqa: E402

EMR_BUCKET = "fruits-ui-emr"
EMR_POLL_SECONDS = 4  # the trigger's poll: above the few seconds a deferring try's executor event takes
EMR_SUBNET = "subnet-0f1e36df00000000"  # moto's EMR accepts any subnet id; tests/infra tests the network


@pytest.fixture(scope="package")
def moto_endpoint():
    with moto_server(verbose=False) as endpoint:
        yield endpoint


@pytest.fixture(scope="package")
def aws(moto_endpoint):
    return {name: boto3.client(name, region_name=REGION, endpoint_url=moto_endpoint,
                               aws_access_key_id="testing", aws_secret_access_key="testing")
            for name in ("s3", "emr")}


@pytest.fixture(scope="package")
def local_lake(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui_lake")


@pytest.fixture(scope="package")
def airflow(tmp_path_factory, moto_endpoint, local_lake):
    """Airflow's four components, started once, stopped at the end of the session whatever happens."""
    home = tmp_path_factory.mktemp("ui_airflow_home")
    port, health_port = free_port(), free_port()
    env = airflow_environment(home, port=port, health_port=health_port, lake_root=local_lake,
                              moto_endpoint=moto_endpoint)
    emr_settings = {"FRUITS_COMPUTE": "emr", "FRUITS_LAKE_URI": f"s3://{EMR_BUCKET}",
                    "FRUITS_REGION": REGION, "FRUITS_POLL_SECONDS": str(EMR_POLL_SECONDS),
                    "FRUITS_EMR_SUBNET_ID": EMR_SUBNET,
                    "FRUITS_WHEELHOUSE": str(write_fake_wheelhouse(home / "wheelhouse"))}
    password = prepare_home(home, emr_settings)
    server = Airflow(home=home, env=env, port=port, health_port=health_port, password=password)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser(request):
    binaries = find_chromium()
    if binaries is None:
        message = "chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("FRUITS_UI_REQUIRED"):  # .ci/run: the UI suite must run, not skip
            pytest.fail(message)
        pytest.skip(message)
    airflow = request.getfixturevalue("airflow")  # only once a browser is there to use it
    session = Browser(airflow.base_url, binaries)
    try:
        session.login(ADMIN, airflow.password)
        yield session
    finally:
        session.quit()


@pytest.fixture(scope="package")
def screenshots(tmp_path_factory) -> Path:
    target = os.environ.get("FRUITS_UI_SCREENSHOTS")
    return Path(target).resolve() if target else tmp_path_factory.mktemp("ui_screenshots")
