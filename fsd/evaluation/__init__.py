"""Evaluation, in one place: MAP@k and per-class AP (``metrics``), out-of-fold scoring
(``oof``), the plots (``plots``), and the CNN + baseline blend (``blend``).

Plain numpy, pandas and matplotlib: training, the baselines and the ensemble all import it,
and it imports none of them. Import the submodules directly (``plots`` loads matplotlib).
"""
