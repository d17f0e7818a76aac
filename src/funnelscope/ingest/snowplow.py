"""The Snowplow tracker protocol: one event's parameters -> one staging row.

A Snowplow tracker sends each event as short string parameters (``e``, ``eid``, ``duid``,
``dtm``, ``url``, ...): one GET ``/i`` query, or one item of a ``tp2`` POST's ``data[]``.
Self-describing events (``ue``) and the context entities (``cx`` / ``co``) are JSON inside
those strings, base64 or plain. This protocol shares nothing with the JSON messages of
Segment, RudderStack and PostHog (:mod:`funnelscope.ingest.records`) but the field converters
of :mod:`funnelscope.ingest.record_fields`, so it lives on its own.

The entry point is :func:`from_snowplow` (re-exported by :mod:`funnelscope.ingest.records`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from funnelscope.ingest.record_fields import (
    as_device_type,
    as_ident,
    as_text,
    content_id,
    country_of_locale,
    empty_row,
    finish_row,
    invalid_event,
    iso_utc,
    lenient_b64decode,
    lift_commerce,
    put_commerce,
    user_agent_parts,
)

__all__ = ["from_snowplow"]

_SNOWPLOW_NAMES: Final = {
    "pv": "page_view",
    "pp": "page_ping",
    "tr": "transaction",
    "ti": "transaction_item",
}
_ECOMMERCE = "com.snowplowanalytics.snowplow.ecommerce/"


def _snowplow_json(params: Mapping[str, str], encoded: str, plain: str) -> Any:
    """The self-describing JSON in ``encoded`` (base64) or ``plain``; None when absent."""
    if params.get(encoded):
        try:
            text = lenient_b64decode(params[encoded]).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid_event(
                "snowplow.bad_base64", encoded, f"{encoded} is not base64 JSON: {exc}"
            ) from None
    elif params.get(plain):
        text = params[plain]
    else:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = encoded if params.get(encoded) else plain
        raise invalid_event("snowplow.bad_json", where, f"{where} is not JSON: {exc}") from None


def _schema_name(schema: Any) -> str:
    """'iglu:com.acme/link_click/jsonschema/1-0-0' -> 'link_click'."""
    parts = str(schema).split("/")
    return parts[-3] if len(parts) >= 3 else str(schema)


def _ms_time(value: Any) -> datetime | None:
    text = as_text(value)
    if text is None or not text.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def from_snowplow(
    params: Mapping[str, str], *, received_at: datetime | None = None
) -> dict[str, str | None]:
    """One Snowplow tracker-protocol event (GET ``/i`` query or one ``tp2`` ``data[]`` item).

    The event name: ``pv`` -> ``page_view``, ``se`` -> its action (``se_ac``), ``ue`` -> the
    ecommerce action type (``snowplow_ecommerce_action.type``) or the event schema's name,
    ``tr``/``ti`` -> ``transaction`` / ``transaction_item``. Event time: ``ttm`` (true
    timestamp), else ``received_at - (stm - dtm)`` (Snowplow's derived timestamp), else ``dtm``,
    else ``received_at``.

    Raises
    ------
    InvalidEventError
        ``event.not_an_object``, ``snowplow.missing_event_type``, ``snowplow.bad_base64``,
        ``snowplow.bad_json``.

    Examples
    --------
    >>> row = from_snowplow({"e": "se", "se_ca": "shop", "se_ac": "add-to-cart", "eid": "e1",
    ...                      "duid": "d1", "dtm": "1714557600000"})
    >>> row["event"], row["anonymous_id"], row["timestamp"]
    ('add-to-cart', 'd1', '2024-05-01T10:00:00+00:00')
    """
    if not isinstance(params, Mapping):
        raise invalid_event("event.not_an_object", "", "each event must be a JSON object")
    p = {str(k): (v if isinstance(v, str) else as_text(v) or "") for k, v in params.items()}
    kind = p.get("e", "").strip()
    if not kind:
        raise invalid_event(
            "snowplow.missing_event_type", "e", "e (event type: pv, pp, se, ue, tr, ti) is required"
        )
    row = empty_row()
    props: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    name: str | None = _SNOWPLOW_NAMES.get(kind, kind)
    if kind == "se":
        name = as_text(p.get("se_ac"))
        for short, long in (
            ("ca", "category"),
            ("ac", "action"),
            ("la", "label"),
            ("pr", "property"),
            ("va", "value"),
        ):
            if (value := as_text(p.get(f"se_{short}"))) is not None:
                props[f"se_{long}"] = value
    elif kind == "ue":
        wrapper = _snowplow_json(p, "ue_px", "ue_pr")
        inner = wrapper.get("data") if isinstance(wrapper, dict) else None
        if isinstance(inner, dict):
            data = inner.get("data")
            schema = str(inner.get("schema", ""))
            props["schema"] = schema
            if isinstance(data, dict):
                is_action = _schema_name(schema) == "snowplow_ecommerce_action"
                name = as_text(data.get("type")) if is_action else _schema_name(schema)
                props.update({k: v for k, v in data.items() if not (is_action and k == "type")})
            else:
                name = _schema_name(schema)
        else:
            name = None
    elif kind == "tr":
        for short, long in (
            ("id", "order_id"),
            ("tt", "total"),
            ("tx", "tax"),
            ("sh", "shipping"),
            ("cu", "currency"),
            ("af", "affiliation"),
        ):
            if (value := as_text(p.get(f"tr_{short}"))) is not None:
                props[long] = value
    elif kind == "ti":
        props["order_id"] = as_text(p.get("ti_id"))
        items.append(
            {
                k: v
                for k, v in (
                    ("sku", as_text(p.get("ti_sk"))),
                    ("name", as_text(p.get("ti_nm"))),
                    ("category", as_text(p.get("ti_ca"))),
                    ("price", as_text(p.get("ti_pr"))),
                    ("quantity", as_text(p.get("ti_qu"))),
                )
                if v is not None
            }
        )
        if (currency := as_text(p.get("ti_cu"))) is not None:
            props["currency"] = currency
    row["event"] = name

    contexts = _snowplow_json(p, "cx", "co")
    other: list[Any] = []
    for entity in contexts.get("data", []) if isinstance(contexts, dict) else []:
        if not isinstance(entity, dict) or not isinstance(entity.get("data"), dict):
            other.append(entity)
            continue
        schema, data = str(entity.get("schema", "")), dict(entity["data"])
        entity_name = _schema_name(schema) if _ECOMMERCE in schema else None
        if entity_name == "product":
            items.append(data)
        elif entity_name == "transaction":
            props.setdefault("order_id", data.pop("transaction_id", None))
            props.setdefault("revenue", data.pop("revenue", None))
            props.setdefault("currency", data.pop("currency", None))
            props["transaction"] = data
        elif entity_name == "cart":
            props.setdefault("cart_id", data.pop("cart_id", None))
            props.setdefault("value", data.pop("total_value", None))
            props.setdefault("currency", data.pop("currency", None))
        elif entity_name == "user":
            props["traits"] = data
        else:
            other.append(dict(entity))
    if other:
        props["contexts"] = other
    props = {k: v for k, v in props.items() if v is not None}
    if items:
        props["items"] = items
    put_commerce(row, lift_commerce(props, lift_product=False))

    row["event_id"] = as_ident(p.get("eid")) or content_id("snowplow", p)
    row["user_id"] = as_ident(p.get("uid"))
    row["anonymous_id"] = as_ident(p.get("duid")) or as_ident(p.get("nuid"))
    row["session_id"] = as_text(p.get("sid"))
    true_ts, created, sent = _ms_time(p.get("ttm")), _ms_time(p.get("dtm")), _ms_time(p.get("stm"))
    if true_ts is not None:
        row["timestamp"] = iso_utc(true_ts)
    elif created is not None and sent is not None and received_at is not None:
        row["timestamp"] = iso_utc(received_at - (sent - created))
    elif created is not None:
        row["timestamp"] = iso_utc(created)
    elif received_at is not None:
        row["timestamp"] = iso_utc(received_at)
    else:
        row["timestamp"] = as_text(p.get("dtm"))
    row["page_url"] = as_text(p.get("url"))
    row["page_title"] = as_text(p.get("page"))
    row["referrer"] = as_text(p.get("refr"))
    ua = as_text(p.get("ua"))
    row["browser"], row["os"], ua_device = user_agent_parts(ua)
    # the python tracker's default platform is "pc" whatever the user agent: the UA wins
    row["device_type"] = ua_device or as_device_type(p.get("p"))
    row["country"] = country_of_locale(p.get("lang"))
    context = {
        key: value
        for key, value in (
            ("ip", as_text(p.get("ip"))),
            ("user_agent", ua),
            ("locale", as_text(p.get("lang"))),
            ("app_id", as_text(p.get("aid"))),
            ("namespace", as_text(p.get("tna"))),
            ("platform", as_text(p.get("p"))),
            ("resolution", as_text(p.get("res"))),
            ("viewport", as_text(p.get("vp"))),
            ("timezone", as_text(p.get("tz"))),
            (
                "library",
                {"name": "snowplow", "version": as_text(p.get("tv"))} if p.get("tv") else None,
            ),
        )
        if value is not None
    }
    if context:
        props["context"] = context
    return finish_row(row, props)
