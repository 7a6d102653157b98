"""The virtual cluster state machine: one table, and what holds resources when."""

from __future__ import annotations

import itertools

import pytest

from virtuai.domain.vcluster import (
    LIVE_STATES,
    VC_TRANSITIONS,
    VcState,
    check_vc_transition,
    vc_job_id,
    vc_row_id,
)
from virtuai.errors import Conflict


def test_every_state_has_its_transitions_and_deleted_is_final() -> None:
    assert set(VC_TRANSITIONS) == set(VcState)
    assert VC_TRANSITIONS[VcState.DELETED] == frozenset()
    # Every state but deleted can be deleted, and deleting only ends in deleted.
    for state in VcState:
        if state not in (VcState.DELETED, VcState.DELETING):
            check_vc_transition(state, VcState.DELETING)
    assert VC_TRANSITIONS[VcState.DELETING] == {VcState.DELETED}


def test_documented_life_cycle() -> None:
    path = [VcState.CREATING, VcState.RUNNING, VcState.SUSPENDING, VcState.SUSPENDED]
    path += [VcState.RESUMING, VcState.RUNNING]
    for current, new in itertools.pairwise(path):
        check_vc_transition(current, new)
    check_vc_transition(VcState.CREATING, VcState.FAILED)
    check_vc_transition(VcState.RESUMING, VcState.SUSPENDED)  # a failed resume
    with pytest.raises(Conflict, match="cannot go from running to suspended"):
        check_vc_transition(VcState.RUNNING, VcState.SUSPENDED)
    with pytest.raises(Conflict):
        check_vc_transition(VcState.SUSPENDED, VcState.RUNNING)  # only through admission


def test_resources_are_held_only_while_admitted_and_not_suspended() -> None:
    held = {s for s in VcState if s.holds_resources(admitted=True)}
    assert held == {
        VcState.CREATING,
        VcState.RUNNING,
        VcState.SUSPENDING,
        VcState.RESUMING,
        VcState.DELETING,
    }
    unadmitted = {s for s in VcState if s.holds_resources(admitted=False)}
    assert unadmitted == {VcState.RUNNING, VcState.SUSPENDING}
    assert {s for s in VcState if s.waits_for_admission()} == {VcState.CREATING, VcState.RESUMING}
    assert set(VcState) - {VcState.DELETED, VcState.FAILED} == LIVE_STATES


def test_scheduler_ids() -> None:
    assert vc_job_id(12) == "vc-12"
    assert vc_row_id("vc-12") == 12
    assert vc_row_id("12") is None and vc_row_id("vc-x") is None
