"""Protocol-neutral types shared by the gateway, the backends and the engine.

Nothing here knows a wire format: dialects translate to and from these types at the edge (`somner.wire`).
Plain dataclasses, no validation: values are checked where they enter (wire schemas, settings).
"""

from somner.core.reasoning import Reasoning, ReasoningFormat, ReasoningSplitter
from somner.core.tool_calls import ToolCallAssembler, check_tools
from somner.core.types import (
    IMAGE_MARKER,
    AdapterScale,
    ChatRequest,
    Chunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResult,
    FinishReason,
    Image,
    Message,
    RerankRequest,
    RerankResult,
    SamplingParams,
    Timings,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    TopLogprob,
    Usage,
)

__all__ = [
    "IMAGE_MARKER",
    "AdapterScale",
    "ChatRequest",
    "Chunk",
    "CompletionRequest",
    "EmbeddingRequest",
    "EmbeddingResult",
    "FinishReason",
    "Image",
    "Message",
    "Reasoning",
    "ReasoningFormat",
    "ReasoningSplitter",
    "RerankRequest",
    "RerankResult",
    "SamplingParams",
    "Timings",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolCallAssembler",
    "ToolCallDelta",
    "ToolChoice",
    "ToolChoiceMode",
    "TopLogprob",
    "Usage",
    "check_tools",
]
