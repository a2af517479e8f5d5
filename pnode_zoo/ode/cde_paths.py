"""Control paths of neural CDEs, read from torchcde's interpolation coefficients.

A neural CDE dz = f(z) dX(t) is solved as the ODE dz/dt = f(z) dX/dt. Its path X interpolates
a series observed at t = 0, 1, ..., L-1 (torchcde's default knots) and is a polynomial of degree
at most 3 on every unit segment [k, k+1]. This module keeps, per sample and segment, the
coefficients of dX/dt there, and reads from them:

- ``derivative``: dX/dt at one time per row of a batch whose rows are several slices' samples
  stacked (the parareal block's fast path). torchcde's ``derivative`` takes one time for the
  whole batch, so the per-row look-up is written here; it picks the segment as torchcde does
  (t in (k, k+1] reads segment k), so a solve on the same grid reproduces ``torchcde.cdeint``.
- ``chunk_log_signature``: the increment and the Levy area of X over each chunk of segments
  (the depth-2 log-signature, Morrill et al. 2021), exact for the piecewise polynomial path:
  area of each segment in closed form, segments joined by Chen's identity. No log-signature
  library is installed here (signatory/iisignature), and the path's form makes it closed-form.
"""

from __future__ import annotations

import torch

__all__ = ["INTERPOLATIONS", "chunk_log_signature", "derivative", "path_segments"]

INTERPOLATIONS = ("cubic", "linear")

#: A_ij of a segment Y(s) = sum_k p_k s^k on [0, 1] is sum_kl M_kl p_k^i p_l^j with
#: M_kl = (l - k) / (2 (k + l)): 1/2 int_0^1 (Y^i dY^j - Y^j dY^i) term by term.
_AREA = [[(q - p) / (2 * (p + q)) for q in (1, 2, 3)] for p in (1, 2, 3)]


def path_segments(
    coeffs: torch.Tensor,
    interpolation: str,
    length: int,
) -> torch.Tensor:
    """dX/dt's coefficients per unit segment, [batch, L-1, 3, channels]: on segment k,
    dX/dt(k + s) = q_0 + (q_1 + q_2 s) s (torchcde's b, 2c, 3d).

    Args:
        coeffs: torchcde coefficients of the batch: [batch, L-1, 4C] for ``"cubic"`` (Hermite
            cubic with backward differences, or natural cubic), [batch, L, C] for ``"linear"``.
        interpolation: ``"cubic"`` or ``"linear"``.
        length: L, the observations per series the coefficients were made from.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if not (torch.is_tensor(coeffs) and coeffs.is_floating_point() and coeffs.dim() == 3):
        raise ValueError("coeffs must be a floating-point tensor [batch, knots, channels]")
    knots = coeffs.shape[1] + (1 if interpolation == "cubic" else 0)
    if knots != length or (interpolation == "cubic" and coeffs.shape[2] % 4):
        want = f"[batch, {length - 1}, 4 * channels]" if interpolation == "cubic" else (
            f"[batch, {length}, channels]")
        raise ValueError(
            f"coeffs for {interpolation} interpolation of series of length {length} must have "
            f"shape {want}, got {tuple(coeffs.shape)}; build them with torchcde from the series"
        )
    coeffs = coeffs.detach()
    if interpolation == "cubic":
        _, b, two_c, three_d = coeffs.chunk(4, dim=-1)
        table = torch.stack([b, two_c, three_d], dim=2)
    else:
        slope = coeffs.diff(dim=1)  # knots one apart
        table = torch.stack([slope, torch.zeros_like(slope), torch.zeros_like(slope)], dim=2)
    return table


def derivative(table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dX/dt of row r's sample, r mod batch, at t[r] (rows: slices' samples stacked), [rows, C].

    Args:
        table: ``path_segments`` output, [batch, segments, 3, C].
        t: one time per row, [rows] (rows a multiple of batch).
    """
    batch, segments = table.shape[:2]
    # a stage time meant to be knot k can come out a rounding error off it (start + tau*span);
    # snap it, so that a path whose derivative jumps at knots (linear) reads torchcde's segment
    knot = t.round()
    near = (t - knot).abs() <= min(64 * torch.finfo(t.dtype).eps * segments, 0.05)
    t = torch.where(near, knot, t)
    index = (t.ceil() - 1).clamp(0, segments - 1)  # t in (k, k+1] reads segment k
    frac = (t - index).unsqueeze(-1)
    sample = torch.arange(t.shape[0], device=t.device) % batch
    q = table[sample, index.long()]
    return q[:, 0] + (q[:, 1] + q[:, 2] * frac) * frac


def chunk_log_signature(
    table: torch.Tensor, chunks: int, depth: int = 2
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Increment [chunks, batch, C] and (depth 2) Levy area [chunks, batch, C, C] of X over
    each of ``chunks`` equal runs of segments; A_ij = 1/2 int (X^i - X^i_a) dX^j - (i <-> j).

    Args:
        table: ``path_segments`` output, [batch, segments, 3, C]; chunks must divide segments.
        chunks: number of chunks.
        depth: 1 (increments only) or 2.
    """
    batch, segments, _, channels = table.shape
    if segments % chunks:
        raise ValueError(f"{chunks} chunks do not divide {segments} segments")
    # the segment's polynomial Y(s) = p1 s + p2 s^2 + p3 s^3 from dX/dt = b + 2c s + 3d s^2
    powers = table / torch.tensor([1.0, 2.0, 3.0], dtype=table.dtype,
                                  device=table.device)[:, None]
    powers = powers.view(batch, chunks, segments // chunks, 3, channels)
    step = powers.sum(dim=3)  # each segment's increment, [batch, chunks, m, C]
    increments = step.sum(dim=2).transpose(0, 1)
    if depth == 1:
        return increments, None
    weights = torch.tensor(_AREA, dtype=table.dtype, device=table.device)
    own = torch.einsum("kl,bnmki,bnmlj->bnij", weights, powers, powers)
    before = step.cumsum(dim=2) - step  # increment from the chunk's start to each segment
    cross = torch.einsum("bnmi,bnmj->bnij", before, step)
    # Chen: A(x * y) = A(x) + A(y) + 1/2 (dx (x) dy - dy (x) dx), joined segment by segment
    areas = own + 0.5 * (cross - cross.transpose(-1, -2))
    return increments, areas.transpose(0, 1)
