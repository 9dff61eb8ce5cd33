"""Google Cloud Vertex AI (`kind: vertex`): Gemini models and Anthropic's Claude models in a
project and location, with an OAuth access token from google-auth.

- Gemini (`publishers/google`): the same body as the Generative Language API
  (`:generateContent`, `:streamGenerateContent?alt=sse`), read as chat by the same wire.
- Claude (`publishers/anthropic`, any model whose upstream name starts with `claude`): the
  Messages body without `model` and with `anthropic_version: vertex-2023-10-16`, to
  `:rawPredict` / `:streamRawPredict`; its answers are Anthropic's own.

Credentials: the service-account key in `credentials_file`, else Application Default
Credentials (the metadata server on GCP, `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user
login). google-auth refreshes synchronously (it signs a JWT and calls the token endpoint):
off the event loop, once per token lifetime for every request of the provider, a minute
before expiry; the token never appears in logs, errors or metrics.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from tollway.errors import GatewayError
from tollway.providers.anthropic import chat_as_messages
from tollway.providers.base import Outgoing, Provider
from tollway.providers.gemini import gemini_outgoing

if TYPE_CHECKING:
    from tollway.config.model import ProviderConfig
    from tollway.exchange import Exchange
    from tollway.protocols.base import Endpoint

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
_EARLY_S = 60.0  # refresh this long before the token expires


class VertexProvider(Provider):
    kind = "vertex"
    dialect = "vertex"  # no client speaks it: Gemini and Claude are both reached by URL
    estimated_tokens = True
    authorizes: ClassVar[bool] = True

    def __init__(self, name: str, cfg: ProviderConfig, demo_url: str | None = None) -> None:
        super().__init__(name, cfg, demo_url)
        self._credentials: Any = None
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def url(self, endpoint: Endpoint, upstream_model: str) -> str:
        return self.model_url(upstream_model, "generateContent")

    def model_url(self, upstream_model: str, method: str) -> str:
        cfg = self.cfg
        publisher = "anthropic" if upstream_model.startswith("claude") else "google"
        return (f"{self.root}/v1/projects/{cfg.project}/locations/{cfg.location}"
                f"/publishers/{publisher}/models/{upstream_model}:{method}")

    async def authorize(self) -> None:
        if self._token is not None and time.time() < self._expires - _EARLY_S:
            return
        async with self._lock:
            if self._token is not None and time.time() < self._expires - _EARLY_S:
                return
            loop = asyncio.get_running_loop()
            try:
                token, expires = await loop.run_in_executor(None, self._refresh)
            except Exception as exc:  # google-auth's errors, network errors
                raise GatewayError(502, "upstream_auth", f"provider {self.name!r} could not get "
                                   f"a Google access token ({type(exc).__name__})") from None
            self._token, self._expires = token, expires

    def _refresh(self) -> tuple[str, float]:
        import google.auth
        import google.auth.transport.requests
        from google.oauth2 import service_account

        if self._credentials is None:
            path = self.cfg.credentials_file
            self._credentials = (
                service_account.Credentials.from_service_account_file(path, scopes=SCOPES)
                if path else google.auth.default(scopes=SCOPES)[0])
        creds = self._credentials
        creds.refresh(google.auth.transport.requests.Request())
        expiry = creds.expiry.timestamp() if creds.expiry is not None else time.time() + 3000
        return str(creds.token), expiry

    def request_headers(self, client: Any) -> dict[str, str]:
        headers = super().request_headers(client)
        if self._token is not None and not self.is_demo:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def outgoing(self, ex: Exchange, upstream_model: str, default_max_tokens: int,
                 ) -> Outgoing:
        if not upstream_model.startswith("claude"):
            method = "streamGenerateContent?alt=sse" if ex.stream else "generateContent"
            return gemini_outgoing(self, ex, self.model_url(upstream_model, method),
                                   upstream_model)
        url = self.model_url(upstream_model, "streamRawPredict" if ex.stream else "rawPredict")
        headers = self.request_headers(ex.request.headers)
        if ex.endpoint.name == "messages":
            body = {k: v for k, v in ex.body.items() if k != "model"}
            body["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
            return Outgoing(url, headers, orjson.dumps(body), None)
        tr, body = chat_as_messages(ex, self.kind, upstream_model, default_max_tokens)
        body.pop("model", None)
        body["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
        return Outgoing(url, headers, orjson.dumps(body), tr)
