"""Conversation events: what producers put on the input topic.

The model only ever sees the messages; everything else is routing and bookkeeping. Unknown top-level fields
are kept in ``metadata`` (wire contract v1) so producers can add fields without being dead-lettered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["user", "assistant"]
Side = Literal["prompt", "response"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,255}$"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class Message(BaseModel):
    """One conversation turn. ``assistant`` turns are rendered as ``Agent:`` in Llama Guard prompts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message content must not be empty or whitespace only")
        return value


class ConversationEvent(BaseModel):
    """A conversation to moderate, keyed ``tenant_id:conversation_id`` on Kafka."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(pattern=ID_PATTERN, description="Producer-chosen id; verdicts repeat it.")
    tenant_id: str = Field(pattern=TENANT_PATTERN)
    conversation_id: str = Field(pattern=ID_PATTERN)
    messages: tuple[Message, ...] = Field(min_length=1)
    classify: Side | None = Field(
        default=None,
        description="Which side to judge; default: response if the last message is the assistant's.",
    )
    partial: bool = Field(
        default=False,
        description="The last message is an assistant reply still being generated: this event holds the "
        "reply so far (a streamed chunk). Needs response_id. The reply's final event has partial false.",
    )
    response_id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Which assistant reply a (partial) event carries; verdicts echo it with partial.",
    )
    created_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _keep_unknown_fields_in_metadata(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        extra = {k: v for k, v in data.items() if k not in known}
        if not extra:
            return data
        kept = {k: v for k, v in data.items() if k in known}
        if not isinstance(kept.get("metadata") or {}, dict):
            return data  # let the schema report metadata's type instead of merging into it
        metadata = dict(kept.get("metadata") or {})
        for key, value in extra.items():
            metadata.setdefault(key, value)
        kept["metadata"] = metadata
        return kept

    @model_validator(mode="after")
    def _side_matches_messages(self) -> ConversationEvent:
        if self.classify == "response" and self.messages[-1].role != "assistant":
            raise ValueError("classify=response needs the last message to be the assistant's")
        if self.classify == "prompt" and not any(m.role == "user" for m in self.messages):
            raise ValueError("classify=prompt needs at least one user message")
        if self.partial:
            if self.messages[-1].role != "assistant" or self.classify == "prompt":
                raise ValueError("partial=true marks the last message as an assistant reply in progress")
            if self.response_id is None:
                raise ValueError("partial=true needs a response_id naming the reply being streamed")
        return self

    @property
    def side(self) -> Side:
        """The side to judge: explicit ``classify`` or inferred from the last message's role."""
        if self.classify is not None:
            return self.classify
        return "response" if self.messages[-1].role == "assistant" else "prompt"

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.conversation_id}"

    def conversation_for_side(self) -> tuple[Message, ...]:
        """Messages the guard reads for this side.

        For prompt classification Llama Guard must not see the agent's reply to the prompt it judges, so
        turns after the last user message are dropped.
        """
        if self.side == "response":
            return self.messages
        last_user = max(i for i, m in enumerate(self.messages) if m.role == "user")
        return self.messages[: last_user + 1]
