"""The one interface every recurrent cell implements, and the machinery the cells share.

Every cell is an `nn.Module` built as

    cell = SomeCell(input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0)

and called as

    output, state = cell(x, state=None, lengths=None)

- `x`: (B, T, I) batch-first input.
- `state`: the initial state or None (zeros). Always a tuple of tensors, each
  (num_layers * num_directions, B, H), ordered layer-major as in `torch.nn`
  (index `layer * num_directions + direction`, direction 1 = reversed).
  `(h,)` for the vanilla RNN and the GRU, `(h, c)` for the LSTM: `state[0]` is always h.
- `lengths`: None or a 1-D integer tensor of B lengths in [1, T]. Steps at or after a
  sequence's length are padding: they do not change its outputs or final state, their
  outputs are zero, and the reversed direction starts at the sequence's last real step.
- `output`: (B, T, num_directions * H), the last layer's outputs, forward direction first.
- the returned state has the same form as the input state and holds each sequence's state
  after its last real step.

Dropout (probability `dropout`) is applied to the outputs of every layer except the last,
in training mode only, as `torch.nn.RNN/LSTM/GRU` do.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class RecurrentCell(nn.Module):
    """Base class: validates the configuration and the inputs; subclasses implement `_run`."""

    #: tensors in the state: 1 for h only, 2 for (h, c)
    state_size: int = 1
    #: the `torch.nn` module this cell computes, e.g. "LSTM"; used in messages and docs
    architecture: str = ""
    #: the forget gate's block in the gate rows of the weights (LSTM: 1 of i, f, g, o); None: no forget
    #: gate, and `initialise(forget_bias=...)` leaves the cell as it is
    forget_gate: int | None = None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        if not isinstance(bidirectional, bool):
            raise ValueError(f"bidirectional must be True or False, got {bidirectional!r}")
        self.bidirectional = bidirectional
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            raise ValueError(
                f"dropout={dropout} acts between layers, so it needs num_layers > 1 (got num_layers=1)"
            )
        self.dropout = float(dropout)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        return self.num_directions * self.hidden_size

    def weights(self) -> dict[str, nn.Parameter]:
        """Parameters under the names `torch.nn.RNN/LSTM/GRU` give them (`weight_ih_l0`, ...)."""
        return dict(self.named_parameters())

    @torch.no_grad()
    def initialise(self, orthogonal: bool = False, forget_bias: float | None = None) -> None:
        """Re-initialise for long sequences, on any cell alike (they share `torch.nn`'s names).

        `orthogonal`: each gate's (H, H) block of every recurrent weight orthogonal (Saxe et al.
        2014; the recurrent initialisation of Cooijmans et al. 2016), so that the recurrence
        neither shrinks nor grows a state at the start. `forget_bias`: the LSTM's forget-gate
        bias (Gers et al. 2000; Jozefowicz et al. 2015 recommend 1), so that the cell starts by
        keeping its memory; the two bias vectors sum to it (`bias_ih` holds it, `bias_hh` 0).
        Ignored by cells without a forget gate.
        """
        hidden = self.hidden_size
        for name, weight in self.weights().items():
            if orthogonal and name.startswith("weight_hh"):
                for block in weight.split(hidden, dim=0):  # one (H, H) block per gate
                    nn.init.orthogonal_(block)
            if forget_bias is not None and self.forget_gate is not None and name.startswith("bias"):
                # the bias vectors sum to it (bias_ih holds it, bias_hh, where the cell has one, 0)
                block = slice(self.forget_gate * hidden, (self.forget_gate + 1) * hidden)
                weight[block] = forget_bias if name.startswith("bias_ih") else 0.0

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        self._check_input(x)
        batch, steps = x.shape[0], x.shape[1]
        if state is not None:
            self._check_state(state, batch, x)
        if lengths is not None:
            lengths = self._check_lengths(lengths, batch, steps)
        return self._run(x, state, lengths)

    def _run(self, x: Tensor, state: State | None, lengths: Tensor | None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor (B, T, I), got {type(x).__name__}")
        if x.dim() != 3:
            raise ValueError(
                f"x must be batch-first (B, T, I) with I={self.input_size}, got shape {tuple(x.shape)}"
            )
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"x has {x.shape[2]} features per step but the cell was built with "
                f"input_size={self.input_size} (x shape {tuple(x.shape)})"
            )
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x must have at least one sequence and one step, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")

    def _check_state(self, state: State, batch: int, x: Tensor) -> None:
        expected = (self.num_layers * self.num_directions, batch, self.hidden_size)
        names = "(h, c)" if self.state_size == 2 else "(h,)"
        if not isinstance(state, tuple) or len(state) != self.state_size:
            raise ValueError(
                f"state must be a tuple {names} of tensors each {expected} "
                f"(num_layers * num_directions, B, H), got {type(state).__name__}"
                + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else "")
            )
        for s in state:
            if not isinstance(s, Tensor) or tuple(s.shape) != expected:
                shape = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
                raise ValueError(
                    f"each state tensor must have shape {expected} "
                    f"(num_layers * num_directions, B, H), got {shape}"
                )
            if s.dtype != x.dtype or s.device != x.device:
                raise ValueError(
                    f"state must match x in dtype and device ({x.dtype}, {x.device}), "
                    f"got ({s.dtype}, {s.device})"
                )

    @staticmethod
    def _check_lengths(lengths: Tensor, batch: int, steps: int) -> Tensor:
        if not isinstance(lengths, Tensor) or lengths.dim() != 1 or lengths.shape[0] != batch:
            shape = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
            raise ValueError(f"lengths must be a 1-D tensor of {batch} lengths (one per sequence), got {shape}")
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must be an integer tensor, got {lengths.dtype}")
        low, high = int(lengths.min()), int(lengths.max())
        if low < 1 or high > steps:
            raise ValueError(f"lengths must lie in [1, T={steps}], got values from {low} to {high}")
        return lengths


class FusedCell(RecurrentCell):
    """A cell that runs `torch.nn.RNN/LSTM/GRU` (cuDNN on GPU, oneDNN or ATen on CPU)."""

    module_class: type[nn.RNNBase]

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0, **options):
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)
        self.rnn = self.module_class(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=self.dropout,
            batch_first=True,
            **options,
        )

    def weights(self) -> dict[str, nn.Parameter]:
        return dict(self.rnn.named_parameters())

    def _run(self, x, state, lengths):
        if lengths is None:
            return self.run_plain(x, state)
        if self.num_directions == 1 and x.device.type == "cpu":
            return self.run_head_and_tail(x, state, lengths)
        return self.run_packed(x, state, lengths)

    def run_plain(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """`self.rnn` with the state in this interface's form, a tuple ((h,) or (h, c)), both ways."""
        hx = None if state is None else (state if self.state_size == 2 else state[0])
        output, hx = self.rnn(x, hx)
        return output, (hx if self.state_size == 2 else (hx,))

    def run_packed(self, x: Tensor, state: State | None, lengths: Tensor) -> tuple[Tensor, State]:
        """Sequences of unequal lengths as one `PackedSequence`: the library's way."""
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, state = self.run_plain(packed, state)
        return nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])[0], state

    def run_head_and_tail(self, x: Tensor, state: State | None, lengths: Tensor) -> tuple[Tensor, State]:
        """The steps every sequence has (up to the shortest length) in one plain call, then the
        sequences that go on, packed, from the state they reached. Equal to `run_packed`
        for one direction; on CPU torch runs a packed LSTM step by step in ATen, a plain one in
        oneDNN's fused kernel: the quick translation LSTM's encoder over an epoch's batches (sorted
        by length: most of each batch is the shared head) took 0.74x the time of packing them whole
        (docs/results.md)."""
        steps, shortest = x.shape[1], int(lengths.min())
        head, state = self.run_plain(x[:, :shortest], state)
        if shortest == steps:
            return head, state
        going = torch.nonzero(lengths > shortest)[:, 0]  # the sequences longer than the shortest
        tail_lengths, going = lengths[going] - shortest, going.to(x.device)
        tail, tail_state = self.run_packed(x[going, shortest:], tuple(s.index_select(1, going) for s in state),
                                           tail_lengths)
        state = tuple(s.index_copy(1, going, t) for s, t in zip(state, tail_state))  # the others kept theirs
        tail = head.new_zeros(x.shape[0], steps - shortest, head.shape[2]).index_copy(0, going, tail)
        return torch.cat([head, tail], dim=1), state


