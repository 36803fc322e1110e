"""The step list, its EMR and local renderings, the job flow and the trigger params: plain dicts."""
import sys
from pathlib import Path

import pytest

from fruits_pipeline.job_flow import build_job_flow
from fruits_pipeline.params import ParamsError, PcaTarget, RunParams, param_specs
from fruits_pipeline.settings import Settings
from fruits_pipeline.steps import pipeline_steps, render_emr_steps, render_local_commands

S3 = Settings(lake_uri="s3://fruits-lake", region="eu-west-3", emr_release_label="emr-7.10.0")
CODE = "s3://fruits-lake/code/abc123"


def test_steps_pass_lake_paths_and_variance():
    steps = pipeline_steps(S3.lake, "2026-05-01T000000Z", model_name="m-0123/m.tflite", pca_target=PcaTarget(variance=0.9))
    features, pca, classifier, predictions = steps
    assert features.args == ("--images", "s3://fruits-lake/raw",
                              "--manifest", "s3://fruits-lake/manifests/2026-05-01T000000Z/valid",
                              "--output", "s3://fruits-lake/features/batch=2026-05-01T000000Z",
                              "--model", "s3://fruits-lake/models/m-0123/m.tflite")
    assert pca.args == ("--features", "s3://fruits-lake/features",
                        "--output", "s3://fruits-lake/pca/2026-05-01T000000Z",
                        "--current", "s3://fruits-lake/pca/current.json", "--variance", "0.9")
    assert classifier.args == ("--pca", "s3://fruits-lake/pca/2026-05-01T000000Z",
                               "--labels", "s3://fruits-lake/manifests/2026-05-01T000000Z/labels",
                               "--current", "s3://fruits-lake/classifier/current.json",
                               "--output", "s3://fruits-lake/classifier/2026-05-01T000000Z")
    # The day's uploads answered by the classifier the app will answer with: this run's, when published.
    assert predictions.args == ("--features", "s3://fruits-lake/features/batch=2026-05-01T000000Z",
                                "--classifier", "s3://fruits-lake/classifier/2026-05-01T000000Z",
                                "--current", "s3://fruits-lake/classifier/current.json",
                                "--output", "s3://fruits-lake/predictions/2026-05-01T000000Z")


def test_pca_k_overrides_variance_and_no_model_means_no_flag():
    features, pca, *_ = pipeline_steps(S3.lake, "r", model_name=None, pca_target=PcaTarget(k=12))
    assert "--model" not in features.args
    assert pca.args[-2:] == ("--k", "12") and "--variance" not in pca.args


def test_emr_rendering_runs_spark_submit_in_cluster_mode_and_cancels_after_a_failure():
    steps = render_emr_steps(pipeline_steps(S3.lake, "r", model_name=None, pca_target=PcaTarget(variance=0.95)),
                             CODE + "/", "r")
    assert [s["Name"] for s in steps] == ["extract_features r", "reduce_pca r", "train_classifier r",
                                          "predict_uploads r"]
    assert steps[0]["ActionOnFailure"] == "CANCEL_AND_WAIT"
    jar = steps[0]["HadoopJarStep"]
    assert jar["Jar"] == "command-runner.jar"
    assert jar["Args"][:6] == ["spark-submit", "--deploy-mode", "cluster", "--py-files",
                               f"{CODE}/fruits_spark.zip", f"{CODE}/extract_features.py"]
    assert steps[1]["HadoopJarStep"]["Args"][5] == f"{CODE}/reduce_pca.py"
    # the classifier reads the PCA step's output, model and all, and writes classifier/<run_key>
    assert steps[2]["HadoopJarStep"]["Args"][5:] == [f"{CODE}/train_classifier.py", "--pca", S3.lake.pca("r"),
                                                      "--labels", S3.lake.manifest_labels("r"),
                                                      "--current", S3.lake.classifier_current(),
                                                      "--output", S3.lake.classifier("r")]
    assert steps[3]["HadoopJarStep"]["Args"][5] == f"{CODE}/predict_uploads.py"
    assert all(step["ActionOnFailure"] == "CANCEL_AND_WAIT" for step in steps)


