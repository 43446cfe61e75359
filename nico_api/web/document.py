"""The OpenAPI document as the server serves it: as JSON (which is also YAML, so every
consumer reads it, generated clients and mock servers such as Prism included), or the YAML file
byte for byte for a client that prefers `application/yaml`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nico_api.config import spec_document

YAML = "application/yaml"
JSON = "application/json"


@dataclass(frozen=True)
class Document:
    by_media_type: dict[str, bytes]

    @classmethod
    def read(cls, path: Path) -> Document:
        text = path.read_bytes()
        as_json = json.dumps(spec_document(text), separators=(",", ":")).encode()
        return cls({YAML: text, JSON: as_json})

    def for_accept(self, accept: str | None) -> tuple[bytes, str]:
        """The body and its media type: the YAML file only when the client prefers it."""
        media_type = YAML if _quality(accept, YAML) > _quality(accept, JSON) else JSON
        return self.by_media_type[media_type], media_type


def _quality(accept: str | None, media_type: str) -> float:
    """The quality the Accept header gives `media_type`: its most specific matching range."""
    kind = media_type.split("/")[0]
    best = (-1, 1.0 if not accept else 0.0)
    for item in (accept or "").split(","):
        media_range, *params = (part.strip() for part in item.split(";"))
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(media_range.lower(), -1)
        if specificity > best[0]:
            quality = 1.0
            for param in params:
                name, _, value = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        quality = float(value)
                    except ValueError:
                        quality = 0.0
                    # RFC 9110 allows 0 to 1; anything else (NaN too) refuses the type.
                    quality = quality if 0 <= quality <= 1 else 0.0
            best = (specificity, quality)
    return best[1]
