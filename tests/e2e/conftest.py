"""The e2e tier's session fixtures: two tiny trained folds and their registered ensemble
(tests/support/conftest_ensemble.py), built once per session and shared by every e2e module
that asks for them; the unit tier cannot reach them."""

from conftest_ensemble import ensemble_tracking, trained_ensemble  # noqa: F401
