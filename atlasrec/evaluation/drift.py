"""Two-sample drift tests with documented thresholds (scipy and scikit-learn statistics).

Each test compares a reference sample with a current one and gives a `SignalDrift`: an
effect size against its threshold, and a p-value. The thresholds are Evidently's defaults
for samples over 1,000 rows:

- categorical values: Jensen-Shannon distance (natural log) above `JS_THRESHOLD` 0.1;
- numbers: Wasserstein distance divided by the reference's standard deviation above
  `WASSERSTEIN_THRESHOLD` 0.1;
- embeddings: ROC AUC of a domain classifier telling the samples apart, on held-out
  vectors, above `AUC_THRESHOLD` 0.55.

Small samples have a large distance by chance alone (Evidently switches to tests below 1,000
rows), so a signal drifts only when its effect passes the threshold *and* the difference is
significant at `P_VALUE` 0.01 (chi-square on the contingency table, two-sample
Kolmogorov-Smirnov, Mann-Whitney U on the classifier's held-out scores). A report of
five signals then raises at most about 5% false alarms (Bonferroni); the drift benchmark
measures it. Below `MIN_ROWS` (`MIN_VECTORS` for signals of users' vectors) a signal gives
no verdict.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, mannwhitneyu, wasserstein_distance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

JS_THRESHOLD = 0.1
WASSERSTEIN_THRESHOLD = 0.1
AUC_THRESHOLD = 0.55
P_VALUE = 0.01
MIN_ROWS = 200
"""Fewer rows on either side than this: no verdict on a categorical or numerical signal."""
MIN_VECTORS = 100
"""Fewer vectors on either side than this: no verdict on an embedding signal."""
HOLDOUT = 0.5
"""The share of the vectors the domain classifier is scored on (fitted on the rest)."""

INSUFFICIENT = "insufficient_data"
DRIFT = "drift"
OK = "ok"


@dataclass(frozen=True)
class SignalDrift:
    """One signal's comparison: its effect size, threshold and p-value, and sample sizes."""

    signal: str
    method: str
    value: float | None
    threshold: float
    p_value: float | None
    reference_n: int
    current_n: int

    @property
    def drifted(self) -> bool:
        """The effect passes its threshold and the difference is significant."""
        return (
            self.value is not None
            and self.p_value is not None
            and self.value > self.threshold
            and self.p_value < P_VALUE
        )

    @property
    def status(self) -> str:
        """`drift`, `ok`, or `insufficient_data` (no verdict)."""
        if self.value is None:
            return INSUFFICIENT
        return DRIFT if self.drifted else OK

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view, with the verdict."""
        return {**asdict(self), "status": self.status}


def categorical_drift(
    signal: str, reference: Sequence[Hashable], current: Sequence[Hashable]
) -> SignalDrift:
    """Jensen-Shannon distance between the value shares, and a chi-square test."""
    sizes = len(reference), len(current)
    if min(sizes) < MIN_ROWS:
        return SignalDrift(signal, "jensenshannon", None, JS_THRESHOLD, None, *sizes)
    ref, cur = Counter(reference), Counter(current)
    values = sorted(set(ref) | set(cur), key=repr)
    table = np.array([[ref[v] for v in values], [cur[v] for v in values]], dtype=np.float64)
    distance = float(jensenshannon(table[0], table[1]))
    p_value = 1.0 if len(values) < 2 else float(chi2_contingency(table).pvalue)
    return SignalDrift(signal, "jensenshannon", distance, JS_THRESHOLD, p_value, *sizes)


def numerical_drift(
    signal: str, reference: np.ndarray, current: np.ndarray, *, min_n: int = MIN_ROWS
) -> SignalDrift:
    """Wasserstein distance over the reference's standard deviation, and a K-S test."""
    sizes = len(reference), len(current)
    method = "wasserstein_normed"
    if min(sizes) < min_n:
        return SignalDrift(signal, method, None, WASSERSTEIN_THRESHOLD, None, *sizes)
    spread = float(np.std(reference)) or 1e-12
    distance = float(wasserstein_distance(reference, current)) / spread
    p_value = float(ks_2samp(reference, current).pvalue)
    return SignalDrift(signal, method, distance, WASSERSTEIN_THRESHOLD, p_value, *sizes)


def embedding_drift(
    signal: str, reference: np.ndarray, current: np.ndarray, *, seed: int = 0
) -> SignalDrift:
    """Held-out ROC AUC of a logistic domain classifier, and a Mann-Whitney U test.

    The classifier is fitted on one half and scored on the other (a classifier two-sample
    test): held-out scores are independent of the fit, so the test's p-value is exact.
    Pooled out-of-fold scores of cross-validation are not, and alarm too often.
    """
    sizes = len(reference), len(current)
    method = "domain_classifier_auc"
    if min(sizes) < MIN_VECTORS:
        return SignalDrift(signal, method, None, AUC_THRESHOLD, None, *sizes)
    features = np.vstack([reference, current]).astype(np.float64)
    labels = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    fit_x, test_x, fit_y, test_y = train_test_split(
        features, labels, test_size=HOLDOUT, stratify=labels, random_state=seed
    )
    classifier = LogisticRegression(max_iter=1000).fit(fit_x, fit_y)
    scores = classifier.predict_proba(test_x)[:, 1]
    auc = float(roc_auc_score(test_y, scores))
    test = mannwhitneyu(scores[test_y == 1], scores[test_y == 0], alternative="greater")
    p_value = float(test.pvalue) if math.isfinite(test.pvalue) else 1.0
    return SignalDrift(signal, method, auc, AUC_THRESHOLD, p_value, *sizes)
