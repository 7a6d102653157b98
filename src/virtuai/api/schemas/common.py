"""Shared field types and limits of the API schemas."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from virtuai.domain.tenancy import NAME_MAX

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX,
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="DNS label: lower-case letters, digits and '-'",
    ),
]
# Quantities are accepted as users type them ("4Gi", "500m", "2h") or as plain numbers.
MemoryText = Annotated[str | int, Field(description="bytes, or 512Mi, 4Gi, 4G", examples=["4Gi"])]
CpuText = Annotated[str | int | float, Field(description="CPUs: 2, 0.5 or 500m", examples=[2])]
DurationText = Annotated[
    str | int,
    Field(description="seconds, Slurm's MM, MM:SS, HH:MM:SS, D-HH:MM:SS, or 90s/30m/2h"),
]


class StrictModel(BaseModel):
    """Unknown fields are errors: a typo in a spec must not be silently ignored.

    Two more rules hold for every field of every request body, here once rather than
    field by field (a fuzzer found the fields that had been forgotten):

    - no NUL character in any text, however deep: PostgreSQL cannot store one, so a
      NUL that reached the database was a 500 there (a service's readiness path);
    - true and false are neither numbers nor text, and numbers and text are not
      booleans: pydantic would read ``"admin": 1`` or ``"admin": "yes"`` as true and
      ``"cpu": true`` as 1 CPU, where the client most likely meant something else.
    """

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _edge_rules(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or info.field_name is None:
            return value
        takes_bool, has_models = _field_kinds(cls, info.field_name)
        if isinstance(value, bool):
            if takes_bool is False:
                raise ValueError("true or false is not a value here")
        elif takes_bool is True:
            raise ValueError("must be true or false")
        elif not has_models and _has_nul(value):  # a nested model checks its own fields
            raise ValueError("must not contain NUL bytes")
        return value


# (model, field) -> (True: a boolean, False: no boolean, None: either; holds models).
_KINDS: dict[tuple[type[BaseModel], str], tuple[bool | None, bool]] = {}


def _field_kinds(model: type[BaseModel], name: str) -> tuple[bool | None, bool]:
    key = (model, name)
    if key not in _KINDS:
        field = model.model_fields.get(name)
        kinds = _leaf_types(field.annotation) if field is not None else {Any}
        bools = bool in kinds
        others = bool(kinds - {bool, type(None)})
        takes_bool = None if (bools and others) or Any in kinds else bools
        models = any(isinstance(k, type) and issubclass(k, BaseModel) for k in kinds)
        _KINDS[key] = (takes_bool, models)
    return _KINDS[key]


def _leaf_types(annotation: Any) -> set[Any]:
    """The types a field's annotation admits, through unions, Annotated and Literal."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaf_types(get_args(annotation)[0])
    if origin is Literal:
        return {type(v) for v in get_args(annotation)}
    if origin in (Union, UnionType):
        return set().union(*(_leaf_types(a) for a in get_args(annotation)))
    if origin is not None:
        return {origin}  # list[...], dict[...]: containers, not booleans
    return {annotation}


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


class ErrorOut(BaseModel):
    code: str
    message: str
    field: str | None = None


class PriorityClassOut(BaseModel):
    name: str
    value: int = Field(description="higher goes first, and may preempt lower")
    preemptible: bool = Field(description="whether jobs of this class may be preempted")


class ResourcesOut(BaseModel):
    cpu: float = Field(description="CPUs")
    memory: int = Field(description="bytes")
    gpu: int
