"""Self-attention implementations behind one interface.

    import impls
    impls.names()                      # every registered name
    impl = impls.get("numpy")          # unknown names raise UnknownImplementationError
    out = impl.attention(q, k, v, causal=False, scale=None)

Importing this package needs none of the optional parts (no GPU, torch or CUDA wheels): each
implementation imports its heavy dependencies inside its functions and says why it cannot run.
"""

from impls._inputs import SUPPORTED_DTYPES, AttentionArgs, check_attention_args
from impls._layer import self_attention
from impls._registry import (
    DEFAULT_BASELINES,
    ENTRY_POINT_GROUP,
    PATH_ENV,
    Implementation,
    ImplementationError,
    ImplementationUnavailableError,
    PreparedCall,
    UnknownImplementationError,
    default_baseline,
    get,
    names,
    registry,
)

__all__ = [
    "DEFAULT_BASELINES",
    "ENTRY_POINT_GROUP",
    "PATH_ENV",
    "SUPPORTED_DTYPES",
    "AttentionArgs",
    "Implementation",
    "ImplementationError",
    "ImplementationUnavailableError",
    "PreparedCall",
    "UnknownImplementationError",
    "check_attention_args",
    "default_baseline",
    "get",
    "names",
    "registry",
    "self_attention",
]
