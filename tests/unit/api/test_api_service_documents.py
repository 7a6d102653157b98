"""A service's ``apply -f`` document, as the API shows it (``spec`` of ``GET /services``),
applied again unchanged gives the very same spec: the same replica digest, so nothing
rolls; the web dashboard edits and scales services this way."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from virtuai.api.routers.services import spec_from_api, spec_to_api
from virtuai.api.schemas.services import ServiceApply
from virtuai.domain.services import ServiceSpec

# A request with NUL in any text, or a blank program, is refused at the edge; so is a lone
# surrogate, which is not Unicode text (JSON can carry one as an escape): no stored spec
# holds either (``test_a_lone_surrogate_is_refused_naming_the_field``).
NO_NUL = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))

durations = st.one_of(st.integers(1, 200_000), st.sampled_from(["2s", "15m", "1h", "90", "1d"]))
readiness = st.fixed_dictionaries(
    {},
    optional={
        "path": st.sampled_from(["/", "/healthz", "/v1/ready"]),
        "interval": durations,
        "timeout": durations,
        "failure_threshold": st.integers(1, 100),
        "start_timeout": durations,
    },
)
documents = st.fixed_dictionaries(
    {
        "name": st.just("iris"),
        "command": st.lists(
            st.text(NO_NUL, min_size=1, max_size=8).filter(str.strip), min_size=1, max_size=3
        ),
    },
    optional={
        "env": st.dictionaries(
            st.sampled_from(["A", "MODEL_VERSION"]), st.text(NO_NUL, max_size=5)
        ),
        "environment": st.sampled_from(["torch", "default"]),
        "resources": st.fixed_dictionaries(
            {
                "cpu": st.one_of(st.integers(1, 64), st.sampled_from([0.2, 0.5, "250m", "1"])),
                "memory": st.one_of(
                    st.integers(2**20, 2**36), st.sampled_from(["128Mi", "1Gi", "3G"])
                ),
                "gpu": st.integers(0, 8),
            }
        ),
        "replicas": st.one_of(
            st.integers(1, 100),
            st.fixed_dictionaries(
                {"min": st.integers(0, 3), "max": st.integers(3, 100)},
                optional={"target_rps": st.floats(0.5, 1000)},
            ),
        ),
        "readiness": readiness,
        "auth": st.sampled_from(["tenant", "public"]),
        "idle_timeout": durations,
        "time": durations,
        "priority": st.sampled_from(["low", "high"]),
    },
)


def _stored(document: dict[str, Any]) -> ServiceSpec:
    """What the server keeps of a document: its spec, through the database's JSON."""
    spec = spec_from_api(ServiceApply.model_validate(document))
    return ServiceSpec.from_json(json.loads(json.dumps(spec.to_json())))


@given(documents)
def test_the_shown_document_applies_to_the_same_spec(document: dict[str, Any]) -> None:
    spec = _stored(document)
    shown = spec_to_api(spec, "physics", "iris")
    # What the browser does with it: through JSON (or YAML) and back.
    again = _stored(json.loads(json.dumps(shown)))
    assert again == spec
    assert again.template_digest() == spec.template_digest()
    assert json.dumps(again.to_json(), sort_keys=True) == json.dumps(spec.to_json(), sort_keys=True)


def test_a_lone_surrogate_is_refused_naming_the_field() -> None:
    document = {"name": "iris", "command": ["\ud800"]}
    with pytest.raises(ValidationError) as refused:
        ServiceApply.model_validate(json.loads(json.dumps(document)))
    assert refused.value.errors()[0]["loc"] == ("command", 0)


def test_the_document_reads_like_one_written_by_hand() -> None:
    spec = _stored(
        {
            "name": "iris",
            "command": ["python3", "model.py"],
            "resources": {"cpu": 0.5, "memory": "256Mi"},
            "replicas": {"min": 0, "max": 3, "target_rps": 50},
            "readiness": {"path": "/healthz", "interval": 1},
            "idle_timeout": "15m",
        }
    )
    assert spec_to_api(spec, "physics", "iris") == {
        "type": "service",
        "tenant": "physics",
        "name": "iris",
        "command": ["python3", "model.py"],
        "env": {},
        "resources": {"cpu": "500m", "memory": "256Mi", "gpu": 0},
        "replicas": {"min": 0, "max": 3, "target_rps": 50.0},
        "readiness": {
            "path": "/healthz",
            "interval": "1s",
            "timeout": "1s",
            "failure_threshold": 3,
            "start_timeout": "5m",
        },
        "auth": "tenant",
        "idle_timeout": "15m",
    }
