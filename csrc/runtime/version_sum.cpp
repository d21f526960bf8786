// VersionSum: the sum of the version counters of a list of tensors, read in C++.
//
// Every in-place change to a tensor increments its version counter, and counters never go down, so
// the sum grows with any change to any of the tensors: optimize()'s CPU engine compares it on each
// call to know whether a recorded plan's prepared weights are still current. After a forward has
// streamed the weights through the caches, reading ~600 counters one Python attribute at a time
// chases cold pointers for about 0.25 ms; here the independent loads overlap.
#include <torch/custom_class.h>
#include <torch/library.h>

#include <vector>

namespace hrnet_fast {
namespace {

class VersionSum : public torch::CustomClassHolder {
 public:
  explicit VersionSum(const std::vector<at::Tensor>& tensors) {
    counters_.reserve(tensors.size());
    for (const at::Tensor& t : tensors) {
      TORCH_CHECK(!t.is_inference(), "VersionSum: inference tensors have no version counter");
      counters_.push_back(t.unsafeGetTensorImpl()->version_counter());
    }
  }

  int64_t sum() const {
    int64_t total = 0;
    for (const c10::VariableVersion& counter : counters_) total += counter.current_version();
    return total;
  }

 private:
  std::vector<c10::VariableVersion> counters_;  // each shares its tensor's counter
};

}  // namespace
}  // namespace hrnet_fast

TORCH_LIBRARY_FRAGMENT(hrnet_fast, m) {
  m.class_<hrnet_fast::VersionSum>("VersionSum")
      .def(torch::init<const std::vector<at::Tensor>&>())
      .def("sum", &hrnet_fast::VersionSum::sum);
}
