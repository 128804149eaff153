"""The search engine: neuroevolution with shared parameters over the IR.

It imports passes and backends; nothing in the IR core imports it.
"""

from .config import SearchConfig
from .data import DATASETS, DataSet, load_dataset
from .ne import Member, NESearch

__all__ = ["DATASETS", "DataSet", "Member", "NESearch", "SearchConfig", "load_dataset"]
