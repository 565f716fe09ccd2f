"""The MLflow edge: one module per MLproject entry point. Each opens its run, calls a plain
stage function, and logs what came back."""
