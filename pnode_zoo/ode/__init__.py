"""Numerics of pnode_zoo: ODE blocks and vector fields. Plain PyTorch, no Lightning."""

from pnode_zoo.ode.odeint_block import ODEBlock
from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.stats import PararealStats
from pnode_zoo.ode.vector_fields import ConcatConv, ConvVectorField, MLPVectorField, group_norm

__all__ = [
    "ConcatConv",
    "ConvVectorField",
    "MLPVectorField",
    "ODEBlock",
    "PararealODEBlock",
    "PararealStats",
    "group_norm",
]
