"""Automated behavioural segmentation: k-means on standardised customer features.

Method (docs/customers.md, "Behavioural clusters"):

1. customers = persons with at least one order in the customer table;
2. features (:data:`DEFAULT_FEATURES`): counts and money go through ``log1p`` (they are heavily
   skewed), then every feature is standardised to z-scores; a feature with no spread is dropped;
3. k is chosen by the **largest mean silhouette** over k = ``k_min`` .. ``k_max`` (computed on a
   seeded sample of at most :data:`SILHOUETTE_SAMPLE` customers); ties go to the smaller k;
4. k-means (scikit-learn, ``n_init=10``, ``random_state=seed``) fits the chosen k;
5. clusters are numbered in a canonical order — by descending centroid z of the first feature
   that tells them apart in the feature order (net revenue first) — so the labels do not
   depend on scikit-learn's internal numbering: the same data and seed give the same labels;
6. each cluster is described by the features whose centroid is at least 0.5 standard deviations
   from the mean, strongest first ("high orders (+1.9 sd), recent (-1.1 sd recency_days)").

Migration between two dates: the model fitted at the first date assigns customers at both
dates; the transition matrix counts persons by (cluster then, cluster now), with a ``new`` row
for customers who had not ordered yet at the first date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from funnelscope.errors import InvalidInputError, NotFittedError, Problem

__all__ = [
    "DEFAULT_FEATURES",
    "BehaviourSegmentation",
    "SegmentationResult",
    "migration_matrix",
]

#: Customer-table columns clustered by default; ``log1p`` marks skewed ones.
DEFAULT_FEATURES: Final = (
    ("net_revenue", True),
    ("orders", True),
    ("average_order_value", True),
    ("recency_days", False),
    ("tenure_days", False),
    ("email_opens", True),
    ("email_clicks", True),
)
SILHOUETTE_SAMPLE: Final = 10_000
SINGLE_THREAD_BELOW: Final = 100_000
#: A centroid this many standard deviations from the mean is called out in the description.
DESCRIBE_FROM_SD: Final = 0.5


@dataclass(frozen=True)
class SegmentationResult:
    """Chosen k, silhouettes tried, cluster profiles, descriptions and assignments."""

    k: int
    silhouettes: dict[int, float]
    features: tuple[str, ...]
    centroids: pd.DataFrame = field(repr=False)  # cluster x feature, z-scores
    sizes: dict[int, int] = field(default_factory=dict)
    descriptions: dict[int, str] = field(default_factory=dict)
    assignments: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def to_pandas(self) -> pd.DataFrame:
        return self.assignments.copy()

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "criterion": "max mean silhouette",
            "silhouettes": {str(k): v for k, v in self.silhouettes.items()},
            "features": list(self.features),
            "clusters": [
                {
                    "cluster": c,
                    "size": self.sizes[c],
                    "description": self.descriptions[c],
                    "centroid_z": {
                        str(f): float(v)
                        for f, v in zip(
                            self.centroids.columns, self.centroids.to_numpy()[c], strict=True
                        )
                    },
                }
                for c in sorted(self.sizes)
            ],
        }


class BehaviourSegmentation:
    """Fit clusters on one customer table, assign customers of any other.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> t = pd.DataFrame({"person_id": range(200), "orders": np.r_[np.ones(100), 8 * np.ones(100)],
    ...                   "net_revenue": np.r_[rng.normal(20, 2, 100), rng.normal(400, 20, 100)]})
    >>> seg = BehaviourSegmentation(features=(("net_revenue", True), ("orders", True)))
    >>> result = seg.fit(t)
    >>> result.k, result.sizes
    (2, {0: 100, 1: 100})
    """

    def __init__(
        self,
        *,
        features: tuple[tuple[str, bool], ...] = DEFAULT_FEATURES,
        k_min: int = 2,
        k_max: int = 8,
        seed: int = 0,
    ) -> None:
        problems = []
        if not 2 <= k_min <= k_max <= 20:
            problems.append(
                Problem("segmentation.bad_k", "k_min", "need 2 <= k_min <= k_max <= 20")
            )
        if not features:
            problems.append(Problem("segmentation.no_features", "features", "need >= 1 feature"))
        if problems:
            raise InvalidInputError(problems)
        self.features = features
        self.k_min = k_min
        self.k_max = k_max
        self.seed = seed
        self.used_features_: tuple[str, ...] | None = None
        self.mean_: np.ndarray[Any, Any] | None = None
        self.scale_: np.ndarray[Any, Any] | None = None
        self.centroids_: np.ndarray[Any, Any] | None = None  # canonical order, z units

    def _matrix(self, table: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray[Any, Any]:
        logs = dict(self.features)
        cols = []
        for name in names:
            values = pd.to_numeric(table[name], errors="coerce").fillna(0.0).to_numpy(np.float64)
            cols.append(np.log1p(np.clip(values, 0, None)) if logs[name] else values)
        return np.column_stack(cols)

    @staticmethod
    def _buyers(table: pd.DataFrame) -> pd.DataFrame:
        return table[table["orders"] > 0] if "orders" in table.columns else table

    def fit(self, customers: Any) -> SegmentationResult:
        """Choose k, fit k-means, order and describe the clusters."""
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        table = self._buyers(getattr(customers, "frame", customers))
        missing = [name for name, _ in self.features if name not in table.columns]
        if missing:
            raise InvalidInputError(
                [
                    Problem("segmentation.unknown_feature", m, "not a customer column")
                    for m in missing
                ]
            )
        if len(table) < self.k_min + 1:
            raise InvalidInputError(
                [
                    Problem(
                        "segmentation.too_few_customers",
                        "customers",
                        f"need more than k_min = {self.k_min} customers with orders",
                    )
                ]
            )
        names = tuple(name for name, _ in self.features)
        raw = self._matrix(table, names)
        spread = raw.std(axis=0)
        keep = spread > 1e-12
        names = tuple(n for n, k in zip(names, keep, strict=True) if k)
        raw = raw[:, keep]
        self.used_features_ = names
        self.mean_ = raw.mean(axis=0)
        self.scale_ = raw.std(axis=0)
        z = (raw - self.mean_) / self.scale_
        n_unique = len(np.unique(np.round(z, 9), axis=0))
        k_max = min(self.k_max, len(z) - 1, n_unique)
        rng = np.random.default_rng(self.seed)
        sample = rng.choice(len(z), size=min(len(z), SILHOUETTE_SAMPLE), replace=False)
        silhouettes: dict[int, float] = {}
        fits: dict[int, Any] = {}
        # thread start-up dominates k-means on small tables: one thread is faster there
        threads = 1 if len(z) < SINGLE_THREAD_BELOW else None
        for k in range(self.k_min, max(k_max, self.k_min) + 1):
            with threadpool_limits(threads):
                km = KMeans(n_clusters=k, n_init=10, random_state=self.seed).fit(z)
            labels = km.labels_[sample]
            if len(np.unique(labels)) < 2:
                continue
            silhouettes[k] = float(silhouette_score(z[sample], labels))
            fits[k] = km
        if not silhouettes:
            raise InvalidInputError(
                [Problem("segmentation.no_structure", "customers", "customers are all alike")]
            )
        best = max(silhouettes, key=lambda k: (round(silhouettes[k], 12), -k))
        km = fits[best]
        order = _canonical_order(km.cluster_centers_)
        self.centroids_ = km.cluster_centers_[order]
        labels = self._nearest(z)
        sizes = {c: int((labels == c).sum()) for c in range(best)}
        centroids = pd.DataFrame(self.centroids_, columns=list(names))
        descriptions = {c: _describe(centroids.iloc[c]) for c in range(best)}
        assignments = pd.DataFrame({"person_id": table["person_id"].to_numpy(), "cluster": labels})
        return SegmentationResult(
            best, silhouettes, names, centroids, sizes, descriptions, assignments
        )

    def _nearest(self, z: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        assert self.centroids_ is not None
        dist = ((z[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        return np.asarray(dist.argmin(axis=1), dtype=np.int64)

    def assign(self, customers: Any) -> pd.DataFrame:
        """``person_id`` and ``cluster`` for the buyers of another customer table."""
        if self.centroids_ is None or self.used_features_ is None:
            raise NotFittedError("BehaviourSegmentation is not fitted: call fit(customers) first")
        table = self._buyers(getattr(customers, "frame", customers))
        z = (self._matrix(table, self.used_features_) - self.mean_) / self.scale_
        return pd.DataFrame(
            {"person_id": table["person_id"].to_numpy(), "cluster": self._nearest(z)}
        )


def _canonical_order(centers: np.ndarray[Any, Any]) -> list[int]:
    """Clusters sorted by their centroids, feature by feature, largest first."""
    keys = [tuple(-np.round(c, 6)) for c in centers]
    return sorted(range(len(centers)), key=lambda i: keys[i])


def _describe(centroid: Any) -> str:
    notable = [(f, float(v)) for f, v in centroid.items() if abs(v) >= DESCRIBE_FROM_SD]
    notable.sort(key=lambda fv: -abs(fv[1]))
    if not notable:
        return "typical on every feature"
    return ", ".join(f"{'high' if v > 0 else 'low'} {f} ({v:+.1f} sd)" for f, v in notable[:3])


def migration_matrix(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Counts of persons by cluster at the first date (rows, plus ``new``) and the second (columns).

    ``before`` and ``after`` are :meth:`BehaviourSegmentation.assign` outputs of one fitted
    model. Persons present only before (they cannot stop being customers) are not possible.

    Examples
    --------
    >>> b = pd.DataFrame({"person_id": [1, 2], "cluster": [0, 1]})
    >>> a = pd.DataFrame({"person_id": [1, 2, 3], "cluster": [1, 1, 0]})
    >>> migration_matrix(b, a).to_dict()
    {0: {'0': 0, '1': 0, 'new': 1}, 1: {'0': 1, '1': 1, 'new': 0}}
    """
    merged = after.merge(before, on="person_id", how="left", suffixes=("", "_before"))
    origin = merged["cluster_before"].map(lambda v: "new" if pd.isna(v) else str(int(v)))
    clusters = sorted(set(before["cluster"]) | set(after["cluster"]))
    rows = [str(c) for c in clusters] + ["new"]
    matrix = pd.crosstab(origin, merged["cluster"]).reindex(
        index=rows, columns=clusters, fill_value=0
    )
    matrix.index.name = "from"
    matrix.columns.name = "to"
    return matrix.astype(np.int64)
