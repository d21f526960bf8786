// winograd_conv on the CPU (see winograd_conv_problem.h for the math), in one of two schedules by the
// size of the transformed weights (the 16 GEMMs M[xi] = V[xi] U[xi] run on tile_gemm.h's register
// tiles, vectors along the channels, reading the weights' column blocks as contiguous rows):
//   fused   (small weights, high-resolution maps): the 2x2 output tiles of every sample, flattened,
//           are cut into blocks of kTileP; a task (at::parallel_for, OpenMP) is one block x a run
//           of output-channel tiles. It transforms the block's inputs (B^T d B) into a buffer,
//           multiplies them into 16 accumulator tiles that stay in L1, and writes the output
//           transform A^T M A + bias + residual, ReLU, one rounding, channels-last. No transformed
//           intermediate leaves the task.
//   phased  (large weights, low-resolution maps, few tiles): the same steps as three parallel
//           passes over all tiles, so each transformed weight is read once, not once per block.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "../op_checks.h"
#include "../winograd_conv_problem.h"
#include "tile_gemm.h"

namespace hrnet_fast::cpu {
namespace {

constexpr const char* kOp = "hrnet_fast::winograd_conv_cpp";
constexpr int kTasksPerThread = 2;
// Transformed weights up to this size (HRNet's 32 to 128 channels: 64 KB to 1 MB in fp32; the slice of
// one output-channel tile stays in L2) run fused per block of tiles; larger ones (256 channels: 4 MB)
// in three passes, so each is read once. Measured on W32's convs, weights from memory (2-core AMD
// EPYC, batch 8): 128 channels 1.3-1.4x oneDNN fused, 1.0-1.1x in three passes; 256 channels the
// other way round.
constexpr int64_t kFusedPanelBytes = 2 << 20;

// count (<= lanes) values of src widened to the accumulation type, zeros after them.
template <typename T>
Vec<acc_t<T>> load(const T* src, int64_t count) {
  using A = acc_t<T>;
  Vec<A> v = {};
  if constexpr (std::is_same_v<T, A>) {
    if (count == kLanes<A>) return load_vec(src);
  }
  for (int64_t i = 0; i < count; ++i) v[i] = to_acc(src[i]);
  return v;
}

template <typename T>
void store(T* dst, const Vec<acc_t<T>>& v, int64_t count) {
  using A = acc_t<T>;
  if constexpr (std::is_same_v<T, A>) {
    if (count == kLanes<A>) {
      store_vec(dst, v);
      return;
    }
  }
  for (int64_t i = 0; i < count; ++i) dst[i] = from_acc<T>(v[i]);
}

// The problem's tiles: 2x2 output tiles of every sample, flattened; tile t is (n, ty, tx).
template <typename T>
struct Tiles {
  using A = acc_t<T>;
  using V = Vec<A>;
  static constexpr int L = kLanes<A>;
  const WinogradProblem& p;
  const A* panel;  // U, [cout_pad / B][16][cin][B], B = kPanelBlock<A>
  int64_t th, tw, count, cin_pad;  // cin_pad: input channels rounded up to whole vectors
  std::vector<A> bias;             // padded with zeros to a whole register tile

  explicit Tiles(const WinogradProblem& problem)
      : p(problem),
        panel(static_cast<const A*>(problem.panel)),
        th((problem.h + 1) / 2),
        tw((problem.w + 1) / 2),
        count(problem.n * th * tw),
        cin_pad(round_up(problem.cin, L)) {
    bias.assign(round_up(p.cout, kTileC<A>), A(0));
    for (int32_t j = 0; j < p.cout; ++j) bias[j] = to_acc(static_cast<const T*>(p.bias)[j]);
  }

