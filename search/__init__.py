"""The search engine: the strategies of ``evoir search`` over the IR.

It imports passes and backends; nothing in the IR core imports it. The names below load on
first use, so that reading a config (as the CLI does at start-up) does not import torch.
"""

from importlib import import_module

_EXPORTS = {
    "SearchConfig": "config",
    "DATASETS": "data",
    "DataSet": "data",
    "load_dataset": "data",
    "Member": "engine",
    "Search": "engine",
    "new_search": "strategies",
    "resume_search": "strategies",
    "strategy_class": "strategies",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)


__all__ = sorted(_EXPORTS)
