"""Variable-length MobileNetV2, the mel and mel+PCA networks, stage transfer, TTA inference."""

from fsd.model.inference import predict_tta
from fsd.model.networks import build_mel_branch, build_network, transfer_mel_branch

__all__ = ["build_mel_branch", "build_network", "predict_tta", "transfer_mel_branch"]