  struct At {  // where a tile is: its sample, and its row and column among the sample's tiles
    int64_t n, ty, tx;
  };
  // The GEMM operand of element xi for output channels [j, j + kTileC) (j a multiple of kTileC), rows
  // from `rows`: one panel row per input channel, B values apart.
  Segment<A> segment(int xi, int64_t j, const A* const* rows) const {
    constexpr int B = kPanelBlock<A>;
    const int64_t block_stride = 16 * int64_t{p.cin} * B;
    return Segment<A>{p.cin, rows, panel + j / B * block_stride + xi * int64_t{p.cin} * B + j % B, B, block_stride};
  }

  // Where tiles [first, first + tiles) are: one division for the first, then a step per tile.
  void positions(int64_t first, int tiles, At* pos) const {
    At a = {first / (th * tw), first / tw % th, first % tw};
    for (int q = 0; q < tiles; ++q) {
      pos[q] = a;
      if (++a.tx == tw) {
        a.tx = 0;
        if (++a.ty == th) {
          a.ty = 0;
          ++a.n;
        }
      }
    }
  }

  // B^T d of column j (0..3) of the input patch of the tile at a, for input channels [c, c + L):
  // its four pixels, zeros outside the map.
  void column(const At& a, int j, int64_t c, V* r) const {
    const int64_t y0 = 2 * a.ty - 1, x = 2 * a.tx - 1 + j, width = std::min<int64_t>(L, p.cin - c);
    const T* sample = static_cast<const T*>(p.x) + a.n * p.h * p.w * p.cin + c;
    V d[4];
    if (width == L && y0 >= 0 && y0 + 4 <= p.h && x >= 0 && x < p.w) {
      for (int i = 0; i < 4; ++i) d[i] = load(sample + ((y0 + i) * p.w + x) * p.cin, L);
    } else {
      for (int i = 0; i < 4; ++i) {
        const bool inside = y0 + i >= 0 && y0 + i < p.h && x >= 0 && x < p.w;
        d[i] = inside ? load(sample + ((y0 + i) * p.w + x) * p.cin, width) : V{};
      }
    }
    r[0] = d[0] - d[2];
    r[1] = d[1] + d[2];
    r[2] = d[2] - d[1];
    r[3] = d[1] - d[3];
  }

  // V = B^T d B of the input patches of tiles [first, first + tiles) (at pos[0..tiles); all zeros
  // for tiles past count) for input channels [c, c + L): element xi of tile q goes to
  // dst + q * tile_stride + xi * stride. A tile right of the one before it in the same row shares
  // two columns with it, whose B^T d is carried over.
  void transform_inputs(int64_t first, int tiles, const At* pos, int64_t c, A* dst, int64_t tile_stride,
                        int64_t stride) const {
    V r[4][4];  // r[j]: B^T d of the patch's column j
    for (int q = 0; q < tiles; ++q, dst += tile_stride) {
      if (first + q >= count) {
        for (int xi = 0; xi < 16; ++xi) std::memset(dst + xi * stride, 0, sizeof(V));
        continue;
      }
      const At& a = pos[q];
      int j = 0;
      if (q > 0 && a.tx > 0 && a.tx == pos[q - 1].tx + 1) {  // same sample and row: tx only grows within one
        for (int i = 0; i < 4; ++i) {
          r[0][i] = r[2][i];
          r[1][i] = r[3][i];
        }
        j = 2;
      }
      for (; j < 4; ++j) column(a, j, c, r[j]);
      for (int i = 0; i < 4; ++i) {  // (B^T d) B
        A* row = dst + i * 4 * stride;
        store_vec(row, r[0][i] - r[2][i]);
        store_vec(row + stride, r[1][i] + r[2][i]);
        store_vec(row + 2 * stride, r[2][i] - r[1][i]);
        store_vec(row + 3 * stride, r[1][i] - r[3][i]);
      }
    }
  }

