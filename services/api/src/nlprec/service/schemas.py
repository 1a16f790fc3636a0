"""Request and response bodies.

Request models are built from the configured `Limits` (`request_models(limits)`), so the OpenAPI
schema states the limits the service enforces, and a request past one is a 422 problem naming the
field and the limit. Response models do not depend on configuration.
"""

from dataclasses import dataclass
from typing import Annotated, Literal, Self

from nlprec.service.config import Limits
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

SearchMode = Literal["bm25", "dense", "hybrid"]
# Requests are strict: `"k": "5"` or `"timestamp": false` is a 422, not silently coerced.
STRICT = ConfigDict(extra="forbid", strict=True)


# ---------------------------------------------------------------- responses


class Timings(BaseModel):
    total_ms: float = Field(description="time inside the service for this request")
    model_ms: float = Field(description="time in model calls (includes waiting for a micro-batch)")


class SearchResult(BaseModel):
    id: str
    score: float
    title: str
    snippet: str


class SearchResponse(BaseModel):
    results: list[SearchResult]
    mode: SearchMode
    rerank: bool
    model_versions: dict[str, str]
    timings: Timings


class BatchSearchResponse(BaseModel):
    results: list[list[SearchResult]] = Field(description="one result list per query, in order")
    mode: SearchMode
    rerank: bool
    model_versions: dict[str, str]
    timings: Timings


class RerankResponse(BaseModel):
    scores: list[float] = Field(description="one relevance score per document, in input order")
    ranking: list[int] = Field(description="document indices, best first")
    model_versions: dict[str, str]
    timings: Timings


class RecommendedItem(BaseModel):
    item: str
    score: float
    repeat: bool = Field(description="the user has had this item before")


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    fallback: bool = Field(description="popularity fallback (unknown user and no history)")
    notes: list[str] = Field(
        default_factory=list, description="e.g. unknown items that were ignored"
    )
    model_version: str
    timings: Timings


class EventsResponse(BaseModel):
    received: int
    added: int = Field(description="events new to the service")
    duplicates: int = Field(description="events whose event_id was already seen (ignored)")


class DocumentsResponse(BaseModel):
    added: int
    ids: list[str]


class DeletedResponse(BaseModel):
    deleted: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ModelStatus(BaseModel):
    name: str = Field(description="registered name@alias, or the model folder's name")
    version: str | None = Field(None, description="registry version being served")
    state: Literal["loading", "ready", "failed"]
    ready: bool
    versions: dict[str, str] = Field(
        default_factory=dict, description="component versions (encoder fingerprint, ...)"
    )


class Readiness(BaseModel):
    ready: bool
    models: dict[str, ModelStatus]


class ReloadResponse(BaseModel):
    swapped: dict[str, bool] = Field(description="per model: whether a new version was swapped in")
    models: dict[str, ModelStatus]


# ---------------------------------------------------------------- requests

MAX_ID_CHARS = 200


def text_field(min_length: int = 0, max_length: int | None = None) -> object:
    """A string type with length limits. (Lone surrogates, which JSON can carry and tokenizers
    cannot encode, are already refused by pydantic: "unable to parse raw data as a unicode string".)"""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length)]


Identifier = text_field(1, MAX_ID_CHARS)


class EventIn(BaseModel):
    model_config = STRICT
    user_id: Identifier
    item: Identifier
    timestamp: float = Field(
        ge=0,
        allow_inf_nan=False,
        description="seconds since the epoch (listening or basket time); "
        "more than a day in the future is refused",
    )
    event_id: Identifier = Field(description="idempotency key: an event_id seen before is ignored")


def _whole_number(value: object) -> object:
    # JSON Schema's "integer" includes 5.0; strict mode alone would refuse it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True)
class RequestModels:
    search: type[BaseModel]
    batch_search: type[BaseModel]
    rerank: type[BaseModel]
    recommend: type[BaseModel]
    events: type[BaseModel]
    documents: type[BaseModel]


def request_models(limits: Limits) -> RequestModels:
    """Request bodies whose constraints are the configured limits."""
    Query = text_field(1, limits.max_query_chars)
    # Field before the validator: the other order loses minimum/maximum in the JSON schema.
    K = Annotated[
        int,
        Field(ge=1, le=limits.max_k, description=f"results wanted (1-{limits.max_k})"),
        BeforeValidator(_whole_number),
    ]
    Document = text_field(0, limits.max_document_chars)
    Item = Identifier
    batch = {"min_length": 1, "max_length": limits.max_batch}

    class SearchRequest(BaseModel):
        model_config = STRICT
        query: Query
        k: K = 10
        mode: SearchMode = "hybrid"
        rerank: bool = False

    class BatchSearchRequest(BaseModel):
        model_config = STRICT
        queries: list[Query] = Field(**batch)
        k: K = 10
        mode: SearchMode = "hybrid"
        rerank: bool = False

    class RerankRequest(BaseModel):
        model_config = STRICT
        query: Query
        documents: list[Document] = Field(**batch)

    class RecommendRequest(BaseModel):
        # Either field may be left out, not both; they are typed without null so the schema
        # (string / array, plus the anyOf below) says exactly what is accepted.
        model_config = ConfigDict(
            extra="forbid",
            strict=True,
            json_schema_extra={"anyOf": [{"required": ["user_id"]}, {"required": ["history"]}]},
        )
        user_id: Item = Field(None, description="a known user (unknown users get the fallback)")
        history: list[Item] = Field(
            None,
            max_length=limits.max_history,
            description="items, oldest first: instead of user_id, or added to that user's history",
        )
        k: K = 10
        exclude_seen: bool = False

        @model_validator(mode="after")
        def _user_or_history(self) -> Self:
            if self.user_id is None and self.history is None:
                raise ValueError("give user_id, history or both")
            return self

    class EventsRequest(BaseModel):
        model_config = STRICT
        events: list[EventIn] = Field(**batch)

    class DocumentIn(BaseModel):
        model_config = STRICT
        id: Item
        title: Document = ""
        text: Document

    class DocumentsRequest(BaseModel):
        model_config = STRICT
        documents: list[DocumentIn] = Field(**batch)

    return RequestModels(
        search=SearchRequest,
        batch_search=BatchSearchRequest,
        rerank=RerankRequest,
        recommend=RecommendRequest,
        events=EventsRequest,
        documents=DocumentsRequest,
    )
