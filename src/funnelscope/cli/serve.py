"""``funnelscope serve``: collector, live view, query API and dashboard, on uvicorn."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Final

import typer

from funnelscope.cli.common import DEFAULT_STORE, StoreOption, console

__all__ = ["memory_limit_setting", "register"]

#: The demo's keys are kept in the store's meta table so a second ``--demo`` run reuses them
#: (a read key's secret is otherwise never stored: this is for the local demo only).
DEMO_SOURCE: Final = "demo"
_DEMO_READ_META: Final = "demo_read_key"


def _demo_keys(ws: object) -> tuple[str, str]:
    from funnelscope.keys import create_key, find_key, list_keys
    from funnelscope.workspace import Workspace

    assert isinstance(ws, Workspace)
    store = ws.store
    now = datetime.now(UTC)
    write = next(
        (
            k.write_key
            for k in list_keys(store, include_revoked=False)
            if k.kind == "write" and k.source == DEMO_SOURCE and k.write_key
        ),
        None,
    )
    if write is None:
        write = create_key(store, "write", DEMO_SOURCE, now=now).token
    read = store.get_meta(_DEMO_READ_META)
    if read is None or find_key(store, read) is None:
        # an admin key, so the demo's Keys page works too (docs/keys.md)
        read = create_key(store, "read", DEMO_SOURCE, now=now, is_admin=True).token
        store.set_meta(_DEMO_READ_META, read)
    return write, read


_MEMORY: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", re.IGNORECASE)
_UNIT_BYTES: Final = {
    **{u: 1000**i for i, u in enumerate(("kb", "mb", "gb", "tb"), 1)},
    **{u: 1024**i for i, u in enumerate(("kib", "mib", "gib", "tib"), 1)},
}
#: below this DuckDB cannot hold a load's working set: the collector's loads would fail
MIN_MEMORY_BYTES: Final = 64 * 1000**2


def memory_limit_setting(limit: str) -> str:
    """``limit`` (e.g. ``"2GB"``) as DuckDB's ``memory_limit`` setting, checked.

    The cap covers the store's DuckDB: its cache of blocks and every query's working memory
    (what does not fit is evicted or spilled to disk). DuckDB's own default is 80% of the
    machine's RAM, which a long-running server fills with cached blocks as the data grows; a
    shop running the collector beside other services sets a cap. Raises
    :class:`~funnelscope.errors.InvalidInputError` for a malformed size or one under 64 MB.

    Examples
    --------
    >>> memory_limit_setting(" 1.5 GiB")
    '1.5GiB'
    """
    from funnelscope.errors import InvalidInputError, Problem

    found = _MEMORY.fullmatch(limit)
    if found is None or float(found[1]) * _UNIT_BYTES[found[2].lower()] < MIN_MEMORY_BYTES:
        raise InvalidInputError(
            [
                Problem(
                    "serve.bad_memory_limit",
                    "--memory-limit",
                    f"{limit!r} is not a memory size of at least 64MB: a number and one of "
                    "KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), "
                    "e.g. 2GB",
                )
            ]
        )
    return f"{found[1]}{found[2]}"


def serve(
    store: StoreOption = DEFAULT_STORE,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="Create (or reuse) a demo write key and read key and print them."
        ),
    ] = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin", help="Allowed browser origin (repeatable); default: any origin."
        ),
    ] = None,
    rate_limit: Annotated[
        float, typer.Option("--rate-limit", help="Requests per second per key (0 = no limit).")
    ] = 1000.0,
    timezone: Annotated[
        str, typer.Option("--timezone", help="IANA time zone of 'today' in the live view.")
    ] = "UTC",
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="Accept requests without keys (local experiments only)."),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning")] = "info",
    webhooks_every: Annotated[
        float,
        typer.Option("--webhooks-every", help="Seconds between webhook deliveries (0 = off)."),
    ] = 60.0,
    segments_every: Annotated[
        float, typer.Option("--segments-every", help="Seconds between segment refreshes (0 = off).")
    ] = 900.0,
    goals_every: Annotated[
        float, typer.Option("--goals-every", help="Seconds between goal evaluations (0 = off).")
    ] = 900.0,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            "--memory-limit",
            help="Cap on the store's memory (DuckDB's cache and query memory), e.g. 2GB; "
            "default: DuckDB's, 80% of RAM.",
        ),
    ] = None,
) -> None:
    """Serve the collector (Segment, RudderStack, PostHog, Snowplow), live view, API and app."""
    import zoneinfo

    import funnelscope
    from funnelscope.api import ApiSettings, create_app
    from funnelscope.api.ops import configure_logging
    from funnelscope.api.server import serve as run
    from funnelscope.errors import InvalidInputError, Problem

    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            [
                Problem(
                    "serve.bad_timezone",
                    "--timezone",
                    f"unknown time zone {timezone!r} (e.g. Europe/Berlin)",
                )
            ]
        ) from None
    settings = ApiSettings(
        require_auth=not no_auth,
        cors_origins=tuple(cors_origin) if cors_origin else ("*",),
        rate_limit_per_second=rate_limit,
        rate_limit_burst=max(rate_limit * 2, 1.0),
        timezone=timezone,
        webhooks_every_seconds=webhooks_every,
        segments_every_seconds=segments_every,
        goals_every_seconds=goals_every,
    )
    for flag, value in (
        ("--webhooks-every", webhooks_every),
        ("--segments-every", segments_every),
        ("--goals-every", goals_every),
    ):
        if value < 0:
            raise InvalidInputError(
                [
                    Problem(
                        "serve.bad_interval", flag, f"{flag} must be >= 0 seconds (0 turns it off)"
                    )
                ]
            )
    configure_logging(log_level)
    setting = memory_limit_setting(memory_limit) if memory_limit is not None else None
    ws = funnelscope.open(store)
    if setting is not None:
        ws.store.reader().execute("SET memory_limit = ?", [setting])
    base = f"http://{host}:{port}"
    if demo:
        write, read = _demo_keys(ws)
        console.print(f"[bold]funnelscope[/bold] serving {ws.path}", highlight=False)
        console.print(f"  dashboard  {base}/   (log in with the read key below)", highlight=False)
        console.print(f"  read key   {read}", highlight=False, soft_wrap=True)
        console.print(
            f"  write key  {write}   (source '{DEMO_SOURCE}'; point SDKs at {base})",
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            f"  try it     curl -u {write}: -H 'content-type: application/json' "
            f'-d \'{{"batch":[{{"type":"track","event":"Product Viewed",'
            f'"userId":"u1"}}]}}\' {base}/v1/batch',
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"funnelscope serving {ws.path} on {base} (docs: {base}/docs)", highlight=False
        )
    try:
        run(create_app(ws, settings), host=host, port=port, log_level=log_level)
    finally:
        ws.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
