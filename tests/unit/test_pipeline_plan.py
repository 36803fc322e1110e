"""The step list, its EMR and local renderings, the job flow and the trigger params: plain dicts."""
import sys
from pathlib import Path

import pytest

from fruits_pipeline.job_flow import build_job_flow
from fruits_pipeline.params import ParamsError, RunParams, param_specs
from fruits_pipeline.settings import Settings
from fruits_pipeline.steps import pipeline_steps, render_emr_steps, render_local_commands

S3 = Settings(lake_uri="s3://fruits-lake", region="eu-west-3", emr_release_label="emr-7.10.0")
CODE = "s3://fruits-lake/code/abc123"


def test_steps_pass_lake_paths_and_variance():
    steps = pipeline_steps(S3.lake, "2026-05-01T000000Z", weights_name="w.weights.h5", pca_k=None, pca_variance=0.9)
    features, pca = steps
    assert features.args == ("--images", "s3://fruits-lake/raw",
                              "--manifest", "s3://fruits-lake/manifests/2026-05-01T000000Z/valid",
                              "--output", "s3://fruits-lake/features/batch=2026-05-01T000000Z",
                              "--weights", "s3://fruits-lake/models/w.weights.h5")
    assert pca.args == ("--features", "s3://fruits-lake/features",
                        "--output", "s3://fruits-lake/pca/2026-05-01T000000Z", "--variance", "0.9")


def test_pca_k_overrides_variance_and_no_weights_means_no_flag():
    features, pca = pipeline_steps(S3.lake, "r", weights_name=None, pca_k=12, pca_variance=0.9)
    assert "--weights" not in features.args
    assert pca.args[-2:] == ("--k", "12") and "--variance" not in pca.args


def test_emr_rendering_runs_spark_submit_in_cluster_mode_and_cancels_after_a_failure():
    steps = render_emr_steps(pipeline_steps(S3.lake, "r", weights_name=None, pca_k=None, pca_variance=0.95),
                             CODE + "/", "r")
    assert [s["Name"] for s in steps] == ["extract_features r", "reduce_pca r"]
    assert steps[0]["ActionOnFailure"] == "CANCEL_AND_WAIT"
    jar = steps[0]["HadoopJarStep"]
    assert jar["Jar"] == "command-runner.jar"
    assert jar["Args"][:6] == ["spark-submit", "--deploy-mode", "cluster", "--py-files",
                               f"{CODE}/fruits_spark.zip", f"{CODE}/extract_features.py"]
    assert steps[1]["HadoopJarStep"]["Args"][5] == f"{CODE}/reduce_pca.py"


def test_local_rendering_has_the_same_arguments_as_emr():
    local = Settings(lake_uri="file:///tmp/lake dir", compute="local", spark_master="local[2]")
    steps = pipeline_steps(local.lake, "r", weights_name=None, pca_k=3, pca_variance=0.95)
    commands = render_local_commands(steps, Path("/repo/spark_jobs"), local.spark_master)
    emr = render_emr_steps(steps, CODE, "r")
    assert commands[0][:4] == [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]",
                               "/repo/spark_jobs/extract_features.py"]
    assert "file:///tmp/lake dir/raw" in commands[0]
    for command, step in zip(commands, emr):
        assert command[4:] == step["HadoopJarStep"]["Args"][6:]


def test_job_flow_for_spot_cluster():
    params = RunParams(instance_type="m5.2xlarge", core_instance_count=3, use_spot=True)
    flow = build_job_flow(S3, params, run_key="2026-05-01T000000Z", code_uri=CODE)
    assert flow["Name"] == "fruits-pipeline-2026-05-01T000000Z"
    assert flow["ReleaseLabel"] == "emr-7.10.0"
    assert flow["Applications"] == [{"Name": "Spark"}]
    master, core = flow["Instances"]["InstanceGroups"]
    assert (master["InstanceRole"], master["Market"], master["InstanceCount"]) == ("MASTER", "ON_DEMAND", 1)
    assert (core["InstanceRole"], core["Market"], core["InstanceType"], core["InstanceCount"]) == \
        ("CORE", "SPOT", "m5.2xlarge", 3)
    assert flow["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert flow["BootstrapActions"][0]["ScriptBootstrapAction"]["Path"] == \
        f"{CODE}/bootstrap/install_python_deps.sh"
    assert flow["LogUri"] == "s3://fruits-lake/logs/emr/"
    assert flow["SecurityConfiguration"] == S3.emr_security_configuration
    assert flow["AutoTerminationPolicy"] == {"IdleTimeout": S3.emr_idle_timeout_seconds}
    assert (flow["ServiceRole"], flow["JobFlowRole"]) == (S3.emr_service_role, S3.emr_instance_profile)
    env = flow["Configurations"][0]
    assert env["Classification"] == "spark-env"
    assert env["Configurations"][0]["Properties"]["PYSPARK_PYTHON"] == "python3.11"
    assert {t["Key"]: t["Value"] for t in flow["Tags"]} == {
        "project": "fruits-pipeline", "run_key": "2026-05-01T000000Z", "data-residency": "eu-west-3"}


def test_job_flow_on_demand_by_default():
    flow = build_job_flow(S3, RunParams(), run_key="r", code_uri=CODE)
    assert flow["Instances"]["InstanceGroups"][1]["Market"] == "ON_DEMAND"
    assert flow["Instances"]["InstanceGroups"][1]["InstanceCount"] == 2


def test_params_are_checked_and_named():
    assert RunParams.from_params({"pca_k": None, "use_spot": True}).use_spot is True
    for bad in ({"pca_variance": 0}, {"pca_variance": 1.5}, {"pca_k": 0}, {"core_instance_count": 0},
                {"instance_type": "t2.nano"}):
        with pytest.raises(ParamsError, match=next(iter(bad))):
            RunParams.from_params(bad)
    specs = param_specs()
    assert set(specs) == {"full_refresh", "pca_variance", "pca_k", "instance_type", "core_instance_count",
                          "use_spot", "dry_run"}
    assert all(spec.get("description") for spec in specs.values())


def test_sensor_timeouts_grow_with_the_work_and_shrink_with_the_cluster():
    from fruits_pipeline.tasks import sensor_max_polls

    small = sensor_max_polls(100, 2, poll=60)
    big = sensor_max_polls(150_000, 2, poll=60)
    wide = sensor_max_polls(150_000, 8, poll=60)
    assert small["extract_features"] >= 20  # the cluster start alone takes ~20 polls of 60 s
    assert big["extract_features"] > wide["extract_features"] > small["extract_features"]
    assert big["reduce_pca"] >= small["reduce_pca"] >= 15


def test_the_trigger_form_offers_only_instance_types_the_bootstrap_can_install_on():
    """tensorflow-cpu has no aarch64 wheel: a Graviton cluster would fail in its bootstrap action."""
    from fruits_pipeline.cost import load_price_table
    from fruits_pipeline.params import INSTANCE_TYPES
    from fruits_pipeline.settings import DEFAULT_PRICE_TABLE

    graviton = [t for t in INSTANCE_TYPES if t.split(".")[0].endswith("g")]
    assert not graviton
    priced = load_price_table(DEFAULT_PRICE_TABLE)["instances"]
    assert set(INSTANCE_TYPES) <= set(priced), "every offered type needs a price for the run report's cost"
