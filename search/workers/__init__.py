"""Parallel workers for a search, on Ray (``--workers N`` locally, ``--ray-address`` on a cluster).

    task.py         what travels to a worker and back, and ``run_task``, which a worker runs:
                    it trains members with the very methods the in-process search uses
    candidates.py   steady-state strategies: one candidate per task (``steady.py``)
    generation.py   NE and speciation: a generation's members shared out among the workers,
                    and the rule that merges shared tensors afterwards
    ray_pool.py     the pool: Ray start-up, the data put into the object store once, one
                    task per free worker, results as they arrive, retries on lost workers

Nothing here imports Ray but ``ray_pool.py``, which only a run with workers loads.
"""
