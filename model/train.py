"""Trains the cart-abandonment models and writes their artifacts.

Synthetic sessions are drawn from a fixed seed; two scikit-learn models are fitted on the
same data — standard scaling + logistic regression, and a gradient-boosted tree ensemble
(100 trees of depth 3) — converted to ONNX with skl2onnx, and scored back with Python
onnxruntime to produce the golden files the Rust tests compare against. The same data and
seed give byte-identical artifacts (scripts/check-model checks it).

    scripts/train-model            # or: $NUDGE_VENV/bin/python model/train.py

Outputs, under model/cart_abandonment/v1/ (logistic regression) and
model/cart_abandonment_gbdt/v1/ (gradient-boosted trees):
    model.onnx     the artifact (the logistic regression is also embedded in the cell binary)
    golden.json    inputs and Python onnxruntime outputs, including named demo sessions
    MODEL_CARD.md  features and their order, data hash, parameters, metrics, versions
    manifest.json  what the model registry takes with the artifact (name, SHA-256, metrics,
                   lineage), for `POST /v1/admin/models`
"""

import hashlib
import json
import os
import pathlib
import platform
import sys

# The logistic regression's solver sums through OpenBLAS, whose kernels are chosen by CPU:
# the same data and seed gave coefficients differing in the 7th digit on two machines with
# different CPUs. One kernel every x86-64 CPU since 2008 runs, on one thread, makes the bytes
# the same on any of them. (Other architectures pick their own kernel; the bytes
# may differ there, the model does not in any digit that matters.)
if platform.machine() in ("x86_64", "AMD64"):
    os.environ["OPENBLAS_CORETYPE"] = "Nehalem"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402 (after the BLAS settings, which are read at import)
import onnxruntime  # noqa: E402
import skl2onnx  # noqa: E402
import sklearn  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

SEED = 20261127
N_SESSIONS = 40_000
ROOT = pathlib.Path(__file__).resolve().parent

# Model input order: the feature set declared in data-plane/features/src/definitions.rs.
# The artifact names it in its metadata, and the cells refuse a model whose names differ.
FEATURE_SET = "cart_session@1"
FEATURES = [
    "cart_value",
    "cart_items",
    "page_views",
    "product_views",
    "cart_adds",
    "cart_removes",
    "checkout_started",
    "session_seconds",
    "seconds_since_last_activity",
    "exit_intents",
]

# Named sessions whose features the Rust tests reproduce from real events.
DEMO_ROWS = {
    # The end-to-end test's session: browse, add two items (79.00 + 50.00), hover to leave.
    "e2e_exit_with_cart": [129.0, 2, 4, 3, 2, 0, 0, 185, 42, 1],
    # The same shopper after buying: nothing to recover.
    "after_purchase": [0.0, 0, 4, 3, 2, 0, 0, 200, 15, 1],
    # Browsing only, leaves with an empty cart.
    "empty_cart_exit": [0.0, 0, 3, 2, 0, 0, 0, 90, 30, 1],
}


def synthesize(rng: np.random.Generator, n: int):
    """Sessions with plausible shapes, and whether the cart was abandoned."""
    page_views = rng.poisson(5, n) + 1
    product_views = rng.binomial(page_views, 0.6)
    cart_adds = rng.poisson(1.2, n)
    cart_removes = rng.binomial(cart_adds, 0.2)
    quantity = rng.integers(1, 4, n)
    cart_items = np.maximum(cart_adds - cart_removes, 0) * quantity
    unit_price = np.round(rng.lognormal(3.5, 0.6, n), 2)
    cart_value = np.round(cart_items * unit_price, 2)
    has_cart = cart_items > 0
    checkout_started = (rng.random(n) < 0.3) & has_cart
    session_seconds = np.round(rng.gamma(2.0, 150.0, n))
    since_last = np.minimum(np.round(rng.exponential(45.0, n)), session_seconds)
    exit_intents = rng.poisson(0.5, n)

    logit = (
        -0.5
        + 0.01 * cart_value
        + 0.25 * cart_items
        - 0.08 * page_views
        + 0.9 * exit_intents
        + 0.004 * since_last
        - 1.6 * checkout_started
        + 0.2 * cart_removes
        - 0.0005 * session_seconds
    )
    p = 1.0 / (1.0 + np.exp(-logit))
    # Only a shopper with something in the cart can abandon it.
    abandoned = (rng.random(n) < p) & has_cart

    X = np.column_stack(
        [
            cart_value,
            cart_items,
            page_views,
            product_views,
            cart_adds,
            cart_removes,
            checkout_started.astype(np.float64),
            session_seconds,
            since_last,
            exit_intents,
        ]
    ).astype(np.float32)
    return X, abandoned.astype(np.int64)


def models():
    """Each model: its version, output directory, a description of the estimator, its
    parameters as the registry records them, and the unfitted estimator."""
    return [
        (
            "cart_abandonment@1",
            ROOT / "cart_abandonment" / "v1",
            "`StandardScaler` → `LogisticRegression(C=1.0, max_iter=2000)`",
            {"estimator": "StandardScaler+LogisticRegression", "C": 1.0, "max_iter": 2000},
            Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("classify", LogisticRegression(C=1.0, max_iter=2000, random_state=SEED)),
                ]
            ),
        ),
        (
            "cart_abandonment_gbdt@1",
            ROOT / "cart_abandonment_gbdt" / "v1",
            "`GradientBoostingClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, subsample=1.0)`",
            {
                "estimator": "GradientBoostingClassifier",
                "n_estimators": 100,
                "max_depth": 3,
                "learning_rate": 0.1,
                "subsample": 1.0,
            },
            GradientBoostingClassifier(
                n_estimators=100, max_depth=3, learning_rate=0.1, subsample=1.0, random_state=SEED
            ),
        ),
    ]


