"""Airflow plugin: the "Run report" tab on each fruits_pipeline run's page (fruits_pipeline/run_report_view.py).

Airflow loads the plugins folder's top-level files (plugins/.airflowignore keeps the package's own
modules out of that scan); the api-server mounts the app and the UI shows the view.
"""
from airflow.plugins_manager import AirflowPlugin

from fruits_pipeline.run_report_view import EXTERNAL_VIEW, URL_PREFIX, AppBuiltOnFirstRequest, create_app


class FruitsRunReportPlugin(AirflowPlugin):
    name = "fruits_run_report"
    fastapi_apps = [{"name": "fruits_run_report", "app": AppBuiltOnFirstRequest(create_app), "url_prefix": URL_PREFIX}]
    external_views = [EXTERNAL_VIEW]
