// onednn_conv: a convolution with its epilogue through oneDNN's primitive API directly, built once per
// (weights, input shape) and executed with nothing else per call.
//
//   out = act(conv2d(x, W, b, stride, padding) [+ residual])        act: ReLU or the identity
//
// x: (N, C_in, H, W) channels_last; W: (C_out, C_in, k, k); b: (C_out,); fp32 or bf16 (all alike).
// The weights are reordered once into the blocked layout the primitive picks. With a residual the
// primitive's sum post-op adds the result into the residual's memory (which is returned).
//
// Why not torch's own oneDNN call (mkldnn::_convolution_pointwise): it rebuilds its ideep tensors,
// looks up the primitive and allocates on every call, about 15-25 us per conv on a 2-core machine,
// a fifth of HRNet's batch-1 bf16 forward. torch does not export its oneDNN, so this library links
// the oneDNN of the pip package onednn-cpu-gomp (GNU OpenMP, the runtime torch's threads use).
#include <ATen/ATen.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace hrnet_fast::onednn {
namespace {

using dnnl::memory;

// Never destroyed: primitives and memories that Python frees at interpreter exit still refer to it.
const dnnl::engine& cpu_engine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

memory::data_type data_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return memory::data_type::f32;
    case at::kBFloat16:
      return memory::data_type::bf16;
    default:
      TORCH_CHECK(false, "onednn_conv: float32 or bfloat16 operands only, got ", t);
  }
}

