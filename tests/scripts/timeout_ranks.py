"""Run under ``accelerate launch --cpu --num_processes 2``: the curriculum's process group gets its long
timeout, and a slow main-process step is waited for and shared (tests/test_gpu_paths.py)."""

import json
import sys
import time
from pathlib import Path

import torch.distributed as dist

seen = {}
init = dist.init_process_group


def recording(*args, **kwargs):
    seen["timeout_s"] = kwargs["timeout"].total_seconds() if kwargs.get("timeout") else None
    return init(*args, **kwargs)


dist.init_process_group = recording

from tr1_agent import curriculum  # noqa: E402

out = Path(sys.argv[1])
state = curriculum.distributed_state(7200)


def slow() -> dict:
    time.sleep(3)  # the main process samples alone; the other rank waits at the barrier
    return {"made_by": state.process_index}


value = curriculum._once(out / "value.json", slow)
(out / f"rank{state.process_index}.json").write_text(json.dumps({**seen, "value": value,
                                                                 "world": state.num_processes}))
