"""Parareal in time, private implementation: ``problem`` (one call, frozen, and the seams),
``iteration`` (the parareal loop, serial or on one rank's chunk), ``adjoints`` (the three
gradients) and ``function`` (the autograd Function joining them). The public surface is
``pnode_zoo.ode.odeint_parareal`` and ``pnode_zoo.ode.PararealODEBlock``."""

__all__: list[str] = []
