"""How overrides reach the config from the command line and from `mlflow run -P`."""

import pytest

from fsd.cli import split_overrides
from fsd.config import ConfigError


def test_positional_and_mlflow_style_overrides():
    assert split_overrides(["train.fold=1", "--model.width", "0.5", "--train.seed=3"]) == [
        "train.fold=1", "model.width=0.5", "train.seed=3"]


def test_declared_overrides_parameter_is_split():
    assert split_overrides(["train.fold=1 model.width=0.5", ""]) == ["train.fold=1", "model.width=0.5"]


def test_dangling_option_is_an_error():
    with pytest.raises(ConfigError, match="has no value"):
        split_overrides(["--model.width"])
    with pytest.raises(ConfigError, match="write key=value"):
        split_overrides(["width"])
