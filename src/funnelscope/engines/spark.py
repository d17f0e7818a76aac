"""The Spark engine: the same specs over Parquet (``funnelscope export`` or a user's own table).

Local mode (``local[2]``) in tests; any master URL for a cluster. Sessions run in UTC so that
dates and periods agree with the embedded engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from funnelscope.errors import EngineError
from funnelscope.store.export import EXPORTED_TABLES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["SparkEngine", "spark_session"]


def spark_session(master: str = "local[2]", *, app_name: str = "funnelscope") -> SparkSession:
    """A Spark session configured for funnelscope (UTC, Arrow transfers, small shuffles)."""
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.memory", "4g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.ansi.enabled", "false")
        .getOrCreate()
    )


class SparkEngine:
    """Runs analyses on Parquet tables with Spark.

    Parameters
    ----------
    data_dir
        A folder with ``<table>.parquet`` files, as written by ``funnelscope export``. Only
        ``events.parquet`` is required.
    spark
        An existing session; by default a local one (:func:`spark_session`).
    """

    name = "spark"
    dialect = "spark"

    def __init__(self, data_dir: str | Path, spark: SparkSession | None = None) -> None:
        self.data_dir = Path(data_dir)
        if not (self.data_dir / "events.parquet").exists():
            raise EngineError(
                f"{self.data_dir} has no events.parquet: run `funnelscope export --out "
                f"{self.data_dir}` first, or point at a folder with your own events table"
            )
        self.spark = spark or spark_session()
        for table in EXPORTED_TABLES:
            path = self.data_dir / f"{table}.parquet"
            if path.exists():
                self.spark.read.parquet(str(path)).createOrReplaceTempView(table)

    def sql(self, query: str, params: Mapping[str, object] | None = None) -> pa.Table:
        import sqlglot
        from sqlglot import exp

        try:
            tree = sqlglot.parse_one(query, read="duckdb")
            if params:
                bound: dict[str, Any] = {k: exp.convert(v) for k, v in params.items()}
                tree = tree.transform(
                    lambda node: (
                        bound[node.name]
                        if isinstance(node, exp.Parameter | exp.Placeholder) and node.name in bound
                        else node
                    )
                )
            spark_sql = tree.sql(dialect="spark")
            return self.spark.sql(spark_sql).toArrow()
        except Exception as exc:  # py4j and Spark analysis errors share no base class
            raise EngineError(f"spark engine failed: {exc}") from exc
