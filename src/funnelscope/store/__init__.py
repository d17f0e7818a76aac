"""DuckDB schema and migrations, the writer, and the person-clustered layout for sequence work."""

from funnelscope.store.store import DEFAULT_STORE_PATH, Store

__all__ = ["DEFAULT_STORE_PATH", "Store"]
