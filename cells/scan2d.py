"""Two-dimensional recurrent scans of an image (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel
Recurrent Neural Networks", section 3), with the gating of any cell architecture whose hand-written
cell declares its gate equations (`HandwrittenCell.combine`): the tanh RNN, LSTM and GRU.

    scan = RowScan("LSTM", in_channels=1, hidden_size=32)
    h = scan(x)                                    # x (B, 1, H, W) -> h (B, 32, H, W)

A 2-D layer is the 1-D cell's gating with convolutions in place of its matrix products: the input's
projection W_ih x + b_ih becomes a convolution over the whole input map, computed once, and the
state's W_hh h + b_hh a convolution over the state the scan carries; `combine` of the architecture's
hand-written cell turns the two into the new state, at every position of a row (or column) at once.

- **Row scan** (the Row LSTM): one step per image row, top to bottom. Input-to-state: a 1 x k
  convolution along the row (k = 3); state-to-state: a 1-D convolution of width k over the previous
  row's state. Its context is a triangle above the pixel.
- **Diagonal scan** (the Diagonal BiLSTM): the input map is skewed (row i shifted right by i), so
  that each diagonal becomes a column, and scanned one column at a time, left to right; the
  state-to-state convolution is 2 x 1 over the previous column (rows i - 1 and i: the pixel's left
  and upper neighbours). A second scan, with its own weights, runs over the image mirrored left to
  right; its output is mirrored back, shifted down by one row, and added to the first's: the
  output at (i, j) sees every pixel above it and those left of it in its row (all of the context
  before it in raster order).

`masked=True` makes the input-to-state convolution see the pixel and those before it in its row only
(mask B of the paper), for density models whose input features at a pixel may already depend on
that pixel (after a mask-A convolution); the state-to-state convolutions only ever see rows above
(the Row scan) or states before the pixel (the Diagonal scan).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cells.base import HandwrittenCell, check_positive_int
from cells.catalog import CELLS, handwritten_class

MASKS = ("A", "B")


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel sees only the positions before its centre in raster order (mask A)
    or those and the centre (mask B); odd kernel sizes, one input "colour" (binary or grey images)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], mask: str,
                 bias: bool = True):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"a masked convolution needs odd kernel sizes, got {kh} x {kw}")
        if mask not in MASKS:
            raise ValueError(f"mask must be one of {', '.join(MASKS)}, got {mask!r}")
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        allowed = torch.zeros(kh, kw)
        allowed[: kh // 2] = 1  # the rows above the centre
        allowed[kh // 2, : kw // 2 + (mask == "B")] = 1  # the centre's row, up to (B: and with) the centre
        self.mask_type = mask
        self.register_buffer("mask", allowed[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


def scan_gating(cell: str) -> type[HandwrittenCell]:
    """The hand-written cell whose gate equations a 2-D scan with `cell` uses (any cell of the
    architecture); a clear error for a cell whose architecture cannot serve one."""
    architecture = CELLS.get(cell).architecture
    gating = handwritten_class(architecture)
    if not gating.gates_from_projections():
        able = [spec.name for spec in CELLS if _serves(spec.architecture)]
        raise ValueError(f"cell {cell!r} ({architecture}) cannot serve a two-dimensional scan: its step is not "
                         f"gate equations of one projection of the state; cells that can: {', '.join(able)}")
    return gating


def _serves(architecture: str) -> bool:
    try:
        return handwritten_class(architecture).gates_from_projections()
    except ValueError:
        return False


class Scan2D(nn.Module):
    """The parts every 2-D scan shares: the gating (an instance of the architecture's hand-written
    cell, used for its `combine` only: its own weights are not the scan's and are not registered),
    the input-to-state convolution and the initial state."""

    def __init__(self, cell: str, in_channels: int, hidden_size: int, input_kernel: tuple[int, int],
                 masked: bool = False):
        super().__init__()
        gating_class = scan_gating(cell)
        self.cell, self.architecture = cell, gating_class.architecture
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.gates, self.state_size = gating_class.gates, gating_class.state_size
        # kept out of the module tree: only its gate equations are used
        self.__dict__["gating"] = gating_class(1, 1, **CELLS.get(cell).options)
        rows = self.gates * hidden_size
        if masked:
            self.input_to_state = MaskedConv2d(in_channels, rows, input_kernel, "B")
        else:
            self.input_to_state = nn.Conv2d(in_channels, rows, input_kernel,
                                            padding=(input_kernel[0] // 2, input_kernel[1] // 2))

    def initial_state(self, like: Tensor, positions: int) -> tuple[Tensor, ...]:
        zeros = like.new_zeros(like.shape[0], self.hidden_size, positions)
        return (zeros,) * self.state_size

    def initialise(self, orthogonal: bool = False, forget_bias: float | None = None) -> None:
        """The forget gate's bias (LSTM), as for 1-D cells: in the input-to-state bias, the
        state-to-state one 0. `orthogonal` (recurrent matrices orthogonal per gate) has no
        counterpart for a convolution's kernel and is refused."""
        if orthogonal:
            raise ValueError("an orthogonal recurrent initialisation is defined for 1-D cells, not for 2-D scans")
        forget = self.gating.forget_gate
        if forget_bias is None or forget is None:
            return
        block = slice(forget * self.hidden_size, (forget + 1) * self.hidden_size)
        with torch.no_grad():
            self.input_to_state.bias[block] = forget_bias
            for conv in self.state_convs():
                conv.bias[block] = 0.0

    def state_convs(self) -> list[nn.Conv1d]:
        raise NotImplementedError


class RowScan(Scan2D):
    """The Row scan: x (B, C, H, W) -> h (B, hidden, H, W), one step per row, top to bottom."""

    def __init__(self, cell: str, in_channels: int, hidden_size: int, input_width: int = 3, state_width: int = 3,
                 masked: bool = False):
        for name, width in (("input_width", input_width), ("state_width", state_width)):
            if check_positive_int(name, width) % 2 == 0:
                raise ValueError(f"{name} must be odd (the row's pixel in the middle), got {width}")
        super().__init__(cell, in_channels, hidden_size, (1, input_width), masked)
        self.state_to_state = nn.Conv1d(hidden_size, self.gates * hidden_size, state_width, padding=state_width // 2)

    def state_convs(self) -> list[nn.Conv1d]:
        return [self.state_to_state]

    def forward(self, x: Tensor, return_state: bool = False) -> Tensor | tuple[Tensor, tuple[Tensor, ...]]:
        """`return_state`: also the state after the last row, a tuple of (B, hidden, W)."""
        xp = self.input_to_state(x)  # (B, G*hidden, H, W)
        state = self.initial_state(x, x.shape[3])
        rows = []
        for xp_row in xp.unbind(2):  # (B, G*hidden, W)
            state = self.gating.combine(xp_row, self.state_to_state(state[0]), state)
            rows.append(state[0])
        out = torch.stack(rows, 2)
        return (out, state) if return_state else out


# Both by reading a padded map with another row length, no per-row copies: their backward passes
# are a pad and a slice (writing the rows into a zero map one by one made the backward copy the
# whole map once per row, half of a Diagonal scan's training step at the MNIST shape).
def skew(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W + H - 1), row i shifted right by i (zeros elsewhere)."""
    height, width = x.shape[2], x.shape[3]
    # rows of W + H read as rows of W + H - 1: each row starts one place further right
    flat = F.pad(x, (0, height)).flatten(2)[:, :, : height * (width + height - 1)]
    return flat.reshape(*x.shape[:2], height, width + height - 1)


def unskew(x: Tensor, width: int) -> Tensor:
    """The inverse of `skew`: (B, C, H, W + H - 1) -> (B, C, H, W)."""
    height = x.shape[2]
    flat = F.pad(x.flatten(2), (0, height))  # rows of W + H - 1 read as rows of W + H
    return flat.reshape(*x.shape[:2], height, width + height)[:, :, :, :width]


class DiagonalScan(Scan2D):
    """One direction of the Diagonal scan: x (B, C, H, W) -> h (B, hidden, H, W), one step per
    diagonal, the state-to-state convolution over each pixel's left and upper neighbours."""

    def __init__(self, cell: str, in_channels: int, hidden_size: int, masked: bool = False):
        super().__init__(cell, in_channels, hidden_size, (1, 1), masked)
        self.state_to_state = nn.Conv1d(hidden_size, self.gates * hidden_size, 2)

    def state_convs(self) -> list[nn.Conv1d]:
        return [self.state_to_state]

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[2], x.shape[3]
        xp = skew(self.input_to_state(x))  # (B, G*hidden, H, W + H - 1)
        state = self.initial_state(x, height)
        columns = []
        for xp_column in xp.unbind(3):  # (B, G*hidden, H)
            # row i of the new column from rows i - 1 and i of the previous one (a zero row above the first)
            hp = self.state_to_state(F.pad(state[0], (1, 0)))
            state = self.gating.combine(xp_column, hp, state)
            columns.append(state[0])
        return unskew(torch.stack(columns, 3), width)


class DiagonalBiScan(nn.Module):
    """The Diagonal BiLSTM's layer with the chosen gating: the left-to-right scan plus the
    right-to-left one (the image mirrored), the latter shifted down by one row."""

    def __init__(self, cell: str, in_channels: int, hidden_size: int, masked: bool = False):
        super().__init__()
        self.forward_scan = DiagonalScan(cell, in_channels, hidden_size, masked)
        self.backward_scan = DiagonalScan(cell, in_channels, hidden_size, masked)
        self.hidden_size, self.architecture = hidden_size, self.forward_scan.architecture

    def initialise(self, orthogonal: bool = False, forget_bias: float | None = None) -> None:
        self.forward_scan.initialise(orthogonal, forget_bias)
        self.backward_scan.initialise(orthogonal, forget_bias)

    def forward(self, x: Tensor) -> Tensor:
        # Both directions in one scan: the mirrored image's columns beside the image's, as a batch
        # of 2B, and each step's two state-to-state convolutions as one grouped convolution. The
        # steps are small (a column of 28 pixels), so their count, not their arithmetic, sets the
        # time: a quick training step of the LSTM (hidden 16, batch 64) took 254 ms so, 403 ms as two scans.
        one, other = self.forward_scan, self.backward_scan
        batch, height, width = x.shape[0], x.shape[2], x.shape[3]
        xp = torch.stack([skew(one.input_to_state(x)), skew(other.input_to_state(x.flip(3)))], 1)
        xp = xp.flatten(0, 1)  # (2B, G*hidden, H, W + H - 1): sample b's directions at 2b and 2b + 1
        weight = torch.cat([one.state_to_state.weight, other.state_to_state.weight])
        bias = torch.cat([one.state_to_state.bias, other.state_to_state.bias])
        hidden, rows = self.hidden_size, one.gates * self.hidden_size
        state = one.initial_state(xp, height)  # (2B, hidden, H) each
        columns = []
        for xp_column in xp.unbind(3):  # (2B, G*hidden, H)
            pair = F.pad(state[0].reshape(batch, 2 * hidden, height), (1, 0))  # a direction per group
            hp = F.conv1d(pair, weight, bias, groups=2).reshape(2 * batch, rows, height)
            state = one.gating.combine(xp_column, hp, state)
            columns.append(state[0])
        both = unskew(torch.stack(columns, 3), width).view(batch, 2, hidden, height, width)
        right_to_left = both[:, 1].flip(3)
        return both[:, 0] + F.pad(right_to_left[:, :, :-1], (0, 0, 1, 0))  # down one row


SCANS = {"row": RowScan, "diagonal": DiagonalBiScan}