class OneDnnConv : public torch::CustomClassHolder {
 public:
  // weight (C_out, C_in, k, k) and bias (C_out,) in the maps' dtype; input_shape (N, C_in, H, W).
  OneDnnConv(const at::Tensor& weight, const at::Tensor& bias, std::vector<int64_t> input_shape, int64_t stride,
             int64_t padding, bool relu, bool residual)
      : input_shape_(std::move(input_shape)), dtype_(weight.scalar_type()), residual_(residual) {
    TORCH_CHECK(weight.dim() == 4 && weight.size(2) == weight.size(3), "onednn_conv: weight must be (C_out, C_in, k, k)");
    TORCH_CHECK(input_shape_.size() == 4 && input_shape_[1] == weight.size(1),
                "onednn_conv: input_shape must be (N, C_in, H, W) with C_in = ", weight.size(1));
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0) && bias.scalar_type() == dtype_,
                "onednn_conv: bias must be (C_out,) in the weight's dtype");
    TORCH_CHECK(weight.device().is_cpu() && bias.device().is_cpu(), "onednn_conv: CPU tensors only");
    TORCH_CHECK(stride >= 1 && padding >= 0, "onednn_conv: stride >= 1 and padding >= 0");
    const int64_t k = weight.size(2);
    const int64_t h = (input_shape_[2] + 2 * padding - k) / stride + 1;
    const int64_t w = (input_shape_[3] + 2 * padding - k) / stride + 1;
    TORCH_CHECK(h >= 1 && w >= 1, "onednn_conv: the input is smaller than the kernel");
    output_shape_ = {input_shape_[0], weight.size(0), h, w};
    const memory::data_type dt = data_type(dtype_);
    src_ = memory::desc(input_shape_, dt, memory::format_tag::nhwc);
    dst_ = memory::desc(output_shape_, dt, memory::format_tag::nhwc);
    const memory::desc any_weights(weight.sizes().vec(), dt, memory::format_tag::any);
    const memory::desc bias_md({weight.size(0)}, dt, memory::format_tag::a);

    dnnl::post_ops post_ops;
    if (residual_) post_ops.append_sum(1.f);
    if (relu) post_ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(post_ops);
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per call: threads may run it at once
    const memory::dims strides{stride, stride}, pad{padding, padding};
    dnnl::convolution_forward::primitive_desc pd;
    try {
      pd = dnnl::convolution_forward::primitive_desc(cpu_engine(), dnnl::prop_kind::forward_inference,
                                                     dnnl::algorithm::convolution_direct, src_, any_weights, bias_md,
                                                     dst_, strides, pad, pad, attr);
    } catch (const dnnl::error& e) {  // no implementation for these operands on this CPU
      TORCH_CHECK_NOT_IMPLEMENTED(false, "onednn_conv: oneDNN has no convolution for these operands here: ", e.what());
    }
    primitive_ = dnnl::convolution_forward(pd);
    implementation_ = pd.impl_info_str();
    scratchpad_ = pd.scratchpad_desc();

    // the weights, reordered once; the bias, copied
    const at::Tensor dense_weight = weight.contiguous();
    memory plain(memory::desc(weight.sizes().vec(), dt, memory::format_tag::oihw), cpu_engine(),
                 dense_weight.data_ptr());
    weights_ = memory(pd.weights_desc(), cpu_engine());
    dnnl::stream stream(cpu_engine());
    dnnl::reorder(plain, weights_).execute(stream, plain, weights_);
    stream.wait();
    bias_ = memory(bias_md, cpu_engine());
    std::memcpy(bias_.get_data_handle(), bias.contiguous().data_ptr(), bias_md.get_size());
  }

  // out = act(conv(x) + residual) written into residual (with one), else into a new tensor.
  at::Tensor run(const at::Tensor& x, const c10::optional<at::Tensor>& residual) const {
    check_map(x, input_shape_, "x");
    TORCH_CHECK(residual.has_value() == residual_, "onednn_conv: this convolution was prepared ",
                residual_ ? "with" : "without", " a residual");
    at::Tensor out;
    if (residual_) {
      out = *residual;
      check_map(out, output_shape_, "residual");
    } else {
      out = at::empty(output_shape_, x.options().memory_format(at::MemoryFormat::ChannelsLast));
    }
    // The memories and scratchpad of the first thread in; a thread running it at the same time makes its own.
    std::unique_lock<std::mutex> lock(call_mutex_, std::try_to_lock);
    if (lock.owns_lock()) {
      if (!call_) call_ = std::make_unique<Call>(*this, x.options());
      execute(*call_, x, out);
    } else {
      Call call(*this, x.options());
      execute(call, x, out);
    }
    return out;
  }

  // oneDNN's name for the implementation it picked (brgconv:avx512_core_bf16, ...).
  std::string implementation() const { return implementation_; }

 private:
  void check_map(const at::Tensor& t, const std::vector<int64_t>& shape, const char* what) const {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype_, "onednn_conv: ", what, " must be a CPU ", dtype_,
                " tensor, got ", t.scalar_type(), " on ", t.device());
    TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), "onednn_conv: ", what, " must be ", at::IntArrayRef(shape),
                " (the shape it was prepared for), got ", t.sizes());
    TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "onednn_conv: ", what, " must be channels_last");
  }

  // What one call needs besides its maps: memories pointing at them, and a scratchpad.
  struct Call {
    Call(const OneDnnConv& conv, const at::TensorOptions& options)
        : scratch(at::empty({static_cast<int64_t>(conv.scratchpad_.get_size())}, options.dtype(at::kByte))),
          src(conv.src_, cpu_engine(), DNNL_MEMORY_NONE),
          dst(conv.dst_, cpu_engine(), DNNL_MEMORY_NONE),
          scratchpad(conv.scratchpad_, cpu_engine(), scratch.data_ptr()) {}
    at::Tensor scratch;
    memory src, dst, scratchpad;
  };

  void execute(Call& call, const at::Tensor& x, const at::Tensor& out) const {
    call.src.set_data_handle(x.data_ptr());
    call.dst.set_data_handle(out.data_ptr());
    thread_local dnnl::stream stream(cpu_engine());
    primitive_.execute(stream, {{DNNL_ARG_SRC, call.src},
                                {DNNL_ARG_WEIGHTS, weights_},
                                {DNNL_ARG_BIAS, bias_},
                                {DNNL_ARG_DST, call.dst},
                                {DNNL_ARG_SCRATCHPAD, call.scratchpad}});
  }

  std::vector<int64_t> input_shape_, output_shape_;
  at::ScalarType dtype_;
  bool residual_;
  memory::desc src_, dst_, scratchpad_;
  memory weights_, bias_;
  dnnl::primitive primitive_;
  std::string implementation_;
  mutable std::mutex call_mutex_;
  mutable std::unique_ptr<Call> call_;
};

at::Tensor onednn_conv(const c10::intrusive_ptr<OneDnnConv>& conv, const at::Tensor& x) {
  return conv->run(x, c10::nullopt);
}

at::Tensor onednn_conv_add_(const c10::intrusive_ptr<OneDnnConv>& conv, const at::Tensor& x, at::Tensor& residual) {
  return conv->run(x, residual);
}

}  // namespace
}  // namespace hrnet_fast::onednn

TORCH_LIBRARY_FRAGMENT(hrnet_fast, m) {
  using hrnet_fast::onednn::OneDnnConv;
  m.class_<OneDnnConv>("OneDnnConv")
      .def(torch::init<at::Tensor, at::Tensor, std::vector<int64_t>, int64_t, int64_t, bool, bool>())
      .def("implementation", &OneDnnConv::implementation);
  m.def("onednn_conv(__torch__.torch.classes.hrnet_fast.OneDnnConv conv, Tensor x) -> Tensor");
  m.def("onednn_conv_add_(__torch__.torch.classes.hrnet_fast.OneDnnConv conv, Tensor x, Tensor(a!) residual) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(hrnet_fast, CPU, m) {
  m.impl("onednn_conv", &hrnet_fast::onednn::onednn_conv);
  m.impl("onednn_conv_add_", &hrnet_fast::onednn::onednn_conv_add_);
}
