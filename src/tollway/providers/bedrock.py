"""Amazon Bedrock through the Converse API (`kind: bedrock`): every model family Bedrock
serves (Claude, Llama, Mistral, Nova...) with one body, signed with SigV4.

An OpenAI chat request (or an Anthropic Messages one, through chat) becomes a Converse
request to `/model/{id}/converse`, or `/converse-stream` when streamed; the answers, the
binary event stream and the errors are read as chat from the first byte (a `ChatWire`).
Credentials come from botocore's chain (environment, shared files and `profile`, container
or instance role), resolved off the event loop and refreshed there when they expire; each
request is signed (SigV4, service `bedrock`) over its exact bytes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import orjson
from yarl import URL

from tollway.errors import GatewayError
from tollway.protocols import openai as oa
from tollway.protocols.translate.bedrock_answers import (
    ConverseToChatStream,
    bedrock_error_to_openai,
    converse_to_chat,
)
from tollway.protocols.translate.bedrock_requests import chat_to_converse
from tollway.providers.base import Outgoing, Provider, Translation
from tollway.providers.pivot import ChatWire, chat_pivot, pivot_outgoing

if TYPE_CHECKING:
    from tollway.config.model import ProviderConfig
    from tollway.exchange import Exchange
    from tollway.protocols.base import Endpoint

EVENT_STREAM = "application/vnd.amazon.eventstream"


class BedrockProvider(Provider):
    kind = "bedrock"
    dialect = "bedrock"
    estimated_tokens = True
    authorizes: ClassVar[bool] = True

    def __init__(self, name: str, cfg: ProviderConfig, demo_url: str | None = None) -> None:
        super().__init__(name, cfg, demo_url)
        self._credentials: Any = None
        self._frozen: Any = None
        self._lock = asyncio.Lock()

    def url(self, endpoint: Endpoint, upstream_model: str) -> str:
        return f"{self.root}/model/{quote(upstream_model, safe='')}/converse"

    async def authorize(self) -> None:
        creds = self._credentials
        if self._frozen is not None and not (
                hasattr(creds, "refresh_needed") and creds.refresh_needed()):
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                self._frozen = await loop.run_in_executor(None, self._resolve)
            except Exception as exc:  # botocore's errors: no credentials, a role refused
                raise GatewayError(502, "upstream_auth", f"provider {self.name!r} has no AWS "
                                   f"credentials ({type(exc).__name__})") from None

    def _resolve(self) -> Any:
        if self._credentials is None:
            import botocore.session

            session = botocore.session.Session(profile=self.cfg.profile)
            self._credentials = session.get_credentials()
            if self._credentials is None:
                raise LookupError("no AWS credentials found in the chain")
        return self._credentials.get_frozen_credentials()

    def outgoing(self, ex: Exchange, upstream_model: str, default_max_tokens: int,
                 ) -> Outgoing:
        tr, body = self.translate(ex, upstream_model, default_max_tokens)
        url = self.url(oa.CHAT, upstream_model)
        if ex.stream:
            url = url[: -len("/converse")] + "/converse-stream"
        data = orjson.dumps(body)
        headers = self.request_headers(ex.request.headers)
        headers.update(self._sign(url, data, headers))
        # as signed: "%3A" in a model id must stay so
        return pivot_outgoing(ex, URL(url, encoded=True), headers, data, tr,
                              ChatWire(ex.model_name, converse_to_chat,
                                       bedrock_error_to_openai, ConverseToChatStream,
                                       EVENT_STREAM))

    def _sign(self, url: str, data: bytes, headers: dict[str, str]) -> dict[str, str]:
        if self.is_demo or self._frozen is None:
            return {}
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="POST", url=url, data=data,
                             headers={"Content-Type": headers["Content-Type"]})
        SigV4Auth(self._frozen, "bedrock", str(self.cfg.region)).add_auth(request)
        return {k: v for k, v in request.headers.items()
                if k.lower() in ("authorization", "x-amz-date", "x-amz-security-token",
                                 "x-amz-content-sha256")}

    def translate(self, ex: Exchange, upstream_model: str, default_max_tokens: int,
                  ) -> tuple[Translation, dict[str, Any]]:
        return chat_pivot(ex, self.kind, upstream_model, chat_to_converse)
