"""scikit-learn models as plain arrays: the summary projector (StandardScaler + PCA) and the
blend's baseline, written as one ``.npz`` of arrays (no pickle) and a JSON spec, and evaluated
with numpy and scipy only, the same arithmetic in the same order and dtypes as scikit-learn's
own ``transform``/``predict_proba`` (agreement to ~1e-7; the tests hold it to 1e-6).

Covered: ``StandardScaler``, ``QuantileTransformer`` (normal or uniform output),
``LogisticRegression``, an RBF ``SVC`` calibrated by ``CalibratedClassifierCV(method=
"sigmoid", ensemble=False)``, ``ExtraTreesClassifier`` (leaf distributions stored sparsely:
fully grown trees have pure leaves), ``HistGradientBoostingClassifier`` (numeric features,
no missing values: the baseline cleans them), a soft ``VotingClassifier`` of these and a
``Pipeline`` of them: every model ``fsd.baseline.model`` fits, except an ``SVC`` with libsvm's
own Platt scaling (used only when a class has a single clip), which raises
:class:`NotPortable`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

PORTABLE_FORMAT = "fsd-portable-1"
QUANTILE_BOUND = 1e-7  # sklearn.preprocessing._data.BOUNDS_THRESHOLD


class NotPortable(ValueError):
    """A fitted model this module cannot write as arrays."""


# --- writing ---------------------------------------------------------------------------------

class _Arrays:
    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, value) -> str:
        key = f"a{len(self.arrays)}"
        self.arrays[key] = np.asarray(value)
        return key


def projector_spec(projector, out: _Arrays) -> dict[str, Any]:
    """A fitted :class:`fsd.features.projection.SummaryProjector`."""
    pca, scaler = projector.pca, projector.scaler
    return {"kind": "projector", "scaler": _estimator(scaler, out),
            "mean": out.add(pca.mean_), "components": out.add(pca.components_),
            "whiten": bool(pca.whiten), "variance": out.add(pca.explained_variance_)}


def baseline_spec(model, out: _Arrays) -> dict[str, Any]:
    """A fitted :class:`fsd.baseline.model.BaselineModel`."""
    return {"kind": "baseline", "name": model.name, "n_classes": int(model.n_classes),
            "classes": [int(c) for c in model.classes], "n_features": model.n_features,
            "estimator": None if model.estimator is None else _estimator(model.estimator, out)}


def _estimator(est, out: _Arrays) -> dict[str, Any]:
    name = type(est).__name__
    if name == "Pipeline":
        return {"kind": "pipeline", "steps": [_estimator(s, out) for _, s in est.steps]}
    if name == "StandardScaler":
        return {"kind": "standard",
                "mean": None if est.mean_ is None else out.add(est.mean_),
                "scale": None if est.scale_ is None else out.add(est.scale_)}
    if name == "QuantileTransformer":
        return {"kind": "quantile", "normal": est.output_distribution == "normal",
                "quantiles": out.add(est.quantiles_), "references": out.add(est.references_)}
    if name == "LogisticRegression":
        return {"kind": "logreg", "coef": out.add(est.coef_), "intercept": out.add(est.intercept_),
                "n_classes": len(est.classes_)}
    if name == "CalibratedClassifierCV":
        if len(est.calibrated_classifiers_) != 1 or est.method != "sigmoid":
            raise NotPortable("CalibratedClassifierCV: only ensemble=False with sigmoid")
        cal = est.calibrated_classifiers_[0]
        from sklearn.preprocessing import LabelEncoder

        pos = LabelEncoder().fit(cal.classes).transform(cal.estimator.classes_)
        return {"kind": "calibrated", "svc": _svc(cal.estimator, out),
                "a": out.add([c.a_ for c in cal.calibrators]),
                "b": out.add([c.b_ for c in cal.calibrators]),
                "pos": out.add(pos), "n_classes": len(cal.classes)}
    if name == "SVC":
        raise NotPortable("an SVC with libsvm's own probabilities (probability=True) is not "
                          "portable")
    if name == "ExtraTreesClassifier" or name == "RandomForestClassifier":
        return _forest(est, out)
    if name == "HistGradientBoostingClassifier":
        return _hgb(est, out)
    if name == "VotingClassifier":
        if est.voting != "soft":
            raise NotPortable("VotingClassifier: only soft voting")
        weights = None if est.weights is None else [float(w) for w in est._weights_not_none]
        return {"kind": "vote", "members": [_estimator(e, out) for e in est.estimators_],
                "weights": weights}
    raise NotPortable(f"{name} is not portable")


def _svc(svc, out: _Arrays) -> dict[str, Any]:
    if svc.kernel != "rbf" or svc.decision_function_shape != "ovr" or svc.break_ties:
        raise NotPortable("SVC: only the RBF kernel with ovr decisions, no break_ties")
    return {"support_vectors": out.add(svc.support_vectors_), "dual_coef": out.add(svc._dual_coef_),
            "intercept": out.add(svc._intercept_), "n_support": out.add(svc._n_support),
            "gamma": float(svc._gamma), "n_classes": len(svc.classes_)}


def _forest(est, out: _Arrays) -> dict[str, Any]:
    lefts, rights, feats, thrs, roots = [], [], [], [], []
    ptr, cls, val = [0], [], []
    leaf_of: list[np.ndarray] = []
    offset, n_leaves = 0, 0
    for tree in est.estimators_:
        t = tree.tree_
        n = t.node_count
        left, right = t.children_left.astype(np.int64), t.children_right.astype(np.int64)
        leaf = left == -1
        lefts.append(np.where(leaf, -1, left + offset))
        rights.append(np.where(leaf, -1, right + offset))
        feats.append(np.where(leaf, 0, t.feature).astype(np.int32))
        thrs.append(t.threshold.astype(np.float64))
        index = np.full(n, -1, np.int64)
        index[leaf] = np.arange(n_leaves, n_leaves + int(leaf.sum()))
        leaf_of.append(index)
        n_leaves += int(leaf.sum())
        values = t.value[:, 0, :].astype(np.float64)
        for node in np.flatnonzero(leaf):
            v = values[node]
            total = v.sum()
            v = v / (total if total else 1.0)
            nz = np.flatnonzero(v)
            cls.extend(nz.tolist())
            val.extend(v[nz].tolist())
            ptr.append(len(cls))
        roots.append(offset)
        offset += n
    return {"kind": "forest", "left": out.add(np.concatenate(lefts)),
            "right": out.add(np.concatenate(rights)), "feature": out.add(np.concatenate(feats)),
            "threshold": out.add(np.concatenate(thrs)), "roots": out.add(roots),
            "leaf": out.add(np.concatenate(leaf_of)), "leaf_ptr": out.add(ptr),
            "leaf_class": out.add(np.asarray(cls, np.int32)),
            "leaf_value": out.add(np.asarray(val, np.float64)),
            "n_classes": int(est.n_classes_)}


def _hgb(est, out: _Arrays) -> dict[str, Any]:
    if getattr(est, "is_categorical_", None) is not None and np.any(est.is_categorical_):
        raise NotPortable("HistGradientBoostingClassifier with categorical features")
    lefts, rights, feats, thrs, values, miss, roots = [], [], [], [], [], [], []
    offset = 0
    for per_iter in est._predictors:
        row = []
        for pred in per_iter:
            nodes = pred.nodes
            leaf = nodes["is_leaf"].astype(bool)
            lefts.append(np.where(leaf, -1, nodes["left"].astype(np.int64) + offset))
            rights.append(np.where(leaf, -1, nodes["right"].astype(np.int64) + offset))
            feats.append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.int32))
            thrs.append(nodes["num_threshold"].astype(np.float64))
            values.append(nodes["value"].astype(np.float64))
            miss.append(nodes["missing_go_to_left"].astype(bool))
            row.append(offset)
            offset += len(nodes)
        roots.append(row)
    return {"kind": "hgb", "left": out.add(np.concatenate(lefts)),
            "right": out.add(np.concatenate(rights)), "feature": out.add(np.concatenate(feats)),
            "threshold": out.add(np.concatenate(thrs)), "value": out.add(np.concatenate(values)),
            "missing_left": out.add(np.concatenate(miss)),
            "roots": out.add(np.asarray(roots, np.int64).reshape(len(roots), -1)),
            "baseline": out.add(np.asarray(est._baseline_prediction, np.float64).reshape(-1)),
            "n_classes": len(est.classes_)}


def write_portable(path: Path, specs: dict[str, Any], arrays: _Arrays) -> tuple[Path, Path]:
    """``<path>.json`` (the specs) and ``<path>.npz`` (their arrays, no pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".npz"), **arrays.arrays)
    path.with_suffix(".json").write_text(json.dumps({"format": PORTABLE_FORMAT, **specs},
                                                    indent=1))
    return path.with_suffix(".json"), path.with_suffix(".npz")


