"""Cross-dialect translation: OpenAI chat completions <-> Anthropic Messages.

Pure functions and small state machines, no I/O: the gateway calls them on the hot path to
serve an OpenAI-speaking client from an Anthropic model and the other way round, so that
the client's official SDK cannot tell the difference.
"""

from tollway.protocols.translate.answers import (
    chat_response_to_messages,
    messages_response_to_chat,
)
from tollway.protocols.translate.errors import (
    TranslationError,
    error_to_anthropic,
    error_to_openai,
)
from tollway.protocols.translate.requests import chat_to_messages, messages_to_chat
from tollway.protocols.translate.streams import ChatToMessagesStream, MessagesToChatStream

__all__ = [
    "ChatToMessagesStream",
    "MessagesToChatStream",
    "TranslationError",
    "chat_response_to_messages",
    "chat_to_messages",
    "error_to_anthropic",
    "error_to_openai",
    "messages_response_to_chat",
    "messages_to_chat",
]
