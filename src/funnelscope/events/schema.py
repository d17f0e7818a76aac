"""The canonical event: one row per touchpoint, the same whatever SDK or file it came from.

Everything that reaches the store passes through the staging columns (:data:`STAGING_COLUMNS`,
all text) and leaves as the typed canonical columns (:data:`EVENT_SCHEMA`). docs/data-model.md
describes each column; keep the two in step.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

__all__ = [
    "CONTEXT_COLUMNS",
    "EVENT_SCHEMA",
    "ITEM_TYPE",
    "MAX_PROPERTIES_BYTES",
    "STAGING_COLUMNS",
    "UTM_COLUMNS",
]

#: Properties larger than this (JSON, bytes) are rejected: ``event.properties_too_large``.
MAX_PROPERTIES_BYTES: Final = 32 * 1024

ITEM_TYPE: Final = pa.struct(
    [
        ("product_id", pa.string()),
        ("sku", pa.string()),
        ("name", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("variant", pa.string()),
        ("price", pa.decimal128(18, 4)),
        ("quantity", pa.int32()),
    ]
)

UTM_COLUMNS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
CONTEXT_COLUMNS: Final = (
    "page_url",
    "page_path",
    "page_title",
    "referrer",
    *UTM_COLUMNS,
    "device_type",
    "os",
    "browser",
    "country",
)

UTC = "UTC"

#: The typed canonical columns, in store order.
EVENT_SCHEMA: Final = pa.schema(
    [
        ("event_id", pa.string()),  # idempotency key: messageId / uuid / eid / file id
        ("timestamp", pa.timestamp("us", tz=UTC)),
        ("received_at", pa.timestamp("us", tz=UTC)),
        ("event", pa.string()),  # canonical name (see vocabulary.py)
        ("raw_event", pa.string()),  # the name as sent, before normalisation
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("person_id", pa.int32()),  # dense, assigned at ingest; stitched via person_map
        ("session_id", pa.string()),
        ("properties", pa.string()),  # JSON object text
        *[(name, pa.string()) for name in CONTEXT_COLUMNS],
        ("channel", pa.string()),  # derived: see channels.py
        ("revenue", pa.decimal128(18, 4)),  # in `currency`; never summed across currencies raw
        ("currency", pa.string()),
        ("order_id", pa.string()),
        ("cart_id", pa.string()),
        ("product_id", pa.string()),  # the single product of product-level events
        ("items", pa.list_(ITEM_TYPE)),
        ("source", pa.string()),  # where it came from: import:<file>, segment, posthog...
    ]
)

#: What a parser hands to the ingest pipeline: text columns, validated and typed by SQL.
#: ``properties`` and ``items`` are JSON text; ``timestamp`` is ISO 8601 or epoch s/ms.
_DERIVED: Final = ("person_id", "received_at", "raw_event", "channel")
STAGING_COLUMNS: Final = (*(n for n in EVENT_SCHEMA.names if n not in _DERIVED), "previous_id")
