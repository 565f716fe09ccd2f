"""Serving the registered ensemble: request checks (``requests``, no MLflow) and the MLflow
pyfunc (``pyfunc``), which takes raw audio bytes and answers top-k labels."""
