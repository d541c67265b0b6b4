// One pass over time for minGRU and minLSTM (cells/mingru.py, cells/minlstm.py), forward and
// backward: the gates, the candidate and the recurrence h_t = a_t h_{t-1} + b_t of a step in one
// loop over the B x H independent lanes, read from the projected input xp (B, T, G*H), or, for a
// narrow input, projected here step by step (b + W x_t), so that xp is never written to memory.
// Nothing but h is kept for the backward pass, which recomputes the gates. The loop over the
// hidden units is contiguous and vectorised (`omp simd`; exp from glibc's vector library under
// -ffast-math); batch rows run in parallel on torch's threads.
//
// lengths (B,): real steps of each row (a prefix); at padded steps the state is left as it was and
// the output is zero, as the cell interface requires.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// Under -ffast-math the compiler assumes no infinities, and a division may become a reciprocal
// estimate refined by a Newton step, which turns 1 / inf into NaN: so exp's argument stops where
// exp stays finite (80 for float, 700 for double). Below -80 the sigmoid is then 1.8e-35, not the
// smaller true value: the same to far below any tolerance of a float32 computation.
template <typename T>
constexpr T exp_limit() {
  return sizeof(T) == sizeof(float) ? T(80) : T(700);
}

template <typename T>
inline T sigmoid(T v) {
  return T(1) / (T(1) + std::exp(std::min(-v, exp_limit<T>())));
}

// g(v) = v + 1/2 (v >= 0), sigmoid(v) (v < 0)
template <typename T>
inline T positive(T v) {
  return v >= T(0) ? v + T(0.5) : sigmoid(v);
}

// g(v) and g'(v) from one exponential
template <typename T>
inline T positive(T v, T& slope) {
  const T s = sigmoid(v);
  slope = v >= T(0) ? T(1) : s * (T(1) - s);
  return v >= T(0) ? v + T(0.5) : s;
}

// minGRU: z = sigmoid(v_z), h~ = g(v_h); h' = (1 - z) h + z h~
struct MinGRU {
  static constexpr int gates = 2;

  template <typename T>
  static inline T step(const T* v, int64_t H, int64_t j, T h) {
    const T z = sigmoid(v[j]);
    return h + z * (positive(v[H + j]) - h);
  }

  // d = dL/dh'; writes dL/dv of the step's gates, returns dL/dh
  template <typename T>
  static inline T back(const T* v, T* gv, int64_t H, int64_t j, T h, T d) {
    const T z = sigmoid(v[j]);
    T slope;
    const T candidate = positive(v[H + j], slope);
    gv[j] = d * (candidate - h) * z * (T(1) - z);
    gv[H + j] = d * z * slope;
    return d * (T(1) - z);
  }
};

// minLSTM: f = sigmoid(v_f), i = sigmoid(v_i), h~ = g(v_h); h' = (f h + i h~) / (f + i)
struct MinLSTM {
  static constexpr int gates = 3;

  template <typename T>
  static inline T step(const T* v, int64_t H, int64_t j, T h) {
    const T f = sigmoid(v[j]), i = sigmoid(v[H + j]);
    return h + i / (f + i) * (positive(v[2 * H + j]) - h);
  }

  template <typename T>
  static inline T back(const T* v, T* gv, int64_t H, int64_t j, T h, T d) {
    const T f = sigmoid(v[j]), i = sigmoid(v[H + j]);
    T slope;
    const T candidate = positive(v[2 * H + j], slope);
    const T s = f + i;
    const T keep = f / s, write = i / s;  // h' = h + write (h~ - h)
    // d write / d f = -keep write / f, d write / d i = keep write / i: no 1 / s^2, which
    // overflows in float32 when both gates are near 0
    const T shared = d * (candidate - h) * keep * write;
    gv[j] = -shared * (T(1) - f);
    gv[H + j] = shared * (T(1) - i);
    gv[2 * H + j] = d * write * slope;
    return d * keep;
  }
};

constexpr int LANES = 16;  // running sums of a dot product: one AVX-512 register of floats

// The pre-activations of one step, (G*H,): a row of xp, or b + W x_t computed here from the step's
// input when the cell projects inside the kernel (weight_t (I, G*H) then; xp never exists).
template <typename T>
struct Steps {
  const T* input;     // xp (B, T, G*H), or x (B, T, I)
  const T* weight_t;  // nullptr, or W transposed (I, G*H)
  const T* bias;      // (G*H,) with weight_t
  int64_t features, width, steps;

  const T* at(int64_t b, int64_t t, T* scratch) const {
    const T* row = input + (b * steps + t) * features;
    if (!weight_t) return row;
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) scratch[j] = bias[j];
    for (int64_t i = 0; i < features; ++i) {
      const T xi = row[i];
      const T* w = weight_t + i * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) scratch[j] += w[j] * xi;
    }
    return scratch;
  }
};

