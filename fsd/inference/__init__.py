"""One scoring path from audio to labels, shared by serving (the registered model) and export
(the ONNX predictor): decode and featurize a clip as training did (clips.py), score it with an
ensemble-like model (``predict(logmels, summaries, lengths, crops, seed)``: all folds x TTA
lengths x crops, :mod:`fsd.model.tta`) into a top-k table (scoring.py), and long recordings
window by window (windows.py, timeline.py).

No MLflow and no TensorFlow here: the model object brings its networks. Request checks (what a
client may send) are serving's (:mod:`fsd.serving.requests`).
"""