def test_local_rendering_has_the_same_arguments_as_emr():
    local = Settings(lake_uri="file:///tmp/lake dir", compute="local", spark_master="local[2]")
    steps = pipeline_steps(local.lake, "r", model_name=None, pca_target=PcaTarget(k=3))
    commands = render_local_commands(steps, Path("/repo/spark_jobs"), local.spark_master)
    emr = render_emr_steps(steps, CODE, "r")
    assert commands[0][:4] == [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]",
                               "/repo/spark_jobs/extract_features.py"]
    assert "file:///tmp/lake dir/raw" in commands[0]
    for command, step in zip(commands, emr):
        assert command[4:] == step["HadoopJarStep"]["Args"][6:]


def test_job_flow_for_spot_cluster():
    params = RunParams(instance_type="m5.2xlarge", core_instance_count=3, use_spot=True)
    flow = build_job_flow(S3, params.cluster, run_key="2026-05-01T000000Z", code_uri=CODE)
    assert flow["Name"] == "fruits-pipeline-2026-05-01T000000Z"
    assert flow["ReleaseLabel"] == "emr-7.10.0"
    assert flow["Applications"] == [{"Name": "Spark"}]
    master, core = flow["Instances"]["InstanceGroups"]
    assert (master["InstanceRole"], master["Market"], master["InstanceCount"]) == ("MASTER", "ON_DEMAND", 1)
    assert (core["InstanceRole"], core["Market"], core["InstanceType"], core["InstanceCount"]) == \
        ("CORE", "SPOT", "m5.2xlarge", 3)
    assert flow["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert flow["BootstrapActions"][0]["ScriptBootstrapAction"] == {
        "Path": f"{CODE}/bootstrap/install_python_deps.sh", "Args": [f"{CODE}/wheelhouse"]}
    assert flow["LogUri"] == "s3://fruits-lake/logs/emr/"
    assert flow["SecurityConfiguration"] == S3.emr_security_configuration
    assert flow["AutoTerminationPolicy"] == {"IdleTimeout": S3.emr_idle_timeout_seconds}
    assert (flow["ServiceRole"], flow["JobFlowRole"]) == (S3.emr_service_role, S3.emr_instance_profile)
    env = flow["Configurations"][0]
    assert env["Classification"] == "spark-env"
    assert env["Configurations"][0]["Properties"]["PYSPARK_PYTHON"] == "python3.11"
    assert {t["Key"]: t["Value"] for t in flow["Tags"]} == {
        "project": "fruits-pipeline", "run_key": "2026-05-01T000000Z", "data-residency": "eu-west-3",
        "for-use-with-amazon-emr-managed-policies": "true"}  # AmazonEMRServicePolicy_v2 acts on tagged clusters only


def test_job_flow_on_demand_by_default():
    flow = build_job_flow(S3, RunParams().cluster, run_key="r", code_uri=CODE)
    assert flow["Instances"]["InstanceGroups"][1]["Market"] == "ON_DEMAND"
    assert flow["Instances"]["InstanceGroups"][1]["InstanceCount"] == 2


def test_the_workers_read_the_photos_in_the_lakes_region():
    """boto3 in the Python workers takes its region from the environment: the driver's and the
    executors' are the lake's, or S3 requests would go through us-east-1's endpoint first."""
    flow = build_job_flow(S3, RunParams().cluster, run_key="r", code_uri=CODE)
    (defaults,) = [c["Properties"] for c in flow["Configurations"] if c["Classification"] == "spark-defaults"]
    assert defaults["spark.executorEnv.AWS_REGION"] == defaults["spark.yarn.appMasterEnv.AWS_REGION"] == S3.region


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


