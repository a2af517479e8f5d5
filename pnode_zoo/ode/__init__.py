"""Numerics of pnode_zoo: ODE blocks, parareal in time and vector fields. Plain PyTorch.

``odeint_parareal`` is torchdiffeq's ``odeint`` solved by parareal; ``PararealODEBlock`` is the
same solve as an ``nn.Module``; ``PararealOptions`` declares every option of both.
``NeuralCDEBlock`` is a neural CDE solved by parareal over chunks of its series.
"""

from pnode_zoo.ode.cde import CDE_COARSE_FIELDS, NeuralCDEBlock
from pnode_zoo.ode.cde_cache import WarmStartCache
from pnode_zoo.ode.irregular import IrregularTimeField
from pnode_zoo.ode.odeint_block import ODEBlock
from pnode_zoo.ode.odeint_parareal import odeint_parareal
from pnode_zoo.ode.options import BACKWARD_MODES, PararealOptions
from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.stats import PararealStats
from pnode_zoo.ode.vector_fields import ConcatConv, ConvVectorField, MLPVectorField, group_norm

__all__ = [
    "BACKWARD_MODES",
    "CDE_COARSE_FIELDS",
    "ConcatConv",
    "ConvVectorField",
    "IrregularTimeField",
    "MLPVectorField",
    "NeuralCDEBlock",
    "ODEBlock",
    "PararealODEBlock",
    "PararealOptions",
    "PararealStats",
    "WarmStartCache",
    "group_norm",
    "odeint_parareal",
]
