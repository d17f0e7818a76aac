"""``funnelscope keys create|list|revoke``: the API keys of a store (see funnelscope.keys).

Two ways to reach the keys:

* ``--store PATH`` (the default): open the store file. ``funnelscope serve`` holds that file
  while it runs (DuckDB allows one writing process), so this only works with the server stopped;
  when the file is locked the command says so in one line and shows the ``--server`` form.
* ``--server URL --key ADMIN_KEY`` (or ``FUNNELSCOPE_SERVER`` / ``FUNNELSCOPE_ADMIN_KEY``): ask
  the running server through its keys API (:mod:`funnelscope.api.keys`); the collector keeps
  running, and a revoked key is refused from the server's next request on.

Exit codes: 2 for bad input (an unknown kind or key id, a key the server refuses), 1 for other
failures (the server cannot be reached or fails).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

import typer

from funnelscope.cli.common import DEFAULT_STORE, StoreOption, console, print_json
from funnelscope.errors import FunnelscopeError, InvalidInputError, Problem, StoreError

__all__ = ["register"]

keys_app = typer.Typer(
    help="API keys: write keys for ingestion, read keys for queries, admin keys for managing keys.",
    no_args_is_help=True,
)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table or json")]
ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="URL of a running `funnelscope serve` (e.g. http://127.0.0.1:8000): manage keys "
        "through it instead of opening the store.",
        envvar="FUNNELSCOPE_SERVER",
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="An admin key (fsa_...) for --server.",
        envvar="FUNNELSCOPE_ADMIN_KEY",
        show_default=False,
    ),
]

#: Seconds to wait for the server: key operations are a single small write.
HTTP_TIMEOUT_SECONDS: Final = 15.0


# -- the store, or why it cannot be opened --------------------------------------------------


def _open(store: Any, command: str) -> Any:
    import funnelscope

    try:
        return funnelscope.open(store)
    except StoreError as exc:
        if "lock" not in str(exc.__cause__ or exc).lower():
            raise
        raise StoreError(
            f"the store {store} is held by a running process (funnelscope serve?): manage keys "
            f"through the server instead: funnelscope keys {command} ... --server "
            "http://HOST:PORT --key ADMIN_KEY (see docs/keys.md)"
        ) from exc


# -- the server's keys API -----------------------------------------------------------------------


def _call(server: str, key: str | None, method: str, path: str, body: Any = None) -> Any:
    """One request to the keys API; errors become InvalidInputError (4xx) or FunnelscopeError."""
    import httpx

    if not key:
        raise InvalidInputError(
            [
                Problem(
                    "keys.missing_admin_key",
                    "--key",
                    "--server needs an admin key: --key fsa_... or FUNNELSCOPE_ADMIN_KEY",
                )
            ]
        )
    url = server.rstrip("/") + path
    try:
        response = httpx.request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=HTTP_TIMEOUT_SECONDS,
        )
    except httpx.InvalidURL as exc:
        raise InvalidInputError(
            [Problem("keys.bad_server", "--server", f"not a URL: {server!r} ({exc})")]
        ) from exc
    except httpx.HTTPError as exc:
        raise FunnelscopeError(f"cannot reach the funnelscope server at {server}: {exc}") from exc
    if response.is_success:
        return response.json()
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if response.status_code in (401, 403):
        code = str(payload.get("code", "auth.refused"))
        refused = f"the server refused the key ({response.status_code}): {detail}"
        raise InvalidInputError([Problem(code, "--key", refused)])
    if 400 <= response.status_code < 500 and isinstance(detail, list):
        raise InvalidInputError(
            [
                Problem(
                    str(d.get("type", "input.invalid")),
                    ".".join(str(part) for part in d.get("loc", [])[1:]),
                    str(d.get("msg", "")),
                )
                for d in detail
                if isinstance(d, dict)
            ]
        )
    raise FunnelscopeError(
        f"the server answered {response.status_code} to {method} {path}: {detail or response.text}"
    )


# -- commands ------------------------------------------------------------------------------------


@keys_app.command("create")
def create(
    kind: Annotated[str, typer.Option("--kind", help="write (public, per source) or read")],
    source: Annotated[str, typer.Option("--source", help="Source name (write) or label (read).")],
    admin: Annotated[
        bool, typer.Option("--admin", help="A read key that may also manage keys (fsa_...).")
    ] = False,
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    key: KeyOption = None,
    format: FormatOption = "table",
) -> None:
    """Create a key and print it (a read or admin key is shown only this once)."""
    from funnelscope.keys import create_key

    if server:
        created = _call(
            server, key, "POST", "/api/v1/keys", {"kind": kind, "source": source, "is_admin": admin}
        )
    else:
        with _open(store, "create") as ws:
            created = create_key(ws.store, kind, source, now=datetime.now(UTC), is_admin=admin)
            created = created.to_dict()
    if format == "json":
        print_json(created)
        return
    label = "admin" if created["is_admin"] else created["kind"]
    console.print(
        f"{label} key {created['key_id']} for source {created['source']!r}:", highlight=False
    )
    console.print(created["token"], highlight=False, soft_wrap=True)
    if created["kind"] == "read":
        console.print("Store it now: only its hash is kept.", style="yellow")


@keys_app.command("list")
def list_(
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    key: KeyOption = None,
    format: FormatOption = "table",
) -> None:
    """List every key (write keys in full, read keys by prefix only)."""
    from funnelscope.keys import list_keys

    if server:
        keys = _call(server, key, "GET", "/api/v1/keys")["keys"]
    else:
        with _open(store, "list") as ws:
            keys = [k.to_dict() for k in list_keys(ws.store)]
    if format == "json":
        print_json(keys)
        return
    from rich.table import Table

    table = Table("kind", "source", "created_at", "status")
    table.add_column("key_id", no_wrap=True)
    table.add_column("key", overflow="fold")
    for k in keys:
        shown = k["write_key"] if k["kind"] == "write" and k["write_key"] else f"{k['prefix']}..."
        revoked = k["revoked_at"]
        status = "active" if revoked is None else f"revoked {_minute(revoked)}"
        kind = "admin" if k["is_admin"] else k["kind"]
        table.add_row(kind, k["source"], _minute(k["created_at"]), status, k["key_id"], shown)
    console.print(table)


def _minute(iso: str) -> str:
    return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M}"


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...), see `keys list`.")],
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    key: KeyOption = None,
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    from funnelscope.keys import revoke_key

    if server:
        revoked = _call(server, key, "DELETE", f"/api/v1/keys/{_path_segment(key_id)}")["key"]
    else:
        with _open(store, "revoke") as ws:
            revoked = revoke_key(ws.store, key_id, now=datetime.now(UTC)).to_dict()
    console.print(
        f"revoked {revoked['kind']} key {revoked['key_id']} ({revoked['source']})", highlight=False
    )


def _path_segment(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