template <typename Cell, typename T>
void forward_rows(const Steps<T>& in, const T* h0, const int64_t* lengths, T* h, T* final, int64_t B, int64_t H) {
  const int64_t steps = in.steps;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(in.width);
    for (int64_t b = begin; b < end; ++b) {
      T* state = final + b * H;
      std::copy(h0 + b * H, h0 + (b + 1) * H, state);
      const int64_t real = lengths ? lengths[b] : steps;
      for (int64_t t = 0; t < steps; ++t) {
        T* out = h + (b * steps + t) * H;
        if (t >= real) {
          std::fill(out, out + H, T(0));
          continue;
        }
        const T* v = in.at(b, t, scratch.data());
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const T next = Cell::step(v, H, j, state[j]);
          state[j] = next;
          out[j] = next;
        }
      }
    }
  });
}

// grad_input: dL/dxp (B, T, G*H), or dL/dx (B, T, I) with grad_weight_t (B, I, G*H) and grad_bias
// (B, G*H), each batch row's share (summed by the caller: no two threads write one place)
template <typename Cell, typename T>
void backward_rows(const Steps<T>& in, const T* h0, const int64_t* lengths, const T* h, const T* grad,
                   const T* grad_final, T* grad_input, T* grad_weight_t, T* grad_bias, T* grad_h0, int64_t B,
                   int64_t H) {
  const int64_t steps = in.steps, width = in.width, features = in.features;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(width), gate_grad(width);
    for (int64_t b = begin; b < end; ++b) {
      T* carry = grad_h0 + b * H;  // dL/dh_t from the steps after t
      std::copy(grad_final + b * H, grad_final + (b + 1) * H, carry);
      T* gw = in.weight_t ? grad_weight_t + b * features * width : nullptr;
      T* gb = in.weight_t ? grad_bias + b * width : nullptr;
      if (gw) {
        std::fill(gw, gw + features * width, T(0));
        std::fill(gb, gb + width, T(0));
      }
      const int64_t real = lengths ? lengths[b] : steps;
      for (int64_t t = steps - 1; t >= 0; --t) {
        T* gi = grad_input + (b * steps + t) * (gw ? features : width);
        if (t >= real) {
          std::fill(gi, gi + (gw ? features : width), T(0));
          continue;
        }
        const T* v = in.at(b, t, scratch.data());
        T* gv = gw ? gate_grad.data() : gi;
        const T* g = grad + (b * steps + t) * H;
        const T* previous = t ? h + (b * steps + t - 1) * H : h0 + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          carry[j] = Cell::back(v, gv, H, j, previous[j], g[j] + carry[j]);
        }
        if (!gw) continue;
        const T* x = in.input + (b * steps + t) * features;
#pragma omp simd
        for (int64_t j = 0; j < width; ++j) gb[j] += gv[j];
        for (int64_t i = 0; i < features; ++i) {
          const T* w = in.weight_t + i * width;
          T* gwi = gw + i * width;
          const T xi = x[i];
#pragma omp simd
          for (int64_t j = 0; j < width; ++j) gwi[j] += gv[j] * xi;
          // dL/dx_t,i = sum_j gv_j W_ji in LANES running sums, added up once: an `omp simd
          // reduction` here cost a third of the backward pass (21 against 15 ms at mnist-pixel)
          T partial[LANES] = {};
          int64_t j = 0;
          for (; j + LANES <= width; j += LANES) {
#pragma omp simd
            for (int k = 0; k < LANES; ++k) partial[k] += gv[j + k] * w[j + k];
          }
          T sum = 0;
          for (; j < width; ++j) sum += gv[j] * w[j];
          for (int k = 0; k < LANES; ++k) sum += partial[k];
          gi[i] = sum;
        }
      }
    }
  });
}

template <typename T>
Steps<T> steps_of(const torch::Tensor& input, const torch::Tensor& weight_t, const torch::Tensor& bias, int64_t width) {
  const bool project = weight_t.numel() > 0;
  return {input.data_ptr<T>(), project ? weight_t.data_ptr<T>() : nullptr, project ? bias.data_ptr<T>() : nullptr,
          input.size(2), width, input.size(1)};
}

