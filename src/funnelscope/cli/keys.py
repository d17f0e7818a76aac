"""``funnelscope keys create|list|revoke``: the API keys of a store (see funnelscope.keys).

The server holds the store open while it runs (DuckDB allows one writing process), so keys are
managed with the server stopped, or created for the demo by ``funnelscope serve --demo``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from funnelscope.cli.common import DEFAULT_STORE, StoreOption, console, print_json

__all__ = ["register"]

keys_app = typer.Typer(
    help="API keys: write keys for ingestion, read keys for queries.", no_args_is_help=True
)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table or json")]


@keys_app.command("create")
def create(
    kind: Annotated[str, typer.Option("--kind", help="write (public, per source) or read")],
    source: Annotated[str, typer.Option("--source", help="Source name (write) or label (read).")],
    store: StoreOption = DEFAULT_STORE,
    format: FormatOption = "table",
) -> None:
    """Create a key and print it (a read key is shown only this once)."""
    import funnelscope
    from funnelscope.keys import create_key

    with funnelscope.open(store) as ws:
        created = create_key(ws.store, kind, source, now=datetime.now(UTC))
    if format == "json":
        print_json(created.to_dict())
        return
    console.print(
        f"{created.key.kind} key {created.key.key_id} for source {created.key.source!r}:",
        highlight=False,
    )
    console.print(created.token, highlight=False, soft_wrap=True)
    if created.key.kind == "read":
        console.print("Store it now: only its hash is kept.", style="yellow")


@keys_app.command("list")
def list_(
    store: StoreOption = DEFAULT_STORE,
    format: FormatOption = "table",
) -> None:
    """List every key (write keys in full, read keys by prefix only)."""
    import funnelscope
    from funnelscope.keys import list_keys

    with funnelscope.open(store) as ws:
        keys = list_keys(ws.store)
    if format == "json":
        print_json([k.to_dict() for k in keys])
        return
    from rich.table import Table

    table = Table("kind", "source", "created_at", "status")
    table.add_column("key_id", no_wrap=True)
    table.add_column("key", overflow="fold")
    for k in keys:
        shown = k.write_key if k.kind == "write" and k.write_key else f"{k.prefix}..."
        status = "active" if k.is_active else f"revoked {k.revoked_at:%Y-%m-%d %H:%M}"
        table.add_row(k.kind, k.source, f"{k.created_at:%Y-%m-%d %H:%M}", status, k.key_id, shown)
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...), see `keys list`.")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    import funnelscope
    from funnelscope.keys import revoke_key

    with funnelscope.open(store) as ws:
        key = revoke_key(ws.store, key_id, now=datetime.now(UTC))
    console.print(f"revoked {key.kind} key {key.key_id} ({key.source})", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