def test_sensor_budgets_grow_with_the_work_shrink_with_the_cluster_and_add_up_along_the_steps():
    from fruits_pipeline.run_plan import sensor_max_polls

    every = ("extract_features", "reduce_pca", "train_classifier")
    small = sensor_max_polls(every, 100, 2, poll=60)
    big = sensor_max_polls(every, 150_000, 2, poll=60)
    wide = sensor_max_polls(every, 150_000, 8, poll=60)
    assert small["extract_features"] >= 20  # the cluster start alone takes ~20 polls of 60 s
    assert big["extract_features"] > wide["extract_features"] > small["extract_features"]
    assert big["reduce_pca"] >= small["reduce_pca"] >= 15
    assert big["train_classifier"] > small["train_classifier"] >= 15
    # Every sensor starts when the steps are added: a later step's budget holds the earlier steps' time.
    for polls in (small, big, wide):
        assert polls["extract_features"] < polls["reduce_pca"] < polls["train_classifier"]
    pca_only = sensor_max_polls(("reduce_pca", "train_classifier"), 0, 1, poll=60, featurized_images=150_000)
    assert list(pca_only) == ["reduce_pca", "train_classifier"] and pca_only["reduce_pca"] >= 20 + 15


def test_the_trigger_form_offers_the_price_tables_instance_types(tmp_path):
    """One source of truth: the form's enum is the price table's rows, so every cluster has a price."""
    import json

    from fruits_pipeline.cost import load_price_table
    from fruits_pipeline.settings import DEFAULT_PRICE_TABLE

    priced = load_price_table(DEFAULT_PRICE_TABLE)["instances"]
    enum = param_specs()["instance_type"]["enum"]
    assert sorted(enum) == sorted(priced) and len(enum) == len(set(enum))
    assert enum.index("m5.xlarge") < enum.index("m5.2xlarge") < enum.index("m5.4xlarge")
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"instances": {"x9.xlarge": {}, "x9.2xlarge": {}}}))
    assert param_specs("x9.xlarge", price_table=table)["instance_type"]["enum"] == ["x9.xlarge", "x9.2xlarge"]
    assert RunParams.from_params({"instance_type": "x9.2xlarge"}, table).instance_type == "x9.2xlarge"
    with pytest.raises(ParamsError, match="m5.xlarge.*not one of x9.xlarge, x9.2xlarge"):
        RunParams.from_params({}, table)


def test_every_param_has_a_title_and_a_one_line_description_with_its_range():
    specs = param_specs()
    for name, spec in specs.items():
        assert spec["title"] and spec["title"] != name, name
        assert "\n" not in spec["description"] and len(spec["description"]) < 240, name
    assert "0 < v <= 1" in specs["pca_variance"]["description"]
    assert "1..1280" in specs["pca_k"]["description"]
    assert "1..20" in specs["core_instance_count"]["description"]
    for boolean in ("full_refresh", "use_spot", "dry_run"):
        assert specs[boolean]["description"].startswith("Yes/no"), boolean
    local = param_specs(compute="local")
    assert {n for n, spec in local.items() if spec["description"].startswith("EMR runs only")} == \
        {"instance_type", "core_instance_count", "use_spot"}
    assert not any("EMR runs only" in spec["description"] for spec in specs.values())


def test_pca_target_is_k_when_given_else_the_variance_and_has_one_shape_everywhere():
    from fruits_pipeline.params import PcaTarget

    assert RunParams.from_params({"pca_k": 8, "pca_variance": 0.9}).pca_target == PcaTarget(k=8)
    assert RunParams.from_params({"pca_variance": 0.9}).pca_target == PcaTarget(variance=0.9)
    target = RunParams.from_params({}).pca_target
    assert (target.as_dict(), target.job_args(), str(target)) == ({"variance": 0.95}, ["--variance", "0.95"],
                                                                   "variance 0.95")
    eight = PcaTarget(k=8)
    assert (eight.as_dict(), eight.job_args(), str(eight)) == ({"k": 8}, ["--k", "8"], "k=8")
    assert PcaTarget.from_dict(eight.as_dict()) == eight and PcaTarget.from_dict(None) is None
    for neither_or_both in ({}, {"k": 8, "variance": 0.9}):
        with pytest.raises(ParamsError, match="one of the two"):
            PcaTarget(**neither_or_both)


