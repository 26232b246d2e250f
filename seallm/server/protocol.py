"""OpenAI's request and response shapes (completions, chat completions, models), as pydantic
models. Types are strict (a string is not a number, and 4.0 is not an integer), ranges are
OpenAI's; fields seallm does not model are ignored, and known features it does not implement
are refused with a 400 when set (`unsupported`), rather than silently dropped. `ignore_eos`
and `top_k` are vLLM's extensions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def integer(**limits: int) -> Any:
    """A strict integer within `limits` (ge, le, ...): a JSON number written with a fraction or
    an exponent (4.0, 1e3) is refused, as a string is, though JSON Schema calls 4.0 an integer."""
    return Annotated[int, Field(**limits)]


Int = integer()
NonNegInt = integer(ge=0)
StopField = Annotated[
    str | Annotated[list[str], Field(max_length=4)] | None,
    Field(description="up to 4 sequences where generation stops (not included in the text)"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    """The sampling fields the two endpoints share."""

    model: str
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    # 0 (or anything below generate.SAMPLING_EPS) keeps the most likely token only.
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_k: integer(ge=-1) | None = None
    seed: integer(ge=-(2**63), lt=2**64) | None = None
    stop: StopField = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: integer(ge=1, le=128) = 1
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    ignore_eos: bool = False

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for a known feature this server does not implement."""
        if self.n != 1:
            return "n", "n: only n=1 is supported; send separate requests for more choices"
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                return name, f"{name}: penalties are not supported (use 0 or leave it out)"
        if self.logit_bias:
            return "logit_bias", "logit_bias: not supported"
        return None

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[Int] | list[list[Int]]
    max_tokens: integer(ge=1) | None = 16
    echo: bool = False
    logprobs: NonNegInt | None = None
    best_of: integer(ge=1) | None = None
    suffix: str | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if self.echo:
            return "echo", "echo: not supported"
        if self.logprobs is not None:
            return "logprobs", "logprobs: not supported"
        if self.best_of not in (None, 1):
            return "best_of", "best_of: only 1 is supported"
        if self.suffix:
            return "suffix", "suffix: not supported"
        return super().unsupported()


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    """A turn of the conversation; its content is required (null or missing is refused
    whatever the role: an assistant turn of tool calls only has no meaning without tools)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: integer(ge=1) | None = None
    max_completion_tokens: integer(ge=1) | None = None
    logprobs: bool = False
    top_logprobs: NonNegInt | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if self.logprobs or self.top_logprobs:
            return "logprobs", "logprobs: not supported"
        if self.tools:
            return "tools", "tools: tool calling is not supported"
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            return "response_format", "response_format: only {'type': 'text'} is supported"
        return super().unsupported()


# -- responses ---------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "seallm"
    max_model_len: int
    architecture: str
    kind: Literal["instruct", "base"] = Field(
        description="instruct: tuned to answer chat turns; base: a plain language model that "
        "continues its text (use /v1/completions: in a chat it tends to echo the prompt)"
    )
    has_chat_template: bool = Field(
        description="whether the model ships a chat template; if not, /v1/chat/completions "
        "renders the turns in a generic format the model was not trained on"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
