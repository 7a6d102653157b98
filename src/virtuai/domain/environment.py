"""The environment every task sees, the same on every driver.

Gang tasks get what ``torch.distributed`` and MPI launchers expect (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``); every task gets ``VIRTUAI_*`` variables about itself.
User-given variables are applied first so that the platform's cannot be
overridden by mistake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from virtuai.domain.workload import TaskPlacement


def task_environment(
    *,
    job_id: int,
    job_name: str,
    tenant: str,
    restart_count: int,
    placements: Sequence[TaskPlacement],
    index: int,
    master_addr: str,
    master_port: int,
    user_env: Mapping[str, str],
    array_id: int | None = None,
    array_index: int | None = None,
) -> dict[str, str]:
    me = placements[index]
    same_node = [p.index for p in placements if p.node == me.node]
    env = dict(user_env)
    env.update(
        {
            "VIRTUAI_JOB_ID": str(job_id),
            "VIRTUAI_JOB_NAME": job_name,
            "VIRTUAI_TENANT": tenant,
            "VIRTUAI_TASK_INDEX": str(index),
            "VIRTUAI_NUM_TASKS": str(len(placements)),
            "VIRTUAI_RESTART_COUNT": str(restart_count),
            "VIRTUAI_NODE": me.node,
            "RANK": str(index),
            "WORLD_SIZE": str(len(placements)),
            "LOCAL_RANK": str(same_node.index(index)),
            "LOCAL_WORLD_SIZE": str(len(same_node)),
            "MASTER_ADDR": master_addr,
            "MASTER_PORT": str(master_port),
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in me.gpu_indices),
        }
    )
    if array_id is not None and array_index is not None:
        # The SLURM_* names let scripts written for Slurm arrays run unchanged.
        env.update(
            {
                "VIRTUAI_ARRAY_ID": str(array_id),
                "VIRTUAI_ARRAY_INDEX": str(array_index),
                "SLURM_ARRAY_JOB_ID": str(array_id),
                "SLURM_ARRAY_TASK_ID": str(array_index),
            }
        )
    return env
