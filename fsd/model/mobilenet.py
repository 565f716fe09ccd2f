"""MobileNetV2 (include_top=False) that accepts an unknown time axis.

``keras.applications.MobileNetV2`` pads its strided depthwise convolutions with
``correct_pad``, which needs static spatial sizes, so it cannot take a ``(None, 64, 1)``
log-mel. This builder keeps the block structure, hyper-parameters and layer names of
``keras.applications.mobilenet_v2`` but uses ``padding="same"`` for the strided convolutions.
For a static size, TensorFlow's "same" padding of a 3x3/stride-2 convolution puts the extra
row at the end, exactly what ``ZeroPadding2D(correct_pad(...))`` + "valid" did, so the two
compute the same function and share weights layer by layer (the padding layers hold none).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import keras
from keras import layers

log = logging.getLogger(__name__)

# The keras.applications ImageNet checkpoints exist for these widths only.
IMAGENET_WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# keras.applications' MobileNetV2 BN settings. Momentum 0.999 needs thousands of steps before
# the moving statistics describe the data; short runs (demos, tests, sweep trials) want less.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.999


class WeightsError(ValueError):
    """Backbone weights that cannot be found or do not fit the backbone."""


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channel counts as keras.applications does (so ImageNet weights fit)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _inverted_res_block(x, expansion: int, stride: int, alpha: float, filters: int, block_id: int,
                        bn: dict[str, float]):
    in_channels = x.shape[-1]
    pointwise_filters = make_divisible(int(filters * alpha), 8)
    inputs = x
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    if block_id:
        x = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False,
                          name=f"{prefix}expand")(x)
        x = layers.BatchNormalization(name=f"{prefix}expand_BN", **bn)(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(x)
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                               name=f"{prefix}depthwise")(x)
    x = layers.BatchNormalization(name=f"{prefix}depthwise_BN", **bn)(x)
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(x)
    x = layers.Conv2D(pointwise_filters, 1, padding="same", use_bias=False,
                      name=f"{prefix}project")(x)
    x = layers.BatchNormalization(name=f"{prefix}project_BN", **bn)(x)
    if in_channels == pointwise_filters and stride == 1:
        return layers.Add(name=f"{prefix}add")([inputs, x])
    return x


# (filters, stride, expansion) for block_0 .. block_16, as in the paper and keras.applications.
BLOCKS: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1),
    (24, 2, 6), (24, 1, 6),
    (32, 2, 6), (32, 1, 6), (32, 1, 6),
    (64, 2, 6), (64, 1, 6), (64, 1, 6), (64, 1, 6),
    (96, 1, 6), (96, 1, 6), (96, 1, 6),
    (160, 2, 6), (160, 1, 6), (160, 1, 6),
    (320, 1, 6),
)


def mobilenet_v2_features(x, alpha: float = 1.0, bn_momentum: float = BN_MOMENTUM):
    """Apply the MobileNetV2 feature extractor (no top, no pooling) to a 3-channel tensor."""
    bn = {"epsilon": BN_EPSILON, "momentum": bn_momentum}
    x = layers.Conv2D(make_divisible(32 * alpha, 8), 3, strides=2, padding="same",
                      use_bias=False, name="Conv1")(x)
    x = layers.BatchNormalization(name="bn_Conv1", **bn)(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (filters, stride, expansion) in enumerate(BLOCKS):
        x = _inverted_res_block(x, expansion, stride, alpha, filters, block_id, bn)
    # No width multiplier on the last conv below 1.0, as in the paper.
    last = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = layers.Conv2D(last, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(name="Conv_1_bn", **bn)(x)
    return layers.ReLU(6.0, name="out_relu")(x)


def backbone_layer_names(alpha: float = 1.0) -> list[str]:
    """Names of the weight-carrying backbone layers, in order (for transfer and loading)."""
    inp = keras.Input((32, 32, 3))
    out = mobilenet_v2_features(inp, alpha)
    return [layer.name for layer in keras.Model(inp, out).layers if layer.weights]


def _reference_model(alpha: float, weights: str) -> keras.Model:
    """A keras.applications MobileNetV2 (static 224x224) holding the requested weights."""
    kwargs = {"include_top": False, "alpha": alpha, "input_shape": (224, 224, 3)}
    if weights == "imagenet":
        if alpha not in IMAGENET_WIDTHS:
            raise WeightsError(
                f"ImageNet MobileNetV2 weights exist for widths {IMAGENET_WIDTHS}; "
                f"model.width={alpha} has none (use model.backbone_weights=none)")
        fname = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_224_no_top.h5"
        try:
            return keras.applications.MobileNetV2(weights="imagenet", **kwargs)
        except Exception as exc:  # offline, proxy, truncated download: all end here
            raise WeightsError(
                f"could not obtain the ImageNet MobileNetV2 weights ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). On a machine with "
                f"network access download {fname} from "
                f"https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/ "
                f"(or put it in ~/.keras/models/), then set "
                f"model.backbone_weights=/path/to/{fname}") from None
    try:
        # A mismatched file makes Keras warn once per layer before it raises; the error is enough.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return keras.applications.MobileNetV2(weights=weights, **kwargs)
    except Exception as exc:
        raise WeightsError(
            f"{weights} is not a MobileNetV2 (include_top=False, width {alpha}) weights file: "
            f"{type(exc).__name__}: {exc}") from None


def _collect_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Weight-carrying layers by name, looking into nested sub-models (a saved fold model)."""
    found: dict[str, keras.layers.Layer] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            for name, inner in _collect_layers(layer).items():
                found.setdefault(name, inner)
        elif layer.weights:
            found.setdefault(layer.name, layer)
    return found


def load_backbone_weights(target: keras.Model, weights: str, alpha: float) -> int:
    """Fill the MobileNetV2 layers of ``target`` from ``weights`` by layer name.

    ``weights``: ``none``/empty (nothing), ``imagenet`` (keras.applications download or its
    cache), a keras.applications weights file (``.h5``), or a ``.keras`` model containing a
    backbone with the same layer names (a previous fold or stage model). Returns the number
    of layers loaded; raises :class:`WeightsError` with an actionable message.
    """
    if not weights or weights.lower() == "none":
        return 0
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"model.backbone_weights={weights!r}: no such file (expected "
                               f"'none', 'imagenet' or a path to a weights file)")
        if path.suffix == ".keras":
            try:
                source = keras.saving.load_model(path, compile=False)
            except Exception as exc:
                raise WeightsError(f"cannot load {path} as a Keras model: {exc}") from None
        else:
            source = _reference_model(alpha, str(path))
    else:
        source = _reference_model(alpha, "imagenet")
    src = _collect_layers(source)
    dst = _collect_layers(target)
    names = backbone_layer_names(alpha)
    missing = [n for n in names if n not in src]
    if missing:
        raise WeightsError(f"{weights}: {len(missing)} backbone layers missing "
                           f"(first: {missing[:3]}); is it a MobileNetV2 of width {alpha}?")
    for name in names:
        s, d = src[name].get_weights(), dst[name]
        shapes = [w.shape for w in s]
        want = [tuple(w.shape) for w in d.weights]
        if shapes != want:
            raise WeightsError(f"{weights}: layer {name} has shapes {shapes}, backbone needs "
                               f"{want} (width mismatch?)")
        d.set_weights(s)
    log.info("loaded %d backbone layers from %s", len(names), weights)
    return len(names)
