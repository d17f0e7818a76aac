"""The Spark engine: the same specs over Parquet (``funnelscope export`` or a user's own table).

Local mode (``local[2]``) in tests; any master URL for a cluster. Sessions run in UTC so that
dates and periods agree with the embedded engine.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from funnelscope.errors import EngineError
from funnelscope.store.export import EXPORTED_TABLES

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from funnelscope.store.layout import PersonLayout

__all__ = ["SparkEngine", "spark_session"]


def spark_session(master: str = "local[2]", *, app_name: str = "funnelscope") -> SparkSession:
    """A Spark session configured for funnelscope (UTC, Arrow transfers, small shuffles)."""
    import sys

    from pyspark.sql import SparkSession

    session = (
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
    if master.startswith("local"):
        # local Python workers (mapInArrow) must run this interpreter, which has funnelscope
        # installed; PySpark would otherwise start whatever `python3` is first on PATH
        session.sparkContext.pythonExec = sys.executable
    return session


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

    # -- sequence work: the same kernels inside mapInArrow -------------------------------------
    def _event_columns(self, columns: Sequence[str]) -> DataFrame:
        """events with a ``person_id`` (derived densely from coalesce(user_id, anonymous_id)
        when the table has none), ``timestamp``, ``event`` and ``columns``."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        from funnelscope.store.layout import property_path

        df = self.spark.table("events")
        if "person_id" not in df.columns:
            key = F.coalesce(F.col("user_id"), F.col("anonymous_id"))
            ids = (
                df.select(key.alias("_distinct_id"))
                .distinct()
                .withColumn("person_id", F.row_number().over(Window.orderBy("_distinct_id")) - 1)
            )
            df = df.join(ids, key == F.col("_distinct_id")).drop("_distinct_id")
        select: list[Column] = [
            F.col("person_id").cast("long").alias("person_id"),
            F.col("timestamp"),
            F.col("event"),
        ]
        for name in dict.fromkeys(columns):
            path = property_path(name)
            if path is not None:
                # dotted names confuse Spark's resolver: carry a plain alias, renamed in Arrow
                alias = "__" + name.replace(".", "__")
                select.append(F.get_json_object(F.col("properties"), path).alias(alias))
            elif name not in ("person_id", "timestamp", "event"):
                select.append(F.col(name).alias(name))
        return df.select(*select)

    def map_person_partitions(
        self,
        fn: Callable[[PersonLayout], Any],
        *,
        columns: Sequence[str] = (),
        schema: pa.Schema,
        partition_by: str = "person_id",
        to_arrow_args: tuple[Any, ...] = (),
    ) -> pa.Table:
        """Repartition events by ``partition_by`` (so a unit never spans partitions), build a
        person layout per partition and run ``fn`` on it inside ``mapInArrow``. ``fn`` returns
        an Arrow table of ``schema``, or an object whose ``to_arrow(...)`` gives one (called
        with ``to_arrow_args``)."""
        from pyspark.sql import functions as F
        from pyspark.sql.pandas.types import from_arrow_schema

        def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            from funnelscope.store.layout import PersonLayout

            got = [b for b in batches if b.num_rows]
            if not got:
                return
            out = fn(PersonLayout.from_table(_plain_names(pa.Table.from_batches(got))))
            if not isinstance(out, pa.Table):
                out = out.to_arrow(*to_arrow_args)
            yield from out.to_batches()

        try:
            with warnings.catch_warnings():
                # mapInArrow moves Arrow batches only; PySpark's pandas-version notice does
                # not apply to it (and pytest turns warnings into errors)
                warnings.filterwarnings(
                    "ignore", "PySpark does not yet fully support pandas", FutureWarning
                )
                df = self._event_columns(columns)
                key = F.col(f"`{partition_by}`")
                if partition_by != "person_id":
                    df = df.where(key.isNotNull())
                partitions = max(2, int(self.spark.sparkContext.defaultParallelism) * 2)
                mapped = df.repartition(partitions, key).mapInArrow(
                    per_partition, from_arrow_schema(schema)
                )
                return mapped.toArrow().cast(schema)
        except Exception as exc:  # py4j and Python worker errors share no base class
            raise EngineError(f"spark engine failed: {exc}") from exc

    def events_of_person(self, person_id: int, columns: Sequence[str] = ()) -> pa.Table:
        """All events of one person (for explanations)."""
        from pyspark.sql import functions as F

        df = self._event_columns(columns).where(F.col("person_id") == int(person_id))
        return _plain_names(df.toArrow())


def _plain_names(table: pa.Table) -> pa.Table:
    """Undo the aliases of :meth:`SparkEngine._event_columns` (``__properties__x``)."""
    return table.rename_columns(
        [
            n[2:].replace("__", ".") if n.startswith("__properties__") else n
            for n in table.column_names
        ]
    )
