"""Models that leave for other runtimes: `fsd export` writes a registered ensemble's fold
networks (ONNX, SavedModel or LiteRT), its front end's parameters and its blend's baseline in
portable form, with a manifest (:mod:`fsd.export.writer`); :mod:`fsd.export.predictor` runs an
ONNX export with onnxruntime and numpy/librosa only (TensorFlow need not be installed);
:mod:`fsd.export.portable` holds the scikit-learn parts as arrays.
"""
