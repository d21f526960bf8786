// fusion_branch on the CPU (see fusion_branch_problem.h for the math), every path in one pass.
//
// Work is split into tasks of one band of output rows of one sample and one block of output channels
// (at::parallel_for, OpenMP). A task accumulates its band into an fp32 (fp64 for double) tile of
// pixels x its channels that stays in cache:
//   1. the stride-2 3x3 convs as an implicit GEMM: per block of kTileP output pixels, one segment per
//      path and tap whose rows are the input pixels under that tap (zero rows for the padding), all
//      multiplied into one register tile (tile_gemm.h);
//   2. each 1x1 projection at the low resolution, for the low rows this band reads only (a GEMM per
//      band), then interpolated and added to the tile (the index math of F.interpolate);
//   3. the epilogue: + bias + base, ReLU, one rounding, written in the output's layout.
// No projected or convolved intermediate leaves the task. Each down and low map comes in its own
// layout (whatever the output's): GEMM rows are read in place from channels_last maps whose storage
// type the micro-kernels take; otherwise the band's input rows are first staged channels-last (NCHW
// maps transposed, fp16 widened to fp32).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../fusion_branch_op.h"
#include "../resample_index.h"
#include "tile_gemm.h"
#include "transpose.h"

namespace hrnet_fast::cpu {
namespace {

constexpr int64_t kBandBytes = 256 << 10;  // accumulator tile of one task, at most (unless one row is more)
constexpr int kTasksPerThread = 4;
constexpr int64_t kMinBandPixels = 8 * kTileP;  // a band of fewer pixels splits the channels instead
constexpr int64_t kBlockBytes = 512 << 10;  // weights of one block of segments, all channels (stay in L2)
// Pixel tiles that share each read of a panel in the strided convs: about 30 pixels (5 tiles on AVX2:
// W32 stage-4 branches 1-3 0.89-0.97x the time of one tile at a time; 3-12 tiles all within ~3%).
constexpr int64_t kGroupTiles = (30 + kTileP - 1) / kTileP;

// NCHW planes (channel ci of pixel q at src[ci * plane + q]) to channels-last rows: dst[q * cin + ci],
// converted to the operand type. Without a conversion, whole 8 x 8 blocks go through
// transpose_block; the rest in blocks of pixels whose channels stay in L1.
template <typename T, typename R>
void planes_to_rows(const T* src, int64_t plane, int64_t pixels, int32_t cin, R* dst) {
  constexpr int kB = kTransposeBlock;
  int64_t blocked_pixels = 0;
  int32_t blocked_channels = 0;
  if constexpr (std::is_same_v<T, R>) {
    blocked_pixels = pixels / kB * kB;
    blocked_channels = cin / kB * kB;
    for (int32_t c0 = 0; c0 < blocked_channels; c0 += kB) {
      for (int64_t q0 = 0; q0 < blocked_pixels; q0 += kB) {
        transpose_block(src + c0 * plane + q0, plane, dst + q0 * cin + c0, cin);
      }
    }
  }
  constexpr int64_t kPixelBlock = 32;
  for (int64_t q0 = 0; q0 < pixels; q0 += kPixelBlock) {
    const int64_t q1 = std::min(q0 + kPixelBlock, pixels);
    for (int32_t ci = 0; ci < cin; ++ci) {
      for (int64_t q = ci < blocked_channels ? std::max(q0, blocked_pixels) : q0; q < q1; ++q) {
        dst[q * cin + ci] = to_operand<R>(src[ci * plane + q]);
      }
    }
  }
}

// Rows [row0, row0 + count) of one sample of a map, channels last in the operand type: GEMM rows are
// pixel(y, x), cin values each (zeros outside the map). A view of the map itself when it already is
// so (channels_last in the operand type), else a converted (and, for NCHW, transposed) copy.
template <typename T>
class StagedRows {
 public:
  using R = operand_t<T>;

  StagedRows(const MapRef& m, int64_t n, int32_t row0, int32_t count, int32_t cin, std::vector<R>& buffer,
             const R* zeros)
      : row0_(std::max(row0, 0)), row1_(std::min(row0 + count, m.h)), w_(m.w), zeros_(zeros) {
    const int64_t rows = std::max(row1_ - row0_, 0);
    const T* x = static_cast<const T*>(m.data) + n * m.sample_stride + int64_t{row0_} * m.w * m.pixel_stride;
    if (std::is_same_v<T, R> && m.channel_stride == 1) {
      data_ = reinterpret_cast<const R*>(x);
      pixel_ = m.pixel_stride;
      return;
    }
    pixel_ = cin;
    buffer.resize(rows * w_ * cin);
    const int64_t pixels = rows * w_;
    if (m.channel_stride == 1) {
      for (int64_t q = 0; q < pixels; ++q) {
        for (int32_t ci = 0; ci < cin; ++ci) buffer[q * cin + ci] = to_operand<R>(x[q * m.pixel_stride + ci]);
      }
    } else {
      planes_to_rows(x, m.channel_stride, pixels, cin, buffer.data());
    }
    data_ = buffer.data();
  }

