"""The variable-length MobileNetV2, the two networks, stage transfer, weights, TTA."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fsd.config import ModelConfig
from fsd.model.inference import crop_offsets
from fsd.model.mobilenet import WeightsError, load_backbone_weights, mobilenet_v2_features
from fsd.model.networks import MEL_BRANCH, build_network, network_pca_dim, transfer_mel_branch
from fsd.model.tta import predict_ensemble

TINY = ModelConfig(width=0.35, dense1=32, dense2=16)


def test_parameter_count_of_the_recipe_network():
    stage2 = build_network(ModelConfig(width=1.0), 41, pca_dim=350)
    assert stage2.count_params() == 5_378_330  # the recipe's "5.38 M"
    assert network_pca_dim(stage2) == 350


@pytest.mark.parametrize("frames", [97, 96])
def test_backbone_equals_keras_applications_at_static_sizes(frames):
    """Same layer names and weights, 'same' padding == correct_pad + 'valid' (odd and even)."""
    ref = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35,
                                         input_shape=(frames, 64, 3))
    inp = keras.Input((None, 64, 3))
    mine = keras.Model(inp, mobilenet_v2_features(inp, 0.35))
    rng = np.random.default_rng(0)
    for layer in mine.layers:
        if layer.weights:
            weights = [w + rng.normal(scale=0.05, size=w.shape).astype(w.dtype)
                       for w in ref.get_layer(layer.name).get_weights()]
            ref.get_layer(layer.name).set_weights(weights)
            layer.set_weights(weights)
    assert ref.count_params() == mine.count_params()
    x = rng.random((2, frames, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(mine.predict_on_batch(x), ref.predict_on_batch(x), atol=1e-4)


def test_networks_take_any_length():
    n_classes = 5
    stage1 = build_network(TINY, n_classes)
    stage2 = build_network(TINY, n_classes, pca_dim=7)
    stage2.compile(run_eagerly=True)  # stage 1 covers graph mode; tracing twice costs seconds
    assert stage1.inputs[0].shape[1] is None
    rng = np.random.default_rng(0)
    for frames in (50, 263, 401):
        x = rng.random((2, frames, 64, 1), dtype=np.float32)
        p1 = stage1.predict_on_batch(x)
        p2 = stage2.predict_on_batch([x, rng.random((2, 7), dtype=np.float32)])
        for p in (p1, p2):
            assert p.shape == (2, n_classes)
            np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)


def test_stage_transfer_copies_the_whole_mel_branch_and_freezes_nothing():
    stage1 = build_network(TINY, 4)
    rng = np.random.default_rng(1)
    stage1.set_weights([w + rng.normal(size=w.shape).astype(w.dtype) for w in stage1.get_weights()])
    stage2 = build_network(TINY, 4, pca_dim=6)
    transfer_mel_branch(stage1, stage2)
    src, dst = stage1.get_layer(MEL_BRANCH), stage2.get_layer(MEL_BRANCH)
    names = [layer.name for layer in dst.layers if layer.weights]
    assert {"mel_bn", "mel_conv1", "mel_conv2", "Conv1", "block_16_project", "Conv_1_bn"} <= set(names)
    for a, b in zip(src.get_weights(), dst.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the head is fresh: its first dense layer does not carry stage 1's weights
    assert not np.array_equal(stage1.get_layer("head_dense2").get_weights()[0],
                              stage2.get_layer("head_dense2").get_weights()[0])
    assert all(layer.trainable for layer in [*stage2.layers, *dst.layers])
    with pytest.raises(ValueError):
        transfer_mel_branch(build_network(ModelConfig(width=0.5, dense1=8, dense2=8), 4), stage2)


def test_saved_model_loads_without_custom_code(tmp_path):
    model = build_network(TINY, 3, pca_dim=4)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    x = np.random.default_rng(0).random((1, 77, 64, 1), dtype=np.float32)
    pca = np.ones((1, 4), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch([x, pca]), model.predict_on_batch([x, pca]),
                               rtol=1e-5)


def test_backbone_weights_from_files(tmp_path):
    ref = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35,
                                         input_shape=(224, 224, 3))
    ref.set_weights([w + 0.5 for w in ref.get_weights()])
    h5 = tmp_path / "mnv2.weights.h5"
    ref.save_weights(h5)
    branch = build_network(ModelConfig(width=0.35, dense1=8, dense2=8, backbone_weights=str(h5)),
                           3).get_layer(MEL_BRANCH)
    np.testing.assert_array_equal(branch.get_layer("block_5_expand").get_weights()[0],
                                  ref.get_layer("block_5_expand").get_weights()[0])
    # a saved fold model (nested mel branch) works as a source too
    fold_model = build_network(TINY, 3)
    fold_model.get_layer(MEL_BRANCH).get_layer("Conv_1").set_weights(
        [np.full_like(w, 0.25) for w in fold_model.get_layer(MEL_BRANCH).get_layer("Conv_1").get_weights()])
    fold_model.save(tmp_path / "fold.keras")
    target = build_network(TINY, 3)
    assert load_backbone_weights(target.get_layer(MEL_BRANCH), str(tmp_path / "fold.keras"), 0.35) > 0
    assert (target.get_layer(MEL_BRANCH).get_layer("Conv_1").get_weights()[0] == 0.25).all()
    with pytest.raises(WeightsError, match="no such file"):
        build_network(ModelConfig(width=0.35, backbone_weights=str(tmp_path / "nope.h5")), 3)
    with pytest.raises(WeightsError, match="not a MobileNetV2"):
        load_backbone_weights(build_network(ModelConfig(width=0.5, dense1=8, dense2=8), 3)
                              .get_layer(MEL_BRANCH), str(h5), 0.5)


def test_imagenet_offline_is_a_clear_error(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(WeightsError) as err:
        build_network(ModelConfig(width=0.35, backbone_weights="imagenet"), 3)
    msg = str(err.value)
    assert "model.backbone_weights=/path/to/" in msg and "0.35_224_no_top.h5" in msg
    with pytest.raises(WeightsError, match="widths"):
        build_network(ModelConfig(width=0.2, backbone_weights="imagenet"), 3)


# ---------------------------------------------------------------- inference


def test_crop_offsets_centre_and_random():
    np.testing.assert_array_equal(crop_offsets(np.array([10, 4, 6]), 6, None), [2, 1, 0])
    assert (crop_offsets(np.array([10] * 50), 6, np.linspace(0, 0.999, 50)) <= 4).all()


def test_tta_is_safe_with_zero_probabilities():
    class Hard:
        inputs = [None]

        def predict_on_batch(self, x):
            return np.tile([1.0, 0.0], (len(x), 1)).astype(np.float32)

    out = predict_ensemble([Hard()], [np.zeros((10, 4), np.float32)], [None], [8, 12], crops=2).probs()
    assert np.isfinite(out).all() and out[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("mel_first", [False, True])
def test_cnn_backbone_takes_any_length_saves_and_transfers(tmp_path, mel_first):
    cfg = ModelConfig(backbone="cnn", cnn_channels=[4, 8, 16], cnn_convs=1, dense1=8, dense2=8,
                      dropout=0.2, mel_first=mel_first)
    stage1 = build_network(cfg, 3, n_mels=16)
    stage1.compile(run_eagerly=True)
    names = {layer.name for layer in stage1.get_layer(MEL_BRANCH).layers}
    assert {"cnn_block0_conv1", "cnn_block2_conv1", "cnn_freq_mean"} <= names
    assert not any(n.startswith("block_") for n in names), "no MobileNetV2 blocks in the cnn"
    rng = np.random.default_rng(0)
    for frames in (9, 40, 123):
        p = stage1.predict_on_batch(rng.random((2, frames, 16, 1), dtype=np.float32))
        assert p.shape == (2, 3)
        np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    stage2 = build_network(cfg, 3, n_mels=16, pca_dim=5)
    transfer_mel_branch(stage1, stage2)
    for a, b in zip(stage1.get_layer(MEL_BRANCH).get_weights(),
                    stage2.get_layer(MEL_BRANCH).get_weights()):
        np.testing.assert_array_equal(a, b)
    stage2.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    x = [rng.random((1, 50, 16, 1), dtype=np.float32), np.ones((1, 5), np.float32)]
    np.testing.assert_allclose(loaded.predict_on_batch(x), stage2.predict_on_batch(x), rtol=1e-5)


def test_mel_first_transposes_the_input():
    """With mel_first the backbone sees (mel, time): the frequency axis is the image height."""
    cfg = ModelConfig(width=0.35, dense1=8, dense2=8, mel_first=True)
    branch = build_network(cfg, 3).get_layer(MEL_BRANCH)
    permute = branch.get_layer("mel_first")
    assert tuple(permute.output.shape[1:3]) == (64, None)


def test_pretrained_weights_are_refused_for_the_cnn():
    from fsd.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="model.backbone_weights"):
        from_dict({"model": {"backbone": "cnn", "backbone_weights": "imagenet"}})
    with pytest.raises(ConfigError, match="model.backbone must be"):
        from_dict({"model": {"backbone": "resnet"}})


def test_mixed_bfloat16_network_trains_saves_and_leaves_the_global_policy(tmp_path):
    cfg = ModelConfig(backbone="cnn", cnn_channels=[8, 16], cnn_convs=1, dense1=16, dense2=8,
                      precision="mixed_bfloat16")
    model = build_network(cfg, 3, 16, pca_dim=4)
    assert keras.config.dtype_policy().name == "float32"  # only this network's layers changed
    conv = model.get_layer(MEL_BRANCH).get_layer("cnn_block0_conv1")
    assert conv.dtype_policy.name == "mixed_bfloat16" and conv.kernel.dtype == "float32"
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = [np.random.default_rng(0).random((4, 20, 16, 1), "float32"), np.ones((4, 4), "float32")]
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    assert np.isfinite(model.train_on_batch(x, y))
    probs = model.predict_on_batch(x)
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert loaded.get_layer(MEL_BRANCH).get_layer("cnn_block0_conv1").dtype_policy.name == \
        "mixed_bfloat16"
    np.testing.assert_allclose(loaded.predict_on_batch(x), probs, atol=1e-6)
