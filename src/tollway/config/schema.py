"""The JSON Schema of gateway.yaml, generated from the config model (committed as
gateway.schema.json so editors validate the file as it is written)."""

from __future__ import annotations

import json

from tollway.config.model import Config


def schema_text() -> str:
    schema = Config.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tollway gateway.yaml"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