  const R* pixel(int64_t y, int64_t x) const {
    if (y < row0_ || y >= row1_ || x < 0 || x >= w_) return zeros_;
    return data_ + ((y - row0_) * w_ + x) * pixel_;
  }

 private:
  int32_t row0_, row1_;
  int64_t w_, pixel_ = 0;
  const R* data_ = nullptr;
  const R* zeros_;
};

int64_t pixel_offset(const MapRef& m, int64_t n, int64_t y, int64_t x) {
  return n * m.sample_stride + (y * m.w + x) * m.pixel_stride;
}

// The whole problem, prepared once per call and shared read-only by the tasks.
template <typename T>
struct Branch {
  using A = acc_t<T>;
  using R = operand_t<T>;
  const FusionBranchProblem& p;
  int64_t cp;  // channels of the accumulator tiles: c rounded up to kTileC
  std::vector<A> bias;
  std::vector<R> zeros;
  std::vector<WeightPanel<T>> down_w, low_w;
  std::vector<Axis<A>> low_y;
  std::vector<std::vector<Taps<A>>> low_x;  // per low path, the taps of every output column

  explicit Branch(const FusionBranchProblem& problem) : p(problem), cp(round_up(problem.c, kTileC<A>)) {
    bias.assign(cp, A(0));
    for (int32_t j = 0; j < p.c; ++j) bias[j] = to_acc(static_cast<const T*>(p.bias)[j]);
    int32_t widest = 0;
    for (int k = 0; k < p.num_down; ++k) {
      down_w.emplace_back(p.down[k].weight, 9, p.down[k].cin, p.c);
      widest = std::max(widest, p.down[k].cin);
    }
    for (int k = 0; k < p.num_low; ++k) {
      const ConvPath& path = p.low[k];
      low_w.emplace_back(path.weight, 1, path.cin, p.c);
      low_y.push_back(make_axis<A>(path.x.h, p.h, p.bilinear, p.align_corners));
      const Axis<A> ax = make_axis<A>(path.x.w, p.w, p.bilinear, p.align_corners);
      auto& columns = low_x.emplace_back(p.w);
      for (int32_t x = 0; x < p.w; ++x) columns[x] = taps(ax, x);
      widest = std::max(widest, path.cin);
    }
    zeros.assign(widest, to_operand<R>(T{}));
  }
};

// Per-thread buffers, reused across the thread's tasks.
template <typename T>
struct Scratch {
  using A = acc_t<T>;
  using R = operand_t<T>;
  std::vector<A> acc, proj;            // accumulator tile, projected low rows (from cache_aligned)
  A* acc_data = nullptr;               // the tile, in acc
  std::vector<std::vector<R>> staged;  // per path, its input rows (when not read in place)
  std::vector<const R*> row_pointers;  // kTileP per segment
  std::vector<Segment<R>> segments;
};

// One task: output rows [y0, y1) of sample n, channels [j0, j1) (multiples of kTileC but the last
// may end at cp). Its accumulator tile is (y1 - y0) * w pixels x width() channels.
struct Task {
  int64_t n;
  int32_t y0, y1;
  int64_t j0, j1;
  int64_t width() const { return j1 - j0; }
};

// Step 1: acc (the task's pixels x its channels) += every stride-2 3x3 conv, one segment per path and
// tap. The segments go in blocks of at most kBlockBytes of weights (they stay in L2). A block runs
// over the band's pixel tiles in groups of kGroupTiles: the group's row pointers are gathered once,
// then each channel tile multiplies its panels into every tile of the group, so a panel is read
// once per group (not once per pixel tile) while the group's input rows stay in cache.
template <typename T>
void add_down_convs(const Branch<T>& b, const Task& task, Scratch<T>& s) {
  using R = operand_t<T>;
  using A = acc_t<T>;
  const FusionBranchProblem& p = b.p;
  const int32_t y0 = task.y0, y1 = task.y1;
  const int64_t pixels = int64_t{y1 - y0} * p.w, width = task.width();
  const int64_t tiles = (pixels + kTileP - 1) / kTileP;
  const int count = 9 * p.num_down;
  s.staged.resize(p.num_down);
  std::vector<StagedRows<T>> inputs;
  for (int k = 0; k < p.num_down; ++k) {  // input rows 2 * y0 - 1 .. 2 * y1 - 1
    const ConvPath& path = p.down[k];
    inputs.emplace_back(path.x, task.n, 2 * y0 - 1, 2 * (y1 - y0) + 1, path.cin, s.staged[k], b.zeros.data());
  }
  s.row_pointers.resize(kGroupTiles * count * kTileP);  // [tile of the group][segment][pixel]
  s.segments.resize(count);
  auto rows_of = [&](int64_t tile_in_group, int i) {
    return s.row_pointers.data() + (tile_in_group * count + i) * kTileP;
  };
  for (int first = 0, last; first < count; first = last) {
    int64_t k_sum = p.down[first / 9].cin;
    for (last = first + 1; last < count; ++last) {
      const int64_t k = p.down[last / 9].cin;
      if ((k_sum + k) * width * static_cast<int64_t>(sizeof(R)) > kBlockBytes) break;
      k_sum += k;
    }
    for (int64_t g0 = 0; g0 < tiles; g0 += kGroupTiles) {
      const int64_t g1 = std::min<int64_t>(g0 + kGroupTiles, tiles);
      for (int64_t tile = g0; tile < g1; ++tile) {
        int64_t ys[kTileP], xs[kTileP];  // the tile's output pixels, stepped along the rows (no division per pixel)
        const int valid = static_cast<int>(std::min<int64_t>(kTileP, pixels - tile * kTileP));
        ys[0] = y0 + tile * kTileP / p.w;
        xs[0] = tile * kTileP % p.w;
        for (int q = 1; q < valid; ++q) {
          const bool wraps = xs[q - 1] + 1 == p.w;
          ys[q] = ys[q - 1] + wraps;
          xs[q] = wraps ? 0 : xs[q - 1] + 1;
        }
        for (int i = first; i < last; ++i) {
          const int k = i / 9, dy = i % 9 / 3 - 1, dx = i % 3 - 1;
          const R** rows = rows_of(tile - g0, i);
          for (int q = 0; q < kTileP; ++q) {
            rows[q] = q < valid ? inputs[k].pixel(2 * ys[q] + dy, 2 * xs[q] + dx) : b.zeros.data();
          }
        }
      }
      for (int64_t j = task.j0; j < task.j1; j += kTileC<A>) {
        for (int i = first; i < last; ++i) {
          const WeightPanel<T>& w = b.down_w[i / 9];
          s.segments[i] = Segment<R>{p.down[i / 9].cin, nullptr, WeightPanel<T>::at_channel(w.segment(i % 9), j),
                                     w.ldb()};
        }
        for (int64_t tile = g0; tile < g1; ++tile) {
          for (int i = first; i < last; ++i) s.segments[i].rows = rows_of(tile - g0, i);
          A* c = s.acc_data + tile * kTileP * width + j - task.j0;
          if (first == 0) {  // the first block writes the tile (no zeroing)
            tile_gemm<false>(s.segments.data() + first, last - first, c, width);
          } else {
            tile_gemm(s.segments.data() + first, last - first, c, width);
          }
        }
      }
    }
  }
}

// Step 2 for low path k: project the low rows that the task's output rows read (its channels), then
// add their interpolation to acc. Bilinear blends along x, then y: h0 * (w0 * a + w1 * b) + h1 * (...).
template <typename T>
void add_projection(const Branch<T>& b, int k, const Task& task, Scratch<T>& s) {
  using A = acc_t<T>;
  const FusionBranchProblem& p = b.p;
  const ConvPath& path = p.low[k];
  const Axis<A>& ay = b.low_y[k];
  const int32_t y0 = task.y0, y1 = task.y1;
  const int32_t r0 = taps(ay, y0).i0, r1 = taps(ay, y1 - 1).i1;  // source rows [r0, r1]
  const int64_t lw = path.x.w, pixels = int64_t{r1 - r0 + 1} * lw, cp = task.width();
  const int64_t proj_size = round_up(pixels, kTileP) * cp;
  A* const proj = cache_aligned(s.proj, proj_size);
  s.staged.resize(std::max<size_t>(s.staged.size(), 1));
  const StagedRows<T> input(path.x, task.n, r0, r1 - r0 + 1, path.cin, s.staged[0], b.zeros.data());
  s.row_pointers.resize(kTileP);
  for (int64_t first = 0; first < pixels; first += kTileP) {
    for (int q = 0; q < kTileP; ++q) {
      const int64_t pixel = first + q;
      s.row_pointers[q] = pixel < pixels ? input.pixel(r0 + pixel / lw, pixel % lw) : b.zeros.data();
    }
    const WeightPanel<T>& w = b.low_w[k];
    for (int64_t j = task.j0; j < task.j1; j += kTileC<A>) {
      const Segment<operand_t<T>> seg{path.cin, s.row_pointers.data(), WeightPanel<T>::at_channel(w.segment(0), j),
                                      w.ldb()};
      tile_gemm<false>(&seg, 1, proj + first * cp + j - task.j0, cp);
    }
  }
  const std::vector<Taps<A>>& tx = b.low_x[k];
  const bool writes = k == 0 && p.num_down == 0;  // the first to reach acc writes it (no zeroing)
  for (int32_t y = y0; y < y1; ++y) {
    const Taps<A> ty = taps(ay, y);
    const A* top = proj + (ty.i0 - r0) * lw * cp;
    const A* bottom = proj + (ty.i1 - r0) * lw * cp;
    A* acc = s.acc_data + int64_t{y - y0} * p.w * cp;
    for (int32_t x = 0; x < p.w; ++x, acc += cp) {
      const A* t0 = top + tx[x].i0 * cp;
      if (!p.bilinear) {
        if (writes) {
          std::copy(t0, t0 + cp, acc);
        } else {
          for (int64_t j = 0; j < cp; ++j) acc[j] += t0[j];
        }
        continue;
      }
      const A *t1 = top + tx[x].i1 * cp, *b0 = bottom + tx[x].i0 * cp, *b1 = bottom + tx[x].i1 * cp;
      const A w0 = tx[x].w0, w1 = tx[x].w1, h0 = ty.w0, h1 = ty.w1;
      if (writes) {
        for (int64_t j = 0; j < cp; ++j) acc[j] = h0 * (w0 * t0[j] + w1 * t1[j]) + h1 * (w0 * b0[j] + w1 * b1[j]);
      } else {
        for (int64_t j = 0; j < cp; ++j) acc[j] += h0 * (w0 * t0[j] + w1 * t1[j]) + h1 * (w0 * b0[j] + w1 * b1[j]);
      }
    }
  }
}

// Step 3: out = act(acc + bias + base), rounded once, in the output's layout (the task's channels).
template <typename T, bool kChannelsLast>
void write_band(const Branch<T>& b, const Task& task, const acc_t<T>* acc) {
  using A = acc_t<T>;
  const FusionBranchProblem& p = b.p;
  const int64_t n = task.n, width = task.width(), j0 = task.j0, j1 = std::min<int64_t>(task.j1, p.c);
  const T* base = static_cast<const T*>(p.base.data);
  T* out = static_cast<T*>(const_cast<void*>(p.out.data));
  const bool relu = p.relu;
  auto value = [&](A a, const T& base_value, int64_t j) {
    const A v = a + b.bias[j] + to_acc(base_value);
    return from_acc<T>(relu && v < A(0) ? A(0) : v);  // v < 0 ? 0 : v keeps NaN, as torch.relu
  };
  if constexpr (kChannelsLast) {
    for (int32_t y = task.y0; y < task.y1; ++y) {
      const A* row = acc + int64_t{y - task.y0} * p.w * width;  // row[x * width + j - j0]: channel j
      for (int32_t x = 0; x < p.w; ++x) {
        const T* src = base + pixel_offset(p.base, n, y, x);
        T* dst = out + pixel_offset(p.out, n, y, x);
        for (int64_t j = j0; j < j1; ++j) dst[j] = value(row[x * width + j - j0], src[j], j);
      }
    }
    return;
  }
  // NCHW: the band's pixels q = (y - y0) * w + x are contiguous in every plane. Blocks of 8 channels x
  // 8 pixels of acc are transposed, then each channel's 8 pixels written at once.
  constexpr int kB = kTransposeBlock;
  const int64_t pixels = int64_t{task.y1 - task.y0} * p.w;
  const T* base0 = base + pixel_offset(p.base, n, task.y0, 0);
  T* out0 = out + pixel_offset(p.out, n, task.y0, 0);
  A block[kB][kB];  // [channel][pixel]
  for (int64_t j = j0; j < j1; j += kB) {
    const int64_t channels = std::min<int64_t>(kB, j1 - j);
    for (int64_t q0 = 0; q0 < pixels; q0 += kB) {
      const int64_t count = std::min<int64_t>(kB, pixels - q0);
      const A* tile = acc + q0 * width + (j - j0);
      if (count == kB && j - j0 + kB <= width) {
        transpose_block(tile, width, &block[0][0], kB);
      } else {
        for (int64_t q = 0; q < count; ++q) {
          for (int64_t c = 0; c < channels; ++c) block[c][q] = tile[q * width + c];
        }
      }
      for (int64_t c = 0; c < channels; ++c) {
        const T* src = base0 + (j + c) * p.base.channel_stride + q0;
        T* dst = out0 + (j + c) * p.out.channel_stride + q0;
        for (int64_t q = 0; q < count; ++q) dst[q] = value(block[c][q], src[q], j + c);
      }
    }
  }
}

template <typename T, bool kChannelsLast>
void run_branch(const FusionBranchProblem& problem) {
  using A = acc_t<T>;
  const Branch<T> b(problem);
  const FusionBranchProblem& p = b.p;
  // Tasks: enough for every thread. Bands of rows first, each accumulator tile within kBandBytes and,
  // where the map allows, at least kMinBandPixels (a thinner band half-fills its pixel tiles and
  // reads all the weights again); then blocks of channel tiles if that leaves too few tasks.
  const int64_t wanted = int64_t{kTasksPerThread} * at::get_num_threads();
  const int64_t row_bytes = int64_t{p.w} * b.cp * static_cast<int64_t>(sizeof(A));
  const int64_t fitting = (row_bytes * p.h + kBandBytes - 1) / kBandBytes;  // bands the byte limit needs
  const int64_t widest = std::max<int64_t>(1, p.h / ((kMinBandPixels + p.w - 1) / p.w));  // bands of enough pixels
  const int64_t bands = std::min<int64_t>(p.h, std::max(fitting, std::min((wanted + p.n - 1) / p.n, widest)));
  const int32_t rows = static_cast<int32_t>((p.h + bands - 1) / bands);
  const int64_t per_sample = (p.h + rows - 1) / rows;
  const int64_t channel_tiles = b.cp / kTileC<A>;
  const int64_t blocks = std::min(channel_tiles, std::max<int64_t>(1, wanted / (p.n * per_sample)));
  const int64_t block = (channel_tiles + blocks - 1) / blocks * kTileC<A>;  // channels per block
  const int64_t per_band = (b.cp + block - 1) / block;
  at::parallel_for(0, p.n * per_sample * per_band, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> s;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t band = i / per_band, j0 = i % per_band * block;
      const int32_t y0 = static_cast<int32_t>(band % per_sample) * rows;
      const Task task{band / per_sample, y0, std::min(y0 + rows, p.h), j0, std::min(j0 + block, b.cp)};
      const int64_t acc_size = round_up(int64_t{task.y1 - task.y0} * p.w, kTileP) * task.width();
      s.acc_data = cache_aligned(s.acc, acc_size);
      if (p.num_down == 0 && p.num_low == 0) std::fill(s.acc_data, s.acc_data + acc_size, A(0));
      if (p.num_down > 0) add_down_convs<T>(b, task, s);
      for (int k = 0; k < p.num_low; ++k) add_projection<T>(b, k, task, s);
      write_band<T, kChannelsLast>(b, task, s.acc_data);
    }
  });
}

void run(const FusionBranchProblem& p) {
  dispatch_dtype(p.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (p.layout == Layout::kChannelsLast) {
      run_branch<T, true>(p);
    } else {
      run_branch<T, false>(p);
    }
  });
}

at::Tensor fusion_branch_cpu(const at::Tensor& base, at::TensorList down, at::TensorList down_weight,
                             at::TensorList low, at::TensorList low_weight, const at::Tensor& bias,
                             std::string_view mode, bool align_corners, bool relu) {
  static const BranchKernel kernel{"cpp (CPU)", /*supports_float64=*/true, /*any_input_layout=*/true, run};
  return fusion_branch(kernel, base, down, down_weight, low, low_weight, bias, mode, align_corners, relu);
}

}  // namespace
}  // namespace hrnet_fast::cpu

TORCH_LIBRARY_IMPL(hrnet_fast, CPU, m) { m.impl("fusion_branch_cpp", &hrnet_fast::cpu::fusion_branch_cpu); }