// input: xp (B, T, G*H) with weight_t and bias empty, or x (B, T, I) with weight_t (I, G*H), bias (G*H,)
void check(const torch::Tensor& input, const torch::Tensor& weight_t, const torch::Tensor& bias,
           const torch::Tensor& h0, const torch::Tensor& lengths, int gates) {
  TORCH_CHECK(input.device().is_cpu(), "the kernel runs on the CPU");
  TORCH_CHECK(input.dim() == 3 && h0.dim() == 2 && h0.size(0) == input.size(0), "input (B, T, F), h0 (B, H)");
  const int64_t width = gates * h0.size(1);
  if (weight_t.numel()) {
    TORCH_CHECK(weight_t.dim() == 2 && weight_t.size(0) == input.size(2) && weight_t.size(1) == width &&
                    bias.numel() == width && weight_t.is_contiguous() && bias.is_contiguous(),
                "weight_t must be (I, G*H) and bias (G*H,), contiguous");
    TORCH_CHECK(weight_t.scalar_type() == input.scalar_type() && bias.scalar_type() == input.scalar_type(),
                "weight_t, bias and the input must have one dtype");
  } else {
    TORCH_CHECK(input.size(2) == width, "xp must be (B, T, ", gates, " * H)");
  }
  TORCH_CHECK(input.is_contiguous() && h0.is_contiguous(), "the input and h0 must be contiguous");
  TORCH_CHECK(h0.scalar_type() == input.scalar_type(), "h0 and the input must have one dtype");
  TORCH_CHECK(lengths.numel() == 0 || (lengths.scalar_type() == torch::kLong && lengths.numel() == input.size(0)),
              "lengths must be empty or (B,) int64");
}

template <typename Cell>
std::vector<torch::Tensor> forward(torch::Tensor input, torch::Tensor weight_t, torch::Tensor bias, torch::Tensor h0,
                                   torch::Tensor lengths) {
  check(input, weight_t, bias, h0, lengths, Cell::gates);
  const int64_t B = input.size(0), H = h0.size(1);
  auto h = torch::empty({B, input.size(1), H}, input.options());
  auto final = torch::empty({B, H}, input.options());
  const int64_t* real = lengths.numel() ? lengths.data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "linear_recurrence_forward", [&] {
    forward_rows<Cell, scalar_t>(steps_of<scalar_t>(input, weight_t, bias, Cell::gates * H), h0.data_ptr<scalar_t>(),
                                 real, h.data_ptr<scalar_t>(), final.data_ptr<scalar_t>(), B, H);
  });
  return {h, final};
}

// dL/dinput, dL/dweight_t and dL/dbias (empty without a projection), dL/dh0
template <typename Cell>
std::vector<torch::Tensor> backward(torch::Tensor input, torch::Tensor weight_t, torch::Tensor bias, torch::Tensor h0,
                                    torch::Tensor lengths, torch::Tensor h, torch::Tensor grad,
                                    torch::Tensor grad_final) {
  check(input, weight_t, bias, h0, lengths, Cell::gates);
  TORCH_CHECK(grad.is_contiguous() && grad_final.is_contiguous() && h.is_contiguous(), "gradients must be contiguous");
  const int64_t B = input.size(0), H = h0.size(1), width = Cell::gates * H;
  const bool project = weight_t.numel() > 0;
  auto grad_input = torch::empty_like(input);
  auto grad_h0 = torch::empty_like(h0);
  auto grad_weight_t = project ? torch::empty({B, input.size(2), width}, input.options()) : torch::empty({0});
  auto grad_bias = project ? torch::empty({B, width}, input.options()) : torch::empty({0});
  const int64_t* real = lengths.numel() ? lengths.data_ptr<int64_t>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "linear_recurrence_backward", [&] {
    backward_rows<Cell, scalar_t>(steps_of<scalar_t>(input, weight_t, bias, width), h0.data_ptr<scalar_t>(), real,
                                  h.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), grad_final.data_ptr<scalar_t>(),
                                  grad_input.data_ptr<scalar_t>(),
                                  project ? grad_weight_t.data_ptr<scalar_t>() : nullptr,
                                  project ? grad_bias.data_ptr<scalar_t>() : nullptr, grad_h0.data_ptr<scalar_t>(), B,
                                  H);
  });
  if (project) return {grad_input, grad_weight_t.sum(0), grad_bias.sum(0), grad_h0};
  return {grad_input, grad_weight_t, grad_bias, grad_h0};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("mingru_forward", &forward<MinGRU>, "minGRU over all steps: h (B, T, H), final state (B, H)");
  m.def("mingru_backward", &backward<MinGRU>, "minGRU's backward: dL/dinput, dL/dweight_t, dL/dbias, dL/dh0");
  m.def("minlstm_forward", &forward<MinLSTM>, "minLSTM over all steps: h (B, T, H), final state (B, H)");
  m.def("minlstm_backward", &backward<MinLSTM>, "minLSTM's backward: dL/dinput, dL/dweight_t, dL/dbias, dL/dh0");
}
