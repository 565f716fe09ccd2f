"""Property-based fuzzing (hypothesis) of the config loader: random configs and YAML alias bombs
are loaded or refused briefly, with a ConfigError."""

from __future__ import annotations

import pytest
from fuzz_strategies import SETTINGS
from hypothesis import given
from hypothesis import strategies as st

yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))


config_keys = st.sampled_from(["name", "output_dir", "data", "audio", "folds", "model", "train",
                               "ensemble", "store", "logmel", "pca", "bogus"])


field_keys = st.sampled_from(["n_folds", "sample_rate", "hop_length", "n_mels", "width",
                              "cnn_channels", "audio_dir", "tta_lengths", "fold", "shard_size",
                              "n_components", "cache_dir", "source", "x"])


@SETTINGS
@given(st.dictionaries(config_keys, st.one_of(
    yaml_scalars, st.lists(yaml_scalars, max_size=4),
    st.dictionaries(field_keys, st.one_of(yaml_scalars, st.lists(yaml_scalars, max_size=4)),
                    max_size=4)), max_size=5))
def test_the_config_loader_loads_or_refuses_briefly(data):
    from fsd.config import ConfigError, from_dict

    try:
        cfg = from_dict(data)
    except ConfigError as exc:
        assert len(str(exc)) < 600
        return
    assert "/" not in cfg.name and ".." not in cfg.name


@SETTINGS
@given(st.text(max_size=300), st.integers(1, 6), st.integers(1, 6))
def test_random_yaml_and_alias_bombs_are_refused_briefly(text, depth, width):
    import yaml

    from fsd.config import ConfigError, safe_yaml

    bomb = "\n".join([f"a0: &a0 [{', '.join(['x'] * width)}]"] + [
        f"a{d}: &a{d} [{', '.join([f'*a{d - 1}'] * width)}]" for d in range(1, depth)])
    for doc in (text, bomb):
        try:
            safe_yaml(doc, "fuzz", limit=2000)
        except ConfigError as exc:
            assert len(str(exc)) < 300
        except yaml.YAMLError:  # pragma: no cover - must not escape
            raise AssertionError("a YAMLError escaped")
    if width ** depth > 4000:
        with pytest.raises(ConfigError):
            safe_yaml(bomb, "fuzz", limit=2000)