  // The outputs of the tile at `at` for channels [j0, j1) (j0 a multiple of L), from the products m[xi]
  // of channel j at src + (j - j0) + xi * stride: act(A^T M A + bias + residual), rounded once, written
  // channels-last (pixels inside the map only). The tile's pixels are found once, as offsets from its
  // first; a tile inside the map with whole vectors of channels writes them with no checks.
  void write_outputs(const At& at, int64_t j0, int64_t j1, const A* src, int64_t stride) const {
    const int64_t cout = p.cout, w = p.w, first = ((at.n * p.h + 2 * at.ty) * w + 2 * at.tx) * cout;
    const int64_t offsets[4] = {0, cout, w * cout, (w + 1) * cout};  // pixels (0, 0), (0, 1), (1, 0), (1, 1)
    const bool second_row = 2 * at.ty + 1 < p.h, second_column = 2 * at.tx + 1 < w;
    const bool inside[4] = {true, second_column, second_row, second_row && second_column};
    const T* residual = p.residual == nullptr ? nullptr : static_cast<const T*>(p.residual) + first;
    T* out = static_cast<T*>(p.out) + first;
    const bool relu = p.relu;
    auto write = [&](auto whole) {
      for (int64_t j = j0; j < j1; j += L) {
        const A* m = src + (j - j0);
        V s[2][4];  // A^T M
        for (int k = 0; k < 4; ++k) {
          const V m1 = load_vec(m + (4 + k) * stride), m2 = load_vec(m + (8 + k) * stride);
          s[0][k] = load_vec(m + k * stride) + m1 + m2;
          s[1][k] = m1 - m2 - load_vec(m + (12 + k) * stride);
        }
        const V b = load_vec(bias.data() + j);
        const V y[4] = {s[0][0] + s[0][1] + s[0][2], s[0][1] - s[0][2] - s[0][3],  // (A^T M) A
                        s[1][0] + s[1][1] + s[1][2], s[1][1] - s[1][2] - s[1][3]};
        const int64_t width = whole ? L : std::min<int64_t>(L, cout - j);
        for (int e = 0; e < 4; ++e) {
          if (!whole && !inside[e]) continue;
          V value = y[e] + b;
          if (residual != nullptr) value += load(residual + offsets[e] + j, width);
          if (relu) value = value < V{} ? V{} : value;  // v < 0 ? 0 : v keeps NaN, as torch.relu
          store(out + offsets[e] + j, value, width);
        }
      }
    };
    if (inside[3] && cout % L == 0) {
      write(std::true_type{});
    } else {
      write(std::false_type{});
    }
  }
};

// Tasks for `units` units of work and `parts` parts each (output-channel tiles): units split into
// parts only as far as needed for kTasksPerThread tasks per thread.
struct Split {
  int64_t parts, per_part;
  Split(int64_t units, int64_t channel_tiles) {
    const int64_t wanted = int64_t{kTasksPerThread} * at::get_num_threads();
    parts = std::min(channel_tiles, (wanted + units - 1) / units);
    per_part = (channel_tiles + parts - 1) / parts;
  }
};

// Small weights (high-resolution maps): everything per block of kTileP tiles in one task, the
// transformed inputs and the 16 accumulator tiles in L1/L2, the panel's rows streamed from L2/L3.
template <typename T>
void run_fused(const Tiles<T>& g) {
  using A = acc_t<T>;
  constexpr int L = kLanes<A>, kC = kTileC<A>;
  const WinogradProblem& p = g.p;
  const int64_t cin_pad = g.cin_pad, blocks = (g.count + kTileP - 1) / kTileP, channel_tiles = (p.cout + kC - 1) / kC;
  const Split split(blocks, channel_tiles);  // a block split by channels transforms its inputs per part
  at::parallel_for(0, blocks * split.parts, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<A> transformed_buffer, acc_buffer;  // kept per thread
    A* const transformed = cache_aligned(transformed_buffer, 16 * kTileP * cin_pad);  // [xi][tile][input channel]
    A* const acc = cache_aligned(acc_buffer, 16 * kTileP * kC);                       // [xi][tile][output channel]
    const A* rows[16][kTileP];
    for (int xi = 0; xi < 16; ++xi) {
      for (int q = 0; q < kTileP; ++q) rows[xi][q] = transformed + (xi * kTileP + q) * cin_pad;
    }
    for (int64_t task = begin; task < end; ++task) {
      const int64_t first = task / split.parts * kTileP, part = task % split.parts;
      typename Tiles<T>::At pos[kTileP];
      g.positions(first, kTileP, pos);
      for (int64_t c = 0; c < cin_pad; c += L) {
        g.transform_inputs(first, kTileP, pos, c, transformed + c, cin_pad, kTileP * cin_pad);
      }
      const int64_t j0 = part * split.per_part * kC, j1 = std::min<int64_t>(p.cout, j0 + split.per_part * kC);
      for (int64_t j = j0; j < j1; j += kC) {
        for (int xi = 0; xi < 16; ++xi) {
          const Segment<A> segment = g.segment(xi, j, rows[xi]);
          tile_gemm</*kAccumulate=*/false>(&segment, 1, acc + xi * kTileP * kC, kC);
        }
        for (int64_t q = 0; q < std::min<int64_t>(kTileP, g.count - first); ++q) {
          g.write_outputs(pos[q], j, std::min<int64_t>(j + kC, p.cout), acc + q * kC, kTileP * kC);
        }
      }
    }
  });
}

// Large weights (low-resolution maps, few tiles): three passes, so each weight is read once:
// every tile's input transform into V [xi][tile][cin]; then per element xi and output-channel tile
// the GEMM M[xi] = V[xi] U[xi] over all tiles (one U slice in L1/L2 at a time); then every tile's
// output transform from M [xi][tile][cout].
template <typename T>
void run_phased(const Tiles<T>& g) {
  using A = acc_t<T>;
  constexpr int L = kLanes<A>, kC = kTileC<A>;
  const WinogradProblem& p = g.p;
  const int64_t cin_pad = g.cin_pad, m_width = round_up(p.cout, kC);  // M's rows: whole channel tiles
  const int64_t tiles = round_up(g.count, kTileP), channel_tiles = m_width / kC;
  // Kept per calling thread between calls: no allocation, no page faults on a hot path. (The tasks
  // run on other threads, whose thread_locals are others: they get the buffers' addresses.)
  thread_local std::vector<A> v_buffer, m_buffer;
  A* const v = cache_aligned(v_buffer, 16 * tiles * cin_pad);
  A* const m = cache_aligned(m_buffer, 16 * tiles * m_width);
  at::parallel_for(0, tiles, kTileP, [&](int64_t begin, int64_t end) {
    typename Tiles<T>::At pos[kTileP];
    for (int64_t first = begin; first < end; first += kTileP) {
      const int run = static_cast<int>(std::min<int64_t>(kTileP, end - first));
      g.positions(first, run, pos);
      for (int64_t c = 0; c < cin_pad; c += L) {
        g.transform_inputs(first, run, pos, c, v + first * cin_pad + c, cin_pad, tiles * cin_pad);
      }
    }
  });
  at::parallel_for(0, 16 * channel_tiles, 1, [&](int64_t begin, int64_t end) {
    const A* rows[kTileP];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t xi = task / channel_tiles, j = task % channel_tiles * kC;
      const Segment<A> segment = g.segment(static_cast<int>(xi), j, rows);
      for (int64_t first = 0; first < tiles; first += kTileP) {
        for (int q = 0; q < kTileP; ++q) rows[q] = v + (xi * tiles + first + q) * cin_pad;
        tile_gemm</*kAccumulate=*/false>(&segment, 1, m + (xi * tiles + first) * m_width + j, m_width);
      }
    }
  });
  at::parallel_for(0, g.count, kTileP, [&](int64_t begin, int64_t end) {
    typename Tiles<T>::At pos[kTileP];
    for (int64_t first = begin; first < end; first += kTileP) {
      const int run = static_cast<int>(std::min<int64_t>(kTileP, end - first));
      g.positions(first, run, pos);
      for (int q = 0; q < run; ++q) g.write_outputs(pos[q], 0, p.cout, m + (first + q) * m_width, tiles * m_width);
    }
  });
}

