"""A workflow to start, in either of two shapes, validated into one definition.

Parley's own:
    {"workflow_type", "input", "agents", "rules", "default_agent", "rounds", "metadata",
     "conversation_id"}
The shape clients of the system Parley replaces send:
    {"workflow_type", "conversation_id", "participating_agents",
     "workflow_config": {"routing_rules": {"conditions": [{"field", "operator", "value",
     "next_agent"}, ..., {"default": agent}]}, "rounds", ...},
     "input_data": {"message", "metadata"}}
A 422 names the field as the request sent it, in whichever shape.
"""

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.engine.workflows import FIELD_PATH, RoutingRule, WorkflowDefinition, WorkflowType
from app.errors import ApiError
from app.service.text_checks import StorableInput, check_metadata_size

SEED_KEYS = {"participating_agents", "workflow_config", "input_data"}


@dataclass
class WorkflowStart:
    """What starting a workflow needs, whichever shape asked for it."""

    definition: WorkflowDefinition
    input: str
    metadata: dict[str, Any]
    conversation_id: str | None


class OwnShape(StorableInput):
    metadata_fields = ("metadata",)

    workflow_type: WorkflowType
    input: str = Field(min_length=1, max_length=4000, description="What the agents work on.")
    agents: list[str] = Field(default_factory=list, description="Participants, in order.")
    rules: list[RoutingRule] = Field(default_factory=list, description="For `conditional`.")
    default_agent: str | None = Field(default=None, description="When no rule matches.")
    rounds: int = Field(default=2, ge=1, le=5, description="For `collaborative`.")
    metadata: dict[str, Any] = Field(default_factory=dict)
    conversation_id: str | None = Field(
        default=None, description="Run in this existing conversation (its history, its state)."
    )

    def start(self) -> WorkflowStart:
        definition = WorkflowDefinition(
            workflow_type=self.workflow_type,
            agents=self.agents,
            rules=self.rules,
            default_agent=self.default_agent,
            rounds=self.rounds,
        )
        return WorkflowStart(definition, self.input, self.metadata, self.conversation_id)


class Condition(BaseModel):
    """A routing condition, or the `{"default": agent}` entry."""

    model_config = ConfigDict(extra="forbid")

    default: str | None = None
    field: str | None = Field(default=None, pattern=FIELD_PATH)
    operator: Literal["==", "!=", ">", ">=", "<", "<=", "contains", "in"] | None = None
    value: Any = None
    next_agent: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "Condition":
        rule = (self.field, self.operator, self.next_agent)
        if self.default is None and None in rule:
            raise ValueError("a condition needs field, operator, value and next_agent, or default")
        if self.default is not None and any(part is not None for part in rule):
            raise ValueError("the default entry holds only `default`")
        return self


class RoutingRules(BaseModel):
    conditions: list[Condition] = Field(default_factory=list)


class WorkflowConfig(BaseModel):
    model_config = ConfigDict(extra="allow")  # other settings are kept as sent

    routing_rules: RoutingRules | None = None
    rounds: int = Field(default=2, ge=1, le=5)


class InputData(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: str = Field(min_length=1, max_length=4000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SeedShape(StorableInput):
    workflow_type: WorkflowType
    conversation_id: str | None = None
    participating_agents: list[str] = Field(default_factory=list)
    workflow_config: WorkflowConfig = Field(default_factory=WorkflowConfig)
    input_data: InputData

    @model_validator(mode="before")
    @classmethod
    def _metadata_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("input_data"), dict):
            metadata = data["input_data"].get("metadata")
            check_metadata_size({"input_data.metadata": metadata}, ("input_data.metadata",))
        return data

    def start(self) -> WorkflowStart:
        conditions = self.workflow_config.routing_rules
        rules, default = [], None
        for condition in conditions.conditions if conditions else []:
            if condition.default is not None:
                default = condition.default
            else:
                rules.append(condition.model_dump(exclude={"default"}))
        extra = self.workflow_config.model_extra or {}
        definition = WorkflowDefinition.model_validate(
            {
                "workflow_type": self.workflow_type,
                "agents": self.participating_agents,
                "rules": rules,
                "default_agent": default,
                "rounds": self.workflow_config.rounds,
                "options": extra,
            }
        )
        return WorkflowStart(
            definition, self.input_data.message, self.input_data.metadata, self.conversation_id
        )


# Where the definition's own checks land in the other shape, for the error message.
SEED_NAMES = {
    "agents": "participating_agents",
    "rules": "workflow_config.routing_rules.conditions",
    "default_agent": "workflow_config.routing_rules.conditions.default",
    "rounds": "workflow_config.rounds",
}


def _problems(exc: ValidationError, names: dict[str, str] | None = None) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = [str(p) for p in error.get("loc", ())]
        if names and where and where[0] in names:
            where[0] = names[where[0]]
        parts.append(f"{'.'.join(where) or 'body'}: {error.get('msg')}")
    return "; ".join(parts)


def read_workflow_request(body: Any) -> WorkflowStart:
    """The workflow a request asks for, in either shape, or a 422 naming the field."""
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "body: a JSON object is expected")
    seed = bool(SEED_KEYS & body.keys())
    shape: type[OwnShape] | type[SeedShape] = SeedShape if seed else OwnShape
    try:
        request = shape.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", _problems(exc)) from None
    try:
        return request.start()
    except ValidationError as exc:  # the definition's own checks (agents, rules, shape)
        raise ApiError(
            422, "invalid_request", _problems(exc, SEED_NAMES if seed else None)
        ) from None


# The documented example of the system Parley replaces, as its clients send it.
SEED_EXAMPLE: dict[str, Any] = {
    "workflow_type": "conditional",
    "conversation_id": "conv_123",
    "participating_agents": ["chat", "lead_qualification", "web_development"],
    "workflow_config": {
        "routing_rules": {
            "conditions": [
                {
                    "field": "metadata.lead_score",
                    "operator": ">",
                    "value": 70,
                    "next_agent": "web_development",
                },
                {"default": "chat"},
            ]
        }
    },
    "input_data": {"message": "I need a website"},
}

# The request body as the API documents it: either shape.
WORKFLOW_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "Workflow request",
                    "anyOf": [
                        {
                            "title": "Parley's shape",
                            "type": "object",
                            "required": ["workflow_type", "input"],
                            "properties": {
                                "workflow_type": {"type": "string"},
                                "input": {"type": "string"},
                                "agents": {"type": "array", "items": {"type": "string"}},
                                "rules": {"type": "array", "items": {"type": "object"}},
                                "default_agent": {"type": "string"},
                                "rounds": {"type": "integer"},
                                "metadata": {"type": "object"},
                                "conversation_id": {"type": "string"},
                            },
                        },
                        {
                            "title": "participating_agents / workflow_config / input_data",
                            "type": "object",
                            "required": ["workflow_type", "input_data"],
                            "properties": {
                                "workflow_type": {"type": "string"},
                                "conversation_id": {"type": "string"},
                                "participating_agents": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                },
                                "workflow_config": {"type": "object"},
                                "input_data": {"type": "object"},
                            },
                        },
                    ],
                },
                "example": SEED_EXAMPLE,
            }
        },
    }
}