LATEST = {"run_key": "2026-05-01T000000Z", "pca_target": {"variance": 0.95}, "pca_uri": "s3://b/pca/x"}


@pytest.mark.parametrize("valid, dry_run, target, latest, featurized, route, because", [
    (3, True, {"variance": 0.95}, LATEST, 10, "dry_run", "dry run"),
    (3, False, {"variance": 0.95}, LATEST, 10, "features_and_pca", "3 valid new upload"),
    (0, False, {"variance": 0.95}, LATEST, 10, "nothing_to_do", "is the latest PCA output's (run 2026-05-01T000000Z)"),
    (0, False, {"k": 8}, LATEST, 10, "pca_only", "k=8 differs from the latest PCA output's (variance 0.95"),
    (0, False, {"variance": 0.9}, LATEST, 10, "pca_only", "variance 0.9 differs"),
    (0, False, {"variance": 0.95}, None, 10, "pca_only", "no PCA output yet for the 10 featurized images"),
    (0, False, {"k": 8}, None, 0, "nothing_to_do", "no features yet"),
])
def test_the_route_and_why(valid, dry_run, target, latest, featurized, route, because):
    from fruits_pipeline.params import PcaTarget
    from fruits_pipeline.run_plan import decide_route

    got, why = decide_route(valid, dry_run, pca_target=PcaTarget.from_dict(target), latest_pca=latest,
                            featurized_count=featurized)
    assert got == route and because in why


def test_new_confirmed_labels_alone_train_again_without_featurizing():
    from fruits_pipeline.params import PcaTarget
    from fruits_pipeline.run_plan import decide_route, make_plan

    target = PcaTarget.from_dict({"variance": 0.95})
    trained_on = LATEST | {"labels_digest": "aaa"}
    assert decide_route(0, False, pca_target=target, latest_pca=trained_on, featurized_count=10,
                        labels_digest="aaa")[0] == "nothing_to_do"
    route, why = decide_route(0, False, pca_target=target, latest_pca=trained_on, featurized_count=10,
                              labels_digest="bbb")
    assert route == "pca_only" and "confirmed labels changed" in why
    # A lake without labels, read by a pointer written before labels existed: no retraining every day.
    assert decide_route(0, False, pca_target=target, latest_pca=LATEST, featurized_count=10,
                        labels_digest=None)[0] == "nothing_to_do"
    plan = make_plan("r", RunParams(), {"valid": 0, "featurized_in_lake": 10, "labels": {"digest": "bbb"}},
                     latest_pca=trained_on, poll_seconds=60)
    assert plan.steps == ("reduce_pca", "train_classifier"), "new labels: no upload to featurize or predict"