template <typename T>
void run_winograd(const WinogradProblem& p) {
  const Tiles<T> tiles(p);
  const int64_t panel_bytes = 16 * int64_t{p.cin} * p.cout_pad * static_cast<int64_t>(sizeof(acc_t<T>));
  if (panel_bytes > kFusedPanelBytes) {
    run_phased(tiles);
  } else {
    run_fused(tiles);
  }
}

at::Tensor winograd_conv_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& panel,
                             const at::Tensor& bias, const std::optional<at::Tensor>& residual, bool relu) {
  TORCH_CHECK(x.dim() == 4, kOp, ": x must be (N, C, H, W), got ", x.sizes());
  const DType dtype = dtype_of("cpp (CPU)", /*supports_float64=*/true, kOp, x);
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3), cout = weight.size(0);
  TORCH_CHECK(weight.sizes() == at::IntArrayRef({cout, cin, 3, 3}), kOp, ": weight must be (C_out, ", cin,
              ", 3, 3), got ", weight.sizes());
  TORCH_CHECK(bias.sizes() == at::IntArrayRef({cout}), kOp, ": bias must be (", cout, "), got ", bias.sizes());
  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t cout_pad = round_up(cout, 32), block = acc == at::kDouble ? kPanelBlock<double> : kPanelBlock<float>;
  TORCH_CHECK(panel.sizes() == at::IntArrayRef({cout_pad / block, 16, cin, block}) && panel.scalar_type() == acc &&
                  panel.is_contiguous() && panel.device() == x.device(),
              kOp, ": panel must be a contiguous ", acc, " (", cout_pad / block, ", 16, ", cin, ", ", block,
              ") tensor from winograd_panel(weight), got ", panel.scalar_type(), " ", panel.sizes());
  for (const at::Tensor* t : {&weight, &bias}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(), kOp, ": weight and bias must be ",
                x.scalar_type(), " on ", x.device(), ", got ", t->scalar_type(), " on ", t->device());
  }
  const at::MemoryFormat cl = at::MemoryFormat::ChannelsLast;
  at::Tensor out = at::empty({n, cout, h, w}, x.options().memory_format(cl));
  at::Tensor input = x.contiguous(cl), shortcut;
  if (residual.has_value()) {
    TORCH_CHECK(residual->sizes() == out.sizes() && residual->scalar_type() == x.scalar_type() &&
                    residual->device() == x.device(),
                kOp, ": residual must be ", x.scalar_type(), " ", out.sizes(), " on ", x.device(), ", got ",
                residual->scalar_type(), " ", residual->sizes(), " on ", residual->device());
    shortcut = residual->contiguous(cl);
  }
  if (out.numel() == 0) return out;
  const at::Tensor bias_dense = bias.contiguous();
  const WinogradProblem p{dtype,
                          static_cast<int32_t>(n),
                          static_cast<int32_t>(h),
                          static_cast<int32_t>(w),
                          static_cast<int32_t>(cin),
                          static_cast<int32_t>(cout),
                          relu,
                          input.const_data_ptr(),
                          panel.const_data_ptr(),
                          cout_pad,
                          bias_dense.const_data_ptr(),
                          residual.has_value() ? shortcut.const_data_ptr() : nullptr,
                          out.mutable_data_ptr()};
  dispatch_dtype(dtype, [&](auto tag) { run_winograd<decltype(tag)>(p); });
  return out;
}

}  // namespace
}  // namespace hrnet_fast::cpu

TORCH_LIBRARY_IMPL(hrnet_fast, CPU, m) { m.impl("winograd_conv_cpp", &hrnet_fast::cpu::winograd_conv_cpu); }