class HandwrittenCell(RecurrentCell):
    """A cell whose gate equations are written out in a time loop.

    A subclass sets `gates` (blocks of H rows in the weight matrices) and `state_size`, and
    implements `step`, one time step of one layer in one direction. Parameters carry the names
    and shapes that `torch.nn` gives them, so weights copy across by name. The input projection
    of all time steps is one matmul before the loop; the loop only does the recurrent part.
    """

    gates: int = 1
    #: whether the gates read h through W_hh h + b_hh; False (minGRU, minLSTM): from the input alone,
    #: the cell has no `weight_hh`/`bias_hh` and its step gets None for them
    recurrent_weights: bool = True

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0):
        super().__init__(input_size, hidden_size, num_layers, bidirectional, dropout)
        rows = self.gates * hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else self.output_size
            for direction in range(self.num_directions):
                suffix = self._suffix(layer, direction)
                self.register_parameter(f"weight_ih_{suffix}", nn.Parameter(torch.empty(rows, layer_input)))
                if self.recurrent_weights:
                    self.register_parameter(f"weight_hh_{suffix}", nn.Parameter(torch.empty(rows, hidden_size)))
                self.register_parameter(f"bias_ih_{suffix}", nn.Parameter(torch.empty(rows)))
                if self.recurrent_weights:
                    self.register_parameter(f"bias_hh_{suffix}", nn.Parameter(torch.empty(rows)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the initialisation of torch.nn.RNN/LSTM/GRU: U(-1/sqrt(H), 1/sqrt(H)) for every tensor
        bound = self.hidden_size**-0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"l{layer}_reverse" if direction else f"l{layer}"

    def step(self, xp_t: Tensor, state: State, w_hh: Tensor, b_hh: Tensor) -> State:
        """One step: xp_t (B, G*H) is the projected input, state holds (B, H) tensors. By default
        the gate equations (`combine`) of the state's projection W_hh h + b_hh; a cell whose
        recurrence is not one projection of h overrides `step` instead."""
        return self.combine(xp_t, torch.addmm(b_hh, state[0], w_hh.t()), state)

    def combine(self, xp_t: Tensor, hp_t: Tensor, state: State) -> State:
        """The gate equations from the input's projection xp_t and the state's hp_t = W_hh h + b_hh,
        both (B, G*H): what a two-dimensional scan reuses with convolutions for the projections."""
        raise NotImplementedError(f"{type(self).__name__} defines its step, not gate equations of one projection of h")

    @classmethod
    def gates_from_projections(cls) -> bool:
        """Whether the cell's step is `combine` of one projection of h (so that a 2-D scan can use it)."""
        return cls.combine is not HandwrittenCell.combine and cls.step is HandwrittenCell.step

    def scan(self, xp: Tensor, state: State, w_hh: Tensor, b_hh: Tensor, mask: Tensor | None) -> tuple[Tensor, State]:
        """Run `step` over xp (B, T, G*H); mask (B, T, 1) marks real steps, None if all are."""
        outputs = []
        # unbind, not xp[:, t]: indexing in the loop makes the backward pass quadratic in T
        if mask is None:
            for xp_t in xp.unbind(1):
                state = self.step(xp_t, state, w_hh, b_hh)
                outputs.append(state[0])
        else:
            for xp_t, real in zip(xp.unbind(1), mask.unbind(1)):
                new = self.step(xp_t, state, w_hh, b_hh)
                state = tuple(torch.where(real, n, old) for n, old in zip(new, state))
                outputs.append(torch.where(real, new[0], 0.0))
        return torch.stack(outputs, 1), state  # (B, T, H)

    def direction(self, layer_input, w_ih, b_ih, w_hh, b_hh, state, mask, reverse):
        """One layer in one direction: outputs (B, T, H) in the input's time order, and the final state;
        `reverse` (an involution on (B, T, F)) for the reversed direction, None for the forward one."""
        xp = torch.nn.functional.linear(layer_input, w_ih, b_ih)  # (B, T, G*H), all steps at once
        if reverse is not None:
            xp = reverse(xp)
        output, final = self.scan(xp, state, w_hh, b_hh, mask)
        return (output if reverse is None else reverse(output)), final

    def _run(self, x, state, lengths):
        batch, steps = x.shape[0], x.shape[1]
        if state is None:
            zeros = x.new_zeros(self.num_layers * self.num_directions, batch, self.hidden_size)
            state = (zeros,) * self.state_size
        mask = reverse_index = None
        if lengths is not None:
            time = torch.arange(steps, device=x.device)
            lengths = lengths.to(x.device)
            real = time[None, :] < lengths[:, None]  # (B, T)
            mask = real.unsqueeze(-1)  # (B, T, 1)
            # reverse each sequence within its length, leave the padding where it is
            reverse_index = torch.where(real, lengths[:, None] - 1 - time[None, :], time[None, :])

        def reverse(seq: Tensor) -> Tensor:  # (B, T, F), an involution
            if reverse_index is None:
                return seq.flip(1)
            return seq.gather(1, reverse_index.unsqueeze(-1).expand_as(seq))

        layer_input = x
        finals: list[list[Tensor]] = [[] for _ in range(self.state_size)]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                suffix = self._suffix(layer, direction)
                w_ih, w_hh, b_ih, b_hh = (
                    getattr(self, f"{name}_{suffix}", None) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                )
                index = layer * self.num_directions + direction
                output, final = self.direction(
                    layer_input, w_ih, b_ih, w_hh, b_hh, tuple(s[index] for s in state), mask,
                    reverse if direction else None,
                )
                outputs.append(output)
                for kept, tensor in zip(finals, final):
                    kept.append(tensor)
            layer_input = torch.cat(outputs, dim=2) if self.bidirectional else outputs[0]  # (B, T, D*H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = torch.nn.functional.dropout(layer_input, self.dropout, training=True)
        return layer_input, tuple(torch.stack(kept, 0) for kept in finals)