def main() -> int:
    rng = np.random.default_rng(SEED)
    X, y = synthesize(rng, N_SESSIONS)
    data_hash = hashlib.sha256(X.tobytes() + y.tobytes()).hexdigest()
    split = int(0.8 * N_SESSIONS)
    summary = []
    for version, out, described, parameters, estimator in models():
        summary.append(train(version, out, described, parameters, estimator, X, y, split, data_hash))
    print(json.dumps(summary))
    return 0


def train(version, out, described, parameters, estimator, X, y, split, data_hash):
    X_train, y_train, X_test, y_test = X[:split], y[:split], X[split:], y[split:]
    estimator.fit(X_train, y_train)
    classifier = estimator.named_steps["classify"] if isinstance(estimator, Pipeline) else estimator

    onnx_model = to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        options={id(classifier): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onnx_model.doc_string = f"{version}: cart abandonment probability from session features"
    # skl2onnx lists the opset imports in an order that varies from run to run (seen about
    # one run in six for the trees); a fixed order keeps the artifact byte-identical.
    opsets = sorted(((o.domain, o.version) for o in onnx_model.opset_import), key=lambda o: o[0], reverse=True)
    del onnx_model.opset_import[:]
    for domain, opset_version in opsets:
        onnx_model.opset_import.add(domain=domain, version=opset_version)
    for key, value in (("nudge.feature_set", FEATURE_SET), ("nudge.feature_names", ",".join(FEATURES))):
        prop = onnx_model.metadata_props.add()
        prop.key, prop.value = key, value
    out.mkdir(parents=True, exist_ok=True)
    model_bytes = onnx_model.SerializeToString()
    (out / "model.onnx").write_bytes(model_bytes)

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == ["label", "probabilities"], names

    def score(rows: np.ndarray) -> np.ndarray:
        return session.run(["probabilities"], {"features": rows.astype(np.float32)})[0][:, 1]

    p_test = score(X_test)
    metrics = {
        "roc_auc": round(float(roc_auc_score(y_test, p_test)), 4),
        "log_loss": round(float(log_loss(y_test, p_test)), 4),
        "accuracy_at_0_5": round(float(accuracy_score(y_test, p_test >= 0.5)), 4),
        "positive_rate": round(float(y_test.mean()), 4),
        "test_rows": int(len(y_test)),
    }

    golden_rows = []
    demo = np.array(list(DEMO_ROWS.values()), dtype=np.float32)
    for name, feats, p in zip(DEMO_ROWS, demo, score(demo)):
        golden_rows.append({"name": name, "features": [float(v) for v in feats], "probability": float(p)})
    sample = X_test[:1000]
    for i, (feats, p) in enumerate(zip(sample, score(sample))):
        golden_rows.append({"name": f"test_{i}", "features": [float(v) for v in feats], "probability": float(p)})
    golden = {
        "model_version": version,
        "features": FEATURES,
        "output": "probabilities[:, 1]",
        "onnxruntime": onnxruntime.__version__,
        "rows": golden_rows,
    }
    # One row per line keeps the file diffable.
    head = {k: v for k, v in golden.items() if k != "rows"}
    lines = ",\n".join("  " + json.dumps(r) for r in golden_rows)
    text = json.dumps(head, indent=1)[:-2] + ',\n "rows": [\n' + lines + "\n ]\n}\n"
    json.loads(text)
    (out / "golden.json").write_text(text)

    model_sha = hashlib.sha256(model_bytes).hexdigest()
    card = f"""# Model card: {version}

Cart-abandonment probability for a shopper at the moment of an event, from the session
features the cell keeps in Redis. Generated by `model/train.py`; do not edit by hand.

## Inputs

One float32 tensor `features` of shape `[N, {len(FEATURES)}]`, feature set `{FEATURE_SET}`
(named in the artifact's metadata as `nudge.feature_set` and `nudge.feature_names`), in
this order:

| # | feature |
|---|---|
""" + "\n".join(f"| {i} | `{f}` |" for i, f in enumerate(FEATURES)) + f"""

## Output

`probabilities`, float32 `[N, 2]`; column 1 is the probability the cart is abandoned.
(`label`, int64 `[N]`, is the class at threshold 0.5.)

## Training

- Data: {N_SESSIONS} synthetic sessions from `numpy.random.default_rng({SEED})`; 80 % train,
  20 % test, in generation order. Data hash (SHA-256 of features and labels): `{data_hash}`
- Estimator: {described}, `random_state={SEED}`
- Versions: Python {sys.version.split()[0]}, numpy {np.__version__}, scikit-learn {sklearn.__version__},
  skl2onnx {skl2onnx.__version__}, onnxruntime {onnxruntime.__version__}
- Artifact SHA-256: `{model_sha}`

## Metrics (test split)

| metric | value |
|---|---|
""" + "\n".join(f"| {k} | {v} |" for k, v in metrics.items()) + """

## Limits

Synthetic data: the model demonstrates the pipeline end to end and orders shoppers by a
plausible risk; it has not been validated on any store's real traffic.
"""
    (out / "MODEL_CARD.md").write_text(card)

    # What the registry takes beside the artifact. The commit is the uploader's to add: the
    # training code is identified here by its own hash, which a retraining reproduces.
    manifest = {
        "name": version.split("@")[0],
        "sha256": model_sha,
        "metrics": metrics,
        "lineage": {
            "training_data_sha256": data_hash,
            "code_sha256": hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest(),
            "parameters": {**parameters, "sessions": N_SESSIONS, "train_fraction": 0.8},
            "seed": SEED,
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return {"model": str(out / "model.onnx"), "sha256": model_sha, "metrics": metrics}


if __name__ == "__main__":
    sys.exit(main())
