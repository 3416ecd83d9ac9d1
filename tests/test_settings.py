"""One source per setting: validation, parsing, and the pipeline and components derived from the settings."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import yaml

from musicrec.errors import SettingsError
from musicrec.settings import (
    PIPELINE_SETTINGS,
    AutoencoderSettings,
    BlessingSettings,
    CnnSettings,
    RatingSettings,
    TransformSettings,
    check_pipeline_arguments,
    parameter_descriptions,
)
from pipelines.local_run import parse_parameters
from pipelines.package import compile_pipeline

# Pipeline parameters that are not settings: the data, the destination and the Beam runner.
RUN_PARAMETERS = {"reviews_uri", "metadata_uri", "push_destination", "beam_runner", "beam_options"}
# Each settings class and the component whose parameters are its fields.
COMPONENT_OF = {
    TransformSettings: "preprocess", CnnSettings: "train-cnn", AutoencoderSettings: "train-autoencoder",
    RatingSettings: "train-dnn", BlessingSettings: "evaluate",
}  # fmt: skip


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return next(yaml.safe_load_all(compile_pipeline(tmp_path_factory.mktemp("c") / "p.yaml").read_text()))


def test_every_pipeline_parameter_is_a_setting_or_a_run_parameter_with_its_default_and_description(compiled):
    parameters = compiled["root"]["inputDefinitions"]["parameters"]
    derived = {p.name: p for cls in PIPELINE_SETTINGS for p in cls.parameters()}
    assert set(parameters) == set(derived) | RUN_PARAMETERS
    for name, parameter in derived.items():
        assert parameters[name]["defaultValue"] == parameter.default, name
        assert parameters[name]["description"] == f"{parameter.description}.", name
    assert parameter_descriptions().keys() == derived.keys()


def test_each_component_takes_exactly_its_settings_fields_with_their_descriptions(compiled):
    for cls, component in COMPONENT_OF.items():
        inputs = compiled["components"][f"comp-{component}"]["inputDefinitions"]["parameters"]
        fields = {field.name for field in dataclasses.fields(cls)}
        assert fields <= set(inputs), component
        for name, _, description in cls.parameters():
            assert inputs[name.removeprefix(cls.PREFIX)]["description"] == f"{description}.", name


def test_the_dag_passes_each_setting_to_its_component_unchanged(compiled):
    tasks = compiled["root"]["dag"]["tasks"]
    for cls, component in COMPONENT_OF.items():
        arguments = tasks[component]["inputs"]["parameters"]
        for name, _, _ in cls.parameters():
            assert arguments[name.removeprefix(cls.PREFIX)] == {"componentInputParameter": name}, name


def test_prefixes_are_distinct_and_no_parameter_name_is_shared():
    prefixes = [cls.PREFIX for cls in PIPELINE_SETTINGS]
    assert len(set(prefixes)) == len(prefixes) and all(p.endswith("_") for p in prefixes)
    names = [p.name for cls in PIPELINE_SETTINGS for p in cls.parameters()]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (lambda: TransformSettings(max_review_tokens=0), "preprocess_max_review_tokens must be at least 1, got 0"),
        (lambda: CnnSettings(dropout=1.0), "cnn_dropout must be below 1.0, got 1.0"),
        (lambda: CnnSettings(epochs=2.5), "cnn_epochs must be int, got 2.5"),
        (lambda: CnnSettings(seed=True), "cnn_seed must be int, got True"),
        (lambda: AutoencoderSettings(hidden_units="64,x"), "ae_hidden_units must be comma-separated positive"),
        (lambda: AutoencoderSettings(hidden_units=""), "ae_hidden_units must be comma-separated positive"),
        (lambda: RatingSettings(hidden_units=(64, 0)), "dnn_hidden_units must be comma-separated positive"),
        (lambda: RatingSettings(learning_rate=-1e-3), "dnn_learning_rate must be at least 0.0"),
        (lambda: BlessingSettings(min_sentiment_auc=1.5), "blessing_min_sentiment_auc must be at most 1.0"),
    ],
)
def test_a_bad_setting_is_one_clear_error_naming_the_pipeline_parameter(settings, message):
    with pytest.raises(SettingsError, match=f"^{message}"):
        settings()


def test_list_fields_parse_from_the_pipelines_comma_separated_strings():
    assert CnnSettings(kernel_sizes="2, 5").kernel_sizes == (2, 5)
    assert RatingSettings.from_parameters({"hidden_units": "16,8", "other": 1}).hidden_units == (16, 8)
    assert AutoencoderSettings(learning_rate=1).learning_rate == 1.0  # an int where a float is expected
    assert CnnSettings().to_dict()["kernel_sizes"] == [2, 3, 4]


def test_task_arguments_map_prefixed_pipeline_arguments_to_field_names():
    pipeline_arguments = {p.name: p.default for cls in PIPELINE_SETTINGS for p in cls.parameters()}
    assert CnnSettings.task_arguments(pipeline_arguments)["kernel_sizes"] == "2,3,4"
    assert set(RatingSettings.task_arguments(pipeline_arguments)) == {
        f.name for f in dataclasses.fields(RatingSettings)
    }


def test_bad_parameters_fail_before_a_run_starts():
    check_pipeline_arguments({"cnn_epochs": 2, "dnn_hidden_units": "8,4", "reviews_uri": "x"})
    with pytest.raises(SettingsError, match="^dnn_dropout must be below 1.0, got 1.5$"):
        parse_parameters(["dnn_dropout=1.5"])


def test_no_hyperparameter_hides_as_a_module_constant_in_the_training_code():
    """Early-stopping patience and the text-code sizes are settings now; the training code reads them there."""
    from musicrec.models import autoencoder, sentiment
    from musicrec.models.recommender import text_codes, train

    for module in (sentiment, autoencoder, train):
        assert "settings.patience" in inspect.getsource(module)
    assert not hasattr(text_codes, "TEXT_TOKENS") and not hasattr(text_codes, "TEXT_DIMS")
