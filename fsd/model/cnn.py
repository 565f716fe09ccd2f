"""A small VGG-style CNN for log-mels, the lighter alternative to MobileNetV2.

Blocks of two 3x3 convolutions (BN, ReLU) and 2x2 average pooling, as in the DCASE 2018
baseline and PANNs' CNN6/CNN10; the last feature map is averaged over frequency, then max- and
mean-pooled over time (PANNs' pooling: the max finds short events, the mean keeps the context).
On a few hundred clips it learns from scratch in a few thousand steps, where the inverted
residual blocks of MobileNetV2 (built for 224x224 ImageNet images) need far more; the input
keeps full 64-band resolution for longer instead of MobileNetV2's stride-2 stem.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import layers


def vgg_features(x, channels: Sequence[int], convs: int = 2, bn_momentum: float = 0.99,
                 mel_first: bool = False):
    """(batch, time, n_mels, c) -> (batch, channels[-1]): the conv blocks and pooling
    (``mel_first``: the input is (batch, n_mels, time, c))."""
    freq = int(x.shape[1 if mel_first else 2])
    for i, c in enumerate(channels):
        for j in range(1, convs + 1):
            x = layers.Conv2D(int(c), 3, padding="same", use_bias=False,
                              name=f"cnn_block{i}_conv{j}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"cnn_block{i}_bn{j}")(x)
            x = layers.ReLU(name=f"cnn_block{i}_relu{j}")(x)
        if i < len(channels) - 1 and freq >= 2:
            x = layers.AveragePooling2D(2, padding="same", name=f"cnn_block{i}_pool")(x)
            freq = -(-freq // 2)
    # Mean over the (static) frequency axis; the time axis stays variable-length.
    x = layers.AveragePooling2D((freq, 1) if mel_first else (1, freq), name="cnn_freq_mean")(x)
    return layers.Add(name="cnn_time_pool")([layers.GlobalMaxPooling2D(name="cnn_time_max")(x),
                                             layers.GlobalAveragePooling2D(name="cnn_time_mean")(x)])
