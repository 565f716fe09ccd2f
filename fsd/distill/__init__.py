"""Knowledge distillation: one log-mel student network learning from the fold ensemble's soft
predictions (issue 26). No MLflow here: the ``distill`` entry point resolves the teacher's
runs and logs what the stage returns."""
