"""forgeline's small core: hookspecs, component protocols, the data handle, pipeline model.

Plugin authors need only this module::

    from forgeline.core import hookimpl, Cleaner, Params, CleanResult, Table
"""

from .catalog import Broken, Catalog, Entry, LookupProblem
from .components import (Augmenter, Cleaner, CleanResult, Component, CompressContext,
                         Compressor, DataSpec, Dataset, DistInfo, FeatureTransform, Kind, Model,
                         Monitor, NoParams, ParallelStrategy, Params, PrecisionPolicy, RunInfo,
                         StageContext, StageInfo, StepInfo, Tuner)
from .data import ARRAY_MODALITIES, ROW_ID, ColumnSpec, Modality, Role, Schema, Table
from .errors import ForgelineError, InputError, Problem, StageError
from .hookspecs import hookimpl
from .kinds import KindSpec, bases, kinds, register_kind

BASES = bases()  # kind -> base class of the built-in kinds (the table is ``forgeline.core.kinds``)

__all__ = [
    "ARRAY_MODALITIES", "BASES", "ROW_ID", "Augmenter", "Broken", "Catalog", "CleanResult", "Cleaner",
    "ColumnSpec", "Component", "CompressContext", "Compressor", "DataSpec", "Dataset", "DistInfo",
    "Entry", "FeatureTransform", "ForgelineError", "InputError", "Kind", "LookupProblem", "Modality",
    "Model", "Monitor", "NoParams", "ParallelStrategy", "Params", "PrecisionPolicy", "Problem",
    "Role", "RunInfo", "Schema", "StageContext", "StageError", "StageInfo", "StepInfo", "Table",
    "KindSpec", "Tuner", "hookimpl", "kinds", "register_kind",
]
