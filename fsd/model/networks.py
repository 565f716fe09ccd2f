"""The recipe's two networks and the stage-1 -> stage-2 transfer.

Both networks call one sub-model, ``mel_branch``: BN -> 1x1 conv -> 1x1 conv -> MobileNetV2 ->
global average pooling (the recipe), or BN -> the small VGG-style CNN of :mod:`fsd.model.cnn`
(``model.backbone: cnn``). Stage 2 is initialised from stage 1 by copying that sub-model's
weights as a whole, so the transfer is by structure, not by guessing layer names; the dense
head is fresh and nothing is frozen.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from fsd.config import ModelConfig
from fsd.model.cnn import vgg_features
from fsd.model.mobilenet import load_backbone_weights, mobilenet_v2_features

MEL_BRANCH = "mel_branch"
MEL_INPUT = "logmel"
PCA_INPUT = "pca"


def build_mel_branch(model_cfg: ModelConfig, n_mels: int = 64) -> keras.Model:
    """(batch, time, n_mels, 1) with any time length -> (batch, backbone channels)."""
    inp = keras.Input((None, n_mels, 1), name="mel_branch_input")
    x = inp
    if model_cfg.mel_first:
        x = layers.Permute((2, 1, 3), name="mel_first")(x)
    x = layers.BatchNormalization(momentum=model_cfg.head_bn_momentum, name="mel_bn")(x)
    if model_cfg.backbone == "cnn":
        if model_cfg.cnn_stem_pool > 1:
            x = layers.AveragePooling2D(model_cfg.cnn_stem_pool, padding="same",
                                        name="cnn_stem_pool")(x)
        features = vgg_features(x, model_cfg.cnn_channels, model_cfg.cnn_convs,
                                model_cfg.bn_momentum, model_cfg.mel_first)
        return keras.Model(inp, features, name=MEL_BRANCH)
    x = layers.Conv2D(model_cfg.conv1_filters, 1, activation="relu", name="mel_conv1")(x)
    x = layers.Conv2D(model_cfg.conv2_filters, 1, activation="relu", name="mel_conv2")(x)
    x = mobilenet_v2_features(x, alpha=model_cfg.width, bn_momentum=model_cfg.bn_momentum)
    x = layers.GlobalAveragePooling2D(name="mel_gap")(x)
    branch = keras.Model(inp, x, name=MEL_BRANCH)
    load_backbone_weights(branch, model_cfg.backbone_weights, model_cfg.width)
    return branch


def build_network(model_cfg: ModelConfig, n_classes: int, n_mels: int = 64,
                  pca_dim: int | None = None) -> keras.Model:
    """Stage 1 (``pca_dim=None``: log-mel only) or stage 2 (log-mel + PCA vector) network.

    Inputs are ``logmel`` (batch, time, n_mels, 1) and, for stage 2, ``pca`` (batch, pca_dim);
    the output is a softmax over ``n_classes``.
    """
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {n_classes}")
    # Layers take the global dtype policy when they are made (and save it): set it for this
    # network only, so other models of the process keep theirs.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(model_cfg.precision)
    try:
        return _build_network(model_cfg, n_classes, n_mels, pca_dim)
    finally:
        keras.config.set_dtype_policy(previous)


def _build_network(model_cfg: ModelConfig, n_classes: int, n_mels: int,
                   pca_dim: int | None) -> keras.Model:
    mel = keras.Input((None, n_mels, 1), name=MEL_INPUT)
    x = build_mel_branch(model_cfg, n_mels)(mel)
    inputs = [mel]
    if pca_dim:
        pca = keras.Input((pca_dim,), name=PCA_INPUT)
        inputs.append(pca)
        x = layers.Concatenate(name="concat")([x, layers.BatchNormalization(
            momentum=model_cfg.head_bn_momentum, name="pca_bn")(pca)])
    for i, units in enumerate((model_cfg.dense1, model_cfg.dense2), start=1):
        if model_cfg.dropout:
            x = layers.Dropout(model_cfg.dropout, name=f"head_dropout{i}")(x)
        x = layers.Dense(units, activation="relu", name=f"head_dense{i}")(x)
        x = layers.BatchNormalization(momentum=model_cfg.head_bn_momentum,
                                      name=f"head_bn{i}")(x)
    if model_cfg.dropout:
        x = layers.Dropout(model_cfg.dropout, name="head_dropout3")(x)
    # float32 softmax under mixed precision: probabilities near 0 and 1 keep their precision
    out = layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)
    name = "mel_pca_net" if pca_dim else "mel_net"
    return keras.Model(inputs if pca_dim else mel, out, name=name)


def set_input_statistics(model: keras.Model, logmel: tuple | None = None,
                         pca: tuple | None = None) -> None:
    """Start the input BatchNorms' moving statistics at the training data's own: ``logmel``
    (mean, var) for ``mel_bn``, ``pca`` (per-dimension means, vars) for stage 2's ``pca_bn``.

    Their inputs do not depend on any weight, so the right statistics are known before the
    first step. Left at (0, 1) they need ~1/(1 - momentum) steps to get there, and until then
    the network in inference mode (validation, serving) sees inputs scaled unlike any batch it
    trained on: the log-mels are in [0, 1] with a variance near 0.05, so a fresh ``mel_bn``
    shrinks them ~4x. Training still looks fine, as it normalises with batch statistics.
    (The later BNs' inputs move with the weights; their momentum is ``model.head_bn_momentum``
    and ``model.bn_momentum``.)
    """
    layers_stats = []
    if logmel is not None:
        layers_stats.append((model.get_layer(MEL_BRANCH).get_layer("mel_bn"), logmel))
    if pca is not None:
        layers_stats.append((model.get_layer("pca_bn"), pca))
    for bn, (mean, var) in layers_stats:
        shape = bn.moving_mean.shape
        bn.moving_mean.assign(np.broadcast_to(np.asarray(mean, "float32"), shape))
        bn.moving_variance.assign(np.broadcast_to(np.asarray(var, "float32") + 1e-6, shape))


def network_pca_dim(model: keras.Model) -> int | None:
    """The PCA input width of a network from :func:`build_network`, or None for stage 1."""
    for t in model.inputs:
        if len(t.shape) == 2:
            return int(t.shape[-1])
    return None


def transfer_mel_branch(source: keras.Model, target: keras.Model) -> None:
    """Copy the whole ``mel_branch`` (BN, both 1x1 convs, MobileNetV2) from source to target."""
    src, dst = source.get_layer(MEL_BRANCH), target.get_layer(MEL_BRANCH)
    src_w, dst_w = src.get_weights(), dst.get_weights()
    if [w.shape for w in src_w] != [w.shape for w in dst_w]:
        raise ValueError("mel branches differ in structure (model.width or n_mels changed?)")
    dst.set_weights(src_w)
