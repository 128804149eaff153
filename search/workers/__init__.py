"""The executor seam: what runs a search's training, in this process or on Ray workers
(``--workers N`` locally, ``--ray-address`` on a cluster).

    executor.py     the protocol every executor answers, and ``InProcessExecutor``
    task.py         ``TrainTask`` and ``TrainResult``, the typed values that travel, and
                    ``execute``, the one function that trains a task on a ``Trainer`` (here,
                    or on a worker through ``run_task``)
    generation.py   how a generation is dealt out to the executor's slots, and the rule that
                    merges what several workers did to one tensor
    ray_pool.py     ``RayPool``: Ray start-up, the data put into the object store once, one
                    task per free worker, results as they arrive, retries on lost workers

Nothing here imports Ray but ``ray_pool.py``, which only a run with workers loads.
"""