def test_the_plan_runs_the_pca_steps_alone_on_a_small_cluster_when_only_the_target_changed():
    from fruits_pipeline.run_plan import RunPlan, cluster_for, make_plan

    form = RunParams(core_instance_count=6, instance_type="m5.2xlarge", use_spot=True, pca_k=8)
    validation = {"valid": 0, "featurized_in_lake": 5_000, "listed": 0, "rejected": 0}
    plan = make_plan("r", form, validation, latest_pca=LATEST, poll_seconds=60)
    assert (plan.route, plan.steps, plan.latest_pca_run) == ("pca_only", ("reduce_pca", "train_classifier"),
                                                             LATEST["run_key"])
    assert (plan.cluster.core_instance_count, plan.cluster.instance_type, plan.cluster.use_spot) == \
        (1, "m5.2xlarge", True)
    assert RunPlan.from_xcom(plan.to_xcom()) == plan  # what every later task reads back
    import json
    assert json.loads(json.dumps(plan.to_xcom())) == plan.to_xcom()  # XCom holds it as JSON

    steps = [step for step in pipeline_steps(S3.lake, "r", model_name=None, pca_target=plan.pca_target)
             if step.name in plan.steps]
    assert [step.args[-2:] for step in steps][0] == ("--k", "8")
    assert [s["Name"] for s in render_emr_steps(steps, CODE, "r")] == ["reduce_pca r", "train_classifier r"]
    flow = build_job_flow(S3, plan.cluster, run_key="r", code_uri=CODE)
    assert flow["Instances"]["InstanceGroups"][1]["InstanceCount"] == 1

    assert cluster_for("features_and_pca", form, 10**6) == form.cluster
    assert cluster_for("pca_only", form, 450_000).core_instance_count == 3
    assert cluster_for("pca_only", form, 10**7).core_instance_count == 6, "never more than the form asks"
    nothing = make_plan("r", RunParams(), validation | {"featurized_in_lake": 0}, latest_pca=None, poll_seconds=60)
    assert (nothing.route, nothing.steps, nothing.has_work) == ("nothing_to_do", (), False)


def test_the_current_pca_and_classifier_are_named_by_pointers_a_successful_run_writes(tmp_path):
    from fruits_contract.lake import Lake
    from fruits_pipeline.report import current_classifier, current_pca, write_current_pointers

    lake = Lake(f"file://{tmp_path}")
    assert current_pca(lake, None) is None and current_classifier(lake, None) is None
    ran = {"run_key": "day1", "status": "success", "pca_target": {"k": 8},
           "uris": {"pca": lake.pca("day1")}, "classifier": {"uri": lake.classifier("day1"), "accuracy": 0.9}}
    write_current_pointers(lake, ran, None)
    assert current_pca(lake, None) == {"run_key": "day1", "pca_uri": lake.pca("day1"), "pca_target": {"k": 8},
                                       "labels_digest": None}
    assert current_classifier(lake, None) == {"run_key": "day1", "classifier_uri": lake.classifier("day1"),
                                              "accuracy": 0.9}
    assert current_pca(lake, None, exclude_run_key="day1") is None, "a rerun does not build on itself"
    # A failed run, or one that trained no classifier, moves nothing it did not make.
    write_current_pointers(lake, {**ran, "run_key": "day2", "status": "failed", "uris": {"pca": lake.pca("day2")}},
                           None)
    write_current_pointers(lake, {**ran, "run_key": "day3", "uris": {"pca": lake.pca("day3")}, "classifier": None},
                           None)
    assert current_pca(lake, None)["run_key"] == "day3" and current_classifier(lake, None)["run_key"] == "day1"
    # A classifier its step found worse than the current one is kept, not published.
    worse = {"published": False, "why": "worse by more than 1 point"}
    write_current_pointers(lake, {**ran, "run_key": "day4", "uris": {"pca": lake.pca("day4")},
                                  "classifier": {"uri": lake.classifier("day4"), "publication": worse}}, None)
    assert current_pca(lake, None)["run_key"] == "day4" and current_classifier(lake, None)["run_key"] == "day1"
    write_current_pointers(lake, {**ran, "run_key": "day5", "uris": {"pca": lake.pca("day5")},
                                  "classifier": {"uri": lake.classifier("day5"), "publication": {"published": True}},
                                  "labels": {"digest": "d5"}}, None)
    assert current_classifier(lake, None)["run_key"] == "day5" and current_pca(lake, None)["labels_digest"] == "d5"
    # Written whole (a hidden file renamed over it): nothing half-written is ever left beside it.
    assert sorted(p.name for p in (tmp_path / "pca").iterdir()) == ["current.json"]
