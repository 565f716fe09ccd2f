"""fsd: an MLflow-tracked audio-tagging experiment platform (FSDKaggle2018 8th-place recipe)."""

__version__ = "0.1.0"