def read_portable(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    specs = json.loads(path.with_suffix(".json").read_text())
    if specs.get("format") != PORTABLE_FORMAT:
        raise ValueError(f"{path.name}: not an {PORTABLE_FORMAT} file")
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return specs, arrays


# --- evaluating ------------------------------------------------------------------------------

class Portable:
    """A spec and its arrays: ``transform`` (projector) or ``predict_proba`` (baseline)."""

    def __init__(self, spec: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.spec, self.a = spec, arrays

    def transform(self, x: np.ndarray) -> np.ndarray:
        """The projector: StandardScaler then PCA, in float64, as float32 (SummaryProjector)."""
        s = self.spec
        x = np.array(x, dtype=np.float64, copy=True)
        if not np.isfinite(x).all():
            raise ValueError("summary features contain NaN or inf")
        z = _apply(s["scaler"], x, self.a)
        comp = self.a[s["components"]]
        out = z @ comp.T
        out -= self.a[s["mean"]].reshape(1, -1) @ comp.T
        if s["whiten"]:
            scale = np.sqrt(self.a[s["variance"]])
            scale[scale < np.finfo(scale.dtype).eps] = np.finfo(scale.dtype).eps
            out /= scale
        return out.astype(np.float32)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The baseline: (n, n_classes) float32, label-aligned (BaselineModel.predict_proba)."""
        s = self.spec
        x = np.array(x, dtype=np.float32, copy=True)
        if x.ndim != 2:
            raise ValueError(f"summary features must be (clips, features), got shape {x.shape}")
        np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(x, -1e12, 1e12, out=x)
        if s["n_features"] is not None and x.shape[1] != s["n_features"]:
            raise ValueError(f"the baseline takes {s['n_features']} features, got {x.shape[1]}")
        out = np.zeros((len(x), s["n_classes"]), dtype=np.float32)
        classes = np.asarray(s["classes"], np.int64)
        if s["estimator"] is None:
            out[:, classes[0]] = 1.0
            return out
        out[:, classes] = _proba(s["estimator"], x, self.a)
        return out


def _apply(s: dict, x: np.ndarray, a: dict) -> np.ndarray:
    """A transformer step, in place on ``x`` where scikit-learn works in place."""
    if s["kind"] == "standard":
        if s["mean"] is not None:
            x -= a[s["mean"]]
        if s["scale"] is not None:
            x /= a[s["scale"]]
        return x
    if s["kind"] == "quantile":
        return _quantile(x, a[s["quantiles"]], a[s["references"]], s["normal"])
    raise ValueError(f"not a transformer: {s['kind']}")


def _quantile(x: np.ndarray, quantiles: np.ndarray, refs: np.ndarray, normal: bool) -> np.ndarray:
    from scipy import stats

    for j in range(x.shape[1]):
        col, q = x[:, j], quantiles[:, j]
        if normal:
            lower, upper = col - QUANTILE_BOUND < q[0], col + QUANTILE_BOUND > q[-1]
        else:
            lower, upper = col == q[0], col == q[-1]
        finite = ~np.isnan(col)
        vals = col[finite]
        col[finite] = 0.5 * (np.interp(vals, q, refs) - np.interp(-vals, -q[::-1], -refs[::-1]))
        col[upper] = 1
        col[lower] = 0
        if normal:
            with np.errstate(invalid="ignore"):
                col = stats.norm.ppf(col)
                lo = stats.norm.ppf(QUANTILE_BOUND - np.spacing(1))
                hi = stats.norm.ppf(1 - (QUANTILE_BOUND - np.spacing(1)))
                col = np.clip(col, lo, hi)
        x[:, j] = col
    return x


def _softmax(d: np.ndarray) -> np.ndarray:
    d = d - d.max(axis=1, keepdims=True)
    np.exp(d, out=d)
    d /= d.sum(axis=1, keepdims=True)
    return d


def _expit(v: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(v)


def _proba(s: dict, x: np.ndarray, a: dict) -> np.ndarray:
    kind = s["kind"]
    if kind == "pipeline":
        for step in s["steps"][:-1]:
            x = _apply(step, x, a)
        return _proba(s["steps"][-1], x, a)
    if kind == "logreg":
        d = x @ a[s["coef"]].T + a[s["intercept"]]
        if s["n_classes"] <= 2:
            p = _expit(d.ravel())
            return np.stack([1 - p, p], axis=1)
        return _softmax(d)
    if kind == "calibrated":
        return _calibrated(s, x, a)
    if kind == "forest":
        return _forest_proba(s, x, a)
    if kind == "hgb":
        return _hgb_proba(s, x, a)
    if kind == "vote":
        probs = np.asarray([_proba(m, np.array(x, copy=True), a) for m in s["members"]])
        return np.average(probs, axis=0, weights=s["weights"])
    raise ValueError(f"not a classifier: {kind}")


def _svc_decision(s: dict, x: np.ndarray, a: dict) -> np.ndarray:
    x = np.asarray(x, np.float64)
    sv, dual = a[s["support_vectors"]], a[s["dual_coef"]]
    sq = (x * x).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * (x @ sv.T)
    k = np.exp(-s["gamma"] * np.maximum(sq, 0.0))
    n_sup = a[s["n_support"]].astype(np.int64)
    start = np.concatenate([[0], np.cumsum(n_sup)])
    n, intercept = s["n_classes"], a[s["intercept"]]
    dec, p = [], 0
    for i in range(n):
        for j in range(i + 1, n):
            si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
            d = k[:, si] @ dual[j - 1, si] + k[:, sj] @ dual[i, sj] + intercept[p]
            dec.append(d)
            p += 1
    dec = np.stack(dec, axis=1)
    if n == 2:
        return -dec.ravel()
    votes = np.zeros((len(x), n))
    conf = np.zeros((len(x), n))
    pred, confidence, p = dec < 0, -dec, 0
    for i in range(n):
        for j in range(i + 1, n):
            conf[:, i] -= confidence[:, p]
            conf[:, j] += confidence[:, p]
            votes[pred[:, p] == 0, i] += 1
            votes[pred[:, p] == 1, j] += 1
            p += 1
    return votes + conf / (3 * (np.abs(conf) + 1))


def _calibrated(s: dict, x: np.ndarray, a: dict) -> np.ndarray:
    pred = _svc_decision(s["svc"], x, a)
    if pred.ndim == 1:
        pred = pred.reshape(-1, 1)
    n = s["n_classes"]
    proba = np.zeros((len(x), n))
    for idx, col, ca, cb in zip(a[s["pos"]], pred.T, a[s["a"]], a[s["b"]]):
        proba[:, int(idx) + (1 if n == 2 else 0)] = _expit(-(ca * col + cb))
    if n == 2:
        proba[:, 0] = 1.0 - proba[:, 1]
    else:
        den = proba.sum(axis=1)[:, None]
        proba = np.divide(proba, den, out=np.full_like(proba, 1 / n), where=den != 0)
    proba[(1.0 < proba) & (proba <= 1.0 + 1e-5)] = 1.0
    return proba


def _descend(left, right, feature, threshold, nodes, x, missing_left=None) -> np.ndarray:
    """Leaf node of each (sample, tree): ``nodes`` (n, trees) start at the roots."""
    rows = np.arange(len(x))[:, None]
    while True:
        inner = left[nodes] != -1
        if not inner.any():
            return nodes
        v = x[rows, feature[nodes]]
        go_left = v <= threshold[nodes]
        if missing_left is not None:
            nan = np.isnan(v)
            go_left = np.where(nan, missing_left[nodes], go_left)
        nxt = np.where(go_left, left[nodes], right[nodes])
        nodes = np.where(inner, nxt, nodes)


def _forest_proba(s: dict, x: np.ndarray, a: dict) -> np.ndarray:
    x = np.asarray(x, np.float32).astype(np.float64)  # the trees compare float32 features
    roots = a[s["roots"]].astype(np.int64)
    leaves = _descend(a[s["left"]], a[s["right"]], a[s["feature"]], a[s["threshold"]],
                      np.broadcast_to(roots, (len(x), len(roots))).copy(), x)
    leaf = a[s["leaf"]][leaves]  # (n, trees) leaf rows
    ptr, cls, val = a[s["leaf_ptr"]], a[s["leaf_class"]], a[s["leaf_value"]]
    out = np.zeros((len(x), s["n_classes"]))
    if np.all(np.diff(ptr) == 1):  # pure leaves (fully grown trees): one class each
        rows = np.broadcast_to(np.arange(len(x))[:, None], leaf.shape)
        np.add.at(out, (rows, cls[ptr[leaf]]), val[ptr[leaf]])
        return out / len(roots)
    for t in range(leaf.shape[1]):
        for i, r in enumerate(leaf[:, t]):
            out[i, cls[ptr[r]:ptr[r + 1]]] += val[ptr[r]:ptr[r + 1]]
    return out / len(roots)


def _hgb_proba(s: dict, x: np.ndarray, a: dict) -> np.ndarray:
    x = np.asarray(x, np.float64)
    roots = a[s["roots"]]  # (iterations, trees per iteration)
    flat = roots.reshape(-1)
    leaves = _descend(a[s["left"]], a[s["right"]], a[s["feature"]], a[s["threshold"]],
                      np.broadcast_to(flat, (len(x), len(flat))).copy(), x, a[s["missing_left"]])
    values = a[s["value"]][leaves].reshape(len(x), *roots.shape)
    raw = a[s["baseline"]].reshape(1, -1) + values.sum(axis=1)
    if raw.shape[1] == 1:
        p = _expit(raw[:, 0])
        return np.stack([1 - p, p], axis=1)
    return _softmax(raw)
