"""Who may import whom (docs/design.md, "Packages and their boundaries"), read from the sources' import
statements (every one, also those inside functions), not from a grep of names.

- the contract package imports Python's standard library only: the EMR zip, the Airflow worker and an
  app backend can all import it;
- the Airflow side (dags/, plugins/) never imports the Spark jobs' package, nor Spark;
- the Spark jobs never import Airflow or the Airflow side;
- the DAG's tasks reach none of the development tools (model converter, demo, cost projection CLI,
  packager's wheel download).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "spark_jobs" / "fruits_contract"
SPARK_SIDE = [REPO / "spark_jobs" / "fruits_spark", *sorted((REPO / "spark_jobs").glob("*.py"))]
AIRFLOW_SIDE = [REPO / "dags", REPO / "plugins"]


def python_files(*roots: Path) -> list[Path]:
    files = []
    for root in roots:
        files += [root] if root.is_file() else sorted(root.rglob("*.py"))
    return files


def imported_modules(source: Path) -> set[str]:
    """Every module an ``import``/``from ... import`` statement of ``source`` names (relative imports
    resolved against its package)."""
    tree = ast.parse(source.read_text(), filename=str(source))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = source.parent.name
                modules.add(f"{package}.{node.module}" if node.module else package)
            elif node.module:
                modules.add(node.module)
    return modules


def offenders(files: list[Path], forbidden) -> dict[str, list[str]]:
    found = {}
    for file in files:
        bad = sorted(module for module in imported_modules(file) if forbidden(module))
        if bad:
            found[str(file.relative_to(REPO))] = bad
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def test_the_reader_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import os\n\ndef f():\n    from fruits_spark.images import model_pixels\n    import pyspark.sql\n")
    assert imported_modules(source) == {"os", "fruits_spark.images", "pyspark.sql"}


def test_the_contract_imports_the_standard_library_only():
    assert python_files(CONTRACT), f"no sources under {CONTRACT}"
    found = offenders(python_files(CONTRACT),
                      lambda m: top(m) not in sys.stdlib_module_names and top(m) != "fruits_contract")
    assert found == {}


def test_the_airflow_side_never_imports_the_spark_jobs():
    found = offenders(python_files(*AIRFLOW_SIDE), lambda m: top(m) in ("fruits_spark", "pyspark", "py4j"))
    assert found == {}


def test_the_spark_jobs_never_import_airflow():
    found = offenders(python_files(*SPARK_SIDE), lambda m: top(m) in ("airflow", "fruits_pipeline", "fruits_infra"))
    assert found == {}


DEVELOPMENT_TOOLS = ("fruits_pipeline.demo", "fruits_pipeline.cost_projection", "fruits_pipeline.code_package",
                     "fruits_spark.model_conversion")


def modules_reached(start: str) -> set[str]:
    """The project modules ``start`` imports, directly or through others (any import statement)."""
    roots = {"fruits_pipeline": REPO / "plugins" / "fruits_pipeline", "fruits_contract": CONTRACT}
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen or top(module) not in roots:
            continue
        seen.add(module)
        path = roots[top(module)].joinpath(*module.split(".")[1:])
        file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if file.is_file():
            todo += sorted(imported_modules(file))
    return seen


@pytest.mark.parametrize("entry", ["fruits_pipeline.tasks", "fruits_pipeline.emr", "fruits_pipeline.params",
                                   "fruits_pipeline.settings", "fruits_pipeline.run_report_view"])
def test_the_dag_tasks_reach_no_development_tool(entry):
    reached = modules_reached(entry)
    assert "fruits_pipeline.validation" in reached or entry != "fruits_pipeline.tasks"  # the walk does follow imports
    assert sorted(reached & set(DEVELOPMENT_TOOLS)) == []
